"""Regenerating message heads instead of copying them.

What goes to the upstream and back to the client is rebuilt from parsed
fields: hop-by-hop fields and those the sender named in `Connection` are
dropped, framing is emitted once by us, and the forwarding fields are ours.
"""

from __future__ import annotations

from typing import Iterable

# RFC 9110 7.6.1 plus the fields that only ever concern the proxy itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)

# Framing is always re-emitted by us, never copied.
FRAMING = frozenset({b"content-length", b"transfer-encoding"})

# Set by the proxy; a client could otherwise claim any address or scheme.
FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lower-cased field names listed in every `Connection` header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def without_named(head: list[bytes], hop: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """A response head (the status line, then the field lines in any number of
    pieces) without the fields the `Connection` values among `hop` name."""
    # Content-Length is the framing we pass on (response.py counts on it):
    # naming it in Connection does not remove it.
    tokens = connection_tokens(hop) - {b"content-length"}
    return head[:1] + [line for line in _field_lines(head) if _name(line) not in tokens]


def without_content_length(head: list[bytes]) -> list[bytes]:
    """A response head (as for `without_named`) minus Content-Length."""
    return head[:1] + [line for line in _field_lines(head) if _name(line) != b"content-length"]


def _field_lines(head: list[bytes]) -> list[bytes]:
    # Rare paths, so the pieces are joined and split again: the pure build keeps
    # four per field, the compiled one a single piece for all (_llhttp.pyx).
    return [line + b"\r\n" for line in b"".join(head[1:]).split(b"\r\n")[:-1]]


def _name(line: bytes) -> bytes:
    return line.partition(b":")[0].lower()


# `HTTP/1.1 <status> <reason>` lines by (status, reason), each formatted once:
# upstreams send a handful, and the lookup costs a fraction of the formatting.
# A plain dict (status_line fills it): a dict subclass's subscript goes
# through a Python-level method lookup, even compiled.
STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def status_line(status: int, reason: bytes) -> bytes:
    line = STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(STATUS_LINES) < 1024:  # reason phrases come from upstreams: stay bounded
            STATUS_LINES[status, reason] = line
    return line


def came_over_https(headers) -> bool:
    """What a trusted proxy's X-Forwarded-Proto says about the client's scheme."""
    for name, value in headers:
        if name.lower() == b"x-forwarded-proto":
            return value.strip().lower() == b"https"
    return False
