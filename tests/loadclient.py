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

Responses are framed from raw bytes by the kit's one parser (tests/kit/http.py:
Content-Length, chunked or close-delimited bodies), so a short body is seen as
truncated rather than papered over by a library.

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

from .kit.http import Cut, Malformed, Reader, Response


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
    """One client socket, and its reader (which keeps the bytes read past a response)."""

    def __init__(self, port: int, timeout: float) -> None:
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            raise Failure("connect refused") from None
        except OSError as exc:
            raise Failure(f"connect failed: {exc}") from None
        self.reader = Reader(self.sock)
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
        response = _read_response(conn)
        conn.answered += 1
        if not response.keep_alive:
            conn.close()
            conn = None
        elif conn.reader.buf:
            raise Failure(f"unexpected bytes after the response: {conn.reader.buf[:60]!r}")
        if not 200 <= response.status < 300:
            raise Failure(f"status {response.status}")
        return ", ".join(response.headers.get("x-pool", ["-"])), conn


def _close(conn: _Connection | None) -> None:
    if conn is not None:
        conn.close()
    return None


# -- one response, its failures named the way this client counts them ------------------------

def _read_response(conn: _Connection) -> Response:
    """The next final response (1xx answers are skipped)."""
    try:
        return conn.reader.final()
    except Cut as cut:
        if cut.how == "timeout":
            raise Failure(f"timeout waiting for {cut.what}") from None
        if not cut.started:  # no byte of the response: on a reused connection, sent again
            raise ClosedEarly("reset before the response" if cut.how == "reset"
                              else "closed before the response") from None
        if cut.how == "reset":
            raise Failure(f"reset in the middle of the {cut.what}") from None
        raise Failure(f"truncated {cut.what}: connection closed") from None
    except Malformed as exc:
        raise Failure(f"malformed {exc}") from None
