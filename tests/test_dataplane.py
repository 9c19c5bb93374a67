"""The data plane end to end: a real proxy process, real upstreams, real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from .support import (
    ROOT,
    answering,
    cookie_for,
    get,
    open_conn,
    parse_responses,
    raw_exchange,
    sticky_cookie,
    wait_for,
)


@pytest.fixture
def proxy(start_proxy):
    return start_proxy(weights={"blue": 80, "green": 20})


# -- weights and cookies ------------------------------------------------------------------

def test_weighted_split_over_thousands_of_requests(proxy):
    # 4,000 cookie-less requests at 80/20: binomial sd = sqrt(4000*.8*.2) ~ 25.3;
    # we accept 5 sd (about +-3.2 percentage points): a false failure is ~1 in 3.5M.
    n = 4000
    conn = open_conn(proxy.port)
    green = 0
    for _ in range(n):
        resp, _ = get(conn)
        assert resp.status == 200
        green += resp.getheader("X-Pool") == "green"
    sd = (n * 0.8 * 0.2) ** 0.5
    assert abs(green - 0.2 * n) < 5 * sd, green


def test_cookie_replay_keeps_the_pool(proxy):
    conn = open_conn(proxy.port)
    cookies = {pool: cookie_for(proxy, pool) for pool in ("blue", "green")}
    for pool, cookie in cookies.items():
        for _ in range(50):
            resp, _ = get(conn, headers={"Cookie": f"a=1; {cookie}; b=2"})
            assert resp.getheader("X-Pool") == pool
            assert sticky_cookie(resp) is None  # honoured cookies are not re-sent


def test_set_cookie_attributes(proxy):
    conn = open_conn(proxy.port)
    resp, _ = get(conn)
    line = [v for n, v in resp.getheaders() if v.startswith("switchyard_pool=")][0]
    attrs = {a.strip().split("=")[0] for a in line.split(";")[1:]}
    assert attrs == {"Max-Age", "Path", "HttpOnly", "SameSite"}
    assert "Max-Age=3600" in line and "SameSite=Lax" in line and "Path=/" in line


@pytest.mark.parametrize("value", [
    "green.0.AAAAAAAAAAAAAAAAAAAAAA",   # forged MAC
    "garbage",
    "green.0",
    "",
    "\u00ff\u00fe",
])
def test_tampered_and_garbage_cookies_count_as_absent(proxy, value):
    conn = open_conn(proxy.port)
    pools = set()
    for _ in range(200):
        resp, _ = get(conn, headers={"Cookie": f"switchyard_pool={value}"})
        assert resp.status == 200
        assert sticky_cookie(resp) is not None  # treated as a new visitor
        pools.add(resp.getheader("X-Pool"))
    assert pools == {"blue", "green"}  # drawn by weight, not pinned by the forgery


def test_tampering_with_a_real_cookie_is_detected(proxy):
    conn = open_conn(proxy.port)
    cookie = cookie_for(proxy, "blue")
    forged = cookie.replace("blue", "green", 1)
    resp, _ = get(conn, headers={"Cookie": forged})
    assert sticky_cookie(resp) is not None


def test_keepalive_connection_follows_weight_change_on_next_request(proxy):
    conn = open_conn(proxy.port)
    proxy.cli("weights", "blue=100", "green=0", check=True)
    for _ in range(20):
        resp, _ = get(conn)
        assert resp.getheader("X-Pool") == "blue"
    sock_before = conn.sock
    proxy.cli("weights", "blue=0", "green=100", check=True)
    resp, _ = get(conn)
    assert conn.sock is sock_before  # same client connection
    assert resp.getheader("X-Pool") == "green"


# -- streaming, framing, pipelining -------------------------------------------------------

def _slow_chunks(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
    time.sleep(1.0)
    conn.sendall(b"6\r\nsecond\r\n0\r\n\r\n")


@pytest.fixture
def recorder(upstreams, start_proxy):
    rec = upstreams()
    return rec, start_proxy([rec.address], [rec.address])


def test_chunked_response_reaches_the_client_before_it_ends(recorder):
    rec, proxy = recorder
    rec.respond = lambda req: _slow_chunks
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        t0 = time.monotonic()
        while b"first" not in first:
            first += s.recv(65536)
        got_first = time.monotonic() - t0
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            rest += s.recv(65536)
        total = time.monotonic() - t0
    assert got_first < total - 0.5  # the first piece did not wait for the second
    (status, headers, body), = parse_responses(first + rest)
    assert body == b"firstsecond"
    assert headers["transfer-encoding"] == ["chunked"]


def test_pipelined_requests_are_answered_in_order(recorder):
    rec, proxy = recorder
    rec.respond = lambda req: (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                               % (len(req.split(b" ")[1]), req.split(b" ")[1]))
    data = b"".join(b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    out = raw_exchange(proxy.port, data + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    bodies = [body for _, _, body in parse_responses(out)]
    assert bodies == [b"/r0", b"/r1", b"/r2", b"/r3", b"/r4", b"/last"]


def test_hop_by_hop_and_connection_named_headers_are_removed(recorder):
    rec, proxy = recorder
    rec.respond = lambda req: (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret-Up\r\n"
                               b"X-Secret-Up: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\nok")
    sent = (b"GET /h HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Secret\r\n"
            b"X-Secret: s\r\nKeep-Alive: 300\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n"
            b"Upgrade-Insecure-Requests: 1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n"
            b"Forwarded: for=6.6.6.6\r\nAccept: */*\r\n\r\n")
    out = raw_exchange(proxy.port, sent, until_close=False)
    received = rec.requests[-1]
    head = received.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"GET /h HTTP/1.1"
    names = [line.split(b":")[0].lower() for line in head[1:]]
    for gone in (b"connection", b"x-secret", b"keep-alive", b"te", b"proxy-connection",
                 b"x-real-ip", b"forwarded"):
        assert gone not in names, gone
    fields = dict(line.split(b": ", 1) for line in head[1:])
    assert fields[b"X-Forwarded-For"] == b"127.0.0.1"  # the client's claim is replaced
    assert fields[b"X-Forwarded-Proto"] == b"http"
    assert fields[b"X-Forwarded-Host"] == b"example.test"
    assert fields[b"Host"] == b"example.test"
    assert fields[b"Upgrade-Insecure-Requests"] == b"1"  # not hop-by-hop
    assert len(fields[b"X-Request-Id"]) > 8
    (status, headers, body), = parse_responses(out)
    assert "x-secret-up" not in headers and "keep-alive" not in headers
    assert headers["x-kept"] == ["yes"] and body == b"ok"


def test_request_id_is_kept_when_the_client_sends_one(recorder):
    rec, proxy = recorder
    raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\n\r\n",
                 until_close=False)
    assert b"\r\nX-Request-Id: abc-123\r\n" in rec.requests[-1]


def test_post_body_is_forwarded_with_content_length(recorder):
    rec, proxy = recorder
    out = raw_exchange(proxy.port, b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", until_close=False)
    assert parse_responses(out)[0][0] == 200
    received = rec.requests[-1]
    assert b"Transfer-Encoding" not in received
    assert b"\r\nContent-Length: 7\r\n" in received and received.endswith(b"\r\n\r\nabcdefg")


def test_expect_100_continue_is_answered_by_the_proxy(recorder):
    rec, proxy = recorder
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = s.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        final = s.recv(65536)
    assert final.startswith(b"HTTP/1.1 200 OK")
    assert b"Expect" not in rec.requests[-1] and rec.requests[-1].endswith(b"hello")


def test_head_response_has_no_body_and_connection_is_reused(recorder):
    rec, proxy = recorder
    rec.respond = lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + (
        b"" if req.startswith(b"HEAD") else b"x" * 1000)
    data = (b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = raw_exchange(proxy.port, data)
    head1, rest = out.split(b"\r\n\r\n", 1)
    assert b"Content-Length: 1000" in head1
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert rest.endswith(b"x" * 1000)
    assert rec.connections == 1


def test_upstream_that_closes_after_each_response_is_handled(recorder):
    rec, proxy = recorder
    def close_delimited(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until close")
        conn.close()
    rec.respond = lambda req: close_delimited
    conn = open_conn(proxy.port)
    for _ in range(3):
        resp, body = get(conn)
        assert resp.status == 200 and body == b"body until close"
        # Re-framed as chunked, so the client connection stays open.
        assert resp.getheader("Transfer-Encoding") == "chunked"


def test_http10_client_gets_a_close_delimited_answer(recorder):
    rec, proxy = recorder
    rec.respond = lambda req: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"2\r\nhi\r\n0\r\n\r\n")
    out = raw_exchange(proxy.port, b"GET / HTTP/1.0\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == b"hi"


def test_sse_events_are_flushed_one_by_one(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET /events?n=3&delay=0.4 HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = []
        buf = b""
        t0 = time.monotonic()
        while len(seen) < 3:
            buf += s.recv(65536)
            for i in range(3):
                if f"event {i}".encode() in buf and i not in [e for e, _ in seen]:
                    seen.append((i, time.monotonic() - t0))
    # Event 0 arrived well before event 2 was even produced.
    assert seen[0][1] < seen[2][1] - 0.5


def test_large_response_to_a_slow_reader_is_streamed(recorder):
    rec, proxy = recorder
    size = 8 * 1024 * 1024
    def big(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        chunk = b"z" * 65536
        for _ in range(size // len(chunk)):
            conn.sendall(chunk)
    rec.respond = lambda req: big
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < size + 30:
            data = s.recv(65536)
            if not data:
                break
            got += len(data)
            if got < size // 2:
                time.sleep(0.001)
            if got > size:
                break
    assert got >= size


def test_unix_socket_upstream(tmp_path, start_proxy):
    path = str(tmp_path / "pool.sock")
    code = (
        "import asyncio\nfrom aiohttp import web\nfrom proxy.cli.demo import make_pool_app\n"
        f"web.run_app(make_pool_app('green'), path={path!r}, print=None)\n"
    )
    pool = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        wait_for(lambda: os.path.exists(path), what="unix pool socket")
        p = start_proxy([f"unix:{path}"], [f"unix:{path}"])
        conn = open_conn(p.port)
        for _ in range(5):
            resp, body = get(conn)
            assert resp.status == 200 and body.startswith(b"Hello from green")
        ups = p.status()["pools"]["blue"]["upstreams"]
        assert ups == [{"address": f"unix:{path}", "healthy": True, "enabled": True,
                            "inflight": 0, "closes": 0, "resent": 0}]
        p.stop()
    finally:
        pool.terminate()
        pool.wait()


def test_unix_socket_listener(tmp_path, start_proxy):
    path = str(tmp_path / "front.sock")
    start_proxy(listen=f"unix:{path}")
    data = raw_exchange(path, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200") and b"X-Pool: blue" in data


def test_access_log_has_one_line_per_request(proxy):
    conn = open_conn(proxy.port)
    get(conn, "/logged?x=1", headers={"X-Request-Id": "req-42"})
    line = wait_for(lambda: [l for l in proxy.events("request") if l.get("request_id") == "req-42"],
                    what="access line")[0]
    assert line["method"] == "GET" and line["path"] == "/logged?x=1" and line["status"] == 200
    assert line["pool"] in ("blue", "green") and line["upstream"].startswith("127.0.0.1:")
    assert line["bytes"] > 0 and line["duration_ms"] >= 0


def _holding(name: str, release: threading.Event):
    """An upstream's script: answers say `X-Pool: name`; `GET /hold` is answered only
    once `release` is set (10 s at most), keeping a request in flight there."""
    answer = answering(name)

    def respond(request: bytes) -> bytes:
        if request.startswith(b"GET /hold "):
            release.wait(10)
        return answer(request)
    return respond


@pytest.mark.parametrize("balance", ["round_robin", "least_inflight"])
def test_a_pool_balances_among_its_upstreams(upstreams, start_proxy, balance):
    release = threading.Event()
    ups = {name: upstreams(respond=_holding(name, release)) for name in ("a", "b")}
    p = start_proxy({"upstreams": [u.address for u in ups.values()], "balance": balance},
                    [ups["a"].address])
    conn = open_conn(p.port)
    for _ in range(100):
        resp, _ = get(conn)
        assert resp.status == 200
    counts = [len(u.requests) for u in ups.values()]
    # Sequential requests: nothing is in flight when the next one is placed,
    # so both policies rotate; neither upstream is left out.
    assert sum(counts) == 100 and min(counts) >= 40, counts

    # Now one upstream holds a request in flight while 20 more are sent, one at a time.
    held: list[bytes] = []
    holder_conn = open_conn(p.port, timeout=20)
    holder = threading.Thread(target=lambda: held.append(get(holder_conn, "/hold")[1]))
    holder.start()
    try:
        busy = wait_for(lambda: next((name for name, u in ups.items()
                                      if any(r.startswith(b"GET /hold ") for r in u.requests)),
                                     None), what="the held request at an upstream")
        seen = [get(conn)[0].getheader("X-Pool") for _ in range(20)]
        assert held == []  # the held request was in flight for all 20
    finally:
        release.set()
        holder.join(timeout=15)
    assert held == [f"{busy}\n".encode()]
    free = "b" if busy == "a" else "a"
    if balance == "least_inflight":
        assert seen == [free] * 20, seen  # never the upstream with a request in flight
    else:  # round robin takes turns, busy or not
        assert set(seen) == {"a", "b"} and all(x != y for x, y in zip(seen, seen[1:])), seen
