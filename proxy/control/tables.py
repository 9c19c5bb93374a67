"""The next routing table, as pure functions of the current one (no I/O)."""

from __future__ import annotations

from ..dataplane.router import RoutingTable
from .rollout import Rollout
from .state import SavedState


def saved_state(table: RoutingTable, rollout: Rollout | None) -> SavedState:
    return SavedState(
        generation=table.generation,
        weights=dict(table.weights),
        previous=table.previous,
        epochs=dict(table.epochs),
        rollout=None if rollout is None else rollout.to_json(),
        disabled={p: sorted(a) for p, a in table.disabled.items()},
    )


def previous_after(table: RoutingTable, weights: dict[str, int]) -> str | None:
    """The pool to roll back to after moving from `table.weights` to `weights`.

    When traffic starts leaving a pool that held all of it, that pool becomes
    the rollback target; while traffic is split, the target stays.
    """
    old = {p for p, w in table.weights.items() if w > 0}
    new = {p for p, w in weights.items() if w > 0}
    if len(old) == 1 and new != old:
        return next(iter(old))
    if table.previous is not None and new == {table.previous}:
        return None  # back on the previous pool by hand: nothing left to roll back
    return table.previous


def grace_after(table: RoutingTable, weights: dict[str, int], now: float,
                 grace: float) -> dict[str, float]:
    """Pools whose weight just fell to 0 keep honouring cookies for `grace` s."""
    out = {p: t for p, t in table.grace_until.items() if t > now and weights.get(p, 0) == 0}
    if grace > 0:
        for pool, weight in table.weights.items():
            if weight > 0 and weights.get(pool, 0) == 0:
                out[pool] = now + grace
    return out
