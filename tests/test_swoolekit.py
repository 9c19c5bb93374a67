"""The Swoole kit against real Swoole, no proxy: the servers start, log what they ran,
recycle their workers, and the load client sees exactly what Swoole does.

These tests also record how Swoole closes connections when a worker recycles; run
`pytest tests/test_swoolekit.py -s` to see the observations printed."""

from __future__ import annotations

import json
import os
import tempfile
import time

import pytest

from . import swoolekit
from .support import RecordingUpstream, wait_for
from .swoolekit import (MixedLoad, RawConnection, RequestFailed, SwooleMissing, SwooleServer,
                        check_applied, require_swoole)


@pytest.fixture(scope="module")
def swoole() -> str:
    """Swoole's version. Where PHP cannot load Swoole every test using this fixture
    errors with the install command: never a silent skip, and the rest of the suite
    still runs (an error at import would stop collection of every module)."""
    return require_swoole()


def request(method: str, path: str, test_id: str = "", headers: dict | None = None,
            body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if test_id:
        lines.append(f"X-Test-Id: {test_id}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_require_swoole_names_the_build_script_when_php_cannot_load_it(monkeypatch):
    monkeypatch.setattr(swoolekit, "PHP", "/nonexistent/php")
    with pytest.raises(SwooleMissing, match=r"shared/swoole/build\.sh"):
        require_swoole()


def test_mixed_load_reconnects_after_connection_close_and_never_resends():
    # A raw upstream (no Swoole): every third answer is close-delimited, every fifth
    # says Connection: close, every seventh request is dropped without an answer.
    n = 0

    def respond(req: bytes):
        nonlocal n
        n += 1
        if n % 7 == 0:
            return None
        if n % 5 == 0:
            return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        if n % 3 == 0:
            return lambda conn: (conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nclose-delimited"),
                                 conn.close())
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"

    upstream = RecordingUpstream(respond)
    try:
        with MixedLoad(upstream.port, get_connections=1, post_connections=0, duration=10,
                       max_requests=70) as load:
            wait_for(lambda: load.done >= 70, 10, interval=0.01, what="70 requests done")
            result = load.stop()
    finally:
        upstream.close()
    assert result.requests == 70 == len(upstream.requests)  # each request sent exactly once
    assert result.count(outcome="closed-early") == 10
    assert result.count(outcome="ok") == 60 and len(result.ok_ids) == 60
    sent_ids = [line.split(b": ")[1] for req in upstream.requests
                for line in req.split(b"\r\n") if line.startswith(b"X-Test-Id")]
    assert len(set(sent_ids)) == 70


def test_server_answers_hyperf_like_on_every_route(swoole, tmp_path):
    with SwooleServer(tmp_path, name="blue") as blue:
        conn = RawConnection(blue.port)
        try:
            home = conn.request(request("GET", "/"))
            assert home.status == 200 and home.keep_alive
            assert home.headers["x-pool"] == "blue" and home.headers["server"] == "Hyperf"
            assert conn.request(request("GET", "/status/204")).status == 204
            echo = conn.request(request("POST", "/echo", body=b"x" * 1000))
            assert json.loads(echo.body)["length"] == 1000
            sse = conn.request(request("GET", "/sse"))
            assert sse.headers["transfer-encoding"] == "chunked"
            assert sse.body.count(b"data: event") == 5
            assert conn.request(request("GET", "/nope")).status == 404
            assert conn.responses == 5  # all on one keep-alive connection
        finally:
            conn.close()


def test_unix_socket_server_answers_health(swoole, tmp_path):
    sock = os.path.join(tempfile.mkdtemp(prefix="sw-"), "blue.sock")  # paths are limited to 107 bytes
    with SwooleServer(tmp_path, name="blue", unix=sock) as blue:
        assert blue.address == f"unix:{sock}"
        assert blue.health() == 200


def test_post_write_is_applied_once_with_its_test_id_key_and_cookie(swoole, tmp_path):
    with SwooleServer(tmp_path, name="green") as green:
        conn = RawConnection(green.port)
        try:
            answer = conn.request(request("POST", "/write", "t-1", body=b'{"a":1}',
                                          headers={"Idempotency-Key": "k-1",
                                                   "Cookie": "switchyard_pool=green; a=b"}))
        finally:
            conn.close()
        assert answer.status == 200
        applied = green.applied()
        assert [line["test_id"] for line in applied] == ["t-1"]
        line = applied[0]
        assert (line["method"], line["path"], line["name"]) == ("POST", "/write", "green")
        assert line["idempotency_key"] == "k-1"
        assert line["cookie"] == "switchyard_pool=green; a=b"
        assert line["pid"] in {e["pid"] for e in green.events("worker_start")}


def observe_recycling(port: int, requests: int) -> list[dict]:
    """Sequential GET /write on one keep-alive connection (a new one after each failure),
    sent the moment the previous answer is complete: what does the client see when the
    worker serving it reaches max_request?"""
    seen, conn, last_answer, last_head = [], None, time.monotonic(), {}
    for i in range(requests):
        try:
            conn = conn or RawConnection(port, timeout=5)
            sent = time.monotonic()
            answer = conn.request(request("GET", "/write", f"r-{i}"))
            last_answer, last_head = time.monotonic(), answer.headers
            if not answer.keep_alive:
                seen.append({"i": i, "outcome": "Connection: close answer", "ok": True})
                conn.close()
                conn = None
        except RequestFailed as exc:
            now = time.monotonic()
            seen.append({"i": i, "id": f"r-{i}", "outcome": exc.outcome, "detail": exc.detail,
                         "answered_on_conn": conn.responses if conn else 0,
                         "ms_after_send": (now - sent) * 1e3,
                         "ms_after_last_answer": (sent - last_answer) * 1e3,
                         "last_answer_connection": last_head.get("connection")})
            conn = None
    if conn:
        conn.close()
    return seen


def test_max_request_recycles_the_worker_and_the_client_sees_how_swoole_closes(swoole, tmp_path):
    with SwooleServer(tmp_path, name="blue", workers=1, max_request=50) as blue:
        seen = observe_recycling(blue.port, 200)
        time.sleep(0.2)  # let the last replacement worker log its start
        starts, stops = blue.events("worker_start"), blue.events("worker_stop")
        applied = {line["test_id"] for line in blue.applied()}
    print(f"\nSwoole {swoole}, SWOOLE_BASE, 1 worker, max_request 50 (+ random grace "
          f"up to 25): {len(starts)} worker starts, {len(stops)} stops over 200 requests")
    for s in seen:
        print("  " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in s.items()))
    assert len(starts) >= 2 and stops, "the worker never recycled"
    failures = [s for s in seen if not s.get("ok")]
    assert failures, "a recycle was invisible to a keep-alive client (Swoole changed?)"
    # What the proxy can rely on: a recycle never cuts a response in half, it only
    # drops requests it never ran, and the last answer does not warn with Connection: close.
    for s in failures:
        assert s["outcome"] in ("reset", "closed-early", "timeout"), s
        assert "before any byte" in s["detail"] or s["outcome"] == "timeout", s
        assert s["id"] not in applied, f"a request that failed was applied: {s}"
        assert s["last_answer_connection"] == "keep-alive", s


def test_process_mode_recycling_is_invisible_to_a_keep_alive_client(swoole, tmp_path):
    # SWOOLE_PROCESS keeps client sockets in the reactor threads of the master, so a
    # worker that exits does not close them; a contrast to SWOOLE_BASE above.
    with SwooleServer(tmp_path, name="blue", mode="process", workers=1, max_request=50) as blue:
        seen = observe_recycling(blue.port, 200)
        time.sleep(0.2)
        assert len(blue.events("worker_start")) >= 2
        assert len(blue.applied()) == 200
    assert seen == []


def test_mixed_load_straight_at_swoole_never_loses_or_doubles_a_write(swoole, tmp_path):
    with SwooleServer(tmp_path, name="blue", max_request=300) as blue:
        load = MixedLoad(blue.port, get_connections=4, post_connections=2, keyed_connections=2,
                         get_path="/write", duration=2.0, max_requests=20_000).start()
        time.sleep(2.2)  # the load stops itself after 2 s
        result = load.stop()
        recycles = len(blue.events("worker_stop"))
        check = check_applied(result, blue.applied())
    print(f"\ndirect to Swoole, max_request 300, {result.seconds:.1f}s, {recycles} recycles:\n"
          + result.summary())
    assert result.requests > 100 and result.stuck_threads == 0
    assert {r.kind for r in result.records} == {"GET", "POST", "POST+key"}
    assert len(result.ok_ids) == result.count(outcome="ok")
    assert recycles >= 1
    # Swoole drops what it never ran: whatever failed was not applied, whatever got 200 was.
    assert check.answered_not_applied == [] and check.applied_twice == {}
    assert check.failed_but_applied == []


def test_websocket_app_echoes_closes_on_request_and_counts_connections(swoole, tmp_path):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with SwooleServer(tmp_path, name="blue", app="ws") as ws:
        url = f"ws://127.0.0.1:{ws.port}/ws"

        def open_count() -> int:
            conn = RawConnection(ws.port)
            try:
                return json.loads(conn.request(request("GET", "/connections")).body)["open"]
            finally:
                conn.close()

        with connect(url, open_timeout=5) as a, connect(url, open_timeout=5) as b:
            a.send("hello")
            assert a.recv(timeout=5) == "hello"
            assert open_count() == 2
            b.send("close-me")
            with pytest.raises(ConnectionClosed) as closed:
                b.recv(timeout=5)
            assert closed.value.rcvd.code == 1000 and closed.value.rcvd.reason == "bye"
            wait_for(lambda: open_count() == 1, 5, what="one WebSocket left open")
        wait_for(lambda: open_count() == 0, 5, what="no WebSocket left open")
