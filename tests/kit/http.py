"""HTTP/1.1 from raw bytes: the one response parser of the tests, the raw client
exchanges built on it, and the header fields of a request an upstream received.

Tests judge what the proxy really sent, so no HTTP library sits in between and nothing
is lenient.  One `Reader` frames responses whether their bytes were collected already
(`parse_responses`, `split_responses`, `complete`) or are still arriving on a socket (the
load clients, tests/loadclient.py and tests/swoolekit.py), so every test agrees on where
a response ends: 1xx, 204 and 304 have no body; then `Transfer-Encoding: chunked`, then
`Content-Length`; anything else ends with the connection.
"""

from __future__ import annotations

import re
import select
import socket
import time
from dataclasses import dataclass

CHUNK = 65536
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]+")


# -- what can go wrong -----------------------------------------------------------------------

class Incomplete(Exception):
    """The bytes collected so far end inside a response; more may still come."""


class Cut(Exception):
    """The peer closed, reset or went quiet before a response was whole.

    `how`: "closed" (a FIN), "reset" or "timeout"; `what`: the part being read ("response
    head", "body", "chunked body", "close-delimited body"); `started`: whether any byte of
    this response had arrived; `error`: the name of the socket error, if any."""

    def __init__(self, how: str, what: str, started: bool, error: str = "") -> None:
        super().__init__(f"{how} in the {what}")
        self.how, self.what, self.started, self.error = how, what, started, error


class Malformed(AssertionError):
    """Bytes that are not an HTTP/1.x response: in a test, a failure."""


# -- framing -----------------------------------------------------------------------------------

@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]  # lower-case names, each value in the order received
    body: bytes
    version: str = "HTTP/1.1"
    keep_alive: bool = True        # False after Connection: close, HTTP/1.0, a close-ended body


def parse_head(head: bytes) -> tuple[str, int, dict[str, list[str]]]:
    """(version, status, fields) of a response head without its final empty line."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _DIGITS.fullmatch(parts[1]):
        raise Malformed(f"status line {lines[0][:80]!r}")
    return parts[0], int(parts[1]), fields_of(lines[1:])


def fields_of(lines: list[str]) -> dict[str, list[str]]:
    """Header fields by lower-case name, each value in the order received."""
    fields: dict[str, list[str]] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise Malformed(f"header line {line[:80]!r}")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return fields


def request_fields(request: bytes) -> dict[str, list[str]]:
    """Header fields of one request as an upstream received it (RecordingUpstream.requests)."""
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return fields_of(head.split("\r\n")[1:])


class Reader:
    """Responses, one at a time, from a socket or from bytes collected already.

    From bytes, `eof` says whether the peer closed after them: their end is then a
    close (Cut), otherwise Incomplete.  From a socket, a FIN, a reset or the socket's
    timeout is a Cut.  Bytes past the last response read stay in `buf`."""

    def __init__(self, sock: socket.socket | None = None, data: bytes = b"",
                 eof: bool = True) -> None:
        self.sock, self.buf, self.eof = sock, data, eof

    def response(self) -> Response:
        """The next response, an interim 1xx included."""
        version, status, fields = self._head()
        keep = version == "HTTP/1.1" and "close" not in _joined(fields, "connection")
        if 100 <= status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in _joined(fields, "transfer-encoding"):
            body = self._chunked()
        elif "content-length" in fields:
            values = fields["content-length"]
            if len(values) != 1 or not _DIGITS.fullmatch(values[0]):
                raise Malformed(f"Content-Length {values!r}")
            body = self._exactly(int(values[0]))
        else:
            body, keep = self._until_close(), False
        return Response(status, fields, body, version, keep)

    def final(self) -> Response:
        """The next final response: interim 1xx answers are skipped."""
        while True:
            response = self.response()
            if response.status >= 200:
                return response

    def _more(self, what: str, started: bool = True) -> None:
        if self.sock is None:
            if not self.eof:
                raise Incomplete(what)
            raise Cut("closed", what, started)
        try:
            data = self.sock.recv(CHUNK)
        except socket.timeout:
            raise Cut("timeout", what, started) from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            # EPIPE on recv: an RST that came after the peer's FIN (socket in CLOSE_WAIT).
            raise Cut("reset", what, started, type(exc).__name__) from None
        if not data:
            raise Cut("closed", what, started)
        self.buf += data

    def _head(self) -> tuple[str, int, dict[str, list[str]]]:
        while b"\r\n\r\n" not in self.buf:
            self._more("response head", started=bool(self.buf))
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return parse_head(head)

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more("body")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more("chunked body")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _chunked(self) -> bytes:
        body = b""
        while True:
            size_line = self._line()
            size = size_line.split(b";")[0].strip()
            if not _HEX.fullmatch(size):
                raise Malformed(f"chunk size line {size_line[:40]!r}")
            if int(size, 16) == 0:
                while self._line():  # trailer fields, up to the empty line
                    pass
                return body
            body += self._exactly(int(size, 16))
            if self._exactly(2) != b"\r\n":
                raise Malformed("chunk not followed by CRLF")

    def _until_close(self) -> bytes:
        while True:
            try:
                self._more("close-delimited body")
            except Cut as cut:
                if cut.how != "closed":
                    raise
                body, self.buf = self.buf, b""
                return body


def _joined(fields: dict[str, list[str]], name: str) -> str:
    return ",".join(fields.get(name, [])).lower()


# -- responses in bytes collected already ------------------------------------------------------

def split_responses(data: bytes, eof: bool) -> tuple[list[Response], bytes]:
    """The whole responses at the start of `data`, and the bytes after them (b"", or a
    response not yet whole).  `eof`: the peer closed after `data`."""
    reader = Reader(data=data, eof=eof)
    out = []
    while reader.buf:
        rest = reader.buf
        try:
            out.append(reader.response())
        except (Incomplete, Cut):
            return out, rest
    return out, b""


def parse_responses(data: bytes) -> list[tuple[int, dict[str, list[str]], bytes]]:
    """(status, fields, body) of every response in a stream the peer ended; nothing
    else may be in it."""
    responses, rest = split_responses(data, eof=True)
    if rest:
        raise AssertionError(f"incomplete response: {rest[:200]!r}")
    return [(r.status, r.headers, r.body) for r in responses]


def complete(data: bytes) -> bool:
    """Whether `data` holds a whole final response (the peer may still be sending)."""
    return any(r.status >= 200 for r in split_responses(data, eof=False)[0])


# -- raw exchanges -----------------------------------------------------------------------------

def connect(target: int | str, timeout: float = 5.0) -> socket.socket:
    """A client socket to 127.0.0.1:`target`, or to the Unix socket at path `target`."""
    if isinstance(target, int):
        return socket.create_connection(("127.0.0.1", target), timeout=timeout)
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(timeout)
        s.connect(target)
    except BaseException:
        s.close()
        raise
    return s


@dataclass
class Reply:
    data: bytes   # every byte the peer sent
    closed: bool  # the peer closed (or reset) the connection

    @property
    def responses(self) -> list[Response]:
        """The whole responses in `data`, in order."""
        return split_responses(self.data, eof=self.closed)[0]

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def converse(target: int | str, data: bytes, expect: int | None = None, grace: float = 0.0,
             timeout: float = 5.0) -> Reply:
    """Write `data` at once; read until the peer closes, or until `expect` whole responses
    arrived and then `grace` seconds passed without a close; `timeout` bounds it all."""
    got, closed = b"", False
    with connect(target, timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the peer may refuse to read the rest of an oversized request
        deadline = time.monotonic() + timeout
        graced = False
        while True:
            if expect is not None and not graced \
                    and len(split_responses(got, eof=False)[0]) >= expect:
                graced = True
                deadline = min(deadline, time.monotonic() + grace)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(CHUNK)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    return Reply(got, closed)


def raw_exchange(target: int | str, data: bytes, timeout: float = 5.0,
                 until_close: bool = True) -> bytes:
    """Send raw bytes; what came back until the close (or, until_close=False, until the
    first whole response)."""
    return converse(target, data, expect=None if until_close else 1, timeout=timeout).data


def read_response(sock: socket.socket) -> bytes:
    """The bytes of one whole response read from `sock` (fewer if it closes first)."""
    out = b""
    while not complete(out):
        chunk = sock.recv(CHUNK)
        if not chunk:
            break
        out += chunk
    return out


def read_until_closed(sock: socket.socket, bound: float = 10.0) -> tuple[bytes, float | None]:
    """Everything the peer sends until it closes: (bytes, monotonic time of the close),
    the time None when it stayed open for `bound` seconds."""
    out = b""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], min(0.1, deadline - time.monotonic()))
        if not ready:
            continue
        try:
            chunk = sock.recv(CHUNK)
        except ConnectionResetError:
            return out, time.monotonic()
        if not chunk:
            return out, time.monotonic()
        out += chunk
    return out, None
