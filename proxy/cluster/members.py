"""The live hosts of a fleet, and which one runs a rollout.

Each host keeps a lease on etcd and, under it, a record at `KEY/hosts/NAME`:
its generation, and per pool whether it is healthy and its request counters.
A host that dies stops renewing its lease, and etcd deletes its record when
the lease runs out: the records under `KEY/hosts/` are the live hosts.
The leader key `KEY/leader` is created under the lease of one host, the one
that runs a progressive rollout (progressive.py); when that lease ends, the
next host to try takes the key, and the rollout with it.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

from ..dataplane.stats import BOUNDS, Snapshot
from .etcd import Etcd, Unreachable
from .store import Reachability

PUBLISH = 0.5  # seconds between two records of this host (and looks at the others')


class Membership:
    def __init__(self, etcd: Etcd, key: str, name: str, lease: float, plane,
                 reach: Reachability, events) -> None:
        self.etcd = etcd
        self.name = name
        self.prefix = f"{key}/hosts/".encode()
        self.record_key = self.prefix + name.encode()
        self.leader_key = f"{key}/leader".encode()
        self.ttl = max(2, math.ceil(lease))
        self.plane = plane
        self.reach = reach
        self.events = events
        self.lease = 0  # this host's lease id (0: none held)
        self.leader: str | None = None  # the host named by the leader key, as last read
        self.leading = False  # this host holds the leader key, under its own lease
        self.records: dict[str, dict] = {}  # every live host's record, as last read
        self.tally = Tally()  # their counters, made fit to judge a rollout on
        self._renewed = 0.0  # monotonic: when etcd last renewed our lease
        # Called when `leading` changes (the rollout clock follows).
        self.on_leading: Callable[[], None] = lambda: None
        self.revision: Callable[[], int] = lambda: 0  # the fleet state's, for the record

    # -- what this host says about itself ------------------------------------------

    def record(self) -> dict:
        table = self.plane.table
        pools = {}
        for name, pool in self.plane.pools.items():
            snap = Snapshot.of(pool)
            pools[name] = {"healthy": pool.healthy, "requests": snap.requests,
                           "errors": snap.errors, "latency": list(snap.latency)}
        return {"host": self.name, "pid": os.getpid(), "generation": table.generation,
                "revision": self.revision(), "weights": dict(table.weights), "pools": pools,
                "at": round(time.time(), 3)}

    async def beat(self) -> None:
        """One round: renew the lease (or get a new one), publish this host's
        record, try for the leader key, read every host's record."""
        try:
            await self._renew()
            await self.etcd.put(self.record_key, json.dumps(self.record()).encode(), self.lease)
            await self._campaign()
            self._read(await self.etcd.get_prefix(self.prefix))
            self.reach.up()
        except Exception as exc:  # Unreachable; or a reply of a shape we never saw
            if isinstance(exc, Unreachable):
                self.reach.down(exc)
            else:
                self.events.emit("cluster_beat_failed", level="error", error=repr(exc))
            if not self.lease_alive():
                # Our lease has run out by now, and the leader key with it.
                self.lease = 0
                self._set_leading(False, None)

    def lease_alive(self) -> bool:
        """Whether our lease can still be alive: renewed less than its TTL ago."""
        return bool(self.lease) and time.monotonic() - self._renewed < self.ttl

    def _read(self, values) -> None:
        self.records = _records(values)
        for name, record in self.records.items():
            if name != self.name:
                for pool, p in record.get("pools", {}).items():
                    try:
                        self.tally.see(name, pool, _snapshot(p))
                    except (ValueError, TypeError, AttributeError):
                        continue  # a record we cannot read counts nothing

    async def _renew(self) -> None:
        # The lease runs from when etcd renewed it, some time after we asked:
        # counting from the asking errs on the side of a lease already over.
        asked = time.monotonic()
        if self.lease and await self.etcd.keep_alive(self.lease) > 0:
            self._renewed = asked
            return
        if self.lease:
            self.events.emit("cluster_lease_lost", level="warning", host=self.name)
        self.lease = await self.etcd.grant(self.ttl)
        self._renewed = asked

    async def _campaign(self) -> None:
        won, there = await self.etcd.swap(self.leader_key, self.name.encode(), 0, self.lease)
        if won:
            self._set_leading(True, self.name)
        elif there is not None:
            holder = there.value.decode(errors="replace")
            self._set_leading(there.lease == self.lease, holder)
        else:
            self._set_leading(False, None)

    def _set_leading(self, leading: bool, leader: str | None) -> None:
        self.leader = leader
        if leading != self.leading:
            self.leading = leading
            self.events.emit("cluster_leader" if leading else "cluster_leader_lost",
                             host=self.name)
            self.on_leading()

    async def leave(self) -> None:
        """This host stops: its record and the leader key (if it held it) go now,
        not when the lease would have run out."""
        if self.lease:
            try:
                await self.etcd.revoke(self.lease)
            except Unreachable:
                pass  # the lease runs out by itself
            self.lease = 0
            self._set_leading(False, None)

    # -- what the other hosts say -------------------------------------------------

    async def unhealthy(self, pool: str) -> list[str]:
        """The other live hosts where `pool` is not healthy, read from etcd now."""
        try:
            self._read(await self.etcd.get_prefix(self.prefix))
        except Unreachable as exc:
            self.reach.down(exc)
            raise self.reach.refusal() from None
        return sorted(name for name, r in self.records.items() if name != self.name
                      and not (r.get("pools", {}).get(pool) or {}).get("healthy"))

    def counters(self, pool: str) -> Snapshot:
        """`pool`'s counters summed over the hosts: this one's now, the others'
        as last published (Tally: from when this host first saw each one)."""
        mine = self.plane.pools.get(pool)
        self.tally.see(self.name, pool, Snapshot.of(mine) if mine is not None
                       else Snapshot.empty())
        return self.tally.total(pool)

    def hosts_view(self) -> list[dict]:
        now = time.time()
        out = []
        for name, r in sorted(self.records.items()):
            out.append({"host": name, "generation": r.get("generation"),
                        "leader": name == self.leader, "self": name == self.name,
                        "pools": {p: {"healthy": bool(v.get("healthy"))}
                                  for p, v in (r.get("pools") or {}).items()},
                        "age": round(max(0.0, now - float(r.get("at", now))), 1)})
        return out


class Tally:
    """Every host's counters for each pool, summed so that the sum never goes back.

    A rollout's window is the difference of two sums, so each host counts from
    when this host first saw it (one that joins mid-step brings no history),
    a host whose counters fall (its process restarted) goes on from what it had,
    and one that leaves keeps what it counted.
    """

    def __init__(self) -> None:
        # (host, pool) -> [first seen, last seen, carried over restarts], each a
        # flat list: requests, errors, then the latency buckets.
        self._seen: dict[tuple[str, str], list[list[int]]] = {}

    def see(self, host: str, pool: str, snap: Snapshot) -> None:
        now = [snap.requests, snap.errors, *snap.latency]
        entry = self._seen.get((host, pool))
        if entry is None:
            self._seen[(host, pool)] = [now, now, [0] * len(now)]
            return
        first, last, carried = entry
        if now[0] < last[0]:  # counters went back: that host's process restarted
            carried = [c + b - a for c, a, b in zip(carried, first, last)]
            first = [0] * len(now)
        self._seen[(host, pool)] = [first, now, carried]

    def total(self, pool: str) -> Snapshot:
        size = len(BOUNDS) + 3
        out = [0] * size
        for (_, p), (first, last, carried) in self._seen.items():
            if p == pool:
                for i in range(size):
                    out[i] += carried[i] + last[i] - first[i]
        return Snapshot(out[0], out[1], tuple(out[2:]))


def _snapshot(p: dict) -> Snapshot:
    """A pool's counters as another host published them; ValueError if malformed."""
    latency = [int(c) for c in (p.get("latency") or [])][:len(BOUNDS) + 1]
    latency += [0] * (len(BOUNDS) + 1 - len(latency))
    return Snapshot(int(p.get("requests", 0)), int(p.get("errors", 0)), tuple(latency))


def _records(values) -> dict[str, dict]:
    out = {}
    for v in values:
        try:
            record = json.loads(v.value)
            pools = record.get("pools", {})
            if isinstance(pools, dict) and all(isinstance(p, dict) for p in pools.values()):
                out[str(record["host"])] = record
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not a host record: ignored, not fatal
    return out
