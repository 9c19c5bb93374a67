"""The interfaces between the pieces of the data plane, and nothing else.

An `UpstreamConnection` serves one `Exchange` at a time (exchange.py) and
sees it only as a `ResponseSink`: it never reads the client connection's
fields, and the client side never reads the upstream connection's.  An
exchange sees its client connection only as a `Client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .errors import ProxyError
    from .retry import Delivery


class ResponseSink(Protocol):
    # -- the exchange's life on a connection -------------------------------------------

    def wanted(self) -> bool:
        """False once nobody waits for the answer (the client left)."""

    def connecting_to(self, task) -> None:
        """A connect for this request is under way (a client who leaves cancels it)."""

    def connect_done(self, task) -> None: ...

    def attached(self, conn) -> None:
        """`conn` carries the request from now on."""

    def detached(self, conn) -> None:
        """`conn` is done with the request (answered, failed or abandoned)."""

    def send_upstream(self, transport, payload: bytes) -> None:
        """Queue `payload` for `transport` (written at the end of this loop pass)."""

    def unsend(self, transport) -> bool:
        """Take back what is still queued for `transport`; True if there was some."""

    # -- the answer --------------------------------------------------------------------

    def on_upstream_head(self, conn, status: int, head: list[bytes], sized: bool) -> None:
        """`head`: the status line and the fields we pass on, ours to extend;
        `sized`: it has a Content-Length or can have no body."""

    def on_upstream_body(self, data: bytes) -> None: ...

    def on_upstream_done(self) -> None: ...

    def on_upstream_upgraded(self, conn, head: list[bytes], rest: bytes) -> None:
        """The upstream answered 101; `rest` is what followed the head."""

    def on_upstream_error(self, upstream, err: ProxyError, delivery: Delivery) -> bool:
        """The exchange failed; `delivery` says how far the request got.  True when
        the request was sent again (retry.py)."""

    def pass_on(self) -> None:
        """Queue for the client what the answer gathered in this read."""


class Client(Protocol):
    """What an exchange uses of its client connection (client.ClientConnection)."""

    plane: object
    transport: object  # None once the client has gone
    current: object  # the Exchange it answers now
    peer: str
    peer_bytes: bytes
    trusted: bool
    paused_writing: bool

    def answered(self, exchange, now: float) -> None: ...

    def cut(self, exchange) -> None: ...

    def become_tunnel(self, exchange, conn, head: bytes, rest: bytes) -> None: ...
