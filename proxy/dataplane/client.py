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
    NoHealthyPoolError,
    InternalError,
    ProxyError,
    TargetTooLongError,
    UpstreamProtocolError,
    VersionNotSupportedError,
    error_response,
)
from .headers import came_over_https
from .http11 import strict_request_parser
from .request import Request
from .retry import ANSWERED, Delivery, may_resend
from .tunnel import Tunnel

if TYPE_CHECKING:
    from .plane import DataPlane
    from .pool import Pool
    from .upstream import Upstream, UpstreamConnection

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


class Answer(enum.Enum):
    """The answer side: what is happening to `current`, the request being answered."""

    NONE = "none"              # nothing is being answered
    HELD = "held"              # it waits for a pause to end (pause.py)
    FORWARDING = "forwarding"  # sent (or being connected) to an upstream; no head back yet
    STREAMING = "streaming"    # the answer's head went out to the client


NONE, HELD, FORWARDING, STREAMING = Answer
# The timeout (a field of TimeoutsConfig) that runs in each phase; none in the others.
DEADLINES = {NEW: "client_header", IDLE: "client_idle", HEAD: "client_header",
             BODY: "client_body"}


class ClientConnection(asyncio.Protocol):
    """One client connection: parse, route, forward, stream back, in order."""

    __slots__ = (
        "plane", "transport", "parser", "peer", "peer_bytes", "trusted", "queue", "reading",
        "current", "upstream", "connecting", "out", "paused_writing", "read_paused",
        "deadline", "send_deadline", "head_size", "pool", "upstream_addr", "set_cookie",
        "keep_alive", "chunked_out", "status", "sent_bytes", "early", "in_next",
        "idle_since", "read", "answer",
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
        self.current: Request | None = None
        self.upstream: UpstreamConnection | None = None
        self.connecting = None
        self.out: list[bytes] = []
        self.paused_writing = False
        self.read_paused = False
        self.deadline = 0.0
        self.send_deadline = 0.0
        self.head_size = 0
        self.pool: Pool | None = None
        self.upstream_addr = None
        self.set_cookie = False
        self.keep_alive = True
        self.chunked_out = False
        self.status = 0
        self.sent_bytes = 0
        # Bytes that followed a WebSocket handshake, held until the upstream
        # accepts it (None: not waiting for an upgrade).
        self.early: bytearray | None = None
        self.in_next = False
        self.idle_since = 0.0  # when it last became idle (see DataPlane.idle)
        self.read = NEW
        self.answer = NONE

    def __repr__(self) -> str:
        return (f"<ClientConnection {self.peer} read={self.read.value} "
                f"answer={self.answer.value} queued={len(self.queue)}>")

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        plane = self.plane
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = peer[0]
            self.peer_bytes = self.peer.encode()
            self.trusted = plane.is_trusted_proxy(self.peer)
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
        last = self.queue[-1] if self.queue else self.current
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
        if self.upstream is not None:
            self.upstream.pause()

    def resume_writing(self) -> None:
        self.paused_writing = False
        self.send_deadline = 0.0
        if self.upstream is not None:
            self.upstream.resume()

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.plane.clients.discard(self)
        self.plane.idle.pop(self, None)
        for req in (self.reading, self.current, *self.queue):
            if req is not None:
                req.close()
        if self.connecting is not None:
            self.connecting.cancel()
        if self.upstream is not None:
            # The response has nowhere to go; the upstream connection is
            # mid-message and cannot be reused.
            self.upstream.abandon()
        if self.current is not None and self.current.error is None:
            # Left while its request was connecting, held by a pause or answered.
            self._log(499, error="client_gone")
            if self.pool is not None:
                self.pool.count(None)

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
        req.inspect(plane, plane.drop_set(self.trusted))
        if req.expect_continue and self.current is None and not self.queue:
            req.expect_continue = False
            plane.send(self.transport, CONTINUE)
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
            self.current = req
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
        finish inside this call, and their _finish would otherwise call back in,
        one frame per pipelined request.
        """
        if self.in_next:
            return
        self.in_next = True
        try:
            while self.current is None and self.queue and self.transport is not None:
                req = self.queue.popleft()
                self.current = req
                if req.error is not None:
                    self._answer_error(req.error)
                    return
                self._start(req)
        finally:
            self.in_next = False
        if self.read_paused and len(self.queue) < MAX_QUEUED and self.transport is not None:
            if self.current is None or self.current.error is None:
                self.read_paused = False
                self.transport.resume_reading()

    def _start(self, req: Request) -> None:
        """Forward `req`; whatever goes wrong, the client gets an answer."""
        pause = self.plane.pause
        if pause is not None:
            self.answer = HELD
            pause.hold(self)  # started by resume_held(), in arrival order
            return
        self._go(req)

    def is_waiting(self) -> bool:
        """Held by a pause, and still wanted (the client has not gone)."""
        return self.answer is HELD and self.transport is not None

    def resume_held(self) -> None:
        self._go(self.current)

    def _go(self, req: Request) -> None:
        try:
            self._forward(req)
        except ProxyError as err:
            self._answer_error(err)
        except Exception as exc:  # a bug must cost one request, not hang the connection
            self.plane.log_event("internal_error", detail=repr(exc), peer=self.peer)
            self._answer_error(InternalError(repr(exc)))

    def _forward(self, req: Request) -> None:
        plane = self.plane
        choice = plane.choose(req, self.peer, self.trusted)
        if choice is None:
            self._answer_error(NoHealthyPoolError("no healthy pool with weight"))
            return
        pool = plane.pools[choice.pool]
        up = pool.pick()
        if up is None:
            self._answer_error(NoHealthyPoolError(f"pool {pool.name} has no healthy upstream"))
            return
        self.pool = pool
        self.set_cookie = choice.set_cookie
        req.payload = plane.upstream_request(req, self.peer_bytes, self.trusted)
        self._dispatch(up, req)

    def _dispatch(self, up: Upstream, req: Request, fresh: bool = False) -> None:
        req.tries += 1
        self.answer = FORWARDING
        self.upstream_addr = up.label
        self.status = 0
        self.sent_bytes = 0
        self.chunked_out = False
        up.dispatch(self, req.payload, req.method == b"HEAD", req.body_file, fresh)

    # -- what the upstream side may ask of us (and nothing else) ---------------------

    def connecting_to(self, task) -> None:
        """A connect for this client's request is under way (so that a client who
        leaves cancels it)."""
        self.connecting = task

    def connect_done(self, task) -> None:
        if self.connecting is task:
            self.connecting = None

    def exchange_started(self, conn: UpstreamConnection) -> None:
        self.upstream = conn

    def exchange_ended(self, conn: UpstreamConnection) -> None:
        if self.upstream is conn:
            self.upstream = None

    def send_upstream(self, transport, payload: bytes) -> None:
        self.plane.send(transport, payload)

    def unsend(self, transport) -> bool:
        """Take back what is still queued for `transport`; True if there was some."""
        return self.plane.unsend(transport)

    # -- response side, called by the upstream connection --------------------------

    def on_upstream_head(self, conn, status: int, head: list[bytes], sized: bool) -> None:
        """The response head: `head` is the status line and the upstream's lines
        we pass on, ours to extend; `sized` is true when it has a Content-Length
        or can have no body."""
        req = self.current
        plane = self.plane
        self.answer = STREAMING
        self.status = status
        # A refused WebSocket handshake ends the connection: llhttp stopped
        # parsing at the Upgrade and what follows cannot be trusted as HTTP.
        keep = req.keep_alive and not plane.draining and not req.upgrade
        if not sized:
            if req.version == "1.1":
                self.chunked_out = True
                head.append(b"Transfer-Encoding: chunked\r\n")
            else:
                keep = False  # an HTTP/1.0 client reads to the close
        if self.set_cookie:
            head.append(plane.set_cookie_line(
                self.pool.name, self.trusted and came_over_https(req.headers)))
        if not keep:
            head.append(b"Connection: close\r\n")
        elif req.version == "1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        self.keep_alive = keep
        self.out += head
        if self.paused_writing:
            conn.pause()

    def on_upstream_upgraded(self, conn, head: list[bytes], rest: bytes) -> None:
        """The upstream accepted a WebSocket handshake: answer 101 (`head` is its
        status line and the lines we pass on), then pipe bytes."""
        req = self.current
        if req is None or not req.upgrade:
            conn.abandon()
            self.on_upstream_error(conn.upstream, UpstreamProtocolError("unsolicited 101"),
                                   ANSWERED)
            return
        if self.set_cookie:  # sticky from the handshake on
            head = [*head, self.plane.set_cookie_line(
                self.pool.name, self.trusted and came_over_https(req.headers))]
        self.plane.flush_writes()  # the tunnel writes directly: what is queued goes first
        self.transport.write(b"".join((
            *head, b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n")))
        conn.hand_over()
        early = bytes(self.early or b"")
        tunnel = Tunnel(self.plane, self.transport, conn.transport, conn.upstream, self.pool,
                        req, self.peer)
        self.plane.clients.discard(self)
        self.transport = None
        self.current = None
        self.answer = NONE
        self.upstream = None
        tunnel.start(early, rest)

    def on_upstream_body(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        if self.chunked_out:
            self.out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self.out.append(data)

    def on_upstream_done(self) -> None:
        if self.chunked_out:
            self.out.append(b"0\r\n\r\n")
        self.flush()
        self._finish(self.status)

    def on_upstream_error(self, up: Upstream, err: ProxyError, delivery: Delivery) -> bool:
        """The exchange with `up` failed; `delivery` says how far the request got.
        Returns True when the request was sent again (see retry.py)."""
        req = self.current
        if req is None or self.transport is None:
            return False
        if self.answer is STREAMING:
            # Part of the response is out: a short body must not pass for a
            # whole one, so the client connection is cut.
            self._cut(err, up)
            return False
        if delivery is not ANSWERED and may_resend(delivery, req.keyed, req.tries):
            pool = self.pool = self.plane.pools.get(self.pool.name, self.pool)  # a reload may have run
            retry = pool.pick(exclude=up) or (up if up.healthy and up.enabled else None)
            if retry is not None:
                # Info, not a warning: with Swoole's worker recycling this is
                # normal life, and Upstream.note_close reports it once a minute.
                self.plane.log.info("upstream_retry", upstream=up.label, to=retry.label,
                                    detail=err.detail, delivery=delivery.value)
                self._dispatch(retry, req, fresh=True)
                return True
        self._answer_error(err, upstream=up)
        return False

    def _cut(self, err: ProxyError, up: Upstream) -> None:
        """End a response whose head is already out: log it as cut, abort."""
        req = self.current
        self.plane.log_event(err.event, upstream=up.label, detail=err.detail, after_head=True)
        self.out.clear()
        self._log(self.status, error=err.event)
        self.pool.count(None, time.monotonic() - req.started)
        req.close()
        self.current = None
        self.answer = NONE
        self.plane.flush_writes()  # what was queued of the answer goes out first
        self.transport.abort()

    def _answer_error(self, err: ProxyError, upstream: Upstream | None = None) -> None:
        req = self.current
        # After a failed WebSocket handshake llhttp has stopped at the Upgrade:
        # what follows on this connection is not HTTP we can parse, so close.
        keep = req.error is None and req.keep_alive and not self.plane.draining and \
            not req.upgrade
        self.plane.log_event(err.event, status=err.status, detail=err.detail,
                             upstream=str(upstream.address) if upstream else None,
                             peer=self.peer)
        self.status = err.status
        self.keep_alive = keep
        self.out.append(error_response(err.status, close=not keep))
        self.flush()
        if self.pool is not None:
            self.pool.count(None, time.monotonic() - req.started)
        self._finish(err.status, counted=True)

    def _finish(self, status: int, counted: bool = False) -> None:
        req = self.current
        if req.body_file is not None:
            req.close()
        now = time.monotonic()  # one clock read for stats, the log line and the idle deadline
        if not counted and self.pool is not None:
            self.pool.count(status, now - req.started)
        self._log(status, now)
        self.current = None
        self.answer = NONE
        self.pool = None
        self.upstream_addr = None
        if not self.keep_alive:
            self._close()
            return
        reading = self.reading
        if reading is not None and reading.expect_continue:
            reading.expect_continue = False
            self.plane.send(self.transport, CONTINUE)
        if reading is None and not self.queue:
            self._enter(IDLE, now)
            self.idle_since = now
            self.plane.idle[self] = None  # the newest idle connection: last to be evicted
        if self.queue or self.read_paused:
            self._next()

    def _log(self, status: int, now: float | None = None, error: str | None = None) -> None:
        req = self.current
        access = self.plane.access
        if access is None or req is None:
            return
        if now is None:
            now = time.monotonic()
        access.record(req, status, self.pool.name if self.pool else None,
                      self.upstream_addr, now - req.started, self.sent_bytes, self.peer, error)

    # -- output and timers ---------------------------------------------------------

    def flush(self) -> None:
        """Queue what `out` holds (see DataPlane.send: it goes out at the end of
        this pass of the event loop)."""
        out = self.out
        if out and self.transport is not None:
            self.plane.send(self.transport, out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _close(self) -> None:
        """Close once what is queued for the client is written."""
        self.plane.flush_writes()
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
            self.plane.send(self.transport, error_response(408))
            self._close()
            return
        # A request is being answered while the next one stalls mid-head:
        # stop reading; the connection closes once the answer is out.
        self.reading = None
        self.keep_alive = False
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

    def holds(self) -> tuple[Upstream, Request] | None:
        """(upstream, request) of the exchange in flight, for a drain to show or cut."""
        req = self.current
        if req is None or self.upstream is None:
            return None
        return self.upstream.upstream, req

    def cut_exchange(self) -> None:
        """A drain ran out of time: end the exchange in flight (a stream, a long poll)."""
        if self.upstream is not None:
            self.upstream.cut()


_VERSION_LINE = re.compile(rb"HTTP/[0-9]\.[0-9]\r\n")


def _parse_error(message: str, data: bytes) -> ProxyError:
    """llhttp's complaint as a status: 505 only for a well-formed, unsupported version."""
    if message == "Invalid HTTP version" and _VERSION_LINE.search(data):
        return VersionNotSupportedError(message)
    return BadRequestError(message)
