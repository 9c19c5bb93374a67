"""Progressive cutover that rolls itself back.

A rollout moves traffic from the pool being left (`source`) to `target` in
steps (5, 25, 50, 100 %).  Each step holds for `interval`; the target pool
is judged on what happened since the step began, against the thresholds and
against the source pool over the same window.  The judging is a pure
function (`judge`); `Rollout` is the plain state saved with the routing
state; the controller runs the clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..dataplane.stats import Window

RUNNING, HELD, COMPLETED, ROLLED_BACK, CANCELLED = (
    "running", "held", "completed", "rolled_back", "cancelled")


@dataclass(frozen=True)
class Verdict:
    action: str  # "stay" (the step goes on) | "wait" (for traffic) | "advance" | "rollback"
    reason: str = ""


def judge(target: Window, source: Window | None, elapsed: float, interval: float,
          max_error_rate: float, max_p99: float | None, min_requests: int) -> Verdict:
    """What to do with a step, from its window so far.

    A breach rolls back at once, even mid-step; advancing needs the whole
    interval and at least `min_requests` requests to the target (with fewer,
    we wait rather than guess).  A figure only counts as a breach when it is
    also worse than the source pool's over the same window: if both pools
    fail alike, the cause is not the new release.
    """
    if target.requests >= min_requests:
        reason = _breach(target, source, max_error_rate, max_p99, min_requests)
        if reason:
            return Verdict("rollback", reason)
    if elapsed < interval:
        return Verdict("stay")
    if target.requests < min_requests:
        return Verdict("wait", f"{target.requests}/{min_requests} requests to judge this step")
    return Verdict("advance")


def _breach(target: Window, source: Window | None, max_error_rate: float,
            max_p99: float | None, min_requests: int) -> str:
    comparable = source is not None and source.requests >= min_requests
    rate = target.error_rate
    if rate > max_error_rate and not (comparable and rate <= source.error_rate):
        return (f"error rate {rate:.2%} over {max_error_rate:.2%} "
                f"({target.errors}/{target.requests} requests"
                + (f"; {source.error_rate:.2%} on the pool left)" if comparable else ")"))
    if max_p99 is not None:
        p99 = target.p(0.99) or 0.0
        source_p99 = source.p(0.99) if comparable else None
        if p99 > max_p99 and not (source_p99 is not None and p99 <= source_p99):
            return (f"p99 {p99 * 1000:.0f}ms over {max_p99 * 1000:.0f}ms"
                    + (f" ({source_p99 * 1000:.0f}ms on the pool left)" if source_p99 else ""))
    return ""


@dataclass(frozen=True)
class Rollout:
    """A progressive cutover's plan and progress; saved with the routing state.

    Frozen: every change (a step, a verdict, its end) is a new value made with
    `dataclasses.replace`, which keeps `id`, so one rollout is recognised
    across its copies.
    """

    target: str
    source: str
    steps: list[int]
    interval: float
    max_error_rate: float
    max_p99: float | None
    min_requests: int
    step_index: int = 0
    state: str = RUNNING
    reason: str = ""
    started_at: float = 0.0  # wall clock, for people
    step_started_at: float = 0.0  # wall clock
    window: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    id: str = ""  # random, given at start (a saved rollout from before ids: "")

    @property
    def percent(self) -> int:
        return self.steps[self.step_index]

    @property
    def active(self) -> bool:
        return self.state in (RUNNING, HELD)

    def weights(self, pools: list[str]) -> dict[str, int]:
        """Weights for the current step: `percent` to the target, the rest to the source."""
        out = {p: 0 for p in pools}
        out[self.target] = self.percent
        out[self.source] = 100 - self.percent if self.source != self.target else 100
        return out

    def to_json(self, now: float | None = None) -> dict:
        data = asdict(self)
        data["percent"] = self.percent
        data["to"] = self.target
        data["from"] = self.source
        if now is not None and self.state == RUNNING:
            data["next_step_in"] = max(0.0, round(self.step_started_at + self.interval - now, 1))
        return data

    @classmethod
    def from_json(cls, data: dict) -> Rollout:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)
