"""A bounded HTTP/1.1 load client that counts every outcome.

`LoadClient(port, connections=8)` runs one thread per connection; each sends
GET requests, one at a time, over a keep-alive TCP connection to 127.0.0.1
until `stop()` is called, `duration` seconds have passed or `max_requests`
requests have been started, whichever comes first:

    with LoadClient(proxy.port, connections=8) as load:
        ...                                  # change routing while it runs
        result = load.stop()
    assert result.failures == []
    assert result.by_pool["green"] > 0

Responses are parsed from raw bytes (status line, headers, Content-Length,
chunked or close-delimited bodies), so a short body is seen as truncated
rather than papered over by a library.

Outcomes:
- a complete 2xx response is a success, counted in `by_pool` under its
  `X-Pool` header ("-" when there is none);
- everything else is a failure with a reason in `failures`: connect refused
  or failed, a reset or close in the middle of a response, a truncated body,
  a malformed response, a timeout, a non-2xx status.

The one retry, and the only one (standard client behaviour, RFC 9112 §9.3.1;
browsers and curl do the same): a keep-alive connection that has already
carried a response may be closed by the server just as the next request is
sent.  When a *reused* connection is closed or reset before any byte of the
response arrived, the request is sent once more on a new connection; those
are counted in `retries`.  The same thing on a fresh connection, or a second
time, is a failure.  A `Connection: close` answer is not a failure: the next
request opens a new connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

CHUNK = 65536


class Failure(Exception):
    """A request that did not get a complete 2xx answer; str() is the reason."""


class ClosedEarly(Failure):
    """The server closed the connection before any byte of the response arrived."""


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    by_pool: Counter = field(default_factory=Counter)
    retries: int = 0  # reused connections closed before the answer, sent again

    @property
    def requests(self) -> int:
        return self.ok + len(self.failures)


class _Connection:
    """One client socket and the bytes read past the current response."""

    def __init__(self, port: int, timeout: float) -> None:
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            raise Failure("connect refused") from None
        except OSError as exc:
            raise Failure(f"connect failed: {exc}") from None
        self.buf = b""
        self.answered = 0  # responses received on this connection

    def close(self) -> None:
        self.sock.close()


class LoadClient:
    def __init__(self, port: int, connections: int = 8, duration: float = 60.0,
                 max_requests: int = 200_000, path: str = "/",
                 headers: dict[str, str] | None = None, pause: float = 0.0,
                 timeout: float = 10.0) -> None:
        self.port = port
        self.connections = connections
        self.duration = duration
        self.max_requests = max_requests
        self.pause = pause
        self.timeout = timeout
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = 0
        self._deadline = 0.0
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> LoadClient:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LoadClient:
        self._deadline = time.monotonic() + self.duration
        for i in range(self.connections):
            t = threading.Thread(target=self._worker, name=f"load-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> LoadResult:
        """Stop sending; wait for the requests in flight; return every outcome."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
            if t.is_alive():
                self._failed(f"{t.name} did not stop")
        self._threads = [t for t in self._threads if t.is_alive()]
        return self.result()

    def result(self) -> LoadResult:
        with self._lock:
            r = self._result
            return LoadResult(r.ok, list(r.failures), Counter(r.by_pool), r.retries)

    # -- live counters, for waiting on a switch ------------------------------------------

    def count(self, pool: str) -> int:
        with self._lock:
            return self._result.by_pool[pool]

    @property
    def ok(self) -> int:
        with self._lock:
            return self._result.ok

    # -- one worker per connection ---------------------------------------------------------

    def _may_send(self) -> bool:
        with self._lock:
            if self._stop.is_set() or time.monotonic() >= self._deadline:
                return False
            if self._started >= self.max_requests:
                return False
            self._started += 1
            return True

    def _worker(self) -> None:
        conn: _Connection | None = None
        while self._may_send():
            try:
                pool, conn = self._request(conn)
            except Failure as exc:  # the connection it used is closed already
                self._failed(str(exc))
                conn = None
                time.sleep(0.01)  # do not spin on a proxy that refuses connections
            except Exception as exc:  # a bug here must show up, not end the thread quietly
                self._failed(f"load client error: {exc!r}")
                conn = None
            else:
                with self._lock:
                    self._result.ok += 1
                    self._result.by_pool[pool] += 1
            if self.pause:
                time.sleep(self.pause)
        _close(conn)

    def _failed(self, reason: str) -> None:
        with self._lock:
            self._result.failures.append(reason)

    def _request(self, conn: _Connection | None) -> tuple[str, _Connection | None]:
        """One request, retried once on a new connection if a reused one closed early."""
        if conn is None:
            conn = _Connection(self.port, self.timeout)
        try:
            return self._attempt(conn)
        except ClosedEarly as exc:
            if not conn.answered:
                raise Failure(f"{exc} on a new connection") from None
        with self._lock:
            self._result.retries += 1
        try:
            return self._attempt(_Connection(self.port, self.timeout))
        except ClosedEarly as exc:
            raise Failure(f"{exc} on the retry's new connection") from None

    def _attempt(self, conn: _Connection) -> tuple[str, _Connection | None]:
        try:
            return self._exchange(conn)
        except BaseException:
            conn.close()  # whatever went wrong, this connection is done
            raise

    def _exchange(self, conn: _Connection) -> tuple[str, _Connection | None]:
        """Send the request, read one whole response; the connection if it stays open."""
        try:
            conn.sock.sendall(self.request)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ClosedEarly(f"send failed: {exc.__class__.__name__}") from None
        status, headers, keep = _read_response(conn)
        conn.answered += 1
        if not keep:
            conn.close()
            conn = None
        elif conn.buf:
            raise Failure(f"unexpected bytes after the response: {conn.buf[:60]!r}")
        if not 200 <= status < 300:
            raise Failure(f"status {status}")
        return headers.get("x-pool", "-"), conn


def _close(conn: _Connection | None) -> None:
    if conn is not None:
        conn.close()
    return None


# -- reading one response from raw bytes -----------------------------------------------------

def _recv(conn: _Connection, what: str, received_any: bool) -> bytes:
    try:
        data = conn.sock.recv(CHUNK)
    except socket.timeout:
        raise Failure(f"timeout waiting for {what}") from None
    except ConnectionResetError:
        if not received_any:
            raise ClosedEarly("reset before the response") from None
        raise Failure(f"reset in the middle of the {what}") from None
    if not data:
        if not received_any:
            raise ClosedEarly("closed before the response")
        raise Failure(f"truncated {what}: connection closed")
    return data


def _read_response(conn: _Connection) -> tuple[int, dict[str, str], bool]:
    """(status, headers, keep-alive) of one final response; 1xx answers are skipped."""
    while True:
        status, headers, version = _read_head(conn)
        if status >= 200:
            break
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (204, 304):
        return status, headers, keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        _read_chunked(conn)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise Failure(f"bad Content-Length {headers['content-length']!r}") from None
        _read_exactly(conn, length)
    else:
        while True:  # delimited by close
            try:
                chunk = conn.sock.recv(CHUNK)
            except socket.timeout:
                raise Failure("timeout waiting for a close-delimited body") from None
            if not chunk:
                break
        keep = False
    return status, headers, keep


def _read_head(conn: _Connection) -> tuple[int, dict[str, str], str]:
    while b"\r\n\r\n" not in conn.buf:
        conn.buf += _recv(conn, "response head", received_any=bool(conn.buf))
    head, conn.buf = conn.buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Failure(f"malformed status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise Failure(f"malformed header line {line!r}")
        name = name.strip().lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    return int(parts[1]), headers, parts[0]


def _read_exactly(conn: _Connection, n: int) -> bytes:
    while len(conn.buf) < n:
        conn.buf += _recv(conn, "body", received_any=True)
    data, conn.buf = conn.buf[:n], conn.buf[n:]
    return data


def _read_line(conn: _Connection) -> bytes:
    while b"\r\n" not in conn.buf:
        conn.buf += _recv(conn, "chunked body", received_any=True)
    line, conn.buf = conn.buf.split(b"\r\n", 1)
    return line


def _read_chunked(conn: _Connection) -> None:
    while True:
        size_line = _read_line(conn)
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise Failure(f"bad chunk size line {size_line!r}") from None
        if size == 0:
            while _read_line(conn):  # trailers, up to the empty line
                pass
            return
        _read_exactly(conn, size)
        if _read_exactly(conn, 2) != b"\r\n":
            raise Failure("chunk not followed by CRLF")
