"""One request and its answer: the state that lives exactly as long as they do.

For the request it answers now, a client connection makes an `Exchange`: it
routes and forwards the request, takes the response (as a `sink.ResponseSink`)
and says when the answer is complete.  Made anew per request, it is reset in
one place.  (uvicorn's `RequestResponseCycle` is the model.)
"""

from __future__ import annotations

import enum
from time import monotonic
from typing import TYPE_CHECKING

from .dispatch import dispatch
from .errors import (InternalError, NoHealthyPoolError, ProxyError, UpstreamProtocolError,
                     error_response)
from .headers import came_over_https
from .retry import ANSWERED, Delivery, may_resend
from .sink import Client, ResponseSink
from .writes import join

if TYPE_CHECKING:
    from .connection import UpstreamConnection
    from .pool import Pool
    from .request import Request
    from .upstream import Upstream


class Answer(enum.Enum):
    """Where the answer is: one phase per exchange."""

    NEW = "new"                # not started yet
    HELD = "held"              # waits for a pause to end (pause.py)
    FORWARDING = "forwarding"  # sent (or being connected) to an upstream; no head back yet
    STREAMING = "streaming"    # the answer's head went out to the client
    DONE = "done"              # answered, failed, cut or handed to a tunnel


NEW, HELD, FORWARDING, STREAMING, DONE = Answer


class Exchange(ResponseSink):
    """The answer to one request, from routing to its last byte."""

    __slots__ = (
        "client", "plane", "request", "phase", "pool", "target", "conn", "connecting",
        "set_cookie", "status", "sent_bytes", "chunked", "keep_alive", "out",
    )

    def __init__(self, client: Client, request: Request) -> None:
        self.client = client
        self.plane = client.plane
        self.request = request
        self.phase = NEW
        self.pool: Pool | None = None
        self.target: Upstream | None = None  # the upstream it was last sent to
        self.conn: UpstreamConnection | None = None
        self.connecting = None  # the connect task, while one runs for us
        self.set_cookie = False
        self.status = 0
        self.sent_bytes = 0
        self.chunked = False  # we frame the body as chunks (the upstream did not size it)
        self.keep_alive = self.request.keep_alive and self.request.error is None  # typed via self
        self.out: list[bytes] = []  # what this answer adds for the client in this pass

    def __repr__(self) -> str:
        return f"<Exchange {self.request.method!r} {self.phase.value} {self.status}>"

    # -- driven by the client connection ----------------------------------------------

    def start(self) -> None:
        """Answer the request; whatever goes wrong, the client gets an answer."""
        req = self.request
        if req.error is not None:
            self._answer_error(req.error)
            return
        pause = self.plane.pause
        if pause is not None:
            self.phase = HELD
            pause.hold(self)  # started by resume_held(), in arrival order
            return
        self._go()

    def is_waiting(self) -> bool:
        """Held by a pause, and still wanted (the client has not gone)."""
        return self.phase is HELD and self.wanted()

    def resume_held(self) -> None:  # the pause ended
        self._go()

    def client_gone(self) -> None:
        """The client connection closed under this exchange."""
        if self.connecting is not None:
            self.connecting.cancel()
        if self.conn is not None:  # mid-message: it cannot be reused
            self.conn.abandon()
        if self.phase is not DONE:
            self.phase = DONE
            # Left while its request was connecting, held by a pause or answered.
            self._log(499, error="client_gone")
            if self.pool is not None:
                self.pool.count(None)
        self.request.close()

    def holds(self) -> Upstream | None:  # in flight to; for a drain to show or cut
        return self.conn.upstream if self.conn is not None else None

    def cut(self) -> None:
        """A drain ran out of time: end the exchange in flight (a stream, a long poll)."""
        if self.conn is not None:
            self.conn.cut()

    # -- routing and forwarding ---------------------------------------------------------

    def _go(self) -> None:
        try:
            self._forward()
        except ProxyError as err:
            self._answer_error(err)
        except Exception as exc:  # a bug must cost one request, not hang the connection
            self.plane.log_event("internal_error", detail=repr(exc), peer=self.client.peer)
            self._answer_error(InternalError(repr(exc)))

    def _forward(self) -> None:
        plane, req, client = self.plane, self.request, self.client
        choice = plane.choose(req, client.peer, client.trusted)
        if choice is None:
            self._answer_error(NoHealthyPoolError("no healthy pool with weight"))
            return
        pool_name, set_cookie = choice  # a tuple's items cost less than its attributes
        pool = plane.pools[pool_name]
        up = pool.pick()
        if up is None:
            self._answer_error(NoHealthyPoolError(f"pool {pool.name} has no healthy upstream"))
            return
        self.pool = pool
        self.set_cookie = set_cookie
        req.payload = plane.forwarding.render(req, client.peer_bytes, client.trusted)
        self._dispatch(up)

    def _dispatch(self, up: Upstream, fresh: bool = False) -> None:
        req = self.request
        req.tries += 1
        self.phase = FORWARDING
        self.target = up
        dispatch(up, self, req.payload, req.method == b"HEAD", req.body_file, fresh)

    # -- sink.ResponseSink: what the upstream side may ask of us ------------------------

    def wanted(self) -> bool:
        return self.client.current is self and self.client.transport is not None

    def connecting_to(self, task) -> None:
        self.connecting = task

    def connect_done(self, task) -> None:
        if self.connecting is task:
            self.connecting = None

    def attached(self, conn: UpstreamConnection) -> None:
        self.conn = conn

    def detached(self, conn: UpstreamConnection) -> None:
        if self.conn is conn:
            self.conn = None

    def send_upstream(self, transport, payload: bytes) -> None:
        self.plane.outbox.send(transport, payload)

    def unsend(self, transport) -> bool:
        return self.plane.outbox.unsend(transport)

    def on_upstream_head(self, conn, status: int, head: list[bytes], sized: bool) -> None:
        req, plane = self.request, self.plane
        self.phase = STREAMING
        self.status = status
        # A refused WebSocket handshake ends the connection (see _answer_error).
        keep = self.keep_alive and not plane.draining and not req.upgrade
        if not sized:
            if req.version == "1.1":
                self.chunked = True
                head.append(b"Transfer-Encoding: chunked\r\n")
            else:
                keep = False  # an HTTP/1.0 client reads to the close
        if self.set_cookie:
            head.append(plane.set_cookie_line(
                self.pool.name, self.client.trusted and came_over_https(req.headers)))
        if not keep:
            head.append(b"Connection: close\r\n")
        elif req.version == "1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        self.keep_alive = keep
        self.out += head
        if self.client.paused_writing:
            conn.pause()

    def on_upstream_upgraded(self, conn, head: list[bytes], rest: bytes) -> None:
        """The upstream accepted a WebSocket handshake: answer 101 (`head` is its
        status line and the lines we pass on), then pipe bytes."""
        if not self.request.upgrade:
            conn.abandon()
            self.on_upstream_error(conn.upstream, UpstreamProtocolError("unsolicited 101"),
                                   ANSWERED)
            return
        if self.set_cookie:  # sticky from the handshake on
            head = [*head, self.plane.set_cookie_line(
                self.pool.name, self.client.trusted and came_over_https(self.request.headers))]
        self.phase = DONE
        self.conn = None
        self.client.become_tunnel(self, conn, b"".join(
            (*head, b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n")), rest)

    def on_upstream_body(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        if self.chunked:
            self.out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self.out.append(data)

    def on_upstream_done(self) -> None:
        if self.chunked:
            self.out.append(b"0\r\n\r\n")
        self.pass_on()
        self._finish(self.status)

    def on_upstream_error(self, upstream: Upstream, err: ProxyError, delivery: Delivery) -> bool:
        if not self.wanted():
            return False
        if self.phase is STREAMING:
            # Part of the response is out: a short body must not pass for a
            # whole one, so the client connection is cut.
            self._cut(err, upstream)
            return False
        req = self.request
        if delivery is not ANSWERED and may_resend(delivery, req.keyed, req.tries):
            pool = self.pool = self.plane.pools.get(self.pool.name, self.pool)  # a reload may have run
            retry = pool.pick(exclude=upstream) or \
                (upstream if upstream.healthy and upstream.enabled else None)
            if retry is not None:
                # Info, not a warning: with Swoole's worker recycling this is
                # normal life, and Upstream.note_close reports it once a minute.
                self.plane.log.info("upstream_retry", upstream=upstream.label, to=retry.label,
                                    detail=err.detail, delivery=delivery.value)
                self._dispatch(retry, fresh=True)
                return True
        self._answer_error(err, upstream)
        return False

    def pass_on(self) -> None:
        out = self.out
        if out and self.client.transport is not None:
            self.plane.outbox.send(self.client.transport, join(out))
        out.clear()

    # -- endings ------------------------------------------------------------------------

    def _cut(self, err: ProxyError, up: Upstream) -> None:
        """End a response whose head is already out: log it as cut, abort."""
        self.plane.log_event(err.event, upstream=up.label, detail=err.detail, after_head=True)
        self.out.clear()
        self.phase = DONE
        self._log(self.status, error=err.event)
        self.pool.count(None, monotonic() - self.request.started)
        self.request.close()
        self.client.cut(self)

    def _answer_error(self, err: ProxyError, upstream: Upstream | None = None) -> None:
        # After a failed WebSocket handshake llhttp has stopped at the Upgrade:
        # what follows on this connection is not HTTP we can parse, so close.
        req = self.request
        keep = self.keep_alive and not self.plane.draining and not req.upgrade
        self.plane.log_event(err.event, status=err.status, detail=err.detail,
                             upstream=upstream.label if upstream else None,
                             peer=self.client.peer)
        self.status = err.status
        self.keep_alive = keep
        self.out.append(error_response(err.status, close=not keep))
        self.pass_on()
        if self.pool is not None:
            self.pool.count(None, monotonic() - req.started)
        self._finish(err.status, counted=True)

    def _finish(self, status: int, counted: bool = False) -> None:
        req = self.request
        if req.body_file is not None:
            req.close()
        self.phase = DONE
        now = monotonic()  # one clock read for stats, the log line and the idle deadline
        if not counted and self.pool is not None:
            self.pool.count(status, now - req.started)
        if self.plane.access is not None:  # _log inlined: this runs for every request
            self.plane.access.record_exchange(self, status, now, None)
        self.client.answered(self, now)

    def _log(self, status: int, now: float | None = None, error: str | None = None) -> None:
        access = self.plane.access
        if access is not None:
            access.record_exchange(self, status, now or monotonic(), error)
