"""The next routing table, as pure functions of the current one (no I/O)."""

from __future__ import annotations

from dataclasses import replace

from ..commands import ConflictError
from ..dataplane.router import RoutingTable, table_from
from .rollout import HELD, Rollout
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


def table_from_saved(saved: SavedState, known: dict[str, set[str]],
                     grace_until: dict[str, float] | None = None) -> RoutingTable:
    """The saved table, minus disabled upstreams the config no longer has."""
    disabled = {p: frozenset(a for a in addrs if a in known.get(p, ()))
                for p, addrs in saved.disabled.items()}
    return table_from(saved.weights, saved.generation, saved.previous, saved.epochs,
                      grace_until=grace_until, disabled=disabled)


def saved_rollout(data: dict | None) -> Rollout | None:
    """The rollout saved with a state; raises on a malformed one."""
    if not data:
        return None
    r = Rollout.from_json(data)
    r.percent  # noqa: B018 - a step index out of range fails here
    return r


def held(r: Rollout) -> Rollout:
    """An active rollout a restarted proxy found saved: held, since nobody can know
    what happened while the proxy was down."""
    return replace(r, state=HELD, reason=(
        f"proxy restarted during step {r.step_index + 1} ({r.percent}% to {r.target}); "
        "holding there: run the cutover again to continue, or roll back"))


def weighted(table: RoutingTable, weights: dict[str, int], now: float,
             grace: float) -> RoutingTable:
    """New weights: the rollback target and grace periods follow (`now` on the loop's clock)."""
    return table_from(weights, generation=table.generation + 1,
                      previous=previous_after(table, weights), epochs=dict(table.epochs),
                      grace_until=grace_after(table, weights, now, grace),
                      disabled=dict(table.disabled))


def grace_ended(table: RoutingTable, graced: list[str]) -> RoutingTable:
    """A rollback with traffic already back on one pool: the cookies of the pools
    still in their grace period stop working now."""
    epochs = dict(table.epochs)
    for pool in graced:
        epochs[pool] = epochs.get(pool, 0) + 1
    return table_from(dict(table.weights), generation=table.generation + 1, previous=None,
                      epochs=epochs, grace_until={}, disabled=dict(table.disabled))


def drained(table: RoutingTable, pool: str) -> RoutingTable:
    """No new requests to `pool`, its cookies included (no grace); 409 when no other
    pool has weight."""
    weights = dict(table.weights)
    weights[pool] = 0
    if not any(weights.values()):
        raise ConflictError(f"cannot drain {pool}: no other pool has weight")
    grace = {p: t for p, t in table.grace_until.items() if p != pool}
    return table_from(weights, generation=table.generation + 1,
                      previous=previous_after(table, weights), epochs=dict(table.epochs),
                      grace_until=grace, disabled=dict(table.disabled))


def toggled(table: RoutingTable, pool: str, off: set[str]) -> RoutingTable:
    """`off` as the disabled upstreams of `pool`."""
    disabled = dict(table.disabled)
    disabled[pool] = frozenset(off)
    return table_from(dict(table.weights), generation=table.generation + 1,
                      previous=table.previous, epochs=dict(table.epochs),
                      grace_until=dict(table.grace_until), disabled=disabled)


def refuse_emptying(table: RoutingTable, pool, off: set[str], address: str) -> None:
    """409 when disabling `address` leaves `pool`, which has weight, with no
    enabled, healthy upstream."""
    weight = table.weights.get(pool.name, 0)
    if weight and not any(u.healthy and u.label not in off for u in pool.upstreams):
        raise ConflictError(
            f"disabling {address} would leave pool {pool.name} (weight {weight}) with no "
            "enabled, healthy upstream; nothing changed (--force to do it anyway)")


def fitted(table: RoutingTable, addresses: dict[str, set[str]]) -> RoutingTable | None:
    """The table for a reloaded config's pools (`addresses`: their upstreams): new
    pools at weight 0, grace periods and disabled upstreams kept where they still
    exist.  None when nothing changes."""
    disabled = {p: frozenset(a for a in addrs if a in addresses.get(p, ()))
                for p, addrs in table.disabled.items()}
    disabled = {p: a for p, a in disabled.items() if a}
    if set(table.weights) == set(addresses) and disabled == dict(table.disabled):
        return None
    keep = lambda mapping: {p: v for p, v in mapping.items() if p in addresses}  # noqa: E731
    return table_from({p: table.weights.get(p, 0) for p in addresses},
                      generation=table.generation + 1,
                      previous=table.previous if table.previous in addresses else None,
                      epochs=keep(table.epochs), grace_until=keep(table.grace_until),
                      disabled=disabled)


def rolled_back(table: RoutingTable, back: str) -> RoutingTable:
    """All weight on `back`; the cookies of every other pool that had traffic stop
    working (their epoch moves on), and no grace period is left."""
    epochs = dict(table.epochs)
    for pool, weight in table.weights.items():
        if pool != back and weight > 0:
            epochs[pool] = epochs.get(pool, 0) + 1
    return table_from({p: (100 if p == back else 0) for p in table.weights},
                      generation=table.generation + 1, previous=None, epochs=epochs,
                      grace_until={}, disabled=dict(table.disabled))
