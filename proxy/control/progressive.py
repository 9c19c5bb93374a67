"""The clock of a progressive rollout: steps on the proxy's own time.

Each step holds for `interval` while its window is judged (rollout.judge)
every TICK; the verdict advances, rolls back or waits.  The rollout itself, a
frozen value, is the controller's (it is saved with the routing table); this
clock only makes the next value and asks the controller to apply it.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from typing import Any, Protocol

from ..commands import ConflictError, Cutover
from ..dataplane.stats import Snapshot, Window
from .rollout import COMPLETED, HELD, ROLLED_BACK, RUNNING, Rollout, judge

TICK = 0.5  # how often a running rollout is judged


class Routing(Protocol):
    """What the clock asks of the controller (controller.Controller), the owner
    of the routing table and of the rollout saved with it."""

    plane: Any
    events: Any
    rollout: Rollout | None
    table: Any
    pools: list[str]

    def check_generation(self, expected: int | None) -> None: ...

    async def wait_healthy(self, pool: str) -> None: ...

    def set(self, weights: dict[str, int], event: str, caller: dict, rollout, **why) -> None: ...

    def rollback(self, caller: dict, reason: str, back: str, rollout: Rollout) -> dict: ...

    def complete(self, done: Rollout) -> None: ...

    def show(self, rollout: Rollout) -> None: ...


class RolloutClock:
    def __init__(self, controller: Routing) -> None:
        self.controller = controller
        self._task: asyncio.Task | None = None
        self._marks: tuple[Snapshot, Snapshot] | None = None  # counters at the step's start

    async def start(self, cmd: Cutover, caller: dict, expected: int | None) -> None:
        """Start stepping traffic to `cmd.to`, and the task that judges each step."""
        c = self.controller
        self._refuse_second_rollout()
        source = _main_pool(c.table.weights, exclude=cmd.to)
        if source is None:
            raise ConflictError(f"{cmd.to} already has all the traffic")
        if not cmd.force:
            await c.wait_healthy(cmd.to)
        # The wait yielded to the loop: re-check what another caller may have done.
        c.check_generation(expected)
        self._refuse_second_rollout()
        defaults = self.controller.plane.config.rollout
        now = time.time()
        rollout = Rollout(
            target=cmd.to, source=source, steps=list(cmd.steps),
            interval=cmd.interval or defaults.interval,
            max_error_rate=defaults.max_error_rate if cmd.max_error_rate is None
            else cmd.max_error_rate,
            max_p99=cmd.max_p99 if cmd.max_p99 is not None else defaults.max_p99,
            min_requests=cmd.min_requests or defaults.min_requests,
            started_at=now, step_started_at=now, id=os.urandom(6).hex())
        self._enter_step(rollout, caller, "rollout_started")
        self._task = self.controller.plane.loop.create_task(self._run(rollout.id))

    def _refuse_second_rollout(self) -> None:
        r = self.controller.rollout
        if r is not None and r.state == RUNNING:
            raise ConflictError(f"a rollout to {r.target} is in progress; "
                                "roll back or set weights first")

    def _enter_step(self, rollout: Rollout, caller: dict, event: str = "rollout_step") -> None:
        """Apply `rollout`'s current step (saved first); start its judging window."""
        rollout = replace(rollout, step_started_at=time.time())
        marks = (self._snapshot(rollout.target), self._snapshot(rollout.source))
        self.controller.set(rollout.weights(self.controller.pools), event, caller,
                            rollout=rollout, step=rollout.step_index + 1,
                            percent=rollout.percent, to=rollout.target)
        self._marks = marks

    def _snapshot(self, pool: str) -> Snapshot:
        p = self.controller.plane.pools.get(pool)
        return Snapshot.of(p) if p is not None else Snapshot.empty()

    async def _run(self, rollout_id: str) -> None:
        """Judge the rollout `rollout_id` every TICK while it is the one running (a
        newer one, or its end, stops this task)."""
        c = self.controller
        while True:
            await asyncio.sleep(TICK)
            rollout = c.rollout
            if rollout is None or rollout.id != rollout_id or rollout.state != RUNNING:
                return
            try:
                self._tick(rollout)
            except Exception as exc:  # e.g. a failed save: hold, say so, retry nothing
                c.events.emit("rollout_failed", level="error", error=repr(exc))
                if c.rollout is not None and c.rollout.state == RUNNING:
                    c.show(replace(c.rollout, state=HELD, reason=f"holding after an error: {exc}"))
                return

    def _tick(self, r: Rollout) -> None:
        target_mark, source_mark = self._marks
        target = Window.between(target_mark, self._snapshot(r.target))
        source = Window.between(source_mark, self._snapshot(r.source))
        verdict = judge(target, source, time.time() - r.step_started_at, r.interval,
                        r.max_error_rate, r.max_p99, r.min_requests)
        # What was judged is shown in status; not saved until the next change.
        r = replace(r, window=target.to_json(), baseline=source.to_json())
        self.controller.show(r)
        if verdict.action == "rollback":
            self._auto_rollback(r, verdict.reason)
        elif verdict.action == "advance":
            self._advance(r)
        else:
            self.controller.show(replace(r, reason=verdict.reason))

    def _advance(self, r: Rollout) -> None:
        if r.step_index + 1 >= len(r.steps):
            self.controller.complete(replace(r, state=COMPLETED,
                                             reason=f"all traffic on {r.target}"))
            return
        self._enter_step(replace(r, step_index=r.step_index + 1, reason=""), internal())

    def _auto_rollback(self, r: Rollout, reason: str) -> None:
        why = f"step {r.step_index + 1} ({r.percent}% to {r.target}): {reason}"
        ended = replace(r, state=ROLLED_BACK, reason=why)
        # Traffic returns to the pool the rollout left, whatever `previous` says.
        self.controller.rollback(internal(), reason=f"automatic: {why}", back=r.source,
                                 rollout=ended)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _main_pool(weights, exclude: str) -> str | None:
    """The pool with the most weight other than `exclude` (the one a rollout leaves)."""
    candidates = [(w, p) for p, w in weights.items() if p != exclude and w > 0]
    return max(candidates)[1] if candidates else None


def internal(via: str = "rollout") -> dict[str, Any]:
    """Log fields for a change the proxy made itself."""
    return {"uid": os.getuid(), "pid": os.getpid(), "via": via}
