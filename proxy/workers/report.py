"""Counters across worker processes: what a worker reports, and their sum.

Each worker counts its own requests, exactly as a single process does; with
every acknowledgement it sends `report(plane)`.  The supervisor keeps the
latest report of each worker and writes the sums into the pools and
upstreams of its own plane (workers/broadcast.py), which is what `status`,
`/metrics`, `top`, drains and the rollout judge read.  A worker that exits
leaves its counts behind (`retire`), so a counter never goes backwards when
a worker is replaced (what it counted after its last report is lost: at most
one report interval's worth, or what it served while it could not report).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..dataplane.stats import BOUNDS

if TYPE_CHECKING:
    from ..dataplane.plane import DataPlane

# How many of a pool's oldest exchanges a report names (status shows five).
HOLDING = 5


def report(plane: DataPlane) -> dict:
    """This worker's counters, as plain values (pickled over the channel)."""
    pools = {}
    for name, pool in plane.pools.items():
        hist = pool.latency
        pools[name] = {
            "by_class": list(pool.by_class),
            "latency": (list(hist.counts), hist.total, hist.sum),
            "drain_cut": pool.drain_cut,
            "upstreams": {u.label: (u.inflight, u.closes, u.resent) for u in pool.upstreams},
        }
    return {
        "pid": os.getpid(),
        "pools": pools,
        "clients": plane.client_count(),
        "tunnels": plane.tunnel_count(),
        "held": plane.pause.waiting() if plane.pause is not None else 0,
        "holding": {pool: items[:HOLDING] for pool, items in plane.holding().items()},
    }


def requests_of(rep: dict) -> int:
    return sum(sum(p["by_class"]) for p in rep["pools"].values())


def inflight_of(rep: dict) -> int:
    return sum(u[0] for p in rep["pools"].values() for u in p["upstreams"].values())


class Totals:
    """The latest report of each live worker, and what exited workers left."""

    def __init__(self) -> None:
        self.live: dict[int, dict] = {}  # worker slot -> its latest report
        self.retired: dict[str, dict] = {}  # pool -> counters of workers gone

    def update(self, slot: int, rep: dict) -> None:
        self.live[slot] = rep

    def retire(self, slot: int) -> None:
        """The worker in `slot` exited: its counts stay in the sums."""
        rep = self.live.pop(slot, None)
        if rep is None:
            return
        for name, counts in rep["pools"].items():
            kept = self.retired.setdefault(name, _empty())
            _add(kept, counts, inflight=False)

    def total(self, key: str) -> int:
        return sum(rep[key] for rep in self.live.values())

    def holding(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for rep in self.live.values():
            for pool, items in rep["holding"].items():
                out.setdefault(pool, []).extend(items)
        for items in out.values():
            items.sort(key=lambda item: item[1])
        return out

    def apply(self, plane: DataPlane) -> None:
        """Write the sums into `plane`'s pools and upstreams (the supervisor's
        mirror, which carries no traffic of its own)."""
        for name, pool in plane.pools.items():
            summed = _empty()
            _add(summed, self.retired.get(name), inflight=False)
            for rep in self.live.values():
                _add(summed, rep["pools"].get(name), inflight=True)
            pool.by_class[:] = summed["by_class"]
            hist = pool.latency
            hist.counts[:] = summed["latency"][0]
            hist.total, hist.sum = summed["latency"][1], summed["latency"][2]
            pool.drain_cut = summed["drain_cut"]
            for up in pool.upstreams:
                up.inflight, up.closes, up.resent = summed["upstreams"].get(up.label, (0, 0, 0))


def _empty() -> dict:
    return {"by_class": [0] * 6, "latency": ([0] * (len(BOUNDS) + 1), 0, 0.0), "drain_cut": 0, "upstreams": {}}


def _add(into: dict, counts: dict | None, inflight: bool) -> None:
    if counts is None:
        return
    into["by_class"] = [a + b for a, b in zip(into["by_class"], counts["by_class"])]
    buckets, total, seconds = counts["latency"]
    mine = into["latency"]
    into["latency"] = ([a + b for a, b in zip(mine[0], buckets)], mine[1] + total,
                       mine[2] + seconds)
    into["drain_cut"] += counts["drain_cut"]
    ups = into["upstreams"]
    for label, (busy, closes, resent) in counts["upstreams"].items():
        was = ups.get(label, (0, 0, 0))
        # In flight is a gauge: what a worker that exited had in flight is over.
        ups[label] = (was[0] + (busy if inflight else 0), was[1] + closes, was[2] + resent)
