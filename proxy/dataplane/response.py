"""Reading an upstream's response: llhttp's callbacks, and the head we pass on.

A mixin of `connection.UpstreamConnection` (which holds the fields, in its
`__slots__`): the response protocol apart from the connection's life.  The
head is edited as it is parsed, one pass over the fields: hop-by-hop ones set
aside, the rest kept as the bytes that go to the client.  The compiled build's
llhttp binding does that pass in C (_llhttp.pyx) and calls `head_parsed`;
with httptools, `on_status` and `on_header` do it here.
"""

from __future__ import annotations

import enum

import httptools

from .errors import UpstreamProtocolError
from .headers import (HOP_BY_HOP, STATUS_LINES, status_line, without_content_length,
                      without_named)
from .http11 import strict_response_parser
from .retry import ANSWERED

MAX_HEAD = 64 * 1024  # bytes of a response head held while it arrives
# Connection values that name no other field (the common case, not worth a parse).
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
# The lengths of the names on_header sorts out (hop-by-hop, Content-Length): a
# field of any other length is passed on without lowercasing and hashing its
# name first, which is most of a response's fields (Server, Date, Content-Type).
_SORTED_LENGTHS = frozenset(len(name) for name in HOP_BY_HOP | {b"content-length"})


class Phase(enum.Enum):
    """Where an upstream connection is: one variable."""

    IDLE = "idle"            # pooled (or just connected), no request
    AWAITING = "awaiting"    # a request written or being written, no byte of an answer yet
    RECEIVING = "receiving"  # the answer is arriving
    TUNNEL = "tunnel"        # handed over to a WebSocket tunnel
    CLOSED = "closed"


IDLE, AWAITING, RECEIVING, TUNNEL, CLOSED = Phase


class _HeadResponseDone(Exception):
    """Stops llhttp after a HEAD response's head (see on_headers_complete)."""

    def __init__(self, keep_alive: bool) -> None:
        super().__init__()
        self.keep_alive = keep_alive


class ResponseReader:
    """The llhttp side of an upstream connection."""

    __slots__ = ()

    def parse_failed(self, exc: Exception, data: bytes) -> None:
        """llhttp stopped inside `data`: a 101, a HEAD response's end, or an error.
        (The caller feeds llhttp itself: a call less per read on the hot path.)"""
        if isinstance(exc, httptools.HttpParserUpgrade):
            if self.status == 101:
                self.exchange.on_upstream_upgraded(self, self.head, data[exc.args[0]:])
                return
            self._fail(UpstreamProtocolError("unexpected protocol switch"), ANSWERED)
        elif isinstance(exc, httptools.HttpParserCallbackError):
            done = exc.__context__
            if not isinstance(done, _HeadResponseDone):
                self._fail(UpstreamProtocolError(f"callback failed: {done!r}"), ANSWERED)
                return
            self.parser = strict_response_parser(self)
            self._complete(done.keep_alive)
        else:
            self._fail(UpstreamProtocolError(str(exc)), ANSWERED)

    def _complete(self, keep_alive: bool) -> None:
        """The response has ended: on to the next request or closed
        (connection.UpstreamConnection; declared here so that message_done calls
        it directly in the compiled build)."""
        raise NotImplementedError

    def _new_head(self) -> None:
        self.reason = b""
        self.head = [b""]  # a slot for the status line, then the fields we pass on
        self.hop = ()
        self.length = False

    def on_status(self, reason: bytes) -> None:
        # llhttp hands the reason over in pieces when a read ends inside it.
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sorted as they arrive, which spares a second pass over the fields:
        # hop-by-hop ones aside, the rest (Content-Length too: it is the
        # framing we forward) straight into the head we pass on.
        if len(name) in _SORTED_LENGTHS:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                self.hop += ((lname, value),)
                return
            if lname == b"content-length":
                self.length = True
        head = self.head  # four appends: compiled, they cost less than a tuple added
        head.append(name)
        head.append(b": ")
        head.append(value)
        head.append(b"\r\n")

    def on_headers_complete(self) -> None:
        self.head_parsed(self.parser.get_status_code())

    def head_parsed(self, status: int) -> None:
        """The head has ended.  `reason`, `head`, `hop` and `length` hold what
        on_status and on_header gathered; in the compiled build the llhttp
        binding gathers them itself (_llhttp.pyx) and calls this directly."""
        if self.exchange is None:
            # A second answer in the read that completed the first: the upstream
            # answered what it was not asked.  Stops llhttp; the connection closes.
            raise UpstreamProtocolError("an answer after the response")
        self.status = status
        head = self.head
        try:
            head[0] = STATUS_LINES[status, self.reason]
        except KeyError:  # a line not seen yet
            head[0] = status_line(status, self.reason)
        chunked = named = False
        for lname, value in self.hop:
            if lname == b"transfer-encoding":
                chunked = True
            elif lname == b"connection" and value not in _PLAIN_CONNECTION and \
                    value.lower() not in _PLAIN_CONNECTION:  # as sent, first: no copy
                named = True
        if named:
            head = self.head = without_named(head, self.hop)
        if status == 101:
            # Only a WebSocket handshake may switch; the client side checks that.
            self.head_sent = True
            return
        # Other 1xx interim answers (103 Early Hints) are not forwarded: we
        # answered Expect ourselves.
        self.interim = 100 <= status < 200
        if self.interim:
            self._new_head()
            return
        no_body = self.is_head or status == 204 or status == 304
        if status == 204 and self.length:
            head = self.head = without_content_length(head)  # RFC 9110 8.6: never on a 204
        self.body_framed = no_body or self.length or chunked
        self.head_sent = True
        self.exchange.on_upstream_head(self, status, head, no_body or self.length)
        if self.is_head:
            # llhttp cannot know a HEAD response has no body, and httptools
            # drops a callback's return value (llhttp's "skip body"): stop it.
            raise _HeadResponseDone(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:  # detached inside this read (typed: never call on None)
            exchange.on_upstream_body(body)

    def on_message_complete(self) -> None:
        self.message_done(self.parser.should_keep_alive())

    def message_done(self, keep_alive: bool) -> None:
        """The response has ended (the compiled binding calls this directly)."""
        if self.status == 101:
            return
        if self.interim:
            self.interim = False
            return
        self._complete(keep_alive)
