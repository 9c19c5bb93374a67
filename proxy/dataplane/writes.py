"""Writes of one event-loop pass, made together at its end."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

try:
    from ._bytes import join  # b"".join in C, for the lists of bytes we send (_bytes.pyx)
except ImportError:  # the pure build
    join = b"".join


class Outbox:
    """What the callbacks of this pass want written, in order."""

    __slots__ = ("loop", "_queued")

    def __init__(self, loop) -> None:
        self.loop = loop
        self._queued: list[tuple[asyncio.Transport, bytes]] = []

    def send(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write `data` to `transport` at the end of this pass of the event loop.

        Everything the callbacks of one pass produced (requests to upstreams,
        responses to clients) is written together, in order, once they are all
        done.  Writing each message the moment it was ready woke its reader
        (wrk, nginx) in the middle of our pass, which preempted us: the proxy
        was switched out once or more per request and spent ~43 µs of CPU per
        request instead of ~32 (benchmarks/README.md, "What changed").
        """
        if not self._queued:
            self.loop.call_soon(self.flush)
        self._queued.append((transport, data))

    def unsend(self, transport) -> bool:
        """Drop what `send` queued for `transport` and not yet written (its
        connection closed first); True if something was dropped."""
        kept = [item for item in self._queued if item[0] is not transport]
        dropped = len(kept) != len(self._queued)
        self._queued[:] = kept
        return dropped

    def flush(self) -> None:
        """Write everything `send` queued.  Also called before a direct write, a
        close or an abort, so that nothing queued is overtaken or lost."""
        queued = self._queued
        if queued:
            self._queued = []
            for transport, data in queued:
                if not transport.is_closing():  # aborted or gone since
                    transport.write(data)
