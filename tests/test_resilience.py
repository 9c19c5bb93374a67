"""Resilience (docs/SPEC.md §3): slow and hostile clients, dying upstreams, stale upstream
connections, WebSockets, connection limits, forwarding headers and retries.

A real proxy process, real upstream processes or raw-socket upstreams, real
clients.  Deadlines are configured at 1 s and observed only loosely: "closed
within 10 s and not before 0.5 s".  Every loop is bounded in count and time.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import resource
import select
import socket
import sys
import time
import uuid
from collections import Counter

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from .loadclient import LoadClient
from .support import (
    PoolProcess,
    ProxyProcess,
    RecordingUpstream,
    ServerProcess,
    cookie_for,
    get,
    open_conn,
    parse_responses,
    raw_exchange,
    read_response,
    read_until_closed,
    request_fields,
    rss_mb,
    upstream_status,
    wait_for,
)

# A 1 s deadline must fire after at least this long, and within this bound.
NOT_BEFORE = 0.5
WITHIN = 10.0
MB = 1024 * 1024


# -- upstreams ---------------------------------------------------------------------------

class IdleClosingUpstream(RecordingUpstream):
    """Answers the first request of each connection with `Connection: keep-alive`,
    then closes the connection a moment later (0, 0.5, 5 or 50 ms) without
    reading from it again: what a keep-alive upstream whose idle timer fires,
    or a Swoole worker past `max_request`, looks like to a proxy that reused the
    connection.  A request that arrived within that moment stays unread, so the
    kernel answers the close with a reset (counted in `stale_hits`); the
    application never sees it.
    """

    DELAYS = (0.0, 0.0005, 0.005, 0.05)

    def __init__(self) -> None:
        self._random = random.Random(1234)
        self.stale_hits = 0  # connections closed with a request waiting, unread
        super().__init__(self._respond)

    def _respond(self, request: bytes):
        return lambda conn: self._answer_then_close(conn, request)

    def _answer_then_close(self, conn, request: bytes) -> None:
        body = b"ok " + request.rsplit(b"\r\n\r\n", 1)[1]
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        time.sleep(self._random.choice(self.DELAYS))
        try:
            if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                self.stale_hits += 1
        except BlockingIOError:
            pass
        raise ConnectionAbortedError  # RecordingUpstream closes the connection, unread


class ReadThenDropUpstream(RecordingUpstream):
    """Answers the first request of each connection; reads the next one in full
    (recorded in `requests`) and closes without an answer: a worker that took
    the request and then died.  The proxy cannot tell whether it ran."""

    def __init__(self) -> None:
        self._answered: set = set()
        self.dropped = 0
        super().__init__(self._respond)

    def _respond(self, request: bytes):
        return lambda conn, request=request: self._answer(conn, request)

    def _answer(self, conn, request: bytes) -> None:
        if conn in self._answered:
            self.dropped += 1
            raise ConnectionAbortedError  # closed with nothing unread: a plain FIN
        self._answered.add(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


_ECHO_APP = r"""
import asyncio, sys
from aiohttp import web, WSMsgType

name = sys.argv[1]

async def root(request):
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return web.Response(text=name, headers={"X-Pool": name})
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(f"{name}:{msg.data}")
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(name.encode() + b":" + msg.data)
    return ws

async def health(request):
    return web.Response(text="ok")

async def main():
    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/{tail:.*}", root)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("listening", site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def echo_pool(name: str) -> ServerProcess:
    """An aiohttp WebSocket echo server in its own process; replies carry its name."""
    return ServerProcess([sys.executable, "-c", _ECHO_APP, name], f"echo pool {name}")


# -- fixtures and helpers --------------------------------------------------------------

@pytest.fixture
def echo_pools():
    blue, green = echo_pool("blue"), echo_pool("green")
    yield blue, green
    blue.stop()
    green.stop()


def assert_deadline(started: float, closed: float | None, what: str) -> float:
    """A 1 s deadline: closed, within WITHIN seconds and not before NOT_BEFORE."""
    assert closed is not None, f"{what}: still open after {WITHIN}s"
    elapsed = closed - started
    assert NOT_BEFORE <= elapsed <= WITHIN, f"{what}: closed after {elapsed:.2f}s"
    print(f"{what}: closed after {elapsed:.2f}s")
    return elapsed


def served_by(proxy: ProxyProcess, address: str) -> int:
    """Requests the access log shows answered 200 by one upstream."""
    return sum(1 for line in proxy.events("request")
               if line.get("upstream") == address and line.get("status") == 200)


def data_plane_errors(proxy: ProxyProcess) -> str:
    """What the proxy logged about failed or retried exchanges, for failure messages:
    one JSON line per event, plus the access lines of requests that did not get a 2xx."""
    return "\n".join(json.dumps(line) for line in list(proxy.lines)
                     if line.get("event") != "server_started" and "detail" in line
                     or line.get("event") == "request" and not 200 <= line.get("status", 0) < 300)


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- slow clients ----------------------------------------------------------------------

def test_slowloris_trickling_header_bytes_is_cut_after_client_header_and_reaches_no_upstream(
        start_proxy, upstreams):
    rec = upstreams()
    proxy = start_proxy([rec.address], [rec.address], extra="timeouts: {client_header: 1s}\n")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Trickle: ")
        out, closed = b"", None
        for _ in range(40):  # one header byte every 300 ms, 12 s at most
            ready, _, _ = select.select([s], [], [], 0.3)
            if ready:
                out, closed = read_until_closed(s, 2.0)
                break
            try:
                s.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = time.monotonic()
                break
    assert_deadline(started, closed, "slowloris head")
    print("slowloris head answered", out.partition(b"\r\n")[0] or "nothing")
    assert out == b"" or out.startswith(b"HTTP/1.1 408 "), out
    assert rec.forwarded() == b""


def test_idle_keepalive_connection_is_closed_silently_after_client_idle(start_proxy, pools):
    blue, green = pools
    proxy = start_proxy([blue.address], [green.address], extra="timeouts: {client_idle: 1s}\n")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_response(s)
        answered = time.monotonic()
        assert b"Hello from blue" in answer, f"closed before the answer: {answer!r}"
        (status, headers, _), = parse_responses(answer)
        assert status == 200 and "close" not in headers.get("connection", [""])[0].lower()
        out, closed = read_until_closed(s)
    assert_deadline(answered, closed, "idle keep-alive connection")
    assert out == b""  # nothing unsolicited: no 408 a client could take for its next answer


def test_slow_request_body_gets_408_after_client_body_and_reaches_no_upstream(
        start_proxy, upstreams):
    rec = upstreams()
    proxy = start_proxy([rec.address], [rec.address], extra="timeouts: {client_body: 1s}\n")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"b" * 10)
        started = time.monotonic()
        out, closed = read_until_closed(s)
    assert_deadline(started, closed, "slow body")
    print("slow body answered", out.partition(b"\r\n")[0] or "nothing")
    assert out == b"" or out.startswith(b"HTTP/1.1 408 "), out
    assert rec.forwarded() == b""


def test_slow_reader_is_not_buffered_in_memory_and_is_cut_after_client_send(
        start_proxy, upstreams):
    size = 32 * MB
    pushed = [0]  # bytes the upstream managed to hand to its kernel

    def big(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        chunk = b"z" * 65536
        for _ in range(size // len(chunk)):
            conn.sendall(chunk)
            pushed[0] += len(chunk)

    rec = upstreams()
    rec.respond = lambda req: big if b" /big " in req.split(b"\r\n", 1)[0] else (
        b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n" + b"w" * 65536)
    proxy = start_proxy([rec.address], [rec.address], extra="timeouts: {client_send: 1s}\n")
    conn = open_conn(proxy.port)
    for _ in range(20):  # warm the paths a response takes before the baseline
        assert get(conn, "/warm")[0].status == 200
    baseline = rss_mb(proxy.proc.pid)

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(5)
    with s:
        s.connect(("127.0.0.1", proxy.port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while len(got) < 65536:
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 ")
        stopped = time.monotonic()  # from here on the client reads nothing
        peak = baseline
        cut = None
        while time.monotonic() - stopped < WITHIN and cut is None:
            peak = max(peak, rss_mb(proxy.proc.pid))
            if proxy.events("client_send_timeout"):
                cut = time.monotonic()
            time.sleep(0.05)
        for _ in range(10):  # a little longer, in case memory grows after the cut
            peak = max(peak, rss_mb(proxy.proc.pid))
            time.sleep(0.05)
        print(f"slow reader: proxy RSS baseline {baseline:.1f} MB, peak {peak:.1f} MB "
              f"(+{peak - baseline:.1f} MB); upstream pushed {pushed[0] / MB:.1f} MB")
        assert_deadline(stopped, cut, "slow reader")
        rest, closed = read_until_closed(s, 30.0)
    assert closed is not None, "the client connection was not cut"
    assert len(got) + len(rest) < size, "the whole response reached a client that was cut"
    assert peak - baseline < 24, f"proxy RSS grew by {peak - baseline:.1f} MB"
    assert pushed[0] < size  # backpressure reached the upstream


def test_a_thousand_slowloris_connections_do_not_stop_normal_requests(start_proxy, pools):
    blue, green = pools
    n = 1000
    raise_nofile(n + 200)
    proxy = start_proxy([blue.address], [green.address],
                        extra="timeouts: {client_header: 30s}\n")
    baseline = rss_mb(proxy.proc.pid)
    slow: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            slow.append(s)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)  # let the proxy take in every partial head
        conn = open_conn(proxy.port, timeout=5)
        resp, body = get(conn)
        assert resp.status == 200 and body.startswith(b"Hello from blue")
        rss = rss_mb(proxy.proc.pid)
        print(f"{n} slowloris connections: proxy RSS {rss:.1f} MB (baseline {baseline:.1f} MB)")
        still_open = sum(1 for s in slow if not select.select([s], [], [], 0)[0])
        assert still_open == n  # none was answered or closed before client_header
        assert rss < 150
    finally:
        for s in slow:
            s.close()


# -- dying upstreams and stale connections ------------------------------------------------

def test_upstream_killed_under_load_fails_only_what_it_held_and_comes_back_when_restarted(
        start_proxy):
    one, two, green = PoolProcess("blue"), PoolProcess("blue"), PoolProcess("green")
    try:
        proxy = start_proxy([one.address, two.address], [green.address])
        with LoadClient(proxy.port, connections=8, duration=60) as load:
            wait_for(lambda: load.ok > 300, 30, what="traffic before the kill")
            one.proc.kill()  # SIGKILL: no goodbye, connections reset, connects refused
            wait_for(lambda: not upstream_status(proxy, "blue", one.address)["healthy"],
                     what="the killed upstream shown down")
            before = load.ok
            wait_for(lambda: load.ok > before + 300, what="traffic after the kill")
            served_before = served_by(proxy, one.address)
            restarted = PoolProcess("blue", port=one.port)
            try:
                wait_for(lambda: upstream_status(proxy, "blue", one.address)["healthy"],
                         what="the restarted upstream shown healthy")
                wait_for(lambda: served_by(proxy, one.address) > served_before + 100,
                         what="traffic to the restarted upstream")
                result = load.stop()
            finally:
                restarted.stop()
        # The GETs the killed process had read may have run: they get a 502, not
        # a second run (retry.py).  Each of the 8 connections had at most one.
        assert set(result.failures) <= {"status 502"}, \
            f"{Counter(result.failures)}\n{data_plane_errors(proxy)}"
        assert len(result.failures) <= 8
        assert result.by_pool["blue"] == result.ok
        assert result.ok > 900
        print(f"kill -9 under load: {result.ok} GETs, client-side retries {result.retries}, "
              f"proxy retries {len(proxy.events('upstream_retry'))}")
    finally:
        for pool in (one, two, green):
            pool.stop()


def _run_posts(port: int, n: int, headers=lambda post_id: {}) -> dict[str, int | str]:
    """`n` POSTs on one keep-alive connection (a new one after a failure), no retries."""
    conn = open_conn(port)
    statuses: dict[str, int | str] = {}
    for _ in range(n):
        post_id = uuid.uuid4().hex
        try:
            conn.request("POST", "/order", body=f"id={post_id}".encode(), headers=headers(post_id))
            resp = conn.getresponse()
            resp.read()
            statuses[post_id] = resp.status
        except (OSError, http.client.HTTPException) as exc:
            statuses[post_id] = repr(exc)
            conn = open_conn(port)
    return statuses


def _posts_seen(rec) -> Counter:
    return Counter(req.rsplit(b"\r\n\r\n", 1)[1].decode()[3:] for req in list(rec.requests)
                   if req.startswith(b"POST "))


def test_requests_left_unread_by_a_closing_upstream_are_resent_without_client_errors(
        start_proxy, upstreams):
    rec = upstreams(IdleClosingUpstream)
    proxy = start_proxy([rec.address], [rec.address])
    conn = open_conn(proxy.port)
    errors = []
    for i in range(300):
        try:
            resp, body = get(conn, f"/g{i}")
            if resp.status != 200:
                errors.append((i, resp.status, body))
        except (OSError, http.client.HTTPException) as exc:
            errors.append((i, repr(exc)))
            conn = open_conn(proxy.port)
    statuses = _run_posts(proxy.port, 200)
    seen = _posts_seen(rec)
    retries = proxy.events("upstream_retry")
    print(f"unread requests: {rec.stale_hits} reset by the upstream, {len(retries)} resent")
    assert errors == []
    assert Counter(statuses.values()) == Counter({200: 200})  # POSTs too: provably unread
    assert [i for i, n in seen.items() if n > 1] == []
    assert rec.stale_hits > 0  # the race did happen, many times
    assert {r["delivery"] for r in retries} == {"unread"}
    status = proxy.status()["pools"]["blue"]["upstreams"][0]
    assert status["closes"] >= rec.stale_hits and status["resent"] == status["closes"]
    assert proxy.event("upstream_closed_under_request")["hint"].startswith("Swoole closed")


def test_a_request_read_and_dropped_by_the_upstream_is_never_resent(start_proxy, upstreams):
    rec = upstreams(ReadThenDropUpstream)
    proxy = start_proxy([rec.address], [rec.address])
    gets = []
    conn = open_conn(proxy.port)
    for i in range(40):
        resp, _ = get(conn, f"/g{i}")
        gets.append(resp.status)
    statuses = _run_posts(proxy.port, 40)
    seen = _posts_seen(rec)
    got = Counter(req.split(b" ", 2)[1] for req in list(rec.requests) if req.startswith(b"GET /g"))
    assert rec.dropped > 0
    assert set(gets) <= {200, 502} and 502 in gets
    assert set(statuses.values()) <= {200, 502} and 502 in statuses.values()
    assert [p for p, n in got.items() if n > 1] == []  # a GET the app may have run: not again
    assert [i for i, n in seen.items() if n > 1] == []
    assert proxy.events("upstream_retry") == []


def test_a_keyed_post_dropped_by_the_upstream_is_resent(start_proxy, upstreams):
    rec = upstreams(ReadThenDropUpstream)
    proxy = start_proxy([rec.address], [rec.address])
    statuses = _run_posts(proxy.port, 40, headers=lambda post_id: {"Idempotency-Key": post_id})
    assert rec.dropped > 0
    assert Counter(statuses.values()) == Counter({200: 40})
    retries = proxy.events("upstream_retry")
    assert len(retries) == rec.dropped and {r["delivery"] for r in retries} == {"unknown"}


# -- WebSockets ---------------------------------------------------------------------------

def test_websocket_echoes_text_and_binary_and_sticks_to_the_cookie_pool(start_proxy, echo_pools):
    blue, green = echo_pools
    proxy = start_proxy([blue.address], [green.address], weights={"blue": 50, "green": 50})
    cookies = {pool: cookie_for(proxy, pool) for pool in ("blue", "green")}
    for pool in ("green", "blue"):
        for _ in range(10):  # 10 handshakes: drawn by weight, 1 in 1024 would all match
            with ws_connect(f"ws://127.0.0.1:{proxy.port}/ws",
                            additional_headers={"Cookie": cookies[pool]},
                            open_timeout=5, close_timeout=2) as ws:
                ws.send("hello")
                assert ws.recv(timeout=5) == f"{pool}:hello"
                ws.send(b"\x00\x01\xffbinary")
                assert ws.recv(timeout=5) == pool.encode() + b":\x00\x01\xffbinary"
    big = os.urandom(256 * 1024)
    with ws_connect(f"ws://127.0.0.1:{proxy.port}/ws", additional_headers={"Cookie": cookies["green"]},
                    open_timeout=5, close_timeout=2) as ws:
        ws.send(big)
        assert ws.recv(timeout=10) == b"green:" + big


def test_drain_counts_an_open_websocket_in_flight_and_closes_it_after_the_drain_timeout(
        start_proxy, echo_pools):
    blue, green = echo_pools
    proxy = start_proxy([blue.address], [green.address], weights={"blue": 50, "green": 50},
                        extra="timeouts: {drain: 1s}\n")
    cookies = {pool: cookie_for(proxy, pool) for pool in ("blue", "green")}
    url = f"ws://127.0.0.1:{proxy.port}/ws"
    with ws_connect(url, additional_headers={"Cookie": cookies["green"]}, open_timeout=5,
                    close_timeout=2) as to_green, \
         ws_connect(url, additional_headers={"Cookie": cookies["blue"]}, open_timeout=5,
                    close_timeout=2) as to_blue:
        to_green.send("before")
        assert to_green.recv(timeout=5) == "green:before"
        status = proxy.status()["pools"]
        assert status["green"]["inflight"] == 1 and status["blue"]["inflight"] == 1
        assert [u["inflight"] for u in status["green"]["upstreams"]] == [1]

        proxy.cli("drain", "green", check=True)
        drained = time.monotonic()
        to_green.send("during")  # in flight on green, it keeps working until the timeout
        assert to_green.recv(timeout=5) == "green:during"
        closed = None
        for _ in range(2 * int(WITHIN)):
            try:
                to_green.recv(timeout=0.5)
            except TimeoutError:
                continue
            except ConnectionClosed:
                closed = time.monotonic()
                break
        assert_deadline(drained, closed, "WebSocket to a drained pool")
        to_blue.send("still here")  # the other pool's WebSocket is untouched
        assert to_blue.recv(timeout=5) == "blue:still here"
    wait_for(lambda: proxy.status()["pools"]["green"]["inflight"] == 0,
             what="green in-flight back to 0")


# -- limits -----------------------------------------------------------------------------

def test_at_the_connection_cap_the_longest_idle_keepalive_connection_makes_room(
        start_proxy, pools):
    blue, green = pools
    proxy = start_proxy([blue.address], [green.address], extra="limits: {max_connections: 20}\n")
    conns = [open_conn(proxy.port) for _ in range(20)]
    for conn in conns:  # each one accepted and served, conns[0] first
        assert get(conn)[0].status == 200
    newcomer = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    newcomer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    (status, _, _), = parse_responses(read_response(newcomer))
    assert status == 200  # served, not refused
    newcomer.close()
    conns[0].sock.settimeout(5)
    assert conns[0].sock.recv(1) == b""  # the longest idle was closed to admit it
    for conn in conns[1:]:  # the others are still served
        assert get(conn)[0].status == 200


def test_a_connection_over_the_cap_gets_503_only_when_every_connection_is_busy(
        start_proxy, pools):
    blue, green = pools
    proxy = start_proxy([blue.address], [green.address], extra="limits: {max_connections: 20}\n")
    busy = []
    for _ in range(20):  # each in the middle of sending a request head
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        busy.append(s)
    try:
        wait_for(lambda: proxy.status() and True, what="status")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            out, closed = read_until_closed(s, 5.0)
        assert closed is not None, "the connection over the limit was left open"
        (status, headers, _), = parse_responses(out)
        assert status == 503 and headers["connection"] == ["close"]
        for s in busy[:5]:  # five heads finish: answered, then idle, then evictable
            s.sendall(b"\r\n")
            assert parse_responses(read_response(s))[0][0] == 200
        conn = open_conn(proxy.port)
        assert get(conn)[0].status == 200
    finally:
        for s in busy:
            s.close()


# -- forwarding headers -------------------------------------------------------------------

_FORWARDED = (b"GET /fwd HTTP/1.1\r\nHost: inner.test\r\nX-Forwarded-For: 1.2.3.4\r\n"
              b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: public.test\r\n\r\n")


def _forwarded_fields(proxy: ProxyProcess, rec) -> dict[str, list[str]]:
    answer = raw_exchange(proxy.port, _FORWARDED, until_close=False)
    assert answer.endswith(b"\r\n\r\nok"), answer
    (request,) = [r for r in rec.requests if r.startswith(b"GET /fwd ")]
    return request_fields(request)


def test_trusted_proxy_forwarding_headers_are_extended_and_kept(start_proxy, upstreams):
    rec = upstreams()
    proxy = start_proxy([rec.address], [rec.address], extra='trusted_proxies: ["127.0.0.1/32"]\n')
    fields = _forwarded_fields(proxy, rec)
    assert fields["x-forwarded-for"] == ["1.2.3.4, 127.0.0.1"]
    assert fields["x-forwarded-proto"] == ["https"]
    assert fields["x-forwarded-host"] == ["public.test"]


def test_behind_a_trusted_tls_terminator_the_sticky_cookie_is_secure(start_proxy, upstreams):
    rec = upstreams()
    proxy = start_proxy([rec.address], [rec.address], extra='trusted_proxies: ["127.0.0.1/32"]\n')
    answer = raw_exchange(proxy.port, _FORWARDED, until_close=False)
    cookie = [line for line in answer.split(b"\r\n") if line.startswith(b"Set-Cookie: switchyard_pool=")]
    assert cookie and cookie[0].endswith(b"; Secure"), answer


def test_trusted_proxy_that_sends_no_proto_or_host_gets_ours(start_proxy, upstreams):
    rec = upstreams()
    proxy = start_proxy([rec.address], [rec.address], extra='trusted_proxies: ["127.0.0.1/32"]\n')
    raw_exchange(proxy.port, b"GET /bare HTTP/1.1\r\nHost: inner.test\r\nConnection: close\r\n\r\n")
    (request,) = [r for r in rec.requests if r.startswith(b"GET /bare ")]
    fields = request_fields(request)
    assert fields["x-forwarded-proto"] == ["http"]
    assert fields["x-forwarded-host"] == ["inner.test"]
    assert fields["x-forwarded-for"] == ["127.0.0.1"]


def test_untrusted_client_forwarding_headers_are_replaced(start_proxy, upstreams):
    rec = upstreams()
    proxy = start_proxy([rec.address], [rec.address])
    fields = _forwarded_fields(proxy, rec)
    assert fields["x-forwarded-for"] == ["127.0.0.1"]
    assert fields["x-forwarded-proto"] == ["http"]
    assert fields["x-forwarded-host"] == ["inner.test"]


# -- retries ------------------------------------------------------------------------------

# Health checks once at start and never again, and no passive ejection: an upstream
# that dies after the start stays in rotation, so requests really meet a refused connect.
_NO_RECHECK = "{path: /health, interval: 1h, timeout: 1s, eject_after: 1000}"


@pytest.fixture
def dead_and_live(start_proxy, upstreams):
    """A blue pool of [dead, live]: both healthy at start, then `dead` stops listening."""
    dead, live = upstreams(), upstreams()
    proxy = start_proxy([dead.address, live.address], [live.address], health=_NO_RECHECK)
    assert [u["healthy"] for u in proxy.status()["pools"]["blue"]["upstreams"]] == [True, True]
    dead.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", dead.port), timeout=2).close()
    return proxy, dead, live


def test_get_meeting_a_refused_connect_is_retried_on_the_live_upstream(dead_and_live):
    proxy, dead, live = dead_and_live
    conn = open_conn(proxy.port)
    for i in range(10):
        resp, body = get(conn, f"/get{i}")
        assert resp.status == 200 and body == b"ok"
    retries = [e for e in proxy.events("upstream_retry") if e.get("upstream") == dead.address]
    assert retries, "no request met the dead upstream; the test proved nothing"
    assert len([r for r in live.requests if r.startswith(b"GET /get")]) == 10


def test_post_meeting_a_refused_connect_is_retried_and_reaches_the_upstream_once(dead_and_live):
    proxy, dead, live = dead_and_live
    conn = open_conn(proxy.port)
    ids = [uuid.uuid4().hex for _ in range(10)]
    for post_id in ids:
        conn.request("POST", "/pay", body=post_id.encode())
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"ok"
    retries = [e for e in proxy.events("upstream_retry") if e.get("upstream") == dead.address]
    assert retries, "no POST met the dead upstream; the test proved nothing"
    seen = Counter(r.rsplit(b"\r\n\r\n", 1)[1].decode() for r in live.requests
                   if r.startswith(b"POST /pay "))
    assert seen == Counter(ids)  # every POST exactly once


def test_thousands_of_pipelined_requests_failing_at_once_are_all_answered(start_proxy,
                                                                         dead_port):
    # No pool is healthy, so every queued request fails synchronously (503):
    # answering them must not recurse, one stack frame per request.
    address = f"127.0.0.1:{dead_port.getsockname()[1]}"
    proxy = start_proxy([address], [address])
    data = b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3000))
    out = raw_exchange(proxy.port, data + b"GET /last HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\n\r\n", timeout=20)
    assert out.count(b"HTTP/1.1 503 ") == 3001
