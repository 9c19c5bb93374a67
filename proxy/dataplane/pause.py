"""Holding new requests while the operator runs something (a migration).

`switchyard pause` makes every request that is ready to be forwarded wait,
in arrival order, before a pool is even chosen; `resume` lets them through in
that order, so they follow whatever routing is current by then (pause,
migrate, cut over, resume: the held requests go to the new pool).  Nothing
fails while paused.  A pause ends by itself at its deadline, and the held
requests proceed then too: a migration that overran must not turn into
errors for every user who waited.  Requests already forwarded are not
affected, and neither are WebSocket tunnels.

A pause is not routing state: it is not saved, and a restart of the proxy
ends it (the new process starts unpaused).
"""

from __future__ import annotations

import time
from collections import deque


class HeldRequests:
    """One pause: since when, until when, and the exchanges waiting on it."""

    __slots__ = ("since", "until", "held", "wall_since")

    def __init__(self, timeout: float) -> None:
        self.since = time.monotonic()
        self.wall_since = time.time()
        self.until = self.since + timeout
        # The exchanges (exchange.Exchange) that wait, in arrival order.
        self.held: deque = deque()

    def __repr__(self) -> str:
        return f"<HeldRequests {len(self.held)} waiting, {self.until - time.monotonic():.1f}s left>"

    def hold(self, exchange) -> None:
        self.held.append(exchange)

    def waiting(self) -> int:
        return sum(1 for e in self.held if e.is_waiting())

    def release(self) -> int:
        """Start every held request that is still wanted, oldest first; how many."""
        released = 0
        while self.held:
            exchange = self.held.popleft()
            if exchange.is_waiting():
                exchange.resume_held()
                released += 1
        return released

    def to_json(self) -> dict:
        now = time.monotonic()
        return {"since": round(self.wall_since, 3), "seconds": round(now - self.since, 1),
                "remaining": round(max(0.0, self.until - now), 1), "waiting": self.waiting()}
