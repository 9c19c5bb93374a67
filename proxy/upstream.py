"""Upstreams and their keep-alive connections.

An `Upstream` is one address of a pool (TCP or Unix socket) with a stack of
idle keep-alive connections shared by every client.  An
`UpstreamConnection` carries one request at a time and parses the response
with llhttp, handing each piece to the client connection it serves.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from .headers import HOP_BY_HOP, STATUS_LINES, without_named
from .http11 import strict_response_parser

from .errors import (
    ProxyError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeoutError,
)

if TYPE_CHECKING:
    from .client import ClientConnection
    from .config import Address

# Idle connections kept per upstream beyond what is in use.  Swoole keeps a
# connection per coroutine cheaply, but there is no point hoarding more than
# the concurrency we have seen.
MAX_IDLE = 512


# Connection values that name no other field (the common case, not worth a parse).
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


class _HeadResponseDone(Exception):
    """Stops llhttp after a HEAD response's head: it cannot know there is no body."""


class Upstream:
    """One upstream address, its idle connections and its counters."""

    __slots__ = (
        "address", "label", "pool", "loop", "connect_timeout", "idle_timeout",
        "idle", "inflight", "healthy", "requests", "connects",
        "passive_failures", "eject_after", "on_change",
    )

    def __init__(self, address: Address, pool: str, loop, connect_timeout: float,
                 idle_timeout: float, eject_after: int = 3) -> None:
        self.address = address
        self.label = str(address)  # for logs, formatted once
        self.pool = pool
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.idle: list[UpstreamConnection] = []
        self.inflight = 0
        self.healthy = True
        self.requests = 0
        self.connects = 0
        self.passive_failures = 0
        self.eject_after = eject_after
        self.on_change = None  # set by the health checker: called on eject

    def __repr__(self) -> str:
        state = "up" if self.healthy else "down"
        return f"<Upstream {self.address} {state} inflight={self.inflight} idle={len(self.idle)}>"

    def dispatch(self, client: ClientConnection, payload: bytes, is_head: bool,
                 body_file=None) -> None:
        """Send one request on an idle connection, or on a new one."""
        self.inflight += 1
        self.requests += 1
        now = self.loop.time()
        idle = self.idle
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if transport is not None and not transport.is_closing() and \
                    now - conn.idle_since < self.idle_timeout:
                conn.start(client, payload, is_head, True, body_file, now)
                return
            conn.close()
        self._connect(client, payload, is_head, body_file)

    def _connect(self, client: ClientConnection, payload: bytes, is_head: bool,
                 body_file) -> None:
        self.connects += 1
        addr = self.address
        factory = lambda: UpstreamConnection(self)  # noqa: E731
        if addr.kind == "unix":
            coro = self.loop.create_unix_connection(factory, addr.path)
        else:
            coro = self.loop.create_connection(factory, addr.host, addr.port)
        task = self.loop.create_task(coro)
        timer = self.loop.call_later(self.connect_timeout, task.cancel)
        client.connecting = task
        task.add_done_callback(
            lambda t: self._connected(t, timer, client, payload, is_head, body_file))

    def _connected(self, task, timer, client, payload, is_head, body_file) -> None:
        timer.cancel()
        if client.connecting is task:
            client.connecting = None
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
            conn.start(client, payload, is_head, False, body_file, self.loop.time())
            return
        self.inflight -= 1
        self.note_connect_failure()
        err = exc if isinstance(exc, ProxyError) else UpstreamConnectError(f"{self.address}: {exc}")
        client.on_upstream_error(self, err, sent=False)

    def note_connect_failure(self) -> None:
        """Passive ejection: refused connects mean the workers are gone."""
        self.passive_failures += 1
        if self.healthy and self.passive_failures >= self.eject_after:
            self.healthy = False
            if self.on_change is not None:
                self.on_change(self, "passive")

    def release(self, conn: UpstreamConnection) -> None:
        if conn.transport is None or len(self.idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def close_idle(self, older_than: float | None = None) -> None:
        """Close idle connections (all, or those idle longer than `older_than` s)."""
        now = self.loop.time()
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
        "upstream", "transport", "parser", "client", "reused", "received",
        "is_head", "status", "reason", "head", "hop", "length", "interim", "head_sent",
        "body_framed", "idle_since", "deadline", "paused", "_head_keep_alive",
        "body_file", "write_paused", "upgraded",
    )

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport = None
        self.parser = strict_response_parser(self)
        self.client: ClientConnection | None = None
        self.reused = False
        self.received = False
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
        self._head_keep_alive = False
        self.body_file = None  # a spilled request body still being sent
        self.write_paused = False
        self.upgraded = False

    def __repr__(self) -> str:
        state = "busy" if self.client is not None else "idle"
        return f"<UpstreamConnection {self.upstream.address} {state} reused={self.reused}>"

    # -- driven by the client side -------------------------------------------------

    def start(self, client: ClientConnection, payload: bytes, is_head: bool, reused: bool,
              body_file, now: float) -> None:
        self.client = client
        self.reused = reused
        self.received = False
        self.head_sent = False
        self.is_head = is_head
        self._new_head()
        self.deadline = now + client.plane.upstream_response_timeout
        client.upstream = self
        if body_file is None:
            client.plane.send(self.transport, payload)
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
        while self.body_file is not None and not self.write_paused:
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
        self.deadline = 0.0

    def pause(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.deadline = 0.0  # a slow client is not the upstream's fault
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.deadline = self.upstream.loop.time() + self.client.plane.upstream_response_timeout
            self.transport.resume_reading()

    def close(self) -> None:
        self.body_file = None  # the client side owns (and closes) the file
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def abandon(self) -> None:
        """The client went away mid-exchange: this connection's state is unknown."""
        self._detach()
        self.close()

    def timed_out(self) -> None:
        client = self.client
        self._detach()
        self.close()
        if client is not None:
            client.on_upstream_error(self.upstream, UpstreamTimeoutError("no response in time"),
                                     sent=True, head_sent=self.head_sent)

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes on an idle connection are a protocol error: never reuse it.
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.upgraded:
                client.on_upstream_upgraded(self, self.head, data[exc.args[0]:])
                return
            self._fail(UpstreamProtocolError("unexpected protocol switch"))
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _HeadResponseDone):
                self._fail(UpstreamProtocolError(f"callback failed: {exc.__context__!r}"))
                return
            self.parser = strict_response_parser(self)
            self._complete(self._head_keep_alive)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(str(exc)))
        if self.client is not None:
            # Still mid-response: the timeout counts from the last bytes.  (A
            # response that ended in this read already went out with its flush.)
            if not self.paused:
                self.deadline = self.upstream.loop.time() + client.plane.upstream_response_timeout
            if client.out and client.transport is not None:
                client.flush()

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        self.transport = None
        up = self.upstream
        if self.client is None:
            if self in up.idle:
                up.idle.remove(self)
            return
        if self.head_sent and not self.body_framed:
            # A response without Content-Length or chunked ends at close.
            self._complete(False)
            return
        self._fail(UpstreamResetError(f"{up.address}: connection closed ({exc or 'eof'})"))

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
            self.upgraded = True
            self.head_sent = True
            return
        # Other 1xx interim answers (103 Early Hints) are not forwarded: we
        # answered Expect ourselves.
        self.interim = 100 <= status < 200
        if self.interim:
            self._new_head()
            return
        no_body = self.is_head or status == 204 or status == 304
        self.body_framed = no_body or self.length or chunked
        self.head_sent = True
        self.client.on_upstream_head(self, status, head, no_body or self.length)
        if self.is_head:
            self._head_keep_alive = self.parser.should_keep_alive()
            raise _HeadResponseDone()

    def on_body(self, body: bytes) -> None:
        self.client.on_upstream_body(body)

    def on_message_complete(self) -> None:
        if self.upgraded:
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
            if client.upstream is self:
                client.upstream = None
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
            self.upstream.release(self)
        else:
            self.close()
        if client is not None:
            client.on_upstream_done()

    def _fail(self, err: ProxyError) -> None:
        client = self._detach()
        self.close()
        if client is not None:
            client.on_upstream_error(self.upstream, err, sent=True, head_sent=self.head_sent,
                                     reused=self.reused, received=self.received)
