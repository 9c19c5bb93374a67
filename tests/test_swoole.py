"""The proxy in front of real Swoole servers with Hyperf's skeleton settings.

What users run: SWOOLE_BASE, coroutines, `max_request`, `max_wait_time` 3 s,
`package_max_length` 2 MB (tests/swoole/http_app.php, ws_app.php).  Worker
recycling, graceful stops, WebSocket servers and early 413s are normal life
here.  Every client in this file sends each request once (MixedLoad, raw
sockets, wrk): what it counts is what a user would have seen, and the app's own
log says what ran.  The long side-by-side versions (with HAProxy) are
`benchmarks/swoole_faults.py`.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from websockets.sync.client import connect as ws_connect

from .support import (ROOT, Activated, Notifications, ProxyProcess, listening_socket,
                      parse_responses, raw_exchange, upstream_status, wait_for)
from .swoolekit import MixedLoad, SwooleServer, check_applied, require_swoole

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", autouse=True)
def _swoole():
    require_swoole()  # fails, never skips: CI installs Swoole (.ci/run)


@pytest.fixture
def servers(tmp_path):
    """servers(name, **settings) -> a started SwooleServer, stopped after the test."""
    made = []

    def make(name="blue", **settings) -> SwooleServer:
        server = SwooleServer(tmp_path / "swoole", name=name, **settings).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()


@pytest.fixture
def proxy_for(start_proxy):
    """proxy_for(blue=[servers], green=[servers], extra=...) -> a started ProxyProcess
    (green, when empty, is an address nothing listens on)."""
    def start(blue, green=(), extra="", weights=None) -> ProxyProcess:
        return start_proxy([s.address for s in blue],
                           [s.address for s in green] or ["127.0.0.1:1"],
                           weights=weights, extra=extra)
    return start


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# Send raw bytes, read until the proxy closes or has answered in full.
_raw = functools.partial(raw_exchange, timeout=10.0, until_close=False)


# -- worker recycling -----------------------------------------------------------------------

def test_worker_recycling_runs_nothing_twice_and_loses_no_keyed_post(servers, proxy_for):
    """SWOOLE_BASE, max_request 300: workers recycle every few hundred requests.

    A request the recycling worker never read is reset by its kernel and sent
    again; one the worker read is never sent twice (keyed ones may be).  What
    Swoole itself reads and drops in a worker that is exiting (it answers
    nothing, see README "When a request is sent again") cannot be told apart
    from a request that ran, so a few unkeyed ones get a 502; the benchmark
    prints those counts next to HAProxy's."""
    blue = servers("blue", max_request=300)
    proxy = proxy_for([blue])
    with MixedLoad(proxy.port, get_connections=8, post_connections=2, keyed_connections=2,
                   duration=8, get_path="/write") as load:
        time.sleep(8.5)
        result = load.stop()
    check = check_applied(result, blue.applied())
    recycled = len(blue.events("worker_start")) - 2
    print(f"{recycled} recycles\n{result.summary()}")
    assert recycled >= 5, "the load did not make Swoole recycle its workers"
    assert check.applied_twice == {}
    assert check.answered_not_applied == []
    assert result.failed("POST+key") == []
    assert check.failed_but_applied == []  # what failed had not run: nothing half-done
    ups = proxy.status()["pools"]["blue"]["upstreams"][0]
    assert ups["resent"] > 0 and ups["closes"] >= ups["resent"]
    assert proxy.event("upstream_closed_under_request")["hint"].startswith("Swoole closed")
    failed = len(result.failed())
    assert failed <= 0.02 * result.requests, result.summary()


def test_swoole_stopping_mid_request_gives_a_clean_502_and_runs_it_once(servers, proxy_for):
    one = servers("one", max_wait_time=1, log=None)
    two = servers("two", max_wait_time=1)
    proxy = proxy_for([one, two])
    answers = []

    def slow() -> None:
        answers.append(_raw(proxy.port, b"GET /slow?ms=1500 HTTP/1.1\r\nHost: t\r\n"
                                        b"X-Test-Id: slow-1\r\n\r\n"))

    t = threading.Thread(target=slow)
    t.start()
    holder = wait_for(lambda: next((s for s in (one, two) if s.events("started")), None),
                      what="the slow request running on one upstream")
    holder.stop()  # SIGTERM: the worker gets max_wait_time (1 s), then is killed
    t.join(10)
    (status, _, _), = parse_responses(answers[0])
    assert status == 502
    started = [line for s in (one, two) for line in s.log_lines()
               if line.get("test_id") == "slow-1" and line.get("event") == "started"]
    assert len(started) == 1  # never sent to the other upstream
    wait_for(lambda: not upstream_status(proxy, "blue", holder.address)["healthy"],
             what="the stopped upstream down")
    holder.start()
    wait_for(lambda: upstream_status(proxy, "blue", holder.address)["healthy"],
             what="the restarted upstream back")


# -- deploys --------------------------------------------------------------------------------

def test_four_deploy_cycles_under_load_fail_nothing(servers, proxy_for, tmp_path):
    blue = servers("blue")
    green = SwooleServer(tmp_path / "swoole", name="green")
    proxy = proxy_for([blue], [green])
    colors = {"blue": blue, "green": green}
    live = "blue"
    with MixedLoad(proxy.port, get_connections=8, post_connections=2, keyed_connections=1,
                   duration=90) as load:
        for _ in range(4):
            idle = "green" if live == "blue" else "blue"
            colors[idle].start()
            assert proxy.cli("cutover", idle).returncode == 0
            assert proxy.cli("drain", live, "--wait").returncode == 0
            colors[live].stop()
            live = idle
            time.sleep(0.5)
        result = load.stop()
    applied = blue.applied() + green.applied()
    check = check_applied(result, applied)
    print(result.summary())
    assert result.failed() == [], result.summary()
    assert check.applied_twice == {} and check.answered_not_applied == []
    assert result.requests > 500


# -- early answers --------------------------------------------------------------------------

def test_swoole_413_over_package_max_length_reaches_the_client(servers, proxy_for):
    """The proxy's own limit raised past Swoole's: Swoole answers 413 while the
    body is still being sent, and the client gets that 413, not a 502."""
    blue = servers("blue")
    proxy = proxy_for([blue], extra="limits: {max_body: 8MB}\n")
    body = b"x" * (3 * 2**20)
    out = _raw(proxy.port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
               % (len(body), body))
    assert out.startswith(b"HTTP/1.1 413 "), out[:200]
    assert proxy.status()["pools"]["blue"]["errors"] == 0  # the app's answer, not our failure


def test_a_body_over_the_default_limit_is_refused_before_the_upload(servers, proxy_for):
    """Expect: 100-continue with a body Swoole would refuse: the default max_body
    answers 413 at once, so the client never sends it; the upstream sees nothing."""
    blue = servers("blue")
    proxy = proxy_for([blue])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2097152\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert blue.applied() == []


def test_the_largest_body_the_proxy_takes_is_one_swoole_takes(servers, proxy_for):
    """max_body's default counts the head the proxy adds: at the limit, with a
    large head, Swoole still answers 200."""
    blue = servers("blue")
    proxy = proxy_for([blue])
    body = b"y" * (2 * 2**20 - 64 * 2**10)
    big_head = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 900) for i in range(30))  # ~28 KB
    out = _raw(proxy.port, b"POST /echo HTTP/1.1\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n%s"
               % (big_head, len(body), body))
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    assert b'"length":%d' % len(body) in out


def test_a_204_reaches_the_client_without_content_length(servers, proxy_for):
    blue = servers("blue")
    proxy = proxy_for([blue])
    out = _raw(proxy.port, b"GET /status/204 HTTP/1.1\r\nHost: t\r\n\r\n", timeout=3)
    head = out.split(b"\r\n\r\n")[0].lower()
    assert out.startswith(b"HTTP/1.1 204 ") and b"content-length" not in head


def test_the_sticky_cookie_is_not_forwarded_to_the_app(servers, proxy_for):
    blue = servers("blue")
    proxy = proxy_for([blue])
    first = _raw(proxy.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    cookie = re.search(rb"Set-Cookie: (switchyard_pool=[^;]+)", first)[1]
    _raw(proxy.port, b"GET /write HTTP/1.1\r\nHost: t\r\nX-Test-Id: c1\r\n"
                     b"Cookie: PHPSESSID=abc; %s; lang=en\r\n\r\n" % cookie)
    line, = [x for x in blue.applied() if x["test_id"] == "c1"]
    assert line["cookie"] == "PHPSESSID=abc; lang=en"


# -- WebSockets -----------------------------------------------------------------------------

@pytest.mark.parametrize("ending", ["client", "server", "reset"])
def test_websocket_sessions_leave_no_fd_and_no_inflight_behind(servers, proxy_for, ending):
    ws = servers("blue", app="ws")
    proxy = proxy_for([ws])
    url = f"ws://127.0.0.1:{proxy.port}/chat"
    with ws_connect(url) as warm:  # the first session opens the upstream pool's files
        warm.send("hi")
        assert warm.recv(timeout=5) == "hi"
    wait_for(lambda: proxy.status()["pools"]["blue"]["inflight"] == 0, what="warm-up done")
    baseline = _fds(proxy.proc.pid)
    n = 1000
    for i in range(n):
        _session(url, ending, i)
    wait_for(lambda: proxy.status()["pools"]["blue"]["inflight"] == 0, 15,
             what=f"in-flight back to 0 after {n} sessions ended by the {ending}")
    wait_for(lambda: _fds(proxy.proc.pid) <= baseline + 2, 15,
             what=f"proxy fds back to {baseline} (now {_fds(proxy.proc.pid)})")
    wait_for(lambda: len([r for r in proxy.events("request") if r["status"] == 101]) >= n + 1,
             15, what="one access line per session")


def _session(url: str, ending: str, i: int) -> None:
    if ending == "reset":
        _reset_session(int(url.split(":")[2].split("/")[0]), f"m{i}".encode())
        return
    with ws_connect(url) as conn:
        conn.send(f"m{i}")
        assert conn.recv(timeout=5) == f"m{i}"
        if ending == "server":
            conn.send("close-me")
            try:
                conn.recv(timeout=5)
            except Exception:  # noqa: BLE001 - the close the server started
                pass


def _reset_session(port: int, message: bytes) -> None:
    """A raw WebSocket session: handshake, one echoed frame, then an RST (SO_LINGER 0)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    assert got.startswith(b"HTTP/1.1 101 "), got
    mask = b"\x01\x02\x03\x04"
    s.sendall(bytes([0x81, 0x80 | len(message)]) + mask
              + bytes(b ^ mask[j % 4] for j, b in enumerate(message)))
    echo = got.split(b"\r\n\r\n", 1)[1]
    while len(echo) < 2 + len(message):
        echo += s.recv(4096)
    assert echo[2:2 + len(message)] == message
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


# -- restarts of the proxy itself -----------------------------------------------------------

def test_three_proxy_restarts_under_wrk_fail_no_request(servers, tmp_path):
    """Socket activation emulated (tests/test_restart.py): the test holds the
    listening socket; each proxy process gets it as fd 3.  wrk does not retry."""
    blue = servers("blue")
    listener = listening_socket()
    port = listener.getsockname()[1]
    cfg = ProxyProcess(tmp_path, {"blue": [blue.address], "green": ["127.0.0.1:1"]},
                       {"blue": 100, "green": 0})
    notify = Notifications(os.path.join(os.path.dirname(cfg.admin), "notify.sock"))
    try:
        proxy = Activated(cfg.config_path, listener, notify.path)
        notify.wait("READY=1")
        # --timeout: a slow start of the next process on a busy machine is not an error.
        wrk = subprocess.Popen(["wrk", "-t2", "-c50", "-d12s", "--timeout", "10s",
                                f"http://127.0.0.1:{port}/"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        for _ in range(3):
            notify.messages.clear()
            assert proxy.stop() == 0
            proxy = Activated(cfg.config_path, listener, notify.path)
            notify.wait("READY=1")
            time.sleep(1.5)
        out, _ = wrk.communicate(timeout=30)
        assert proxy.stop() == 0
    finally:
        notify.close()
        listener.close()
    print(out)
    requests = int(re.search(r"(\d+) requests in", out)[1])
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    assert requests > 1000


# -- rolling updates inside a pool ----------------------------------------------------------

class _Restarter:
    """What `systemctl restart hyperf@blue-PORT` is to systemd/rolling.sh, for a test:
    GET http://127.0.0.1:PORT/restart/UPSTREAM_PORT stops and starts that Swoole server."""

    def __init__(self, servers: dict[int, SwooleServer]) -> None:
        import http.server

        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                port = int(self.path.rsplit("/", 1)[1])
                server = servers[port]
                server.stop()
                server.start()
                owner.restarted.append(port)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.restarted: list[int] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def command(self) -> str:
        return (f"{sys.executable} -c \"import urllib.request; urllib.request.urlopen("
                f"'http://127.0.0.1:{self.port}/restart/{{port}}', timeout=60)\"")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _switchyard_command(tmp_path, proxy: ProxyProcess) -> str:
    """An executable that is `switchyard --socket ADMIN`, as rolling.sh calls it."""
    path = tmp_path / "switchyard"
    path.write_text(f"#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m proxy.cli \"$@\" "
                    f"--socket {proxy.admin}\n")
    path.chmod(0o755)
    return str(path)


def test_rolling_restart_of_a_three_instance_pool_fails_nothing(servers, proxy_for, tmp_path):
    pool = [servers(f"blue{i}") for i in range(3)]
    proxy = proxy_for(pool)
    restarter = _Restarter({s.port: s for s in pool})
    env = dict(os.environ, SWITCHYARD=_switchyard_command(tmp_path, proxy),
               RESTART=restarter.command(), HEALTH_WAIT_SECONDS="30", DRAIN_TIMEOUT="10s",
               HEALTH_SETTLE_SECONDS="1")
    try:
        with MixedLoad(proxy.port, get_connections=8, post_connections=2, keyed_connections=1,
                       duration=120) as load:
            time.sleep(1)
            done = subprocess.run(["bash", os.path.join(ROOT, "systemd", "rolling.sh"), "blue"],
                                  env=env, capture_output=True, text=True, timeout=150)
            time.sleep(1)
            result = load.stop()
    finally:
        restarter.close()
    print(done.stderr, result.summary())
    assert done.returncode == 0, done.stderr
    assert sorted(restarter.restarted) == sorted(s.port for s in pool)
    check = check_applied(result, [line for s in pool for line in s.applied()])
    assert result.failed() == [], result.summary()
    assert check.applied_twice == {} and check.answered_not_applied == []
    ups = proxy.status()["pools"]["blue"]["upstreams"]
    assert [(u["enabled"], u["healthy"]) for u in ups] == [(True, True)] * 3
    assert len(proxy.events("upstream_drained")) == 3 and len(proxy.events("upstream_enabled")) == 3


def test_the_last_healthy_upstream_cannot_be_disabled_and_disabling_survives_a_restart(
        servers, proxy_for):
    one, two = servers("blue1"), servers("blue2")
    proxy = proxy_for([one, two])
    assert proxy.cli("upstream", "disable", "blue", one.address).returncode == 0
    refused = proxy.cli("upstream", "disable", "blue", two.address)
    assert refused.returncode == 1 and "no enabled, healthy upstream" in refused.stderr
    generation = proxy.status()["generation"]
    stale = proxy.cli("upstream", "enable", "blue", one.address, "--if-match",
                      str(generation - 1))
    assert stale.returncode == 1 and "412" in stale.stderr
    for _ in range(20):  # every request goes to the enabled one
        out = _raw(proxy.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 ") and b"X-Pool: blue2" in out
    proxy.restart()  # same state file
    ups = {u["address"]: u["enabled"] for u in proxy.status()["pools"]["blue"]["upstreams"]}
    assert ups == {one.address: False, two.address: True}
    assert proxy.status()["generation"] == generation
