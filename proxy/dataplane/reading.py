"""Reading requests off a client connection: llhttp's callbacks and the read phase.

A mixin of `client.ClientConnection` (which holds the fields, in its
`__slots__`): the request protocol apart from the connection's life, as
response.py is for the upstream side.  A whole request (head and body,
buffered) is started (`_start`) or queued, in the order requests arrived.
"""

from __future__ import annotations

import enum
import re
from time import monotonic  # a module attribute read costs more than the clock

import httptools

from .errors import (
    BadRequestError,
    HeaderTooLargeError,
    ProxyError,
    TargetTooLongError,
    VersionNotSupportedError,
)
from .http11 import strict_request_parser
from .request import Request
from .sink import Client

MAX_TARGET = 8192
# Pipelined requests parsed ahead of the one being answered; past this we stop
# reading the socket so a client cannot queue unbounded work.
MAX_QUEUED = 8
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Read(enum.Enum):
    """The read side of a client connection: one phase, set by `_enter`."""

    # Looked up in a dict three times a request (`_enter`): Enum's own __hash__ is
    # Python code, and identity is what equality means for members anyway.
    __hash__ = object.__hash__

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


class RequestReader(Client):
    """The llhttp side of a client connection."""

    __slots__ = ()

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

    def _enter(self, phase: Read, now: float = 0.0) -> None:
        """The one place the read phase changes, and with it the deadline the
        sweep enforces (`DEADLINES`; `now` is needed only for a phase that has one)."""
        self.read = phase
        seconds = self.plane.read_timeouts.get(phase)
        # float(): compiled, the sum is then a C one, not a float object made.
        self.deadline = now + float(seconds) if seconds is not None else 0.0

    def _start(self, req: Request) -> None:
        """Answer `req` now (client.ClientConnection; declared here so that the
        compiled callbacks below call it directly)."""
        raise NotImplementedError

    def _hold_early(self, data: bytes) -> None:
        self.early += data
        if len(self.early) > 65536:
            self.transport.pause_reading()

    # -- llhttp callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        now = monotonic()
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
        # the trailing kind too (looked for first: it is rare, and a copy).
        if value.endswith((b" ", b"\t")):
            value = value.rstrip(b" \t")
        self.reading.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.head_parsed(parser.get_method(), parser.get_http_version(),
                         parser.should_keep_alive())

    def head_parsed(self, method: bytes, version: str, keep_alive: bool) -> None:
        """The head has ended (the compiled binding calls this directly, with
        what httptools' getters would return)."""
        req = self.reading
        plane = self.plane
        req.method = method
        req.version = version
        req.keep_alive = keep_alive
        req.inspect(plane, plane.forwarding.drop_set(self.trusted))
        if req.expect_continue and self.current is None and not self.queue:
            req.expect_continue = False
            plane.outbox.send(self.transport, CONTINUE)
        if req.framed:
            # A body follows.  Without one llhttp completes the message at
            # once, so a bodiless request is spared the clock read.
            self._enter(BODY, monotonic())

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
        req.started = monotonic()
        self.queue.append(req)
        self._enter(STOPPED)
        if self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        if self.current is None:
            self._next()

_VERSION_LINE = re.compile(rb"HTTP/[0-9]\.[0-9]\r\n")


def _parse_error(message: str, data: bytes) -> ProxyError:
    """llhttp's complaint as a status: 505 only for a well-formed, unsupported version."""
    if message == "Invalid HTTP version" and _VERSION_LINE.search(data):
        return VersionNotSupportedError(message)
    return BadRequestError(message)
