"""The rollout verdict as a table: stay, wait, advance, roll back."""

import dataclasses

import pytest

from proxy.control.rollout import Rollout, judge
from proxy.dataplane.stats import BOUNDS, Window, quantile

FAST = tuple([0, 0, 100] + [0] * (len(BOUNDS) - 2))  # all in the 2.5-5 ms bucket


def w(requests, errors, latency=None):
    latency = latency or tuple([0, 0, requests] + [0] * (len(BOUNDS) - 2))
    return Window(requests, errors, latency)


def slow(requests):  # all between 0.5 and 1 s
    counts = [0] * (len(BOUNDS) + 1)
    counts[BOUNDS.index(1.0)] = requests
    return Window(requests, 0, tuple(counts))


@pytest.mark.parametrize("target, source, elapsed, max_p99, expected", [
    # too few requests to judge, before and after the interval
    (w(10, 5), w(500, 0), 5, None, "stay"),
    (w(10, 5), w(500, 0), 31, None, "wait"),
    # a breach rolls back at once, even mid-step
    (w(100, 5), w(500, 0), 1, None, "rollback"),
    # within the threshold: stay until the interval is over, then advance
    (w(100, 0), w(500, 0), 10, None, "stay"),
    (w(100, 0), w(500, 0), 30, None, "advance"),
    # both pools fail alike: not the new release's fault
    (w(100, 5), w(500, 30), 30, None, "advance"),
    # the pool left has too little traffic to compare: thresholds alone decide
    (w(100, 5), w(10, 9), 30, None, "rollback"),
    (w(100, 5), None, 30, None, "rollback"),
    # p99 guard
    (slow(100), w(500, 0), 30, 0.8, "rollback"),
    (slow(100), slow(500), 30, 0.8, "advance"),
    (w(100, 0), w(500, 0), 30, 0.8, "advance"),
])
def test_judge(target, source, elapsed, max_p99, expected):
    verdict = judge(target, source, elapsed, 30, 0.01, max_p99, 50)
    assert verdict.action == expected, verdict


def test_rollback_reason_names_the_figures():
    verdict = judge(w(200, 20), w(800, 0), 3, 30, 0.01, None, 50)
    assert "10.00%" in verdict.reason and "20/200" in verdict.reason and "0.00%" in verdict.reason


def test_quantile_interpolates_within_a_bucket():
    counts = [0] * (len(BOUNDS) + 1)
    counts[1] = 100  # (1 ms, 2.5 ms]
    assert quantile(counts, 0.5) == pytest.approx(0.00175)
    assert quantile([0] * len(counts), 0.5) is None


def test_rollout_weights_and_json_round_trip():
    r = Rollout("green", "blue", [5, 25, 100], 30, 0.01, None, 50, id="a1")
    assert r.weights(["blue", "green"]) == {"blue": 95, "green": 5}
    r = dataclasses.replace(r, step_index=2)
    assert r.weights(["blue", "green"]) == {"blue": 0, "green": 100}
    again = Rollout.from_json(r.to_json(now=0))
    assert again == r and again.id == "a1"


def test_a_rollout_is_a_frozen_value():
    r = Rollout("green", "blue", [5, 100], 30, 0.01, None, 50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.state = "held"
