"""Sending a request to an upstream: on a pooled connection, or a new one."""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

from .connection import UpstreamConnection
from .errors import ProxyError, UpstreamConnectError, UpstreamTimeoutError
from .retry import NOT_SENT

if TYPE_CHECKING:
    from .sink import ResponseSink
    from .upstream import Upstream


def dispatch(up: Upstream, exchange: ResponseSink, payload: bytes, is_head: bool,
             body_file=None, fresh: bool = False) -> None:
    """Send one request to `up` on an idle connection, or on a new one (always a
    new one when `fresh`: a resent request must not meet the next connection of
    the worker that just dropped it)."""
    up.inflight += 1
    now = monotonic()
    idle = up.idle  # newest last: the one most likely still open
    while idle and not fresh:
        conn = idle.pop()
        transport = conn.transport
        if transport is not None and not transport.is_closing() and \
                now - conn.idle_since < up.idle_timeout:
            conn.start(exchange, payload, is_head, body_file, now)
            return
        conn.close()
    _connect(up, exchange, payload, is_head, body_file)


def _connect(up: Upstream, exchange: ResponseSink, payload: bytes, is_head: bool,
             body_file) -> None:
    """A new connection for the request (apart from `dispatch`: the compiled
    build cannot put these closures in a function it calls directly)."""
    loop, addr = up.loop, up.address
    factory = lambda: UpstreamConnection(up)  # noqa: E731
    if addr.kind == "unix":
        coro = loop.create_unix_connection(factory, addr.path)
    else:
        coro = loop.create_connection(factory, addr.host, addr.port)
    task = loop.create_task(coro)
    timer = loop.call_later(up.connect_timeout, task.cancel)
    exchange.connecting_to(task)
    task.add_done_callback(
        lambda t: _connected(up, t, timer, exchange, payload, is_head, body_file))


def _connected(up: Upstream, task, timer, exchange: ResponseSink, payload: bytes,
               is_head: bool, body_file) -> None:
    timer.cancel()
    exchange.connect_done(task)
    if task.cancelled():
        exc: BaseException = UpstreamTimeoutError(f"connect to {up.address} timed out")
        if not exchange.wanted():  # the client left; the task was cancelled for it
            up.inflight -= 1
            return
    else:
        exc = task.exception()
    if exc is None:
        _, conn = task.result()
        up.passive_failures = 0
        if not exchange.wanted():
            up.inflight -= 1
            up.release(conn)
            return
        conn.start(exchange, payload, is_head, body_file, monotonic())
        return
    up.inflight -= 1
    up.note_connect_failure()
    err = exc if isinstance(exc, ProxyError) else UpstreamConnectError(f"{up.address}: {exc}")
    exchange.on_upstream_error(up, err, NOT_SENT)
