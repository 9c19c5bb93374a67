"""The control plane: every change of routing state goes through here.

A change is computed as a new `RoutingTable`, saved to the state file, and
only then swapped into the data plane: a failed save changes nothing.  A
cutover first waits, for a bounded time, until its target is healthy.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from .commands import ConflictError, Cutover, Drain, PreconditionError, Weights
from .plane import DataPlane, table_from
from .router import RoutingTable
from .state import SavedState, save


class Controller:
    def __init__(self, plane: DataPlane, state_file: str, log) -> None:
        self.plane = plane
        self.state_file = state_file
        self.log = log
        self.rollout: dict[str, Any] | None = None

    @property
    def table(self) -> RoutingTable:
        return self.plane.table

    @property
    def pools(self) -> list[str]:
        return list(self.plane.pools)

    # -- queries -------------------------------------------------------------------

    def status(self) -> dict:
        table = self.table
        now = self.plane.loop.time()
        return {
            "generation": table.generation,
            "weights": dict(table.weights),
            "previous": table.previous,
            "pools": self.plane.status(),
            "grace": {p: round(t - now, 1) for p, t in table.grace_until.items() if t > now},
            "rollout": self.rollout,
            "draining": self.plane.draining,
        }

    def check_generation(self, expected: int | None) -> None:
        if expected is not None and expected != self.table.generation:
            raise PreconditionError(
                f"state is at generation {self.table.generation}, not {expected}")

    # -- changes -------------------------------------------------------------------

    def set_weights(self, cmd: Weights, caller: dict) -> dict:
        table = self.table
        now = self.plane.loop.time()
        new = table_from(
            cmd.weights,
            generation=table.generation + 1,
            previous=_previous_after(table, cmd.weights),
            epochs=dict(table.epochs),
            grace_until=_grace_after(table, cmd.weights, now, self._grace()),
        )
        self._apply(new, "weights_changed", caller)
        return self.status()

    async def cutover(self, cmd: Cutover, caller: dict, expected: int | None) -> dict:
        """All new traffic to `cmd.to` once it is healthy; 409 if it does not become so."""
        if not cmd.force:
            await self._wait_healthy(cmd.to)
        # The wait yielded to the loop: another operator may have moved on.
        self.check_generation(expected)
        weights = {p: (100 if p == cmd.to else 0) for p in self.pools}
        return self.set_weights(Weights(weights), caller)

    def rollback(self, caller: dict) -> dict:
        """All weight back to `previous` at once; cookies for the pools left stop working."""
        table = self.table
        back = table.previous
        if back is None or back not in table.weights:
            raise ConflictError("nothing to roll back to: no previous pool")
        epochs = dict(table.epochs)
        for pool, weight in table.weights.items():
            if pool != back and weight > 0:
                epochs[pool] = epochs.get(pool, 0) + 1
        new = table_from(
            {p: (100 if p == back else 0) for p in table.weights},
            generation=table.generation + 1,
            previous=None,
            epochs=epochs,
            grace_until={},
        )
        self.rollout = None
        self._apply(new, "rolled_back", caller)
        return self.status()

    def drain(self, cmd: Drain, caller: dict) -> dict:
        """No new requests (sticky or not) to the pool; in-flight ones finish there."""
        table = self.table
        weights = dict(table.weights)
        weights[cmd.pool] = 0
        if not any(weights.values()):
            raise ConflictError(f"cannot drain {cmd.pool}: no other pool has weight")
        grace = {p: t for p, t in table.grace_until.items() if p != cmd.pool}
        new = table_from(weights, generation=table.generation + 1,
                         previous=_previous_after(table, weights), epochs=dict(table.epochs),
                         grace_until=grace)
        self._apply(new, "pool_drained", caller)
        return self.status()

    async def _wait_healthy(self, pool: str) -> None:
        loop = self.plane.loop
        deadline = loop.time() + self.plane.config.timeouts.cutover_wait
        while not self.plane.pools[pool].healthy:
            if loop.time() >= deadline:
                raise ConflictError(
                    f"pool {pool} is not healthy after "
                    f"{self.plane.config.timeouts.cutover_wait:g}s; nothing changed")
            await asyncio.sleep(0.1)

    def _grace(self) -> float:
        return self.plane.config.sticky.grace

    def _apply(self, new: RoutingTable, event: str, caller: dict) -> None:
        """Persist, then swap: the order that makes a failed save change nothing."""
        old = self.table
        save(self.state_file, saved_state(new, self.rollout))
        self.plane.set_table(new)
        self.log.info(event, old=dict(old.weights), new=dict(new.weights),
                      generation=new.generation, previous=new.previous, **caller)

    def restore(self, saved: SavedState) -> None:
        self.rollout = saved.rollout
        self.plane.set_table(table_from(saved.weights, saved.generation, saved.previous,
                                        saved.epochs))

    def persist(self) -> None:
        save(self.state_file, saved_state(self.table, self.rollout))


def saved_state(table: RoutingTable, rollout: dict | None) -> SavedState:
    return SavedState(
        generation=table.generation,
        weights=dict(table.weights),
        previous=table.previous,
        epochs=dict(table.epochs),
        rollout=rollout,
    )


def _previous_after(table: RoutingTable, weights: dict[str, int]) -> str | None:
    """The pool to roll back to after moving from `table.weights` to `weights`.

    When traffic starts leaving a pool that held all of it, that pool becomes
    the rollback target; while traffic is split, the target stays.
    """
    old = {p: w for p, w in table.weights.items() if w > 0}
    new = {p: w for p, w in weights.items() if w > 0}
    if len(old) == 1 and set(new) != set(old):
        return next(iter(old))
    if table.previous is not None and set(new) == {table.previous}:
        return None  # back on the previous pool by hand: nothing left to roll back
    return table.previous


def _grace_after(table: RoutingTable, weights: dict[str, int], now: float,
                 grace: float) -> dict[str, float]:
    """Pools whose weight just fell to 0 keep honouring cookies for `grace` s."""
    out = {p: t for p, t in table.grace_until.items() if t > now and weights.get(p, 0) == 0}
    if grace > 0:
        for pool, weight in table.weights.items():
            if weight > 0 and weights.get(pool, 0) == 0:
                out[pool] = now + grace
    return out


def caller_of(peer: tuple[int, int, int] | None) -> dict:
    """Log fields naming who made a change (pid, uid, gid from SO_PEERCRED)."""
    if peer is None:
        return {"uid": os.getuid(), "pid": os.getpid(), "via": "internal"}
    pid, uid, gid = peer
    return {"uid": uid, "pid": pid, "gid": gid}
