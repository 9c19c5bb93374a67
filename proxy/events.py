"""Routing events: logged, and kept in a bounded list for `GET /events`.

Every change of where traffic goes (weights, rollout steps, rollbacks with
their reason, health transitions) is one event, so an operator can answer
"what happened at 14:02?" without grepping the journal.
"""

from __future__ import annotations

import time
from collections import deque

MAX_EVENTS = 500


class EventLog:
    def __init__(self, log, limit: int = MAX_EVENTS) -> None:
        self.log = log
        self.recent: deque[dict] = deque(maxlen=limit)

    def emit(self, event: str, level: str = "info", **fields) -> None:
        self.recent.append({"time": round(time.time(), 3), "event": event, **fields})
        getattr(self.log, level)(event, **fields)

    def list(self, limit: int | None = None) -> list[dict]:
        items = list(self.recent)
        return items[-limit:] if limit else items
