"""The control plane: every change of routing state goes through here.

A change is computed as a new `RoutingTable`, saved to the store (the state
file; in a fleet, etcd first, cluster/store.py), and only then swapped into
the data plane: a failed save changes nothing.  In a fleet the changes other
hosts make arrive through `adopt`.  A
cutover first waits, for a bounded time, until its target is healthy; a
progressive one then runs its steps on the proxy's own clock, so it goes on
when the CLI that started it goes away.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from ..commands import (CommandError, ConflictError, Cutover, Drain, Pause, PreconditionError,
                        StaleState, UpstreamToggle, Weights)
from ..dataplane.plane import DataPlane
from ..dataplane.router import RoutingTable
from .drain import DrainDeadlines
from .events import EventLog, internal
from .gate import wait_healthy
from .pausing import Pauses
from .progressive import RolloutClock
from .rollout import CANCELLED, ROLLED_BACK, Rollout
from .state import SavedState, StateFile, save
from .status import state_view
from .tables import (drained, fitted, grace_after, grace_ended, held, refuse_emptying,
                     rolled_back, saved_rollout, saved_state, table_from_saved, toggled,
                     weighted)

# `_apply(rollout=KEEP)`: the change leaves the rollout as it is.  None clears it.
KEEP = object()


class Controller:
    """The one writer of the routing table and of the rollout saved with it."""

    def __init__(self, plane: DataPlane, state_file: str, events: EventLog) -> None:
        self.plane = plane
        self.state_file = state_file
        self.events = events
        # Where a change is saved before it applies: the state file.  In a fleet,
        # etcd (cluster/fleet.py sets it, and `peers`: the other hosts' health,
        # whether this host runs rollouts, the fleet's summed counters).
        self.store = StateFile(state_file)
        self.peers = None
        self._writing = asyncio.Lock()  # one change at a time is being saved
        # The rollout as saved with the table (this class writes it, in _apply);
        # the clock that steps and judges it is progressive.py.
        self.rollout: Rollout | None = None
        self.clock = RolloutClock(self)
        self.deadlines = DrainDeadlines(plane, events)
        self.pauses = Pauses(plane, events)

    @property
    def table(self) -> RoutingTable:
        return self.plane.table

    @property
    def pools(self) -> list[str]:
        return list(self.plane.pools)

    # -- queries -------------------------------------------------------------------

    def status(self) -> dict:
        view = state_view(self.plane, self.rollout)
        return view if self.peers is None else {**view, "cluster": self.peers.view()}

    def check_generation(self, expected: int | None) -> None:
        if expected is not None and expected != self.table.generation:
            raise PreconditionError(
                f"state is at generation {self.table.generation}, not {expected}")

    # -- changes -------------------------------------------------------------------

    async def set_weights(self, cmd: Weights, caller: dict, event: str = "weights_changed") -> dict:
        """New weights by hand; cancels a rollout in progress."""
        rollout = self.ended(CANCELLED, "weights set by hand")
        await self.set(cmd.weights, event, caller, rollout=rollout)
        return self.status()

    async def set(self, weights: dict[str, int], event: str, caller: dict, rollout=KEEP,
             **why) -> None:
        new = weighted(self.table, weights, self.plane.loop.time(), self.plane.config.sticky.grace)
        await self._apply(new, event, caller, rollout, **why)

    async def cutover(self, cmd: Cutover, caller: dict, expected: int | None) -> dict:
        """All new traffic to `cmd.to` once it is healthy; 409 if it does not become so."""
        if not cmd.force:
            await self.wait_healthy(cmd.to)
        # The wait yielded to the loop: another operator may have moved on.
        self.check_generation(expected)
        weights = {p: (100 if p == cmd.to else 0) for p in self.pools}
        return await self.set_weights(Weights(weights), caller, event="cutover")

    async def rollback(self, caller: dict, reason: str = "", back: str | None = None,
                 rollout: Rollout | None = None) -> dict:
        """All weight back to `previous` at once; cookies for the pools left stop working."""
        table = self.table
        back = back or table.previous
        if back is None or back not in table.weights:
            if self._graced(table):
                return await self._end_grace(caller)
            raise ConflictError("nothing to roll back to: no previous pool")
        rollout = rollout or self.ended(ROLLED_BACK, reason or "rolled back by hand")
        await self._apply(rolled_back(table, back), "rolled_back", caller, rollout,
                          reason=reason or "by hand")
        return self.status()

    async def fit_to(self, config) -> None:
        """A reloaded config adds or removes pools or upstreams: the routing table
        follows (new pools at weight 0), keeping every grace period and disabled
        upstream that still exists.  Saved before it applies, like any change."""
        addresses = {name: {str(a) for a in pc.upstreams} for name, pc in config.pools.items()}
        new = fitted(self.table, addresses)
        if new is not None:
            await self._apply(new, "routing_fitted_to_config", internal("reload"),
                              pools=sorted(addresses))

    def _graced(self, table: RoutingTable) -> list[str]:
        now = self.plane.loop.time()
        return [p for p, t in table.grace_until.items() if t > now]

    async def _end_grace(self, caller: dict) -> dict:
        """Rollback with traffic already back on one pool: end the grace at once."""
        new = grace_ended(self.table, self._graced(self.table))
        await self._apply(new, "rolled_back", caller, reason="grace ended")
        return self.status()

    async def drain(self, cmd: Drain, caller: dict) -> dict:
        """No new requests (sticky or not) to the pool, or to one of its upstreams;
        in-flight ones finish there.

        Whatever is still open to it after `cmd.timeout` (default
        `timeouts.drain`): server-sent event streams, long polls, WebSockets,
        is cut then, so a drain always ends.
        """
        timeout = self.plane.config.timeouts.drain if cmd.timeout is None else cmd.timeout
        if cmd.upstream is not None:
            await self.set_upstream(UpstreamToggle(cmd.pool, cmd.upstream, False, cmd.force),
                                    caller, event="upstream_drained", timeout=timeout)
            self.deadlines.cut_later(f"{cmd.pool} {cmd.upstream}", timeout)
            return self.status()
        new = drained(self.table, cmd.pool)
        rollout = self.ended(CANCELLED, f"pool {cmd.pool} drained")
        await self._apply(new, "pool_drained", caller, rollout, pool=cmd.pool, timeout=timeout)
        self.deadlines.cut_later(cmd.pool, timeout)
        return self.status()

    # -- pause and resume (pausing.py; not routing state: no generation, not saved) -----

    def pause(self, cmd: Pause, caller: dict) -> dict:
        self.pauses.pause(cmd, caller)
        return self.status()

    def resume(self, caller: dict) -> dict:
        self.pauses.resume(caller)
        return self.status()

    def stopping(self) -> None:
        """The proxy stops: held requests go on now, so that the drain can finish them."""
        self.pauses.resume(internal("shutdown"), reason="the proxy is stopping")

    async def set_upstream(self, cmd: UpstreamToggle, caller: dict, event: str | None = None,
                           **why) -> dict:
        """Take one upstream out of its pool's rotation, or put it back.

        Refused (409, nothing changes) when it would leave a pool that has
        weight with no enabled, healthy upstream, unless `cmd.force`.
        """
        pool = self.plane.pools[cmd.pool]
        if cmd.address not in (u.label for u in pool.upstreams):
            raise CommandError(f"address: {cmd.address!r} is not an upstream of pool {cmd.pool} "
                               f"({', '.join(u.label for u in pool.upstreams)})")
        table = self.table
        off = set(table.disabled.get(cmd.pool, ()))
        (off.discard if cmd.enabled else off.add)(cmd.address)
        if off == set(table.disabled.get(cmd.pool, ())):
            return self.status()  # already so: no new generation
        if not cmd.enabled and not cmd.force:
            refuse_emptying(table, self.plane.pools[cmd.pool], off, cmd.address)
        new = toggled(table, cmd.pool, off)
        event = event or ("upstream_enabled" if cmd.enabled else "upstream_disabled")
        if cmd.enabled:
            self.deadlines.cancel(f"{cmd.pool} {cmd.address}")  # back in rotation: no cut due
        await self._apply(new, event, caller, pool=cmd.pool, upstream=cmd.address,
                          enabled=cmd.enabled, **why)
        return self.status()

    async def wait_healthy(self, pool: str) -> None:
        await wait_healthy(self.plane, pool, self.peers)

    async def _apply(self, new: RoutingTable, event: str, caller: dict, rollout=KEEP,
                     **why) -> None:
        """Persist, then swap: the order that makes a failed save change nothing.

        `new` was made from the table in force; if another change got there
        first (in a fleet, saving yields), this one is stale and refused.
        `rollout` is the rollout as it will be after this change (KEEP: as it is;
        None: none, so an ended rollout's line does not outlive the next change
        by hand); it is saved with the table and takes effect with it.
        """
        async with self._writing:
            old, old_rollout = self.table, self.rollout
            if new.generation != old.generation + 1:
                raise StaleState(f"the routing state moved to generation {old.generation} "
                                 "meanwhile; nothing changed")
            rollout = old_rollout if rollout is KEEP else rollout
            if not await self.store.save(saved_state(new, rollout)):
                return  # saved, and another host's later change is in force already
            for pool, weight in new.weights.items():
                if weight > 0:
                    self.deadlines.cancel(pool)  # traffic again: a drain's deadline is moot
            self.plane.set_table(new)
            self.rollout = rollout
        if rollout is not None and rollout is not old_rollout and old_rollout is not None \
                and old_rollout.active and not rollout.active:
            self.announce_end(rollout)
        self.events.emit(event, old=dict(old.weights), new=dict(new.weights),
                         generation=new.generation, previous=new.previous, **why, **caller)
        self.clock.follow()

    def ended(self, state: str, reason: str) -> Rollout | None:
        """The active rollout as it would be once ended (None when none is active)."""
        r = self.rollout
        if r is None or not r.active:
            return None
        return replace(r, state=state, reason=reason)

    def show(self, rollout: Rollout) -> None:
        """The rollout as last judged (its window, why it waits): in status, saved later."""
        self.rollout = rollout

    async def complete(self, done: Rollout) -> None:
        """The last step held: the rollout ends, traffic stays where it is.  The
        table is saved again as it is (same generation, so it is not `_apply`)."""
        async with self._writing:
            now = self.rollout
            if now is None or now.id != done.id or not now.active:
                raise StaleState("the rollout ended or changed meanwhile")
            if await self.store.save(saved_state(self.table, done)):
                self.rollout = done
        self.announce_end(done)

    def announce_end(self, r: Rollout) -> None:
        level = "warning" if r.state == ROLLED_BACK else "info"
        self.events.emit(f"rollout_{r.state}", level=level, to=r.target, reason=r.reason,
                         step=r.step_index + 1, percent=r.percent, window=r.window,
                         baseline=r.baseline)

    # -- state ---------------------------------------------------------------------

    def restore(self, saved: SavedState) -> None:
        """The state a previous process saved: its table, and its rollout, held."""
        self.plane.set_table(table_from_saved(saved, self._known()))
        rollout = self._rollout_of(saved)
        self.rollout = held(rollout) if rollout is not None and rollout.active else rollout
        if self.rollout is not rollout:
            self.events.emit("rollout_held", level="warning", reason=self.rollout.reason)

    def _rollout_of(self, saved: SavedState) -> Rollout | None:
        try:
            return saved_rollout(saved.rollout)
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            self.events.emit("rollout_not_restored", level="warning", error=repr(exc))
            return None

    def _known(self) -> dict[str, set[str]]:
        return {name: {u.label for u in pool.upstreams} for name, pool in self.plane.pools.items()}

    def persist(self) -> None:
        """This host's state file, as in force (at start and at stop; never etcd)."""
        save(self.state_file, saved_state(self.table, self.rollout))

    def adopt(self, saved: SavedState) -> None:
        """The fleet's state, as another host wrote it (cluster/fleet.py): in force
        here now, as if this host had made the change.  Grace periods run on this
        host's clock from now; a drain's deadline stays with the host that drained."""
        old = self.table
        grace = grace_after(old, saved.weights, self.plane.loop.time(),
                            self.plane.config.sticky.grace)
        new = table_from_saved(saved, self._known(), grace)
        self.plane.set_table(new)
        self.rollout = self._rollout_of(saved)
        if new.generation != old.generation:
            self.events.emit("fleet_state_applied", old=dict(old.weights), new=dict(new.weights),
                             generation=new.generation, previous=new.previous)
        self.clock.follow()

    async def start_rollout(self, cmd: Cutover, caller: dict, expected: int | None = None) -> dict:
        """Start stepping traffic to `cmd.to`; the proxy runs it from here (202)."""
        await self.clock.start(cmd, caller, expected)
        return self.status()

    async def close(self) -> None:
        self.deadlines.close()
        await self.clock.close()
