"""The clock of a progressive rollout: steps on the proxy's own time.

Each step holds for `interval` while its window is judged (rollout.judge)
every TICK; the verdict advances, rolls back or waits.  The rollout itself, a
frozen value, is the controller's (it is saved with the routing table); this
clock only makes the next value and asks the controller to apply it.

In a fleet one host runs the clock, the one that `leads` (cluster/fleet.py),
on the counters every host publishes; `follow` starts or stops it whenever
the rollout or the leadership changes, so another host takes over a rollout
whose host died.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from typing import Any, Protocol

from ..commands import ConflictError, Cutover, StaleState
from ..dataplane.stats import Snapshot, Window
from .events import internal
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

    peers: Any  # None on one host; else leads() and counters(pool)

    def check_generation(self, expected: int | None) -> None: ...

    async def wait_healthy(self, pool: str) -> None: ...

    async def set(self, weights: dict[str, int], event: str, caller: dict, rollout,
                  **why) -> None: ...

    async def rollback(self, caller: dict, reason: str, back: str, rollout: Rollout) -> dict: ...

    async def complete(self, done: Rollout) -> None: ...

    def show(self, rollout: Rollout) -> None: ...


class RolloutClock:
    def __init__(self, controller: Routing) -> None:
        self.controller = controller
        self._task: asyncio.Task | None = None
        self._running: str | None = None  # the id of the rollout the task judges
        self._marks: tuple[Snapshot, Snapshot] | None = None  # counters at the step's start
        self._marks_for: tuple[str, int] | None = None  # the rollout and step they are for

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
        await self._enter_step(rollout, caller, "rollout_started")  # follow() starts the task

    def follow(self) -> None:
        """Run the clock for the rollout in force if this host leads, else not."""
        c = self.controller
        r = c.rollout
        wanted = r.id if r is not None and r.state == RUNNING and self._leads() else None
        if wanted == self._running and (wanted is None or not self._task.done()):
            return
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()  # (from within, the task ends by itself: _run checks)
        self._task, self._running = None, wanted
        if wanted is not None:
            if self._marks_for != (r.id, r.step_index):
                # Taking over another host's rollout: this step's window starts now.
                self._marks = (self._snapshot(r.target), self._snapshot(r.source))
                self._marks_for = (r.id, r.step_index)
            self._task = c.plane.loop.create_task(self._run(wanted))

    def _leads(self) -> bool:
        peers = self.controller.peers
        return peers is None or peers.leads()

    def _refuse_second_rollout(self) -> None:
        r = self.controller.rollout
        if r is not None and r.state == RUNNING:
            raise ConflictError(f"a rollout to {r.target} is in progress; "
                                "roll back or set weights first")

    async def _enter_step(self, rollout: Rollout, caller: dict,
                          event: str = "rollout_step") -> None:
        """Apply `rollout`'s current step (saved first); start its judging window."""
        rollout = replace(rollout, step_started_at=time.time())
        marks = (self._snapshot(rollout.target), self._snapshot(rollout.source))
        self._marks, self._marks_for = marks, (rollout.id, rollout.step_index)
        await self.controller.set(rollout.weights(self.controller.pools), event, caller,
                                  rollout=rollout, step=rollout.step_index + 1,
                                  percent=rollout.percent, to=rollout.target)

    def _snapshot(self, pool: str) -> Snapshot:
        peers = self.controller.peers
        if peers is not None:
            return peers.counters(pool)  # every live host's, summed
        p = self.controller.plane.pools.get(pool)
        return Snapshot.of(p) if p is not None else Snapshot.empty()

    async def _run(self, rollout_id: str) -> None:
        """Judge the rollout `rollout_id` every TICK while it is the one running (a
        newer one, or its end, stops this task)."""
        c = self.controller
        waiting = False  # for the fleet's store to answer again
        while True:
            await asyncio.sleep(TICK)
            rollout = c.rollout
            if rollout is None or rollout.id != rollout_id or rollout.state != RUNNING \
                    or self._running != rollout_id:  # ended, replaced, or no longer ours
                return
            try:
                await self._tick(rollout)
                waiting = False
            except StaleState:
                continue  # another host changed the state first: judge what is in force now
            except Exception as exc:  # e.g. a failed save: hold, say so, retry nothing
                if getattr(exc, "status", 0) == 503:
                    # The fleet's store is unreachable: nothing can be saved, nor held;
                    # try again on the next tick (and say so once).
                    if not waiting:
                        c.events.emit("rollout_waiting", level="warning", error=str(exc))
                    waiting = True
                    continue
                c.events.emit("rollout_failed", level="error", error=repr(exc))
                if c.rollout is not None and c.rollout.state == RUNNING:
                    c.show(replace(c.rollout, state=HELD, reason=f"holding after an error: {exc}"))
                return

    async def _tick(self, r: Rollout) -> None:
        target_mark, source_mark = self._marks
        target = Window.between(target_mark, self._snapshot(r.target))
        source = Window.between(source_mark, self._snapshot(r.source))
        verdict = judge(target, source, time.time() - r.step_started_at, r.interval,
                        r.max_error_rate, r.max_p99, r.min_requests)
        # What was judged is shown in status; not saved until the next change.
        r = replace(r, window=target.to_json(), baseline=source.to_json())
        self.controller.show(r)
        if verdict.action == "rollback":
            await self._auto_rollback(r, verdict.reason)
        elif verdict.action == "advance":
            await self._advance(r)
        else:
            self.controller.show(replace(r, reason=verdict.reason))

    async def _advance(self, r: Rollout) -> None:
        if r.step_index + 1 >= len(r.steps):
            await self.controller.complete(replace(r, state=COMPLETED,
                                                   reason=f"all traffic on {r.target}"))
            return
        await self._enter_step(replace(r, step_index=r.step_index + 1, reason=""), internal())

    async def _auto_rollback(self, r: Rollout, reason: str) -> None:
        why = f"step {r.step_index + 1} ({r.percent}% to {r.target}): {reason}"
        ended = replace(r, state=ROLLED_BACK, reason=why)
        # Traffic returns to the pool the rollout left, whatever `previous` says.
        await self.controller.rollback(internal(), reason=f"automatic: {why}", back=r.source,
                                       rollout=ended)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _main_pool(weights, exclude: str) -> str | None:
    """The pool with the most weight other than `exclude` (the one a rollout leaves)."""
    candidates = [(w, p) for p, w in weights.items() if p != exclude and w > 0]
    return max(candidates)[1] if candidates else None
