"""The client side of the data plane: one protocol object per client connection.

Requests are parsed by llhttp (httptools) in callbacks, buffered whole
(head and body) and answered strictly in order, one upstream exchange at a
time, so pipelined requests come back in the order they were sent.  The
response is streamed back as the upstream produces it; when the client reads
slowly we stop reading the upstream instead of buffering.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections import deque
from typing import TYPE_CHECKING

import httptools

from .errors import (
    BadRequestError,
    HeaderTooLargeError,
    ProxyError,
    TargetTooLongError,
    VersionNotSupportedError,
    error_response,
)
from .exchange import Exchange
from .http11 import strict_request_parser
from .request import Request
from .tunnel import Tunnel

if TYPE_CHECKING:
    from .plane import DataPlane

MAX_TARGET = 8192
# Pipelined requests parsed ahead of the one being answered; past this we stop
# reading the socket so a client cannot queue unbounded work.
MAX_QUEUED = 8
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
WRITE_HIGH_WATER = 64 * 1024


class Read(enum.Enum):
    """The read side of a client connection: one phase, set by `_enter`."""

    NEW = "new"          # connected, not a byte yet
    IDLE = "idle"        # between requests on a keep-alive connection
    HEAD = "head"        # a request head is arriving
    BODY = "body"        # its body is arriving
    WAITING = "waiting"  # a whole request is read; answers are under way
    STOPPED = "stopped"  # nothing more is read as HTTP: rejected, cut short, or upgrading


NEW, IDLE, HEAD, BODY, WAITING, STOPPED = Read
# The timeout (a field of TimeoutsConfig) that runs in each phase; none in the others.
DEADLINES = {NEW: "client_header", IDLE: "client_idle", HEAD: "client_header",
             BODY: "client_body"}


class ClientConnection(asyncio.Protocol):
    """One client connection: parse, route, forward, stream back, in order."""

    __slots__ = (
        "plane", "transport", "parser", "peer", "peer_bytes", "trusted", "queue", "reading",
        "current", "paused_writing", "read_paused", "deadline", "send_deadline", "head_size",
        "early", "starting", "idle_since", "read",
    )

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.transport = None
        self.parser = strict_request_parser(self)
        self.peer = "unix"
        self.peer_bytes = b"unix"  # as X-Forwarded-For gets it, encoded once
        self.trusted = False
        self.queue: deque[Request] = deque()
        self.reading: Request | None = None
        self.current: Exchange | None = None  # the request being answered
        self.paused_writing = False
        self.read_paused = False
        self.deadline = 0.0  # of the read phase (DEADLINES)
        self.send_deadline = 0.0  # while the client does not read what we send
        self.head_size = 0
        # Bytes that followed a WebSocket handshake, held until the upstream
        # accepts it (None: not waiting for an upgrade).
        self.early: bytearray | None = None
        self.starting = False  # inside _next (see there)
        self.idle_since = 0.0  # when it last became idle (see DataPlane.idle)
        self.read = NEW

    def __repr__(self) -> str:
        return (f"<ClientConnection {self.peer} read={self.read.value} "
                f"current={self.current!r} queued={len(self.queue)}>")

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        plane = self.plane
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = peer[0]
            self.peer_bytes = self.peer.encode()
            self.trusted = plane.forwarding.is_trusted_proxy(self.peer)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if len(plane.clients) >= plane.max_connections and not plane.evict_idle():
            # Every connection is busy with a request: only then is a new one refused.
            plane.log_event("connection_refused", reason="max_connections", peer=self.peer)
            transport.write(error_response(503))
            transport.close()
            return
        plane.clients.add(self)
        now = time.monotonic()
        self._enter(NEW, now)
        self.idle_since = now
        plane.idle[self] = None

    def data_received(self, data: bytes) -> None:
        if self.early is not None:
            self._hold_early(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_requested(data[exc.args[0]:])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._reject(cause if isinstance(cause, ProxyError) else BadRequestError(repr(cause)))
            return
        except httptools.HttpParserError as exc:
            self._reject(_parse_error(str(exc), data))
            return
        if self.reading is not None and data.endswith(b"\r\n") and \
                self.parser.get_http_version() == "0.0":
            # A request line ended without a version (HTTP/0.9): llhttp would
            # wait for more, we answer now.
            self._reject(BadRequestError("request line without HTTP version"))

    def _upgrade_requested(self, rest: bytes) -> None:
        """llhttp stopped after a request with Upgrade; what now depends on the kind."""
        last = self.queue[-1] if self.queue else self.current.request if self.current else None
        if last is not None and last.upgrade:
            # Nothing more is HTTP until the upstream answers the handshake.
            self._enter(STOPPED)
            self.early = bytearray()
            self._hold_early(rest)
            return
        # Any other upgrade (h2c, ...) is declined: the request was forwarded
        # without it, and what follows is the next HTTP/1.1 request.
        self.parser = strict_request_parser(self)
        if rest:
            self.data_received(rest)

    def _hold_early(self, data: bytes) -> None:
        self.early += data
        if len(self.early) > 65536:
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        # Stop reading the upstream while the client's buffer is full, or a slow
        # reader makes us hold the whole response in memory.
        self.paused_writing = True
        self.send_deadline = time.monotonic() + self.plane.timeouts.client_send
        if self.current is not None and self.current.conn is not None:
            self.current.conn.pause()

    def resume_writing(self) -> None:
        self.paused_writing = False
        self.send_deadline = 0.0
        if self.current is not None and self.current.conn is not None:
            self.current.conn.resume()

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.plane.clients.discard(self)
        self.plane.idle.pop(self, None)
        for req in (self.reading, *self.queue):
            if req is not None:
                req.close()
        if self.current is not None:
            self.current.client_gone()

    # -- llhttp callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        now = time.monotonic()
        self.plane.idle.pop(self, None)
        self.reading = Request(now)
        self.head_size = 0
        self._enter(HEAD, now)

    def on_url(self, url: bytes) -> None:
        req = self.reading
        req.target += url
        if len(req.target) > MAX_TARGET:
            raise TargetTooLongError(f"request target over {MAX_TARGET} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self.head_size = self.head_size + len(name) + len(value) + 4
        if size > self.plane.max_header:
            raise HeaderTooLargeError(f"request head over {self.plane.max_header} bytes")
        # llhttp strips leading whitespace from values; RFC 9110 5.5 excludes
        # the trailing kind too.
        self.reading.headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        req = self.reading
        parser = self.parser
        plane = self.plane
        req.method = parser.get_method()
        req.version = parser.get_http_version()
        req.keep_alive = parser.should_keep_alive()
        req.inspect(plane, plane.forwarding.drop_set(self.trusted))
        if req.expect_continue and self.current is None and not self.queue:
            req.expect_continue = False
            plane.outbox.send(self.transport, CONTINUE)
        if req.framed:
            # A body follows.  Without one llhttp completes the message at
            # once, so a bodiless request is spared the clock read.
            self._enter(BODY, time.monotonic())

    def on_body(self, body: bytes) -> None:
        plane = self.plane
        self.reading.add_body(body, plane.max_body, plane.body_memory)

    def on_message_complete(self) -> None:
        req = self.reading
        self.reading = None
        self._enter(WAITING)
        if self.current is None and not self.queue:
            # Nothing to answer first (the common case): straight to the upstream.
            self._start(req)
            return
        self.queue.append(req)
        if self.current is None:
            self._next()
        elif len(self.queue) >= MAX_QUEUED and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    # -- request side --------------------------------------------------------------

    def _reject(self, err: ProxyError) -> None:
        """Answer a malformed request in turn, then close; read nothing more."""
        req = self.reading or Request()
        self.reading = None
        req.error = err
        req.keep_alive = False
        req.started = time.monotonic()
        self.queue.append(req)
        self._enter(STOPPED)
        if self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        if self.current is None:
            self._next()

    def _next(self) -> None:
        """Start the oldest queued request if none is being answered.

        A loop, not recursion: requests answered at once (a 503, a queued 400)
        finish inside this call, and their `answered` would otherwise call back
        in, one frame per pipelined request.
        """
        if self.starting:
            return
        self.starting = True
        try:
            while self.current is None and self.queue and self.transport is not None:
                req = self.queue.popleft()
                self._start(req)
                if req.error is not None:
                    return  # answered, and the connection closes: read nothing more
        finally:
            self.starting = False
        if self.read_paused and len(self.queue) < MAX_QUEUED and self.transport is not None:
            if self.current is None or self.current.request.error is None:
                self.read_paused = False
                self.transport.resume_reading()

    def _start(self, req: Request) -> None:
        exchange = self.current = Exchange(self, req)
        exchange.start()

    # -- what the exchange tells us ------------------------------------------------

    def answered(self, exchange: Exchange, now: float) -> None:
        """`exchange` is complete: close, go idle, or start the next request."""
        self.current = None
        if not exchange.keep_alive:
            self._close()
            return
        reading = self.reading
        if reading is not None and reading.expect_continue:
            reading.expect_continue = False
            self.plane.outbox.send(self.transport, CONTINUE)
        if reading is None and not self.queue:
            self._enter(IDLE, now)
            self.idle_since = now
            self.plane.idle[self] = None  # the newest idle connection: last to be evicted
        if self.queue or self.read_paused:
            self._next()

    def cut(self, exchange: Exchange) -> None:
        """An answer broke after its head went out: abort the connection."""
        self.current = None
        self.plane.outbox.flush()  # what was queued of the answer goes out first
        self.transport.abort()

    def become_tunnel(self, exchange: Exchange, conn, head: bytes, rest: bytes) -> None:
        """The upstream accepted a WebSocket handshake: write the 101 `head`, then
        this connection's transport belongs to a Tunnel."""
        plane = self.plane
        plane.outbox.flush()  # the tunnel writes directly: what is queued goes first
        self.transport.write(head)
        conn.hand_over()
        early = bytes(self.early or b"")
        tunnel = Tunnel(plane, self.transport, conn.transport, conn.upstream, exchange.pool,
                        exchange.request, self.peer)
        plane.clients.discard(self)
        self.transport = None
        self.current = None
        tunnel.start(early, rest)

    # -- output and timers ---------------------------------------------------------

    def _close(self) -> None:
        """Close once what is queued for the client is written."""
        self.plane.outbox.flush()
        self.transport.close()

    def _enter(self, phase: Read, now: float = 0.0) -> None:
        """The one place the read phase changes, and with it the deadline the
        sweep enforces (`DEADLINES`; `now` is needed only for a phase that has one)."""
        self.read = phase
        seconds = self.plane.read_timeouts.get(phase)
        self.deadline = now + seconds if seconds is not None else 0.0

    def timed_out(self, now: float) -> None:
        """Called by the sweep when `deadline` has passed: what it means depends
        only on the phase it ran for."""
        phase = self.read
        self._enter(STOPPED)
        if phase is NEW or phase is IDLE:
            self._close()  # no request began: nothing to say
            return
        if self.current is None:  # HEAD or BODY, and nothing before it to finish
            self.plane.log_event("client_timeout", peer=self.peer, phase=phase.value)
            self.plane.outbox.send(self.transport, error_response(408))
            self._close()
            return
        # A request is being answered while the next one stalls mid-head:
        # stop reading; the connection closes once the answer is out.
        self.reading = None
        self.current.keep_alive = False

    def send_timed_out(self) -> None:
        """The client stopped reading for longer than timeouts.client_send."""
        self.send_deadline = 0.0
        self.plane.log_event("client_send_timeout", peer=self.peer)
        self.transport.abort()

    def close_if_idle(self) -> bool:
        if self.current is None and self.reading is None and not self.queue:
            if self.transport is not None:
                self._close()
            return True
        return False


_VERSION_LINE = re.compile(rb"HTTP/[0-9]\.[0-9]\r\n")


def _parse_error(message: str, data: bytes) -> ProxyError:
    """llhttp's complaint as a status: 505 only for a well-formed, unsupported version."""
    if message == "Invalid HTTP version" and _VERSION_LINE.search(data):
        return VersionNotSupportedError(message)
    return BadRequestError(message)
