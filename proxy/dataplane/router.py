"""Choosing a pool for one request: a pure function over plain values.

Everything that decides where a request goes lives here, free of I/O, so it
can be tested by table: weights, the sticky cookie, health, the grace period
after a pool's weight fell to 0, and the testers' override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping, NamedTuple


class Choice(NamedTuple):
    pool: str
    set_cookie: bool


class Draw(NamedTuple):
    """The pools a weighted draw can land on: each one's answer and the upper end
    of its share of [0, total)."""

    total: int
    shares: tuple[tuple[Choice, int], ...]


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
    # Upstreams taken out of their pool's rotation (a rolling update): pool ->
    # addresses.  Pools stay sticky; a disabled upstream gets no new request.
    disabled: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    # The draw for each set of healthy pools seen with this table (a memo: the
    # table never changes, and health changes a few times a day).
    _draws: dict[frozenset[str], Draw] = field(default_factory=dict, init=False, repr=False,
                                               compare=False)

    def epoch(self, pool: str) -> int:
        return self.epochs.get(pool, 0)

    def draw(self, healthy: frozenset[str]) -> Draw:
        try:
            return self._draws[healthy]
        except KeyError:
            draw = self._draws[healthy] = _draw_for(self.weights.items(), healthy)
            return draw


def choose_pool(
    table: RoutingTable,
    healthy: frozenset[str],
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
        return _stay(override)
    if sticky is not None and _honours(table, healthy, sticky, now):
        return _stay(sticky[0])
    return _land(table.draw(healthy), draw)


_STAYS: dict[str, Choice] = {}


def _stay(pool: str) -> Choice:
    """The answer that keeps a request on `pool` without a new cookie, made once
    per pool: a NamedTuple costs a Python-level __new__ call."""
    choice = _STAYS.get(pool)
    if choice is None:
        choice = Choice(pool, set_cookie=False)
        if len(_STAYS) < 1024:  # pool names are few; never grow without bound
            _STAYS[pool] = choice
    return choice


def _honours(table: RoutingTable, healthy, sticky: tuple[str, int], now: float) -> bool:
    pool, epoch = sticky
    if pool not in healthy or epoch != table.epoch(pool):
        return False
    weight = table.weights.get(pool)
    if weight is None:
        return False
    return weight > 0 or now < table.grace_until.get(pool, 0.0)


def _draw_for(weights: Iterable[tuple[str, int]], healthy) -> Draw:
    total = 0
    shares = []
    for pool, weight in weights:
        if weight > 0 and pool in healthy:
            total += weight
            shares.append((Choice(pool, set_cookie=True), total))
    return Draw(total, tuple(shares))


def _land(draw: Draw, uniform: float) -> Choice | None:
    """Where a uniform number in [0, 1) falls among the shares of `draw`."""
    total, shares = draw  # unpacked: compiled, a tuple's items cost less than its attributes
    if not total:
        return None
    point = uniform * total
    for choice, upper in shares:
        if point < upper:
            return choice
    return shares[-1][0]  # float rounding at the top edge lands on the last


def table_from(weights: dict[str, int], generation: int = 0, previous: str | None = None,
               epochs: dict[str, int] | None = None,
               grace_until: dict[str, float] | None = None,
               disabled: dict[str, frozenset[str]] | None = None) -> RoutingTable:
    return RoutingTable(
        generation=generation,
        weights=MappingProxyType(dict(weights)),
        previous=previous,
        epochs=MappingProxyType(dict(epochs or {})),
        grace_until=MappingProxyType(dict(grace_until or {})),
        disabled=MappingProxyType({p: frozenset(a) for p, a in (disabled or {}).items() if a}),
    )
