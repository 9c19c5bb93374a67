"""What a request looks like when we forward it: the head we send upstream,
and who we say it came from.

Fields the client sent are copied except those in the drop sets; we then add
Host, the forwarding fields, a request id and the framing.  Forwarding claims
(X-Forwarded-*) are believed only from `trusted_proxies`.
"""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING

from .headers import FORWARDING, FRAMING, HOP_BY_HOP
from .writes import join

try:
    from ._bytes import request_id  # in C (_bytes.pyx)
except ImportError:  # the pure build
    def request_id(prefix: bytes, number: int) -> bytes:
        return b"%s-%x" % (prefix, number)

if TYPE_CHECKING:
    from ..config import Config


class Forwarding:
    """The forwarding rules of the current config (see `configure`)."""

    __slots__ = ("tester_header", "_drop", "_drop_trusted", "_trusted_nets", "_tester_nets",
                 "_id_prefix", "_last_id")

    def __init__(self, config: Config) -> None:
        # Request ids: a per-process prefix and a counter that survives reloads.
        self._id_prefix = os.urandom(4).hex().encode()
        self._last_id = 0
        self.configure(config)

    def configure(self, config: Config) -> None:
        header = config.tester.header
        self.tester_header = header.lower().encode() if header else None  # None: off
        self._tester_nets = [ipaddress.ip_network(n, strict=False) for n in config.tester.trusted]
        self._trusted_nets = [ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies]
        # Never copied: hop-by-hop and framing fields, Host (re-emitted from the
        # parsed request: an absolute-form target names its own), and fields we
        # set ourselves; from an untrusted peer also its forwarding claims.
        base = HOP_BY_HOP | FRAMING | {b"host", b"expect", b"x-request-id", b"x-forwarded-for"}
        if self.tester_header is not None:
            base |= {self.tester_header}
        self._drop_trusted = frozenset(base)
        self._drop = frozenset(base | FORWARDING)

    def drop_set(self, trusted: bool) -> frozenset[bytes]:
        """Lower-case names of request fields that are never copied upstream."""
        return self._drop_trusted if trusted else self._drop

    def render(self, req, peer: bytes, trusted: bool) -> bytes:
        """The bytes sent upstream: a regenerated head and the buffered body.

        Origin-form target, HTTP/1.1, the client's fields minus those dropped
        (see `drop_set`), then ours: Host, forwarding, request id, framing.
        """
        rid = req.request_id
        if rid is None or len(rid) > 200:
            self._last_id += 1
            rid = req.request_id = request_id(self._id_prefix, self._last_id)
        host = req.host
        # Appends, not `+=` of tuples: compiled, each is a C call, not a tuple made.
        parts = [req.method, b" ", req.target, b" HTTP/1.1\r\nHost: ", host or b"localhost",
                 b"\r\n"]
        parts.extend(req.fields)
        parts.append(b"X-Request-Id: ")
        parts.append(rid)
        parts.append(b"\r\nX-Forwarded-For: ")
        if trusted:
            if req.xff:
                parts.append(b", ".join(req.xff))
                parts.append(b", ")
            parts.append(peer)
            parts.append(b"\r\n")
            parts.extend(_missing_forwarding(req.headers, host))
        else:
            parts.append(peer)
            parts.append(b"\r\nX-Forwarded-Proto: http\r\n")
            if host is not None:
                parts.append(b"X-Forwarded-Host: ")
                parts.append(host)
                parts.append(b"\r\n")
        if req.body_size or req.framed:
            parts.append(b"Content-Length: %d\r\n" % req.body_size)
        if req.upgrade:
            parts.append(b"Connection: upgrade\r\nUpgrade: websocket\r\n")
        parts.append(b"\r\n")
        parts.extend(req.body)
        return join(parts)

    def client_address(self, xff: tuple[bytes, ...], peer: str) -> str:
        """Who sent a request that came through our trusted proxies: the rightmost
        X-Forwarded-For entry that is not one of them (the leftmost entries are
        the client's own claims and prove nothing); `peer` when there is none."""
        entries = [e.strip().decode("latin-1") for v in xff for e in v.split(b",")]
        for entry in reversed(entries):
            if not self.is_trusted_proxy(entry):
                return entry
        return entries[0] if entries else peer

    def is_trusted_proxy(self, peer: str) -> bool:
        return self._in(peer, self._trusted_nets)

    def is_tester(self, peer: str) -> bool:
        return self._in(peer, self._tester_nets)

    @staticmethod
    def _in(peer: str, nets) -> bool:
        if not nets:
            return False
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(addr in net for net in nets)


def _missing_forwarding(headers, host: bytes | None) -> list[bytes]:
    """X-Forwarded-Proto/-Host a trusted proxy did not send, filled in by us."""
    names = {n.lower() for n, _ in headers}
    out = []
    if b"x-forwarded-proto" not in names:
        out.append(b"X-Forwarded-Proto: http\r\n")
    if b"x-forwarded-host" not in names and host is not None:
        out += (b"X-Forwarded-Host: ", host, b"\r\n")
    return out
