"""What `GET /status` shows: routing state, pools, upstreams, what is in flight."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..dataplane import hot_path

if TYPE_CHECKING:
    from ..dataplane.plane import DataPlane


def state_view(plane: DataPlane, rollout) -> dict:
    """`GET /status`: the routing table, the pools, a rollout, a pause."""
    table = plane.table
    now = plane.loop.time()
    return {
        "generation": table.generation,
        "weights": dict(table.weights),
        "previous": table.previous,
        "pools": pools_view(plane),
        "grace": {p: round(t - now, 1) for p, t in table.grace_until.items() if t > now},
        "rollout": None if rollout is None else rollout.to_json(time.time()),
        "draining": plane.draining,
        "pause": None if plane.pause is None else plane.pause.to_json(),
        "hot_path": hot_path(),  # "compiled" (the Cython build) or "pure python"
        **({} if (workers := plane.workers_view()) is None else {"workers": workers}),
    }


def pools_view(plane: DataPlane) -> dict:
    """What `GET /status` shows about pools (the control plane adds the rest)."""
    table = plane.table
    pools = {}
    now = time.monotonic()
    held = plane.holding()
    for name, pool in plane.pools.items():
        pools[name] = {
            "healthy": pool.healthy,
            "weight": table.weights.get(name, 0),
            "inflight": pool.inflight,
            "requests": pool.requests,
            "errors": pool.errors,
            "upstreams": [
                {"address": u.label, "healthy": u.healthy, "enabled": u.enabled,
                 "inflight": u.inflight,
                 # connections it closed under a request, and how many of
                 # those requests went again (retry.py)
                 "closes": u.closes, "resent": u.resent}
                for u in pool.upstreams
            ],
            # What keeps a drain waiting: the oldest exchanges in flight.
            "holding": [{"kind": kind, "method": method.decode("latin-1"),
                         "path": target[:200].decode("latin-1"),
                         "age": round(now - started, 1)}
                        for kind, started, method, target in held.get(name, ())[:5]],
            "drain_cut": pool.drain_cut,
        }
        if hasattr(pool, "latency"):
            # Per-bucket counts (stats.BOUNDS): `top` turns two of these into p50/p99.
            pools[name]["latency"] = list(pool.latency.counts)
    return pools
