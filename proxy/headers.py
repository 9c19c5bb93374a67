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

_DROP_ALWAYS = HOP_BY_HOP | FRAMING


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lower-cased field names listed in every `Connection` header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def response_fields(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Response header lines to pass on when `Connection` names extra fields."""
    drop = HOP_BY_HOP | connection_tokens(headers)
    fields: list[bytes] = []
    for name, value in headers:
        if name.lower() not in drop:
            fields += (name, b": ", value, b"\r\n")
    return fields


def status_line(status: int, reason: bytes) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)
