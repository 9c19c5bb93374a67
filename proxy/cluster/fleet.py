"""This host as one of a fleet (SPEC §2.6): the pieces, wired to the controller.

The controller stays what it is on one host; in a fleet it is given this
fleet's store (store.py: changes are compare-and-swaps on etcd, other hosts'
changes arrive through a watch) and this object as its `peers`: the other
hosts' health for a cutover, whether this host runs rollouts, and the
fleet's summed counters to judge them on (members.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time

from ..control.tables import saved_state
from .etcd import Etcd, Unreachable
from .members import PUBLISH, Membership
from .store import Reachability, SharedState

CHECK_EVERY = 10  # beats between two reads of the state beside the watch (5 s)


class Fleet:
    def __init__(self, cluster, state_file: str, plane, events, log) -> None:
        self.key = cluster.key
        self.name = cluster.host
        self.etcd = Etcd(list(cluster.etcd), cluster.timeout)
        self.reach = Reachability(events)
        self.store = SharedState(self.etcd, cluster.key, state_file, lambda: list(plane.pools),
                                 self.reach, events, log)
        self.members = Membership(self.etcd, cluster.key, cluster.host, cluster.lease, plane,
                                  self.reach, events)
        self.members.revision = lambda: self.store.revision
        self.log = log
        self._tasks: list[asyncio.Task] = []

    def attach(self, controller) -> None:
        """The controller saves to this fleet's store and asks it about the other hosts."""
        controller.store = self.store
        controller.peers = self
        self.store.current = lambda: saved_state(controller.table, controller.rollout)
        self.store.adopt = controller.adopt
        self.members.on_leading = controller.clock.follow

    async def start(self) -> None:
        """One look at etcd before serving, bounded by `cluster.timeout` per
        endpoint: the fleet's state is in force from the first request when etcd
        answers, and this host's saved state when it does not.  Then in the
        background."""
        await self.members.beat()
        if self.reach.reachable:
            try:
                await self.store.sync()
            except Unreachable as exc:
                self.reach.down(exc)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.store.follow()), loop.create_task(self._beat())]

    async def _beat(self) -> None:
        for count in itertools.count(1):
            await asyncio.sleep(PUBLISH)
            await self.members.beat()  # never raises
            if count % CHECK_EVERY == 0:
                try:
                    await self.store.check()
                except Unreachable as exc:
                    self.reach.down(exc)
                except Exception as exc:  # noqa: BLE001 - the beat must go on
                    self.log.error("fleet_check_failed", error=repr(exc))

    # -- what the controller asks (controller.peers) -------------------------------

    async def unhealthy(self, pool: str) -> list[str]:
        return await self.members.unhealthy(pool)

    def leads(self) -> bool:
        # Not past our lease's end even before a beat notices: by then another
        # host may hold the leader key.
        return self.members.leading and self.members.lease_alive()

    def counters(self, pool: str):
        return self.members.counters(pool)

    def view(self) -> dict:
        """`status`: this host, etcd's reachability, the leader, every live host."""
        since = self.reach.since
        return {
            "host": self.name, "key": self.key, "reachable": self.reach.reachable,
            "unreachable_since": None if since is None else _iso(since),
            "unreachable_for": None if since is None else round(time.time() - since, 1),
            "error": self.reach.error or None, "revision": self.store.revision,
            "leader": self.members.leader, "leading": self.members.leading,
            "hosts": self.members.hosts_view(),
        }

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.members.leave()
        await self.etcd.close()


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
