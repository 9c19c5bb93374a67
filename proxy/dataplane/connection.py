"""A connection to an upstream, carrying one request at a time.

An `UpstreamConnection` carries one request at a time, for one exchange
(exchange.py), which it sees only as a `sink.ResponseSink`.  Choosing or
opening it is dispatch.py, reading the response response.py; this module is
the connection's life: send, pool, and when it breaks, how far the request
got (`retry.Delivery`), from which the exchange alone decides whether to send
it again.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from time import monotonic
from typing import TYPE_CHECKING

import httptools

from .errors import (
    DrainCutError,
    ProxyError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from .http11 import strict_response_parser
from .response import AWAITING, CLOSED, IDLE, MAX_HEAD, RECEIVING, TUNNEL, ResponseReader
from .retry import ANSWERED, NOT_SENT, TIMED_OUT, Delivery, delivery_at_close

if TYPE_CHECKING:
    from .sink import ResponseSink
    from .upstream import Upstream

# Errors that mean the peer reset the connection (see retry.py).
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE})


class UpstreamConnection(ResponseReader, asyncio.Protocol):
    """One keep-alive connection to an upstream; one request at a time."""

    __slots__ = (
        "upstream", "transport", "parser", "exchange", "phase", "is_head", "status", "reason",
        "head", "hop", "length", "interim", "head_sent", "head_read", "body_framed",
        "idle_since", "deadline", "paused", "body_file", "write_paused",
    )

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport = None
        self.parser = strict_response_parser(self)
        self.exchange: ResponseSink | None = None  # the request it carries now
        self.phase = IDLE
        self.is_head = False
        self.status = 0
        self.reason = b""
        # The response head as it is parsed: a slot for the status line, then the
        # field lines we pass on (in pieces: four a field from httptools, one for
        # all from _llhttp); the hop-by-hop fields aside; whether it has a length.
        self.head: list[bytes] = [b""]
        self.hop: tuple[tuple[bytes, bytes], ...] = ()
        self.length = False
        self.interim = False
        self.head_sent = False
        self.head_read = 0  # bytes read of an answer whose head has not ended yet
        self.body_framed = True
        self.idle_since = 0.0
        self.deadline = 0.0
        self.paused = False
        self.body_file = None  # a spilled request body still being sent
        self.write_paused = False

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.upstream.address} {self.phase.value}>"

    # -- driven by the client side -------------------------------------------------

    def start(self, exchange: ResponseSink, payload: bytes, is_head: bool, body_file,
              now: float) -> None:
        self.exchange = exchange
        self.phase = AWAITING
        self.head_sent = False
        self.head_read = 0
        self.is_head = is_head
        self._new_head()
        self.deadline = now + self.upstream.response_timeout
        exchange.attached(self)
        if body_file is None:
            exchange.send_upstream(self.transport, payload)
            return
        # The spilled body follows from its file, written directly, so the head
        # cannot wait in the plane's queue either.
        self.transport.write(payload)
        body_file.seek(0)
        self.body_file = body_file
        self._pump()

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
        self.exchange = None  # upstream.inflight stays counted until the tunnel closes
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
            self.deadline = monotonic() + self.upstream.response_timeout
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
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection are a protocol error: never reuse it.
            self.close()
            return
        self.phase = RECEIVING
        try:
            self.parser.feed_data(data)  # the callbacks are response.py
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.parse_failed(exc, data)  # HttpParserUpgrade is not an HttpParserError
        if not self.head_sent and self.exchange is not None:
            # A read ended inside the head (rare: it is one read almost always).
            self.head_read += len(data)
            if self.head_read > MAX_HEAD:  # nginx and HAProxy stop far sooner (4-16 KB)
                self._fail(UpstreamProtocolError(f"response head over {MAX_HEAD} bytes"),
                           ANSWERED)
        if self.exchange is not None:
            # Still mid-response: the timeout counts from the last bytes.  (A
            # response that ended in this read already went out with its pass_on.)
            if not self.paused:
                self.deadline = monotonic() + self.upstream.response_timeout
            exchange.pass_on()

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
        if self.exchange is None:
            if self in up.idle:
                up.idle.remove(self)
            return
        reset = isinstance(exc, OSError) and exc.errno in _RESET_ERRNOS
        if reset and self.phase is AWAITING and transport is not None:
            # With `self.transport` gone, a whole early answer closes the
            # connection instead of pooling it.
            self._salvage(transport.get_extra_info("socket"))
            if self.exchange is None:
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
            if self.exchange is not None and self.head_sent and not self.body_framed:
                self._complete(False)  # a close-delimited answer ends here

    # -- internals -----------------------------------------------------------------

    def _detach(self) -> ResponseSink | None:
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            self.upstream.inflight -= 1
            exchange.detached(self)
        return exchange

    def _complete(self, keep_alive: bool) -> None:
        exchange = self._detach()
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
        if exchange is not None:
            exchange.on_upstream_done()

    def _closed_under_request(self, reset: bool, why, transport) -> None:
        if self.phase is AWAITING and self.exchange.unsend(transport):
            # The upstream closed the pooled connection before our request even
            # left (it was still queued for the end of this loop pass).
            delivery = NOT_SENT
        else:
            delivery = delivery_at_close(self.phase is RECEIVING, reset)
        self._fail(UpstreamResetError(f"{self.upstream.address}: connection closed ({why})"),
                   delivery)

    def _fail(self, err: ProxyError, delivery: Delivery) -> None:
        exchange = self._detach()
        self.close()
        if exchange is not None:
            resent = exchange.on_upstream_error(self.upstream, err, delivery)
            if isinstance(err, UpstreamResetError) and delivery is not ANSWERED:
                self.upstream.note_close(resent)
