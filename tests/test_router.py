"""choose_pool as a table: weights, cookies, health, grace, override."""

import random

import pytest

from proxy.dataplane.router import table_from
from proxy.dataplane.router import choose_pool

BOTH = frozenset({"blue", "green"})
T = table_from({"blue": 90, "green": 10}, generation=3)
BLUE_ONLY = table_from({"blue": 100, "green": 0})
GRACE = table_from({"blue": 100, "green": 0}, grace_until={"green": 50.0})
ROLLED = table_from({"blue": 100, "green": 0}, epochs={"green": 1})


@pytest.mark.parametrize(
    "table, healthy, sticky, override, draw, now, expected",
    [
        # no cookie: drawn by weight, and the answer sets the cookie
        (T, BOTH, None, None, 0.0, 0, ("blue", True)),
        (T, BOTH, None, None, 0.899, 0, ("blue", True)),
        (T, BOTH, None, None, 0.9, 0, ("green", True)),
        (T, BOTH, None, None, 0.999999, 0, ("green", True)),
        # a valid cookie wins over the draw and sets nothing
        (T, BOTH, ("green", 0), None, 0.0, 0, ("green", False)),
        (T, BOTH, ("blue", 0), None, 0.95, 0, ("blue", False)),
        # cookie for an unhealthy pool: moved to a healthy one with a new cookie
        (T, frozenset({"blue"}), ("green", 0), None, 0.95, 0, ("blue", True)),
        # cookie for a pool of weight 0: not honoured, unless within grace
        (BLUE_ONLY, BOTH, ("green", 0), None, 0.5, 0, ("blue", True)),
        (GRACE, BOTH, ("green", 0), None, 0.5, 49.9, ("green", False)),
        (GRACE, BOTH, ("green", 0), None, 0.5, 50.1, ("blue", True)),
        # cookie minted before a rollback (old epoch) is not honoured
        (ROLLED, BOTH, ("green", 0), None, 0.5, 0, ("blue", True)),
        # cookie for a pool that does not exist
        (T, BOTH, ("purple", 0), None, 0.95, 0, ("green", True)),
        # tester override reaches weight 0, but not an unhealthy or unknown pool
        (BLUE_ONLY, BOTH, None, "green", 0.0, 0, ("green", False)),
        (BLUE_ONLY, frozenset({"blue"}), None, "green", 0.0, 0, ("blue", True)),
        (BLUE_ONLY, BOTH, None, "purple", 0.0, 0, ("blue", True)),
        # nothing healthy with weight: no pool (503)
        (BLUE_ONLY, frozenset({"green"}), None, None, 0.0, 0, None),
        (T, frozenset(), ("blue", 0), None, 0.0, 0, None),
    ],
)
def test_choose_pool_table(table, healthy, sticky, override, draw, now, expected):
    choice = choose_pool(table, healthy, sticky, override, draw, now)
    assert (None if choice is None else (choice.pool, choice.set_cookie)) == expected


def weighted_draw(weights, healthy, draw):
    """A cookie-less request's pool under `weights`: choose_pool's weighted draw."""
    choice = choose_pool(table_from(weights), frozenset(healthy), None, None, draw, 0.0)
    return None if choice is None else choice.pool


def test_weighted_draw_skips_unhealthy_pools():
    weights = {"blue": 50, "green": 50}
    assert {weighted_draw(weights, {"green"}, d / 10) for d in range(10)} == {"green"}


def test_weighted_draw_matches_weights_over_many_draws():
    # 100,000 draws at 70/30: the binomial standard deviation is ~145, so 5
    # sigma is ~725 (0.7 percentage points).
    rng = random.Random(7)
    weights = {"blue": 70, "green": 30}
    n = 100_000
    green = sum(weighted_draw(weights, BOTH, rng.random()) == "green" for _ in range(n))
    assert abs(green - 0.3 * n) < 5 * (n * 0.3 * 0.7) ** 0.5


def test_a_pool_counts_by_status_class_and_reads_requests_and_errors_from_it():
    from proxy.dataplane.pool import Pool

    pool = Pool("blue", [])
    for status in (200, 204, 404, 503, None, 600):  # llhttp admits 3 digits, 600 too
        pool.count(status, 0.01)
    assert pool.requests == 6 and pool.errors == 3  # 503, no answer, 600
    assert pool.classes() == {"2xx": 2, "4xx": 1, "5xx": 2, "error": 1}
    assert sum(pool.latency.counts) == 6
