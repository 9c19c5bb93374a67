"""Upstreams and their keep-alive connections.

An `Upstream` is one address of a pool (TCP or Unix socket) with a stack of
idle keep-alive connections shared by every client.  An
`UpstreamConnection` carries one request at a time and parses the response
with llhttp, handing each piece to the client connection it serves.  When an
exchange fails it says how far the request got (`retry.Delivery`), and the
client side decides from that alone whether to send it again.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import os
import socket
import time
from typing import TYPE_CHECKING

import httptools

from .errors import (
    DrainCutError,
    ProxyError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from .headers import HOP_BY_HOP, STATUS_LINES, without_named
from .http11 import strict_response_parser
from .retry import ANSWERED, NOT_SENT, TIMED_OUT, Delivery, delivery_at_close

if TYPE_CHECKING:
    from .client import ClientConnection
    from ..config import Address

# Idle connections kept per upstream beyond what is in use.  Swoole keeps a
# connection per coroutine cheaply, but there is no point hoarding more than
# the concurrency we have seen.
MAX_IDLE = 512

# Connection values that name no other field (the common case, not worth a parse).
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})

# Errors that mean the peer reset the connection (see retry.py).
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE})

# An upstream closing connections under our requests is logged at most this
# often (with the count since), not once per request.
CLOSE_REPORT_INTERVAL = 60.0
_HYPERF_HINT = ("Swoole closed keep-alive connections that held requests: most likely workers "
                "recycling (max_request) in SWOOLE_BASE mode; set max_request to 0 or use "
                "SWOOLE_PROCESS in config/autoload/server.php")


class _HeadResponseDone(Exception):
    """Stops llhttp after a HEAD response's head (see on_headers_complete)."""

    def __init__(self, keep_alive: bool) -> None:
        super().__init__()
        self.keep_alive = keep_alive


class Phase(enum.Enum):
    """Where an upstream connection is: one variable."""

    IDLE = "idle"            # pooled (or just connected), no request
    AWAITING = "awaiting"    # a request written or being written, no byte of an answer yet
    RECEIVING = "receiving"  # the answer is arriving
    TUNNEL = "tunnel"        # handed over to a WebSocket tunnel
    CLOSED = "closed"


IDLE, AWAITING, RECEIVING, TUNNEL, CLOSED = Phase


class Upstream:
    """One upstream address, its idle connections and its counters."""

    __slots__ = (
        "address", "label", "pool", "loop", "connect_timeout", "idle_timeout",
        "response_timeout", "idle", "inflight", "healthy", "passive_failures", "eject_after",
        "on_change", "closes", "resent", "_reported", "_last_report", "log_event", "enabled",
    )

    def __init__(self, address: Address, pool: str, loop, connect_timeout: float = 2.0,
                 idle_timeout: float = 30.0, eject_after: int = 3,
                 response_timeout: float = 60.0) -> None:
        self.address = address
        self.label = str(address)  # for logs, formatted once
        self.pool = pool
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.response_timeout = response_timeout
        self.idle: list[UpstreamConnection] = []
        self.inflight = 0
        self.healthy = True
        self.enabled = True  # in its pool's rotation (RoutingTable.disabled says otherwise)
        self.passive_failures = 0
        self.eject_after = eject_after
        self.on_change = None  # set by the data plane: called on passive ejection
        self.log_event = None  # set by the data plane: its event logger
        # Connections the upstream closed under a request before answering it,
        # and how many of those requests were sent again (unread, or keyed).
        self.closes = 0
        self.resent = 0
        self._reported = (0, 0)  # (closes, resent) at the last report
        self._last_report = -CLOSE_REPORT_INTERVAL

    def __repr__(self) -> str:
        state = ("up" if self.healthy else "down") + ("" if self.enabled else ",disabled")
        return f"<Upstream {self.address} {state} inflight={self.inflight} idle={len(self.idle)}>"

    def dispatch(self, client: ClientConnection, payload: bytes, is_head: bool,
                 body_file=None, fresh: bool = False) -> None:
        """Send one request on an idle connection, or on a new one (always a new
        one when `fresh`: a resent request must not meet the next connection of
        the worker that just dropped it)."""
        self.inflight += 1
        now = time.monotonic()
        idle = self.idle
        while idle and not fresh:
            conn = idle.pop()
            transport = conn.transport
            if transport is not None and not transport.is_closing() and \
                    now - conn.idle_since < self.idle_timeout:
                conn.start(client, payload, is_head, body_file, now)
                return
            conn.close()
        self._connect(client, payload, is_head, body_file)

    def _connect(self, client: ClientConnection, payload: bytes, is_head: bool,
                 body_file) -> None:
        addr = self.address
        factory = lambda: UpstreamConnection(self)  # noqa: E731
        if addr.kind == "unix":
            coro = self.loop.create_unix_connection(factory, addr.path)
        else:
            coro = self.loop.create_connection(factory, addr.host, addr.port)
        task = self.loop.create_task(coro)
        timer = self.loop.call_later(self.connect_timeout, task.cancel)
        client.connecting_to(task)
        task.add_done_callback(
            lambda t: self._connected(t, timer, client, payload, is_head, body_file))

    def _connected(self, task, timer, client, payload, is_head, body_file) -> None:
        timer.cancel()
        client.connect_done(task)
        if task.cancelled():
            exc: BaseException = UpstreamTimeoutError(f"connect to {self.address} timed out")
            if client.transport is None:  # the client left; the task was cancelled for it
                self.inflight -= 1
                return
        else:
            exc = task.exception()
        if exc is None:
            _, conn = task.result()
            self.passive_failures = 0
            if client.transport is None:
                self.inflight -= 1
                self.release(conn)
                return
            conn.start(client, payload, is_head, body_file, time.monotonic())
            return
        self.inflight -= 1
        self.note_connect_failure()
        err = exc if isinstance(exc, ProxyError) else UpstreamConnectError(f"{self.address}: {exc}")
        client.on_upstream_error(self, err, NOT_SENT)

    def note_connect_failure(self) -> None:
        """Passive ejection: refused connects mean the workers are gone."""
        self.passive_failures += 1
        if self.healthy and self.passive_failures >= self.eject_after:
            self.healthy = False
            if self.on_change is not None:
                self.on_change(self, "passive")

    def note_close(self, resent: bool) -> None:
        """The upstream closed a connection under one of our requests (`resent`:
        and the request went again).  Reported at most once a minute, with the
        counts since the last report."""
        self.closes += 1
        self.resent += resent
        now = time.monotonic()
        if now - self._last_report >= CLOSE_REPORT_INTERVAL and self.log_event is not None:
            closes, resent_before = self._reported
            self.log_event("upstream_closed_under_request", pool=self.pool,
                           upstream=self.label, count=self.closes - closes,
                           resent=self.resent - resent_before, hint=_HYPERF_HINT)
            self._last_report = now
            self._reported = (self.closes, self.resent)

    def release(self, conn: UpstreamConnection) -> None:
        if conn.transport is None or len(self.idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def close_idle(self, older_than: float | None = None) -> None:
        """Close idle connections (all, or those idle longer than `older_than` s)."""
        now = time.monotonic()
        keep = []
        for conn in self.idle:
            if older_than is not None and now - conn.idle_since < older_than:
                keep.append(conn)
            else:
                conn.close()
        self.idle = keep


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream; one request at a time."""

    __slots__ = (
        "upstream", "transport", "parser", "client", "phase", "is_head", "status", "reason", "head", "hop", "length", "interim", "head_sent",
        "body_framed", "idle_since", "deadline", "paused", "body_file", "write_paused",
    )

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport = None
        self.parser = strict_response_parser(self)
        self.client: ClientConnection | None = None
        self.phase = IDLE
        self.is_head = False
        self.status = 0
        self.reason = b""
        # The response head as it is parsed: a slot for the status line, then the
        # lines we pass on; the hop-by-hop fields aside; whether it has a length.
        self.head: list[bytes] = [b""]
        self.hop: tuple[tuple[bytes, bytes], ...] = ()
        self.length = False
        self.interim = False
        self.head_sent = False
        self.body_framed = True
        self.idle_since = 0.0
        self.deadline = 0.0
        self.paused = False
        self.body_file = None  # a spilled request body still being sent
        self.write_paused = False

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.upstream.address} {self.phase.value}>"

    # -- driven by the client side -------------------------------------------------

    def start(self, client: ClientConnection, payload: bytes, is_head: bool, body_file,
              now: float) -> None:
        self.client = client
        self.phase = AWAITING
        self.head_sent = False
        self.is_head = is_head
        self._new_head()
        self.deadline = now + self.upstream.response_timeout
        client.exchange_started(self)
        if body_file is None:
            client.send_upstream(self.transport, payload)
            return
        # The spilled body follows from its file, written directly, so the head
        # cannot wait in the plane's queue either.
        self.transport.write(payload)
        body_file.seek(0)
        self.body_file = body_file
        self._pump()

    def _new_head(self) -> None:
        self.reason = b""
        self.head = [b""]
        self.hop = ()
        self.length = False

    def _pump(self) -> None:
        """Send a spilled body from its file, as fast as the upstream reads it."""
        # Not after an answer began (the upstream refused early), nor once a
        # write failed (the transport would take the rest of the file, unsent).
        while self.body_file is not None and not self.write_paused and \
                self.transport is not None and not self.transport.is_closing() and \
                not self.head_sent:
            chunk = self.body_file.read(65536)
            if not chunk:
                self.body_file = None
                return
            self.transport.write(chunk)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.body_file is not None and self.transport is not None:
            self._pump()

    def hand_over(self) -> None:
        """The connection becomes a WebSocket tunnel: no longer ours to pool."""
        self.client = None  # upstream.inflight stays counted until the tunnel closes
        self.phase = TUNNEL
        self.deadline = 0.0

    def pause(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.deadline = 0.0  # a slow client is not the upstream's fault
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.deadline = time.monotonic() + self.upstream.response_timeout
            self.transport.resume_reading()

    def close(self) -> None:
        self.body_file = None  # the client side owns (and closes) the file
        if self.phase is not TUNNEL:
            self.phase = CLOSED
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def abandon(self) -> None:
        """The client went away mid-exchange: this connection's state is unknown."""
        self._detach()
        self.close()

    def timed_out(self) -> None:
        self._fail(UpstreamTimeoutError("no response in time"),
                   ANSWERED if self.phase is RECEIVING else TIMED_OUT)

    def cut(self) -> None:
        """A drain ran out of time: end this exchange (a stream, a long poll) now.
        Like a response timeout, it is never resent (retry.py)."""
        self._fail(DrainCutError("still open at the drain deadline"),
                   ANSWERED if self.phase is RECEIVING else TIMED_OUT)

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes on an idle connection are a protocol error: never reuse it.
            self.close()
            return
        self.phase = RECEIVING
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.status == 101:
                client.on_upstream_upgraded(self, self.head, data[exc.args[0]:])
                return
            self._fail(UpstreamProtocolError("unexpected protocol switch"), ANSWERED)
        except httptools.HttpParserCallbackError as exc:
            done = exc.__context__
            if not isinstance(done, _HeadResponseDone):
                self._fail(UpstreamProtocolError(f"callback failed: {done!r}"), ANSWERED)
                return
            self.parser = strict_response_parser(self)
            self._complete(done.keep_alive)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(str(exc)), ANSWERED)
        if self.client is not None:
            # Still mid-response: the timeout counts from the last bytes.  (A
            # response that ended in this read already went out with its flush.)
            if not self.paused:
                self.deadline = time.monotonic() + self.upstream.response_timeout
            client.flush()

    def eof_received(self):
        if self.phase is AWAITING:
            # A FIN with our request unanswered.  A reset behind it (EPIPE
            # pending) means our request met a socket already closed: unread.
            sock = self.transport.get_extra_info("socket")
            pending = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if sock else 0
            self._closed_under_request(pending in _RESET_ERRNOS, "eof", self.transport)
        return False

    def connection_lost(self, exc) -> None:
        up = self.upstream
        transport, self.transport = self.transport, None
        if self.client is None:
            if self in up.idle:
                up.idle.remove(self)
            return
        reset = isinstance(exc, OSError) and exc.errno in _RESET_ERRNOS
        if reset and self.phase is AWAITING and transport is not None:
            # With `self.transport` gone, a whole early answer closes the
            # connection instead of pooling it.
            self._salvage(transport.get_extra_info("socket"))
            if self.client is None:
                return  # the early answer was whole
        if self.head_sent and not self.body_framed:
            # A response without Content-Length or chunked ends at close.
            self._complete(False)
            return
        self._closed_under_request(reset, exc or "eof", transport)

    def _salvage(self, sock) -> None:
        """Read what the upstream said before it reset the connection.

        An upstream that refuses a request early (Swoole's 413 over
        `package_max_length`) answers and closes while we are still sending the
        body; the reset then fails our next write, and the event loop drops the
        connection without reading the answer that is waiting in the socket.
        The descriptor is still open here: read it ourselves.
        """
        if sock is None:
            return
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as peek:
                peek.setblocking(False)
                data = peek.recv(65536)
        except OSError:
            return
        if data:
            self.data_received(data)
            if self.client is not None and self.head_sent and not self.body_framed:
                self._complete(False)  # a close-delimited answer ends here

    # -- llhttp callbacks ----------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sorted as they arrive, which spares a second pass over the fields:
        # hop-by-hop ones aside, the rest (Content-Length too: it is the
        # framing we forward) straight into the head we pass on.
        lname = name.lower()
        if lname in HOP_BY_HOP:
            self.hop += ((lname, value),)
            return
        if lname == b"content-length":
            self.length = True
        self.head += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.status = status
        head = self.head
        head[0] = STATUS_LINES[status, self.reason]
        chunked = named = False
        for lname, value in self.hop:
            if lname == b"transfer-encoding":
                chunked = True
            elif lname == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                named = True
        if named:
            head = self.head = without_named(head, self.hop)
        if status == 101:
            # Only a WebSocket handshake may switch; the client side checks that.
            self.head_sent = True
            return
        # Other 1xx interim answers (103 Early Hints) are not forwarded: we
        # answered Expect ourselves.
        self.interim = 100 <= status < 200
        if self.interim:
            self._new_head()
            return
        no_body = self.is_head or status == 204 or status == 304
        if status == 204 and self.length:
            head = self.head = _without_content_length(head)  # RFC 9110 8.6: never on a 204
        self.body_framed = no_body or self.length or chunked
        self.head_sent = True
        self.client.on_upstream_head(self, status, head, no_body or self.length)
        if self.is_head:
            # llhttp cannot know a HEAD response has no body, and httptools
            # drops a callback's return value (llhttp's "skip body"): stop it.
            raise _HeadResponseDone(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.client.on_upstream_body(body)

    def on_message_complete(self) -> None:
        if self.status == 101:
            return
        if self.interim:
            self.interim = False
            return
        self._complete(self.parser.should_keep_alive())

    # -- internals -----------------------------------------------------------------

    def _detach(self) -> ClientConnection | None:
        client = self.client
        if client is not None:
            self.client = None
            self.upstream.inflight -= 1
            client.exchange_ended(self)
        return client

    def _complete(self, keep_alive: bool) -> None:
        client = self._detach()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        # An answer that came before the whole request body went out (an early
        # 413, say) leaves the connection mid-request: never reuse it, or the
        # next request would land inside the rest of this body.
        if keep_alive and self.transport is not None and self.body_file is None:
            self.phase = IDLE
            self.upstream.release(self)
        else:
            self.close()
        if client is not None:
            client.on_upstream_done()

    def _closed_under_request(self, reset: bool, why, transport) -> None:
        if self.phase is AWAITING and self.client.unsend(transport):
            # The upstream closed the pooled connection before our request even
            # left (it was still queued for the end of this loop pass).
            delivery = NOT_SENT
        else:
            delivery = delivery_at_close(self.phase is RECEIVING, reset)
        self._fail(UpstreamResetError(f"{self.upstream.address}: connection closed ({why})"),
                   delivery)

    def _fail(self, err: ProxyError, delivery: Delivery) -> None:
        client = self._detach()
        self.close()
        if client is not None:
            resent = client.on_upstream_error(self.upstream, err, delivery)
            if isinstance(err, UpstreamResetError) and delivery is not ANSWERED:
                self.upstream.note_close(resent)


def _without_content_length(head: list[bytes]) -> list[bytes]:
    """`head` (status line, then name, ": ", value, CRLF per field) minus Content-Length."""
    out = head[:1]
    for i in range(1, len(head), 4):
        if head[i].lower() != b"content-length":
            out += head[i:i + 4]
    return out
