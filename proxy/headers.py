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


def request_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    drop: frozenset[bytes],
    extra: list[bytes],
) -> bytes:
    """The head we send upstream: origin-form, HTTP/1.1, our own framing.

    `drop` holds lower-cased names to leave out beyond hop-by-hop and framing
    (the Connection tokens, untrusted forwarding fields, the tester header);
    `extra` holds complete `Name: value` lines we add.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lname = name.lower()
        if lname in _DROP_ALWAYS or lname in drop:
            continue
        parts += (name, b": ", value, b"\r\n")
    for line in extra:
        parts += (line, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def response_head(
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    drop: frozenset[bytes],
    extra: list[bytes],
    keep_length: bool,
) -> bytes:
    """The head we send to the client.

    `keep_length` keeps the upstream's Content-Length (a sized body or a
    HEAD/304 answer, where it describes what a GET would return).
    """
    parts = [b"HTTP/1.1 %d " % status, reason, b"\r\n"]
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in drop:
            continue
        if lname == b"content-length" and not keep_length:
            continue
        parts += (name, b": ", value, b"\r\n")
    for line in extra:
        parts += (line, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
