"""Counting requests per pool: a latency histogram and windows over counters.

The data plane only increments; everything else (rates, quantiles, a
rollout's judging window, `top`) is computed from two snapshots of the same
counters, so nothing on the hot path allocates or sorts.
"""

from __future__ import annotations

from dataclasses import dataclass

# Upper bounds in seconds, Prometheus style (the last bucket is +Inf).
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    __slots__ = ("counts", "total", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left(BOUNDS, seconds), as a scan from the bottom: nearly every
        # answer lands in the first buckets, and compiled this is no Python call.
        i = 0
        for bound in BOUNDS:
            if not bound < seconds:
                break
            i += 1
        self.counts[i] += 1
        self.total += 1
        self.sum += seconds


def quantile(counts: list[int], q: float) -> float | None:
    """The q-quantile (seconds) of per-bucket counts, interpolated within a bucket.

    None when there is nothing to judge; an answer in the +Inf bucket is
    reported as the last finite bound (we only know it is at least that).
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i == len(BOUNDS):
                return BOUNDS[-1]
            lower = BOUNDS[i - 1] if i else 0.0
            return lower + (BOUNDS[i] - lower) * (rank - seen) / count
        seen += count
    return BOUNDS[-1]


@dataclass(frozen=True)
class Snapshot:
    """A pool's counters at one moment."""

    requests: int
    errors: int
    latency: tuple[int, ...]

    @classmethod
    def of(cls, pool) -> Snapshot:
        hist = getattr(pool, "latency", None)
        counts = tuple(hist.counts) if hist is not None else (0,) * (len(BOUNDS) + 1)
        return cls(pool.requests, pool.errors, counts)

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(0, 0, (0,) * (len(BOUNDS) + 1))


@dataclass(frozen=True)
class Window:
    """What happened to one pool between two snapshots."""

    requests: int
    errors: int
    latency: tuple[int, ...]

    @classmethod
    def between(cls, old: Snapshot, new: Snapshot) -> Window:
        return cls(new.requests - old.requests, new.errors - old.errors,
                   tuple(b - a for a, b in zip(old.latency, new.latency)))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p(self, q: float) -> float | None:
        return quantile(list(self.latency), q)

    def to_json(self) -> dict:
        p50, p99 = self.p(0.5), self.p(0.99)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 5),
            "p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "p99_ms": None if p99 is None else round(p99 * 1000, 1),
        }
