"""UpstreamConnection driven in-process, with a fake transport and a fake client.

Deterministic, in milliseconds: each test sets up one phase of an exchange,
delivers what the kernel would (bytes, a FIN, a reset) and checks how far the
request got (`retry.Delivery`), what the client side was told, and whether
the connection went back to the pool.  The fake client implements exactly
the interface the upstream side may use (proxy/dataplane/sink.py, ResponseSink).
"""

from __future__ import annotations

import errno
import io

import pytest

from proxy.config import Address
from proxy.dataplane.retry import ANSWERED, NOT_SENT, TIMED_OUT, UNKNOWN, UNREAD
from proxy.dataplane.connection import UpstreamConnection
from proxy.dataplane.response import AWAITING, CLOSED, IDLE, RECEIVING, TUNNEL
from proxy.dataplane.sink import ResponseSink
from proxy.dataplane.upstream import Upstream

from .fakes import FakeTransport

REQUEST = b"POST /w HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok"


class FakeClient(ResponseSink):
    """The exchange as the upstream side sees it (a sink.ResponseSink), recording
    every call."""

    def __init__(self, resend: bool = False) -> None:
        self.transport = object()
        self.outbox: list[tuple[object, bytes]] = []  # the plane's end-of-pass queue
        self.exchange = None
        self.head = None
        self.body: list[bytes] = []
        self.done = 0
        self.errors: list[tuple] = []
        self.resend = resend
        self.flushes = 0

    # -- the interface ------------------------------------------------------------------
    def wanted(self) -> bool:
        return self.transport is not None

    def connecting_to(self, task) -> None: ...
    def connect_done(self, task) -> None: ...

    def attached(self, conn) -> None:
        self.exchange = conn

    def detached(self, conn) -> None:
        if self.exchange is conn:
            self.exchange = None

    def send_upstream(self, transport, payload: bytes) -> None:
        self.outbox.append((transport, payload))

    def unsend(self, transport) -> bool:
        kept = [item for item in self.outbox if item[0] is not transport]
        dropped = len(kept) != len(self.outbox)
        self.outbox = kept
        return dropped

    def on_upstream_head(self, conn, status, head, sized) -> None:
        self.head = (status, b"".join(head))

    def on_upstream_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_upstream_done(self) -> None:
        self.done += 1

    def on_upstream_error(self, up, err, delivery) -> bool:
        self.errors.append((type(err).__name__, delivery))
        return self.resend

    def on_upstream_upgraded(self, conn, head, rest) -> None:
        self.upgraded = (b"".join(head), rest)
        conn.hand_over()

    def pass_on(self) -> None:
        self.flushes += 1

    # -- for the tests ------------------------------------------------------------------
    def write_pass(self) -> None:
        """The end of the loop pass: what was queued is written."""
        for transport, data in self.outbox:
            transport.write(data)
        self.outbox = []


@pytest.fixture
def upstream():
    return Upstream(Address("tcp", host="127.0.0.1", port=9501), "blue", loop=None)


def exchange(upstream, so_error: int = 0, body_file=None):
    """A connection carrying one request: (connection, its transport, the client)."""
    conn = UpstreamConnection(upstream)
    transport = FakeTransport(so_error=so_error)
    conn.connection_made(transport)
    client = FakeClient()
    upstream.inflight += 1
    conn.start(client, REQUEST, False, body_file, now=0.0)
    return conn, transport, client


def test_a_whole_answer_returns_the_connection_to_the_pool(upstream):
    conn, transport, client = exchange(upstream)
    assert conn.phase is AWAITING and client.exchange is conn
    client.write_pass()
    assert transport.written == [REQUEST]
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert client.head[0] == 200 and client.body == [b"hi"] and client.done == 1
    assert conn.phase is IDLE and upstream.idle == [conn] and upstream.inflight == 0
    assert client.exchange is None and client.errors == []


def test_a_fin_before_the_request_left_is_not_sent(upstream):
    """The pooled connection's FIN is handled in the same loop pass that queued
    our request: nothing was written, so it may go anywhere, even unkeyed."""
    conn, transport, client = exchange(upstream)
    assert conn.eof_received() is False
    assert client.errors == [("UpstreamResetError", NOT_SENT)]
    assert client.outbox == [] and transport.written == []  # taken back, never written
    assert conn.phase is CLOSED and upstream.inflight == 0 and upstream.idle == []


def test_a_fin_with_a_reset_behind_it_means_unread(upstream):
    """Our request reached a socket already closed: its kernel reset it (EPIPE
    pending after the FIN)."""
    conn, transport, client = exchange(upstream, so_error=errno.EPIPE)
    client.write_pass()
    conn.eof_received()
    assert client.errors == [("UpstreamResetError", UNREAD)]
    assert upstream.closes == 1


def test_a_plain_fin_after_the_request_left_is_unknown(upstream):
    conn, transport, client = exchange(upstream)
    client.write_pass()
    conn.eof_received()
    assert client.errors == [("UpstreamResetError", UNKNOWN)]


def test_a_reset_with_no_answer_means_unread(upstream):
    conn, transport, client = exchange(upstream)
    client.write_pass()
    conn.connection_lost(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert client.errors == [("UpstreamResetError", UNREAD)]


def test_a_close_after_part_of_the_answer_is_answered(upstream):
    conn, transport, client = exchange(upstream)
    client.write_pass()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    assert conn.phase is RECEIVING
    conn.connection_lost(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert client.errors == [("UpstreamResetError", ANSWERED)]
    assert upstream.closes == 0  # an answer had begun: not a close under a request


def test_a_response_timeout_is_timed_out_not_unknown(upstream):
    conn, transport, client = exchange(upstream)
    client.write_pass()
    conn.timed_out()
    assert client.errors == [("UpstreamTimeoutError", TIMED_OUT)]
    assert transport.closing


def test_an_early_answer_during_the_upload_stops_the_pump_and_is_never_pooled(upstream):
    """Swoole's 413 while the spilled body is still being sent."""
    body = io.BytesIO(b"x" * (5 * 65536))
    conn = UpstreamConnection(upstream)
    transport = FakeTransport()
    conn.connection_made(transport)
    client = FakeClient()
    upstream.inflight += 1
    conn.pause_writing()  # the socket buffer is full after the head
    conn.start(client, b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 327680\r\n\r\n",
               False, body, now=0.0)
    assert len(transport.written) == 1  # the head only
    conn.data_received(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n")
    conn.resume_writing()
    assert len(transport.written) == 1  # nothing more of the body after the answer
    assert client.head[0] == 413 and client.done == 1
    assert transport.closing and upstream.idle == []  # mid-request: never reused


def test_a_pooled_connection_that_closes_leaves_the_pool(upstream):
    conn, transport, client = exchange(upstream)
    client.write_pass()
    conn.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert upstream.idle == [conn]
    conn.connection_lost(None)
    assert upstream.idle == [] and client.errors == []


def test_a_204s_content_length_is_not_passed_on(upstream):
    conn, transport, client = exchange(upstream)
    client.write_pass()
    conn.data_received(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n")
    assert client.head == (204, b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n")


def test_a_101_hands_the_connection_to_a_tunnel_with_what_followed_the_head(upstream):
    conn, transport, client = exchange(upstream)
    client.write_pass()
    conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n\x81\x02hi")
    head, rest = client.upgraded
    assert head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Accept: x\r\n" in head
    assert b"Upgrade:" not in head and b"Connection:" not in head  # hop-by-hop: ours to set
    assert rest == b"\x81\x02hi" and conn.phase is TUNNEL and client.errors == []
    assert conn not in upstream.idle and not transport.closing


def test_an_upgrade_field_on_a_200_is_an_ordinary_answer(upstream):
    conn, transport, client = exchange(upstream)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nUpgrade: h2c\r\n"
                       b"Connection: upgrade\r\n\r\n")
    assert not hasattr(client, "upgraded") and client.errors == []
    assert client.head == (200, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n") and client.done == 1
    assert conn.phase is IDLE and conn in upstream.idle


# -- the response head: the upstream's bytes, edited only where they must be -------------

NGINX_HEAD = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 3\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok\n")


def _answer(upstream, *reads):
    conn, transport, client = exchange(upstream)
    client.write_pass()
    for data in reads:
        conn.data_received(data)
    return conn, client


def test_the_head_goes_on_as_sent_minus_hop_by_hop_fields(upstream):
    conn, client = _answer(upstream, NGINX_HEAD)
    assert client.head == (200, b"HTTP/1.1 200 OK\r\nServer: nginx\r\n"
                                b"Content-Type: text/plain\r\nContent-Length: 3\r\n")
    assert client.body == [b"ok\n"] and client.done == 1 and conn in upstream.idle


@pytest.mark.parametrize("cut", range(1, len(NGINX_HEAD)))
def test_a_head_split_over_two_reads_anywhere_gives_the_same_answer(upstream, cut):
    _, client = _answer(upstream, NGINX_HEAD[:cut], NGINX_HEAD[cut:])
    assert client.head[1] == (b"HTTP/1.1 200 OK\r\nServer: nginx\r\n"
                              b"Content-Type: text/plain\r\nContent-Length: 3\r\n")
    assert b"".join(client.body) == b"ok\n" and client.done == 1


@pytest.mark.parametrize("reads", [
    [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + NGINX_HEAD],
    [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Ear", b"ly Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 2",
     NGINX_HEAD[10:]],
])
def test_interim_answers_are_not_passed_on_and_the_final_head_is_found_after_them(upstream,
                                                                                 reads):
    _, client = _answer(upstream, *reads)
    assert client.head[1].startswith(b"HTTP/1.1 200 OK\r\nServer: nginx\r\n")
    assert b"Link" not in client.head[1] and b"".join(client.body) == b"ok\n"


def test_an_http_1_0_answer_goes_on_as_http_1_1_with_its_reason(upstream):
    _, client = _answer(upstream, b"HTTP/1.0 404 Nope\r\nContent-Length: 0\r\n\r\n")
    assert client.head == (404, b"HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n")


def test_fields_named_in_connection_and_every_hop_by_hop_field_are_removed(upstream):
    _, client = _answer(upstream, b"HTTP/1.1 200 OK\r\nCONNECTION: close, X-Secret\r\n"
                        b"x-secret: 1\r\nX-Kept: 2\r\nProxy-Authenticate: Basic\r\n"
                        b"Trailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert client.head == (200, b"HTTP/1.1 200 OK\r\nX-Kept: 2\r\n")
    assert client.done == 1


def test_a_204_loses_its_content_length(upstream):
    _, client = _answer(upstream, b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX: y\r\n\r\n")
    assert client.head == (204, b"HTTP/1.1 204 No Content\r\nX: y\r\n") and client.done == 1


def test_a_head_that_never_ends_fails_once_it_is_over_the_limit(upstream):
    from proxy.dataplane.response import MAX_HEAD

    conn, client = _answer(upstream, b"HTTP/1.1 200 OK\r\n")
    for _ in range(MAX_HEAD // 1000 + 1):
        if client.errors:
            break
        conn.data_received(b"X-Pad: " + b"a" * 991 + b"\r\n")
    assert client.errors == [("UpstreamProtocolError", ANSWERED)] and conn.phase is CLOSED


def test_a_second_answer_in_the_read_that_ended_the_first_closes_the_connection(upstream):
    # Nothing was asked for it: the first goes to the client, the connection is
    # never reused (the compiled build once called the detached exchange: a crash).
    conn, transport, client = exchange(upstream)
    client.write_pass()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
                       b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
    assert client.head == (200, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
    assert client.body == [b"hi"] and client.done == 1 and client.errors == []
    assert conn.phase is CLOSED and transport.closing
    conn.connection_lost(None)
    assert upstream.idle == [] and upstream.inflight == 0


def test_a_connection_field_naming_content_length_does_not_remove_the_framing(upstream):
    conn, transport, client = exchange(upstream)
    client.write_pass()
    conn.data_received(b"HTTP/1.1 200 OK\r\nConnection: Content-Length, X-Gone\r\nX-Gone: 1\r\n"
                       b"Content-Length: 2\r\nX-Kept: 3\r\n\r\nhi")
    assert client.head == (200, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: 3\r\n")
    assert client.body == [b"hi"] and client.done == 1 and conn.phase is IDLE
