"""ClientConnection's read phases, driven in-process with a fake transport.

A real DataPlane (from a config text) on a fake loop; requests are held by a
pause, so the read side can be followed without any upstream.  Each test
checks the phase, the deadline the phase sets (proxy/dataplane/reading.py `DEADLINES`),
and what a timeout in that phase does.
"""

from __future__ import annotations

import time

import pytest

from proxy import config as config_module
from proxy.dataplane.client import ClientConnection
from proxy.dataplane.reading import BODY, HEAD, IDLE, NEW, STOPPED, WAITING
from proxy.dataplane.exchange import HELD
from proxy.dataplane.pause import HeldRequests
from proxy.dataplane.plane import DataPlane
from proxy.dataplane.router import table_from
from proxy.dataplane.sticky import Signer

from .fakes import FakeTransport

CONFIG = """
pools:
  blue: {upstreams: ["127.0.0.1:9"]}
  green: {upstreams: ["127.0.0.1:10"]}
timeouts: {client_header: 10s, client_body: 30s, client_idle: 60s}
"""


class FakeLoop:
    def __init__(self) -> None:
        self.soon: list = []

    def call_soon(self, callback, *args):
        self.soon.append((callback, args))

    def run_soon(self) -> None:
        while self.soon:
            callback, args = self.soon.pop(0)
            callback(*args)


class Log:
    def warning(self, *args, **kwargs):
        pass

    info = debug = error = warning


@pytest.fixture
def client():
    cfg = config_module.from_text(CONFIG)
    loop = FakeLoop()
    plane = DataPlane(loop, cfg, table_from(cfg.weights), Signer(b"k" * 32), Log(), None)
    plane.pause = HeldRequests(60)  # requests are held: no upstream is needed
    conn = ClientConnection(plane)
    transport = FakeTransport(peer=("192.0.2.1", 40000))
    conn.connection_made(transport)
    return conn, transport, loop


def near(deadline: float, seconds: float) -> bool:
    return abs(deadline - (time.monotonic() + seconds)) < 1.0


def test_a_new_connection_has_the_header_timeout_and_closes_silently_on_it(client):
    conn, transport, loop = client
    assert conn.read is NEW and near(conn.deadline, 10)
    conn.timed_out(time.monotonic())
    loop.run_soon()
    assert transport.closing and transport.written == []  # nothing to say: no request began
    assert conn.read is STOPPED and conn.deadline == 0.0


def test_a_head_in_pieces_keeps_the_header_timeout_then_waits_with_no_clock(client):
    conn, transport, loop = client
    conn.data_received(b"GET /a HTTP/1.1\r\nHo")
    assert conn.read is HEAD and near(conn.deadline, 10)
    conn.data_received(b"st: x\r\n\r\n")
    assert conn.read is WAITING and conn.deadline == 0.0  # the answer's clocks are elsewhere
    assert conn.current.phase is HELD and conn.current.is_waiting()  # held by the pause


def test_a_body_has_the_body_timeout(client):
    conn, transport, loop = client
    conn.data_received(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    assert conn.read is BODY and near(conn.deadline, 30)
    conn.data_received(b"cd")
    assert conn.read is WAITING and conn.current.request.body_size == 4


def test_a_stalled_head_with_nothing_to_answer_gets_408(client):
    conn, transport, loop = client
    conn.data_received(b"GET /slow HTTP/1.1\r\n")
    conn.timed_out(time.monotonic())
    loop.run_soon()
    assert transport.data.startswith(b"HTTP/1.1 408 ") and transport.closing


def test_a_stalled_next_head_while_answering_stops_reading_and_closes_after_the_answer(client):
    conn, transport, loop = client
    conn.data_received(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n")
    assert conn.current is not None and conn.read is HEAD
    conn.timed_out(time.monotonic())
    assert conn.read is STOPPED and not transport.closing  # the first answer comes first
    assert conn.current.keep_alive is False


def test_after_an_answer_the_connection_is_idle_with_the_idle_timeout(client):
    conn, transport, loop = client
    plane = conn.plane
    plane.pause = None
    for pool in plane.pools.values():  # no upstream here: the proxy answers 503 itself
        for up in pool.upstreams:
            plane.set_health(up, False)
    conn.data_received(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    loop.run_soon()
    assert transport.data.startswith(b"HTTP/1.1 503 ") and not transport.closing
    assert conn.current is None
    assert conn.read is IDLE and near(conn.deadline, 60) and conn in conn.plane.idle
    conn.timed_out(time.monotonic())
    assert transport.closing  # an idle keep-alive connection closes without a word


def test_a_malformed_request_stops_reading(client):
    conn, transport, loop = client
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    loop.run_soon()
    assert conn.read is STOPPED and not transport.reading
    assert transport.data.startswith(b"HTTP/1.1 400 ") and transport.closing


def test_field_names_in_any_case_are_sorted_the_same_past_the_lowercase_memo(client):
    # Request.inspect keeps the lowercase of each name seen (request._LOWER_NAMES,
    # 1024 at most, then cleared): the memo must never change what is kept or dropped.
    conn, transport, loop = client
    for round_ in range(5):
        names = [b"X-F%d-%d" % (round_, i) for i in range(300)]
        head = b"".join(b"%s: v%d\r\n" % (n, i) for i, n in enumerate(names))
        conn.data_received(b"GET /r%d HTTP/1.1\r\nhOsT: h%d\r\nX-FORWARDED-for: 6.6.6.6\r\n"
                           % (round_, round_) + head + b"x-Request-ID: id%d\r\n\r\n" % round_)
        loop.run_soon()
        req = conn.current.request
        assert req.host == b"h%d" % round_ and req.request_id == b"id%d" % round_
        sent = b"".join(req.fields)
        assert sent == head  # Host, X-Forwarded-For and X-Request-Id are ours to write
        conn.current.phase = HELD
        conn.answered(conn.current, time.monotonic())
