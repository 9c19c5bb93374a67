"""Choosing a pool for one request: a pure function over plain values.

Everything that decides where a request goes lives here, free of I/O, so it
can be tested by table: weights, the sticky cookie, health, the grace period
after a pool's weight fell to 0, and the testers' override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, NamedTuple


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """One generation of routing state; replaced whole on every change.

    The data plane reads whichever table is current when a request arrives,
    so a weight change takes effect on the very next request.
    """

    generation: int
    weights: Mapping[str, int]
    previous: str | None = None
    # Cookie epoch per pool: a rollback bumps the epoch of the pool it leaves,
    # so cookies minted for that pool stop being honoured.
    epochs: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # Monotonic deadline until which a pool whose weight fell to 0 still
    # honours its cookies.
    grace_until: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def epoch(self, pool: str) -> int:
        return self.epochs.get(pool, 0)


class Choice(NamedTuple):
    # A NamedTuple, not a frozen dataclass: one is built per request and the
    # dataclass costs five times as much to construct.
    pool: str
    set_cookie: bool


def choose_pool(
    table: RoutingTable,
    healthy: frozenset[str] | set[str],
    sticky: tuple[str, int] | None,
    override: str | None,
    draw: float,
    now: float,
) -> Choice | None:
    """The pool for this request, or None when no healthy pool may take it.

    `sticky` is the (pool, epoch) of an authentic cookie, `override` the pool
    a trusted tester asked for, `draw` a uniform number in [0, 1).
    """
    if override is not None and override in healthy and override in table.weights:
        return Choice(override, set_cookie=False)
    if sticky is not None and _honours(table, healthy, sticky, now):
        return Choice(sticky[0], set_cookie=False)
    pool = weighted_draw(table.weights, healthy, draw)
    if pool is None:
        return None
    return Choice(pool, set_cookie=True)


def _honours(table: RoutingTable, healthy, sticky: tuple[str, int], now: float) -> bool:
    pool, epoch = sticky
    if pool not in healthy or epoch != table.epoch(pool):
        return False
    weight = table.weights.get(pool)
    if weight is None:
        return False
    return weight > 0 or now < table.grace_until.get(pool, 0.0)


def weighted_draw(weights: Mapping[str, int], healthy, draw: float) -> str | None:
    """Pick among healthy pools with weight > 0, proportionally to weight."""
    total = 0
    for pool, weight in weights.items():
        if weight > 0 and pool in healthy:
            total += weight
    if total == 0:
        return None
    point = draw * total
    last = None
    for pool, weight in weights.items():
        if weight > 0 and pool in healthy:
            if point < weight:
                return pool
            point -= weight
            last = pool
    return last  # float rounding at the top edge lands on the last candidate
