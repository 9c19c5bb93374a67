"""Real Swoole servers as upstreams, and a mixed load that never retries.

The proxy's users run PHP Hyperf on Swoole, so the upstream that matters is a real
Swoole server with Hyperf's skeleton settings (tests/swoole/http_app.php,
tests/swoole/ws_app.php).  This module starts them and drives load at them:

    require_swoole()                           # a clear error if Swoole cannot load
    with SwooleServer(tmp_path, name="blue", max_request=300) as blue:
        load = MixedLoad(blue.port, get_connections=16, post_connections=4,
                         duration=10).start()
        ...                                    # recycle, deploy, stop things
        result = load.stop()
    check = check_applied(result, blue.applied())
    assert not check.answered_not_applied

Servers
  `SwooleServer` runs one `php -d extension=swoole APP` in its own process group
  (so stop() and kill() reach the manager and every worker) and waits for
  `GET /health` to answer 200.  The app appends one JSON line per request it ran
  to a log file (the "applied log"); `applied()` parses it.  Every server started
  here is killed at interpreter exit if a test forgot it.

Load
  `MixedLoad` runs one thread per connection, each with one raw keep-alive socket
  to 127.0.0.1.  GET connections send `GET /` (or `get_path`), POST connections
  send `POST /write` with a small JSON body; every request carries a unique
  `X-Test-Id`, and keyed POSTs an `Idempotency-Key` too.  Responses are framed from
  raw bytes by the kit's one parser (tests/kit/http.py: Content-Length, chunked,
  close-delimited), so nothing is papered over by a library.  Unlike tests/loadclient.py this client NEVER retries, not even the
  RFC 9112 §9.3.1 retry of a reused connection closed before the answer: every
  request is sent exactly once and its outcome recorded, so what the app applied
  can be compared with what the client was told (`check_applied`).

Outcomes of one request (`Record.outcome`):
  ok            a complete 2xx response
  status        a complete non-2xx response (`Record.status` has it)
  refused       the connect failed (nothing was sent)
  reset         ECONNRESET/EPIPE while sending or before/while reading the answer
  closed-early  the server closed (FIN) before any byte of the response
  timeout       no complete response within `timeout` seconds
  truncated     the server closed in the middle of the response
  malformed     the bytes were not an HTTP/1.x response
A `Connection: close` answer is not a failure: the next request on that thread
opens a new connection.  After any failure the connection is closed too.
"""

from __future__ import annotations

import atexit
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .kit.http import CHUNK, Cut, Malformed, Reader
from .support import ROOT, free_port

APPS = {"http": os.path.join(ROOT, "tests", "swoole", "http_app.php"),
        "ws": os.path.join(ROOT, "tests", "swoole", "ws_app.php")}
PHP = os.environ.get("PHP", "php")

# Paths of http_app.php whose requests append an "applied" line: the ones whose
# effect check_applied() compares with what the client was told.
APPLYING_PATHS = ("/write", "/slow")


# -- is Swoole there? ---------------------------------------------------------------------------

class SwooleMissing(RuntimeError):
    """`php -d extension=swoole` cannot load Swoole; the message says how to install it."""


def require_swoole() -> str:
    """Swoole's version; SwooleMissing (an error, not a skip) when PHP cannot load it.

    A test that needs the real upstream must fail loudly where it is missing, or a
    green run would hide that the Swoole tests never ran."""
    try:
        out = subprocess.run([PHP, "-d", "extension=swoole", "-r", "echo swoole_version();"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SwooleMissing(f"cannot run `{PHP}` ({exc}); install PHP and Swoole with "
                            f"`bash ../shared/swoole/build.sh`") from None
    version = out.stdout.strip()
    if out.returncode != 0 or not version[:1].isdigit():
        raise SwooleMissing("`php -d extension=swoole` cannot load Swoole "
                            f"({(out.stderr or out.stdout).strip()[:300]!r}); "
                            "run `bash ../shared/swoole/build.sh` (from the repository root)")
    return version


# -- one Swoole server ------------------------------------------------------------------------

_live_servers: set[SwooleServer] = set()


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the PHP master if the Python process dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class SwooleStartError(RuntimeError):
    """The server exited or did not answer /health in time; the message has its stderr."""


class SwooleServer:
    """`php -d extension=swoole tests/swoole/{http,ws}_app.php` with Hyperf's skeleton settings.

    Files go in `tmp_dir`: the applied log `swoole-NAME.log` (or `log=`; several servers may
    share one, and a server restarted with the same name appends to the same file) and
    Swoole's own output `swoole-NAME.stderr`.  `unix=PATH` listens on a Unix socket instead
    of 127.0.0.1:port.
    """

    def __init__(self, tmp_dir, name: str = "blue", port: int | None = None, mode: str = "base",
                 workers: int = 2, max_request: int = 100_000, max_wait_time: int = 3,
                 app: str = "http", unix: str | None = None, log: str | os.PathLike | None = None):
        if app not in APPS:
            raise ValueError(f"app must be one of {sorted(APPS)}, not {app!r}")
        if mode not in ("base", "process"):
            raise ValueError(f"mode must be base or process, not {mode!r}")
        self.dir = Path(tmp_dir)
        self.name, self.mode, self.app, self.unix = name, mode, app, unix
        self.workers, self.max_request, self.max_wait_time = workers, max_request, max_wait_time
        self.port = None if unix else (port or free_port())
        self.log_path = Path(log) if log else self.dir / f"swoole-{name}.log"
        self.stderr_path = self.dir / f"swoole-{name}.stderr"
        self.proc: subprocess.Popen | None = None
        self._stderr_from = 0

    def __repr__(self) -> str:
        state = "stopped" if self.proc is None or self.proc.poll() is not None else f"pid {self.pid}"
        return f"<SwooleServer {self.name} {self.address} {self.mode} w={self.workers} {state}>"

    @property
    def address(self) -> str:
        """What a proxy config names it by: "127.0.0.1:PORT" or "unix:/path"."""
        return f"unix:{self.unix}" if self.unix else f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> SwooleServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def argv(self) -> list[str]:
        args = [PHP, "-d", "extension=swoole", APPS[self.app], "--name", self.name,
                "--mode", self.mode, "--workers", str(self.workers),
                "--max-request", str(self.max_request), "--max-wait-time", str(self.max_wait_time),
                "--log", str(self.log_path)]
        return args + (["--unix", self.unix] if self.unix else ["--port", str(self.port)])

    def start(self, timeout: float = 15.0) -> SwooleServer:
        """Start and wait until GET /health answers 200; SwooleStartError otherwise."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self!r} is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stderr_from = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        with open(self.stderr_path, "ab") as err:
            # Its own session: killpg reaches the manager and every worker, and a Ctrl-C
            # on the terminal goes to the test runner only, which then stops us in order.
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, start_new_session=True,
                                         preexec_fn=_die_with_parent, cwd=ROOT)
        _live_servers.add(self)
        why = self._wait_healthy(timeout)
        if why:
            self.kill()
            raise SwooleStartError(f"{self.name} ({self.address}) {why}\n--- stderr ---\n"
                                   f"{self.stderr()[-3000:]}")
        return self

    def _wait_healthy(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode}"
            try:
                status = self.health()
                if status == 200:
                    return None
                last = f"/health answered {status}"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        return f"did not answer /health with 200 within {timeout:g}s ({last})"

    def health(self, timeout: float = 1.0) -> int:
        """Status of one GET /health (OSError when nothing answers)."""
        if self.unix:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(timeout)
                s.connect(self.unix)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                head = s.recv(CHUNK).split(b"\r\n", 1)[0].split()
                return int(head[1]) if len(head) > 1 and head[1].isdigit() else 0
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM to the master (Swoole's graceful stop), wait, then SIGKILL what is left.

        The wait defaults to max_wait_time + 5 s: Swoole gives busy workers max_wait_time
        before it kills them itself."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.max_wait_time + 5 if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, not a stop)."""
        if self.proc is not None:
            self._kill_group()

    def _kill_group(self) -> None:
        # Workers can outlive a master that was killed, so the group is always swept.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _live_servers.discard(self)

    # -- what it logged -------------------------------------------------------------------------

    def log_lines(self) -> list[dict]:
        """Every line of the applied log: requests (applied, started) and worker events."""
        return read_log(self.log_path)

    def applied(self) -> list[dict]:
        """The "applied" lines: one per request the app ran to the end."""
        return [line for line in self.log_lines() if line.get("event") == "applied"]

    def events(self, name: str) -> list[dict]:
        """Lines of one event: worker_start, worker_stop, worker_error, shutdown, started..."""
        return [line for line in self.log_lines() if line.get("event") == name]

    def stderr(self) -> str:
        """What Swoole printed since the last start()."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self._stderr_from)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def read_log(path) -> list[dict]:
    """The JSON lines of an applied log (a partly written last line is left out)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    lines = []
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


@atexit.register
def _kill_forgotten_servers() -> None:
    for server in list(_live_servers):
        server.kill()


# -- one raw keep-alive connection -------------------------------------------------------------

OUTCOMES = ("ok", "status", "refused", "reset", "closed-early", "timeout", "truncated",
            "malformed")


class RequestFailed(Exception):
    """A request without a complete response; `outcome` is one of OUTCOMES."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(f"{outcome}: {detail}")
        self.outcome, self.detail = outcome, detail


@dataclass
class Response:
    status: int
    headers: dict[str, str]   # lower-case names; repeated headers joined with ", "
    body: bytes
    keep_alive: bool          # False after `Connection: close`, HTTP/1.0 or a close-delimited body


class RawConnection:
    """One client socket to 127.0.0.1 that sends raw requests and parses raw responses.

    request() sends once and reads one response; any failure closes the connection and
    raises RequestFailed.  Nothing is ever sent twice."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port, self.timeout = port, timeout
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except socket.timeout:
            raise RequestFailed("refused", "connect timed out") from None
        except OSError as exc:
            raise RequestFailed("refused", f"connect: {exc.__class__.__name__}") from None
        self.reader = Reader(self.sock)
        self.responses = 0  # complete responses received on this connection

    def __repr__(self) -> str:
        return f"<RawConnection :{self.port} responses={self.responses}>"

    def close(self) -> None:
        self.sock.close()

    def request(self, data: bytes) -> Response:
        try:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise RequestFailed("reset", f"on send ({exc.__class__.__name__})") from None
            except socket.timeout:
                raise RequestFailed("timeout", "on send") from None
            response = self._read_response()
        except BaseException:
            self.close()  # whatever went wrong, this connection is done
            raise
        self.responses += 1
        if self.reader.buf:  # a 1-request-at-a-time client never has bytes past its response
            self.close()
            raise RequestFailed("malformed",
                                f"bytes after the response: {self.reader.buf[:60]!r}")
        return response

    def _read_response(self) -> Response:
        """The next final response (1xx skipped); a Cut or Malformed as RequestFailed."""
        try:
            r = self.reader.final()
        except Cut as cut:
            raise RequestFailed(*_outcome(cut)) from None
        except Malformed as exc:
            raise RequestFailed("malformed", str(exc)) from None
        return Response(r.status, {name: ", ".join(values) for name, values in r.headers.items()},
                        r.body, r.keep_alive)


def _outcome(cut: Cut) -> tuple[str, str]:
    """(outcome, detail) of a response that did not arrive whole."""
    if cut.how == "timeout":
        return "timeout", f"waiting for the {cut.what}"
    if not cut.started:
        if cut.how == "closed":
            return "closed-early", "FIN before any byte of the response"
        return "reset", f"before any byte of the response ({cut.error} in the {cut.what})"
    if cut.how == "reset":
        return "reset", f"{cut.error} in the {cut.what}"
    return "truncated", f"FIN in the {cut.what}"


# -- the mixed load -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One request the load sent, exactly once, and what came of it."""

    id: str              # its X-Test-Id
    method: str
    path: str
    keyed: bool          # carried an Idempotency-Key
    outcome: str         # one of OUTCOMES
    status: int | None   # of a complete response
    detail: str          # why it failed ("" when ok)
    reused: int          # responses the connection had carried before this request
    at: float            # seconds since the load started, when it was sent
    elapsed: float       # seconds until the outcome

    @property
    def kind(self) -> str:
        """"GET", "POST" or "POST+key": the rows of MixedResult.counts."""
        return f"{self.method}+key" if self.keyed else self.method


@dataclass
class MixedResult:
    records: list[Record] = field(default_factory=list)
    seconds: float = 0.0
    stuck_threads: int = 0  # threads that did not stop in time (their request is not recorded)

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def counts(self) -> Counter:
        """Counter keyed by (kind, outcome), e.g. counts["POST", "reset"]."""
        return Counter((r.kind, r.outcome) for r in self.records)

    @property
    def ok_ids(self) -> set[str]:
        """X-Test-Id of every request that got a complete 2xx."""
        return {r.id for r in self.records if r.outcome == "ok"}

    def count(self, kind: str | None = None, outcome: str | None = None) -> int:
        return sum(1 for r in self.records if (kind is None or r.kind == kind)
                   and (outcome is None or r.outcome == outcome))

    def failed(self, kind: str | None = None) -> list[Record]:
        return [r for r in self.records if r.outcome != "ok" and (kind is None or r.kind == kind)]

    def summary(self) -> str:
        """One line per kind: total and outcomes, for a test's failure message."""
        by_kind: dict[str, Counter] = {}
        for (kind, outcome), n in sorted(self.counts.items()):
            by_kind.setdefault(kind, Counter())[outcome] = n
        return "\n".join(f"{kind}: {sum(c.values())} " + " ".join(f"{o}={n}" for o, n in c.items())
                         for kind, c in by_kind.items())


class MixedLoad:
    """GET and POST connections to 127.0.0.1:port that never retry; see the module docstring.

    Bounded three ways: stop(), `duration` seconds, `max_requests` requests started.
    `keyed=True` gives every POST an Idempotency-Key; `keyed_connections` adds that many
    more POST connections whose requests are keyed (so one load can mix both kinds).
    """

    def __init__(self, port: int, get_connections: int = 16, post_connections: int = 4,
                 keyed: bool = False, duration: float = 30.0, max_requests: int = 1_000_000,
                 get_path: str = "/", post_path: str = "/write", keyed_connections: int = 0,
                 timeout: float = 10.0, pause: float = 0.0, headers: dict[str, str] | None = None):
        self.port, self.duration, self.max_requests = port, duration, max_requests
        self.get_path, self.post_path = get_path, post_path
        self.timeout, self.pause = timeout, pause
        self.roles = (["GET"] * get_connections + [("POST", keyed)] * post_connections
                      + [("POST", True)] * keyed_connections)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._extra = extra
        self.prefix = uuid.uuid4().hex[:8]  # ids of this load never clash with another's
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = 0
        self._t0 = 0.0
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> MixedLoad:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> MixedLoad:
        self._t0 = time.monotonic()
        for i, role in enumerate(self.roles):
            method, keyed = (role, False) if role == "GET" else role
            t = threading.Thread(target=self._worker, args=(i, method, keyed),
                                 name=f"mixed-{method.lower()}{'-key' if keyed else ''}-{i}",
                                 daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> MixedResult:
        """Stop sending, wait for the requests in flight (each bounded by `timeout`)."""
        self._stop.set()
        deadline = time.monotonic() + self.timeout + 5
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = sum(t.is_alive() for t in self._threads)
        with self._lock:
            return MixedResult(list(self._records), time.monotonic() - self._t0, stuck)

    # -- live counters, for waiting on something to happen ---------------------------------------

    @property
    def done(self) -> int:
        with self._lock:
            return len(self._records)

    def count(self, outcome: str = "ok") -> int:
        with self._lock:
            return sum(1 for r in self._records if r.outcome == outcome)

    # -- one thread per connection --------------------------------------------------------------

    def _may_send(self) -> bool:
        with self._lock:
            if self._stop.is_set() or time.monotonic() - self._t0 >= self.duration:
                return False
            if self._started >= self.max_requests:
                return False
            self._started += 1
            return True

    def _worker(self, index: int, method: str, keyed: bool) -> None:
        conn: RawConnection | None = None
        n = 0
        while self._may_send():
            n += 1
            test_id = f"{self.prefix}-{index}-{n}"
            conn = self._one(conn, test_id, method, keyed)
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def _one(self, conn: RawConnection | None, test_id: str, method: str,
             keyed: bool) -> RawConnection | None:
        """Send one request once; record it; the connection if it may carry the next one."""
        path = self.get_path if method == "GET" else self.post_path
        at = time.monotonic()
        reused, status, outcome, detail = (conn.responses if conn else 0), None, "ok", ""
        try:
            if conn is None:
                conn = RawConnection(self.port, self.timeout)
            response = conn.request(self._request_bytes(test_id, method, path, keyed))
            status = response.status
            if not 200 <= status < 300:
                outcome, detail = "status", f"status {status}"
            if not response.keep_alive:
                conn.close()
                conn = None
        except RequestFailed as exc:  # the connection is closed already
            outcome, detail, conn = exc.outcome, exc.detail, None
        except Exception as exc:  # a bug here must show up as a record, not end the thread
            outcome, detail, conn = "malformed", f"load client error: {exc!r}", None
        now = time.monotonic()
        with self._lock:
            self._records.append(Record(test_id, method, path, keyed, outcome, status, detail,
                                        reused, at - self._t0, now - at))
        if outcome == "refused":
            time.sleep(0.01)  # do not spin on a port that refuses connections
        return conn

    def _request_bytes(self, test_id: str, method: str, path: str, keyed: bool) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nX-Test-Id: {test_id}\r\n"
        if keyed:
            head += f"Idempotency-Key: key-{test_id}\r\n"
        if method == "GET":
            return (head + self._extra + "\r\n").encode()
        body = json.dumps({"id": test_id, "amount": 1}).encode()
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return (head + self._extra + "\r\n").encode() + body


# -- what the client was told against what the app did ------------------------------------------

@dataclass
class AppliedCheck:
    answered_not_applied: list[str]   # 2xx to the client, but the app never applied it
    failed_but_applied: list[str]     # the client saw a failure, yet the app applied it
    applied_twice: dict[str, int]     # applied more than once: id -> times
    kinds: dict[str, str]             # id -> "GET" / "POST" / "POST+key", for the above

    def by_kind(self, ids) -> Counter:
        return Counter(self.kinds[i] for i in ids)

    @property
    def clean(self) -> bool:
        return not (self.answered_not_applied or self.applied_twice)


def check_applied(result: MixedResult, applied_lines: list[dict]) -> AppliedCheck:
    """Compare every request that should have an effect (paths in APPLYING_PATHS) with the
    "applied" lines of the app's log (SwooleServer.applied(), of every server involved).

    An id may lawfully be applied once whatever the client saw: a request that failed
    at the client may still have run (the answer was lost), and counts in
    failed_but_applied; a POST answered 2xx and never applied, or anything applied
    twice, is a real defect."""
    times = Counter(line.get("test_id") for line in applied_lines
                    if line.get("event", "applied") == "applied")
    writes = [r for r in result.records if r.path.split("?", 1)[0] in APPLYING_PATHS]
    return AppliedCheck(
        answered_not_applied=[r.id for r in writes if r.outcome == "ok" and not times[r.id]],
        failed_but_applied=[r.id for r in writes if r.outcome != "ok" and times[r.id]],
        applied_twice={r.id: times[r.id] for r in writes if times[r.id] > 1},
        kinds={r.id: r.kind for r in writes})
