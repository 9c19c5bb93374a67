"""The health gate of a cutover: wait, for a bounded time, until the target pool
is healthy here and, in a fleet, on every live host."""

from __future__ import annotations

import asyncio

from ..commands import ConflictError

POLL = 0.1  # seconds between looks


async def wait_healthy(plane, pool: str, peers=None) -> None:
    """Return once `pool` is healthy everywhere it must be; 409 naming where it is
    not after `timeouts.cutover_wait` (nothing changes then).

    `peers` (cluster/fleet.py), in a fleet: this host's name, and the live
    hosts where the pool is not healthy, from what each one publishes.
    """
    loop = plane.loop
    wait = plane.config.timeouts.cutover_wait
    deadline = loop.time() + wait
    while True:
        where = [] if plane.pools[pool].healthy else [peers.name if peers else "this host"]
        if peers is not None:
            where += await peers.unhealthy(pool)
        if not where:
            return
        if loop.time() >= deadline:
            hosts = f" on {', '.join(where)}" if peers is not None else ""
            raise ConflictError(f"pool {pool} is not healthy{hosts} after {wait:g}s; "
                                "nothing changed")
        await asyncio.sleep(POLL)
