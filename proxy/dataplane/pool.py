"""A pool: the upstreams of one release (blue or green) and how to pick one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .stats import Histogram

if TYPE_CHECKING:
    from .upstream import Upstream


class Pool:
    """Upstreams of one color; counters that `status` and metrics show."""

    __slots__ = ("name", "upstreams", "balance", "_next", "by_class", "latency", "drain_cut")

    def __init__(self, name: str, upstreams: list[Upstream], balance: str = "least_inflight") -> None:
        self.name = name
        self.upstreams = upstreams
        self.balance = balance
        self._next = 0
        # Responses by status class: index 1..5 for 1xx..5xx, 0 for requests
        # that got no upstream response (the proxy answered or cut them).  The
        # one count kept: requests and errors are read from it.
        self.by_class = [0] * 6
        self.latency = Histogram()
        self.drain_cut = 0  # exchanges and tunnels cut at a drain's deadline

    def __repr__(self) -> str:
        ups = ", ".join(repr(u) for u in self.upstreams)
        return f"<Pool {self.name} requests={self.requests} errors={self.errors} [{ups}]>"

    @property
    def requests(self) -> int:
        return sum(self.by_class)

    @property
    def errors(self) -> int:
        """Requests that failed: 5xx, or no upstream answer at all."""
        return self.by_class[0] + self.by_class[5]

    @property
    def healthy(self) -> bool:
        """Whether the pool can take a request: an upstream healthy and enabled."""
        return any(u.healthy and u.enabled for u in self.upstreams)

    @property
    def inflight(self) -> int:
        return sum(u.inflight for u in self.upstreams)

    def pick(self, exclude: Upstream | None = None) -> Upstream | None:
        """A healthy upstream, by least in-flight (ties rotate) or round robin."""
        ups = self.upstreams
        n = len(ups)
        if n == 1:  # one address per pool is common; no rotation to keep
            up = ups[0]
            return up if up.healthy and up.enabled and up is not exclude else None
        start = self._next
        self._next = (start + 1) % n
        best = None
        for i in range(n):
            up = ups[(start + i) % n]
            if not up.healthy or not up.enabled or up is exclude:
                continue
            if self.balance == "round_robin":
                return up
            if best is None or up.inflight < best.inflight:
                best = up
        return best

    def count(self, status: int | None, duration: float | None = None) -> None:
        """Record one finished request: its status (None for a proxy failure) and
        how long it took, for the latency histogram."""
        if duration is not None:
            self.latency.observe(duration)
        if status is None:
            self.by_class[0] += 1
        elif status < 600:
            self.by_class[status // 100] += 1
        else:  # llhttp admits any 3 digits; past 5xx is no success either
            self.by_class[5] += 1

    def classes(self) -> dict[str, int]:
        """Counts by status class, as `status` and metrics show them."""
        out = {f"{i}xx": n for i, n in enumerate(self.by_class) if i and n}
        if self.by_class[0]:
            out["error"] = self.by_class[0]
        return out
