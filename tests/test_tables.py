"""The next routing table, as pure functions (proxy/control/tables.py), by table."""

import pytest

from proxy.commands import ConflictError
from proxy.control.rollout import HELD, RUNNING, Rollout
from proxy.control.tables import (drained, fitted, grace_after, grace_ended, held,
                                  previous_after, refuse_emptying, rolled_back, saved_rollout,
                                  toggled, weighted)
from proxy.dataplane.router import table_from

SPLIT = table_from({"blue": 90, "green": 10}, generation=4, previous="blue",
                   epochs={"green": 2}, grace_until={"blue": 50.0},
                   disabled={"blue": {"127.0.0.1:1"}})


@pytest.mark.parametrize("old, before, new, after", [
    ({"blue": 100, "green": 0}, None, {"blue": 90, "green": 10}, "blue"),  # traffic leaves blue
    ({"blue": 90, "green": 10}, "blue", {"blue": 50, "green": 50}, "blue"),  # still split
    ({"blue": 50, "green": 50}, "blue", {"blue": 100, "green": 0}, None),  # back by hand
    ({"blue": 0, "green": 100}, "blue", {"blue": 0, "green": 100}, "blue"),  # no change
])
def test_previous_after(old, before, new, after):
    assert previous_after(table_from(old, previous=before), new) == after


def test_grace_starts_for_a_pool_whose_weight_fell_to_zero_and_ends_when_it_gets_traffic():
    table = table_from({"blue": 100, "green": 0}, grace_until={"green": 30.0})
    assert grace_after(table, {"blue": 0, "green": 100}, now=10.0, grace=60) == {"blue": 70.0}
    assert grace_after(table, {"blue": 100, "green": 0}, now=10.0, grace=60) == {"green": 30.0}
    assert grace_after(table, {"blue": 100, "green": 0}, now=40.0, grace=60) == {}


def test_rolled_back_moves_every_pool_with_traffic_to_a_new_epoch():
    new = rolled_back(SPLIT, "blue")
    assert dict(new.weights) == {"blue": 100, "green": 0} and new.generation == 5
    assert dict(new.epochs) == {"green": 3} and new.previous is None
    assert dict(new.grace_until) == {} and new.disabled == SPLIT.disabled


def test_fitted_keeps_what_still_exists_and_adds_new_pools_at_zero():
    new = fitted(SPLIT, {"blue": {"127.0.0.1:2"}, "canary": {"127.0.0.1:3"}})
    assert dict(new.weights) == {"blue": 90, "canary": 0} and new.generation == 5
    assert new.previous == "blue" and dict(new.grace_until) == {"blue": 50.0}
    assert dict(new.disabled) == {}  # 127.0.0.1:1 is gone from the config
    assert dict(new.epochs) == {}


def test_fitted_is_none_when_the_pools_and_disabled_upstreams_stay():
    assert fitted(SPLIT, {"blue": {"127.0.0.1:1"}, "green": {"127.0.0.1:4"}}) is None


def test_a_restored_active_rollout_is_held():
    r = Rollout("green", "blue", [10, 100], 30, 0.01, None, 50, id="x")
    stopped = held(saved_rollout(r.to_json()))
    assert stopped.state == HELD and stopped.id == "x"
    assert "proxy restarted during step 1 (10% to green)" in stopped.reason


def test_a_saved_rollout_reads_back_and_a_bad_step_is_refused():
    done = Rollout("green", "blue", [10, 100], 30, 0.01, None, 50, state="completed")
    assert saved_rollout(done.to_json()) == done and saved_rollout(None) is None
    with pytest.raises(IndexError):
        saved_rollout({**done.to_json(), "step_index": 5, "state": RUNNING})


def test_weighted_keeps_the_rollback_target_and_starts_a_grace_period():
    new = weighted(SPLIT, {"blue": 0, "green": 100}, now=10.0, grace=5.0)
    assert (new.generation, new.previous, dict(new.grace_until)) == (5, "blue", {"blue": 15.0})
    assert dict(new.epochs) == {"green": 2} and new.disabled == SPLIT.disabled


def test_grace_ended_moves_the_graced_pools_epochs_on():
    new = grace_ended(SPLIT, ["blue"])
    assert dict(new.epochs) == {"green": 2, "blue": 1} and not new.grace_until
    assert new.previous is None and dict(new.weights) == dict(SPLIT.weights)


def test_drained_takes_the_pools_weight_and_grace_and_refuses_the_last_pool():
    new = drained(SPLIT, "blue")
    assert dict(new.weights) == {"blue": 0, "green": 10} and not new.grace_until
    with pytest.raises(ConflictError, match="no other pool has weight"):
        drained(table_from({"blue": 100, "green": 0}), "blue")


def test_toggled_sets_one_pools_disabled_upstreams():
    new = toggled(SPLIT, "green", {"127.0.0.1:4"})
    assert new.disabled["green"] == frozenset({"127.0.0.1:4"}) and new.generation == 5


class _Up:
    def __init__(self, label, healthy):
        self.label, self.healthy = label, healthy


class _Pool:
    name = "blue"
    upstreams = [_Up("a", True), _Up("b", False)]


def test_refuse_emptying_a_pool_that_has_weight():
    table = table_from({"blue": 100, "green": 0})
    refuse_emptying(table, _Pool, {"b"}, "b")  # a is still up
    with pytest.raises(ConflictError, match="no enabled, healthy upstream"):
        refuse_emptying(table, _Pool, {"a"}, "a")
    refuse_emptying(table_from({"blue": 0, "green": 100}), _Pool, {"a", "b"}, "a")  # no weight
