"""The control plane's data plane when N worker processes carry the traffic.

The controller, the health checker, `status` and `/metrics` are written
against one `DataPlane`.  With `workers` > 1 they get a `FleetPlane`: the
same object, carrying no traffic of its own, whose every change of routing
(table, health, config, pause, a drain's cut) is also sent to every worker,
and whose counters are the sum of the workers' (report.py), refreshed by the
supervisor.  So the control plane's code is the same for one process and for
N, and `workers: 1` keeps its data plane in-process, with no channel at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..dataplane.pause import HeldRequests
from ..dataplane.plane import DataPlane

if TYPE_CHECKING:
    from .report import Totals


class Fleet(Protocol):
    """What the plane needs of the supervisor."""

    totals: Totals
    restarts: dict[int, int]

    def broadcast(self, op: str, *args) -> int: ...

    async def call(self, op: str, *args) -> list: ...

    def workers_view(self) -> list[dict]: ...


class FleetHold(HeldRequests):
    """A pause as the supervisor sees it: the held requests are in the workers."""

    __slots__ = ("totals",)

    def __init__(self, timeout: float, totals: Totals) -> None:
        super().__init__(timeout)
        self.totals = totals

    def waiting(self) -> int:
        return self.totals.total("held")

    def release(self) -> int:
        return self.waiting()  # as of the last report: the workers release them


class FleetPlane(DataPlane):
    __slots__ = ("fleet",)

    def __init__(self, loop, config, table, signer, log, fleet: Fleet) -> None:
        self.fleet = fleet  # before DataPlane.__init__, which applies the config
        super().__init__(loop, config, table, signer, log, access=None)

    # -- changes: made here (what the control plane reads) and in every worker ---

    def apply_config(self, config) -> None:
        super().apply_config(config)
        self.fleet.broadcast("config", config)

    def set_table(self, table) -> None:
        super().set_table(table)
        self.fleet.broadcast("table", table)

    def set_health(self, upstream, healthy: bool) -> None:
        super().set_health(upstream, healthy)
        self.fleet.broadcast("health", upstream.pool, upstream.label, healthy)

    def start_pause(self, timeout: float) -> HeldRequests:
        if self.pause is None:
            self.pause = FleetHold(timeout, self.fleet.totals)
        held = super().start_pause(timeout)
        self.fleet.broadcast("pause", timeout)
        return held

    def end_pause(self) -> int:
        released = super().end_pause()
        self.fleet.broadcast("resume")
        return released

    async def cut_everywhere(self, pool: str, address: str | None = None) -> int:
        return sum(n for n in await self.fleet.call("cut", pool, address) if n)

    # -- what the workers hold: from their reports ----------------------------------

    def inflight(self) -> int:
        return sum(pool.inflight for pool in self.pools.values())

    def client_count(self) -> int:
        return self.fleet.totals.total("clients")

    def tunnel_count(self) -> int:
        return self.fleet.totals.total("tunnels")

    def holding(self) -> dict[str, list]:
        return self.fleet.totals.holding()

    def workers_view(self) -> list[dict]:
        return self.fleet.workers_view()

    def worker_restarts(self) -> int:
        """Workers replaced since the start, in any slot (a counter: never less)."""
        return sum(self.fleet.restarts.values())
