"""`switchyard pause` and `resume`: holding new requests, and the pause's deadline.

The held requests themselves are dataplane/pause.py; this is who starts and
ends a pause, and its timer.  A pause is not routing state: no generation,
not saved.
"""

from __future__ import annotations

import asyncio
import time

from ..commands import ConflictError, Pause
from .events import internal


class Pauses:
    """The owner of `plane.pause` (None, or the HeldRequests of the pause on)."""

    def __init__(self, plane, events) -> None:
        self.plane = plane
        self.events = events
        self._timer: asyncio.TimerHandle | None = None

    def pause(self, cmd: Pause, caller: dict) -> None:
        """Hold new requests until `resume` or the timeout; a second pause keeps
        what is held and sets a new timeout."""
        if self.plane.draining:
            raise ConflictError("the proxy is stopping: nothing to pause")
        timeout = self.plane.config.timeouts.pause if cmd.timeout is None else cmd.timeout
        held = self.plane.start_pause(timeout)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.plane.loop.call_later(timeout, self._expired)
        self.events.emit("paused", timeout=timeout, waiting=held.waiting(), **caller)

    def resume(self, caller: dict, reason: str = "by hand") -> None:
        """Let the held requests through, in the order they came; nothing if not paused."""
        held = self.plane.pause
        if held is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        released = self.plane.end_pause()
        self.events.emit("resumed", reason=reason, released=released,
                         paused_for=round(time.monotonic() - held.since, 1), **caller)

    def _expired(self) -> None:
        self._timer = None
        self.events.emit("pause_expired", level="warning",
                         waiting=self.plane.pause.waiting() if self.plane.pause else 0)
        self.resume(internal("pause timeout"), reason="timeout")
