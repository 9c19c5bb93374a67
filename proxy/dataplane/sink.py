"""The interfaces between the pieces of the data plane, and nothing else.

An `UpstreamConnection` serves one `Exchange` at a time (exchange.py) and
sees it only as a `ResponseSink`: it never reads the client connection's
fields, and the client side never reads the upstream connection's.  An
exchange sees its client connection only as a `Client`.

They are base classes, not typing Protocols, so that the compiled data plane
(sink.pxd) can call across them through a C method table instead of a Python
attribute lookup and call: several such calls happen per request.  A test's
stand-in subclasses them like the real thing does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .errors import ProxyError
    from .retry import Delivery


class ResponseSink:
    """What an upstream connection may ask of the exchange it carries
    (exchange.Exchange)."""

    __slots__ = ()

    # -- the exchange's life on a connection -------------------------------------------

    def wanted(self) -> bool:
        """False once nobody waits for the answer (the client left)."""
        raise NotImplementedError

    def connecting_to(self, task) -> None:
        """A connect for this request is under way (a client who leaves cancels it)."""
        raise NotImplementedError

    def connect_done(self, task) -> None:
        raise NotImplementedError

    def attached(self, conn) -> None:
        """`conn` carries the request from now on."""
        raise NotImplementedError

    def detached(self, conn) -> None:
        """`conn` is done with the request (answered, failed or abandoned)."""
        raise NotImplementedError

    def send_upstream(self, transport, payload: bytes) -> None:
        """Queue `payload` for `transport` (written at the end of this loop pass)."""
        raise NotImplementedError

    def unsend(self, transport) -> bool:
        """Take back what is still queued for `transport`; True if there was some."""
        raise NotImplementedError

    # -- the answer --------------------------------------------------------------------

    def on_upstream_head(self, conn, status: int, head: list[bytes], sized: bool) -> None:
        """`head`: the status line and the fields we pass on, ours to extend;
        `sized`: it has a Content-Length or can have no body."""
        raise NotImplementedError

    def on_upstream_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_upstream_done(self) -> None:
        raise NotImplementedError

    def on_upstream_upgraded(self, conn, head: list[bytes], rest: bytes) -> None:
        """The upstream answered 101; `rest` is what followed the head."""
        raise NotImplementedError

    def on_upstream_error(self, upstream, err: ProxyError, delivery: Delivery) -> bool:
        """The exchange failed; `delivery` says how far the request got.  True when
        the request was sent again (retry.py)."""
        raise NotImplementedError

    def pass_on(self) -> None:
        """Queue for the client what the answer gathered in this read."""
        raise NotImplementedError


class Client:
    """What an exchange uses of its client connection (client.ClientConnection).

    Its fields, which the subclass sets:
    plane: the DataPlane;  transport: None once the client has gone;
    current: the Exchange it answers now;  peer (str) and peer_bytes: its
    address;  trusted: a trusted proxy;  paused_writing: its buffer is full.
    """

    __slots__ = ()

    def answered(self, exchange, now: float) -> None:
        raise NotImplementedError

    def cut(self, exchange) -> None:
        raise NotImplementedError

    def become_tunnel(self, exchange, conn, head: bytes, rest: bytes) -> None:
        raise NotImplementedError
