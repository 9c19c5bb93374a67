"""One client request: its head, checked once, and its buffered body.

Bodies are buffered whole before the upstream is contacted, in memory up to
`limits.body_memory` and in a temporary file beyond, so a slow upload holds
a file descriptor here instead of a Swoole worker.
"""

from __future__ import annotations

import tempfile

from .errors import (
    BadRequestError,
    BodyTooLargeError,
    ExpectationFailedError,
    MethodNotImplementedError,
    ProxyError,
    VersionNotSupportedError,
)
from .headers import connection_tokens
from .http11 import check_host, check_transfer_encoding, origin_form
from .sticky import without_cookies

# Host values already found valid.  A site answers to a handful of names, and
# the check is a regular expression costing ~2% of a request; any client can
# send any Host, so the memo is cleared when it fills.
_VALID_HOSTS: set[bytes] = set()
_VALID_HOSTS_MAX = 1024

# Field names lowercased, by the name as sent: browsers send the same dozen in
# the same case, and a lookup costs less than lower() and hashing its copy.
# Any client can send any name, so it is cleared when it fills.
_LOWER_NAMES: dict[bytes, bytes] = {}
_LOWER_NAMES_MAX = 1024

# Connection values that name no other field: the common case, no parse.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade", b"keep-alive, upgrade",
                               b"upgrade, keep-alive"})


class Request:
    """One parsed request, head and buffered body."""

    __slots__ = (
        "method", "target", "version", "headers", "keep_alive", "body", "body_size",
        "body_file", "expect_continue", "error", "host", "cookie", "override", "request_id",
        "connection", "framed", "upgrade", "payload", "started", "tries", "fields", "xff", "keyed",
    )

    def __init__(self, started: float = 0.0) -> None:
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.body: list[bytes] | tuple = ()  # a list once a chunk arrives
        self.body_size = 0
        self.body_file = None  # a temporary file once the body outgrew memory
        self.expect_continue = False
        self.error: ProxyError | None = None
        self.host: bytes | None = None
        self.cookie: bytes | None = None
        self.override: bytes | None = None
        self.request_id: bytes | None = None
        self.connection = False  # a Connection header names fields to drop
        self.framed = False  # the client sent Content-Length or Transfer-Encoding
        self.upgrade = False  # a WebSocket handshake
        self.payload = b""
        self.started = started  # time.monotonic() of the request's first byte
        self.tries = 0
        self.fields: list[bytes] = []  # forwarded header lines, ready to join
        self.xff: tuple[bytes, ...] = ()  # X-Forwarded-For values the client sent
        self.keyed = False  # an Idempotency-Key header: may be resent (retry.py)

    def __repr__(self) -> str:
        return f"<Request {self.method.decode()} {self.target[:60].decode('latin-1')}>"

    def inspect(self, plane, drop: frozenset[bytes]) -> None:
        """One pass over the head: check it, note what routing needs, and build
        the header lines we forward (all but those in `drop`)."""
        self._check_start_line()
        fields = self.fields
        host = cookie = upgrade = None
        for name, value in self.headers:
            lname = _LOWER_NAMES.get(name)
            if lname is None:
                lname = _lower(name)
            if lname in drop:
                if lname == b"host":
                    if host is not None:
                        raise BadRequestError("more than one Host header")
                    host = value
                elif lname == b"upgrade":
                    upgrade = value
                else:
                    self._dropped(lname, value, plane)
                continue
            if lname == b"cookie":
                cookie = value if cookie is None else cookie + b"; " + value
                if value.find(plane.cookie_name) >= 0:
                    # Our cookies are for us: the application never sees them.
                    value = without_cookies(value, plane.our_cookies)
                    if not value:
                        continue
            elif lname == b"idempotency-key":
                self.keyed = True
            fields.append(name)  # four appends: compiled, cheaper than a tuple added
            fields.append(b": ")
            fields.append(value)
            fields.append(b"\r\n")
        self._host(host)
        self.cookie = cookie
        if upgrade is not None:
            self.upgrade = _is_websocket(upgrade, self.headers)
        if self.connection:
            self._drop_named(drop, plane)

    def _dropped(self, lname: bytes, value: bytes, plane) -> None:
        """Fields we do not copy but must read: framing, Expect, and our own."""
        if lname == b"content-length":
            self._content_length(value, plane.max_body)
        elif lname == b"transfer-encoding":
            if self.framed:
                raise BadRequestError("conflicting message framing")
            check_transfer_encoding(value, self.version)
            self.framed = True
        elif lname == b"connection":
            if value.lower() not in _PLAIN_CONNECTION:
                self.connection = True
        elif lname == b"expect":
            self._expect(value)
        elif lname == b"x-request-id":
            self.request_id = value
        elif lname == b"x-forwarded-for":
            self.xff += (value,)
        elif lname == plane.forwarding.tester_header:  # in `drop` only when it is on
            self.override = value

    def _drop_named(self, drop: frozenset[bytes], plane) -> None:
        """Rebuild the forwarded lines without the fields `Connection` names
        (and, as `inspect` does, without our cookies)."""
        tokens = connection_tokens(self.headers)
        self.fields = fields = []
        for name, value in self.headers:
            lname = name.lower()
            if lname in drop or lname in tokens:
                continue
            if lname == b"cookie" and value.find(plane.cookie_name) >= 0:
                value = without_cookies(value, plane.our_cookies)
                if not value:
                    continue
            fields += (name, b": ", value, b"\r\n")
        if b"idempotency-key" in tokens:
            self.keyed = False  # a hop-by-hop key is not the application's promise

    def _check_start_line(self) -> None:
        if self.version not in ("1.1", "1.0"):
            if self.version == "0.9":
                raise BadRequestError("HTTP/0.9 is not supported")
            raise VersionNotSupportedError(f"HTTP/{self.version}")
        if self.method == b"CONNECT":
            raise MethodNotImplementedError("CONNECT")
        if self.target.startswith(b"/"):
            # Origin-form, the common case.  Strict llhttp (http11.verify_strict
            # runs at start-up) admits only visible ASCII in a target, so this is
            # all origin_form would check, at a tenth of its regex's cost.
            return
        self.target, host = origin_form(self.method, self.target)
        if host is not None:
            self.host = host

    def _content_length(self, value: bytes, max_body: int) -> None:
        if self.framed:
            raise BadRequestError("conflicting message framing")
        if not value.isdigit():
            raise BadRequestError("invalid Content-Length")
        self.framed = True
        if int(value) > max_body:
            raise BodyTooLargeError(f"Content-Length {int(value)} over {max_body}")

    def _expect(self, value: bytes) -> None:
        if value.strip().lower() != b"100-continue":
            raise ExpectationFailedError(f"Expect: {value[:40]!r}")
        self.expect_continue = self.version == "1.1"

    def _host(self, host: bytes | None) -> None:
        if host is None:
            if self.version == "1.1":
                raise BadRequestError("missing Host header")
            return
        if host not in _VALID_HOSTS:
            check_host(host)
            if len(_VALID_HOSTS) >= _VALID_HOSTS_MAX:
                _VALID_HOSTS.clear()
            _VALID_HOSTS.add(host)
        if self.host is None:
            self.host = host  # an absolute-form target's authority wins

    def add_body(self, chunk: bytes, max_body: int, body_memory: int) -> None:
        self.body_size += len(chunk)
        if self.body_size > max_body:
            raise BodyTooLargeError(f"request body over {max_body} bytes")
        if self.body_file is not None:
            self.body_file.write(chunk)
        elif self.body_size > body_memory:
            self.body_file = tempfile.TemporaryFile(prefix="switchyard-body-")
            self.body_file.writelines(self.body)
            self.body_file.write(chunk)
            self.body = ()
        elif self.body:
            self.body.append(chunk)
        else:
            self.body = [chunk]

    def close(self) -> None:
        if self.body_file is not None:
            self.body_file.close()
            self.body_file = None


def _lower(name: bytes) -> bytes:
    if len(_LOWER_NAMES) >= _LOWER_NAMES_MAX:
        _LOWER_NAMES.clear()
    lname = _LOWER_NAMES[name] = name.lower()
    return lname


def _is_websocket(upgrade: bytes, headers) -> bool:
    """A WebSocket handshake: `Upgrade: websocket` with `Connection: upgrade`."""
    if upgrade.strip().lower() != b"websocket":
        return False
    for name, value in headers:
        if name.lower() == b"connection":
            if b"upgrade" in (t.strip().lower() for t in value.split(b",")):
                return True
    return False
