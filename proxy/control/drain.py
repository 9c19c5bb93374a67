"""A drain's deadline: what is still open to a drained pool or upstream then is cut.

A drain sends nothing new to its pool (or upstream); requests in flight
finish there.  Server-sent event streams, long polls and WebSockets may not
finish by themselves, so at the deadline they are cut and the drain ends.
"""

from __future__ import annotations

import asyncio


class DrainDeadlines:
    """One timer per drained "pool" or "pool address"; a second drain replaces it."""

    def __init__(self, plane, events) -> None:
        self.plane = plane
        self.events = events
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def cut_later(self, what: str, timeout: float) -> None:
        """At the drain's deadline, cut what is still open to `what` ("pool" or
        "pool address"); a second drain of the same thing replaces the first."""
        self.cancel(what)
        self._handles[what] = self.plane.loop.call_later(
            timeout, self._due, what)

    def cancel(self, what: str) -> None:
        handle = self._handles.pop(what, None)
        if handle is not None:
            handle.cancel()

    def _due(self, what: str) -> None:
        self._handles.pop(what, None)
        pool, _, address = what.partition(" ")
        if address:
            if address not in self.plane.table.disabled.get(pool, ()):
                return  # enabled again: nothing to cut
        elif self.plane.table.weights.get(pool, 0) != 0:
            return  # it has traffic again: nothing to cut
        if pool not in self.plane.pools:
            return  # a reload removed it since
        self.plane.loop.create_task(self._cut(pool, address or None))

    async def _cut(self, pool: str, address: str | None) -> None:
        try:
            cut = await self.plane.cut_everywhere(pool, address)
        except Exception as exc:  # a task of its own: said here, or never
            self.events.emit("drain_deadline_failed", level="error", pool=pool,
                             upstream=address, error=repr(exc))
            return
        if cut:
            self.events.emit("drain_deadline", level="warning", pool=pool,
                             upstream=address, cut=cut)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
