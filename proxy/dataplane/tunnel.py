"""A WebSocket connection after its handshake: bytes piped both ways.

Once the upstream answered 101, both transports are handed to a `Tunnel`
(`transport.set_protocol`), which copies bytes in each direction and pauses
the reading side whenever the writing side's buffer is full.  The upstream
stays counted as in flight until the tunnel closes, so `drain` and
`status` see open WebSockets.
"""

from __future__ import annotations

import asyncio
import time


class _End(asyncio.Protocol):
    """One side of the tunnel: what it reads goes to the other side."""

    __slots__ = ("tunnel", "transport", "other", "received", "ended")

    def __init__(self, tunnel: Tunnel, transport) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.other: _End | None = None
        self.received = 0
        self.ended = False  # this side sent its FIN

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        other = self.other.transport
        if other is not None:
            other.write(data)

    def eof_received(self) -> bool:
        # A half-close is passed on and the other side may go on talking; once
        # both sides have ended, nothing more can flow and the tunnel closes
        # (else both sockets stay open forever, half-closed each way).
        self.ended = True
        other = self.other.transport
        if self.other.ended or other is None or not other.can_write_eof():
            self.tunnel.close()
            return False
        other.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.tunnel.close()


class Tunnel:
    __slots__ = ("plane", "client", "upstream_end", "upstream", "pool", "req", "peer", "closed")

    def __init__(self, plane, client_transport, upstream_transport, upstream, pool, req,
                 peer: str) -> None:
        self.plane = plane
        self.upstream = upstream
        self.pool = pool
        self.req = req
        self.peer = peer
        self.closed = False
        self.client = _End(self, client_transport)
        self.upstream_end = _End(self, upstream_transport)
        self.client.other = self.upstream_end
        self.upstream_end.other = self.client

    def __repr__(self) -> str:
        return f"<Tunnel {self.peer} -> {self.upstream.address} pool={self.pool.name}>"

    def start(self, from_client: bytes, from_upstream: bytes) -> None:
        """Take over both transports; pass on bytes that came with the handshake."""
        self.plane.tunnels.add(self)
        for end in (self.client, self.upstream_end):
            end.transport.set_protocol(end)
            end.transport.resume_reading()
        if from_client:
            self.client.data_received(from_client)
        if from_upstream:
            self.upstream_end.data_received(from_upstream)

    def close(self, error: str | None = None) -> None:
        """Close both sides (`error`: why the proxy ended it, for the access line)."""
        if self.closed:
            return
        self.closed = True
        for end in (self.client, self.upstream_end):
            if end.transport is not None:
                end.transport.close()
        self.upstream.inflight -= 1
        self.plane.tunnels.discard(self)
        self.pool.count(101)
        access = self.plane.access
        if access is not None:
            access.record(self.req, 101, self.pool.name, self.upstream.label,
                          time.monotonic() - self.req.started,
                          self.upstream_end.received, self.peer, error)
