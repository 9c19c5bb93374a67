"""The client side of the data plane: one protocol object per client connection.

Requests are parsed (reading.py) and buffered whole, then answered strictly
in order, one `Exchange` at a time (exchange.py), so pipelined requests come
back in the order they were sent.  The response is streamed back as the
upstream produces it; when the client reads slowly we stop reading the
upstream instead of buffering.  This module is the connection's life: the
queue of requests, the timers, and closing.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from collections import deque
from typing import TYPE_CHECKING

from .errors import error_response
from .exchange import Exchange
from .http11 import strict_request_parser
from .reading import CONTINUE, IDLE, MAX_QUEUED, NEW, STOPPED, RequestReader
from .request import Request
from .tunnel import Tunnel

if TYPE_CHECKING:
    from .plane import DataPlane

WRITE_HIGH_WATER = 64 * 1024


class ClientConnection(RequestReader, asyncio.Protocol):
    """One client connection: parse, route, forward, stream back, in order.
    (Its bases: reading.RequestReader, then sink.Client, what an exchange sees.)"""

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
        now = monotonic()
        self._enter(NEW, now)
        self.idle_since = now
        plane.idle[self] = None

    def pause_writing(self) -> None:
        # Stop reading the upstream while the client's buffer is full, or a slow
        # reader makes us hold the whole response in memory.
        self.paused_writing = True
        self.send_deadline = monotonic() + self.plane.timeouts.client_send
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
