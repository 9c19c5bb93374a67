"""Routing events: logged, and kept in a bounded list for `GET /events`.

Every change of where traffic goes (weights, rollout steps, rollbacks with
their reason, health transitions) is one event, so an operator can answer
"what happened at 14:02?" without grepping the journal.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from typing import Any

MAX_EVENTS = 500


class EventLog:
    """Events numbered from 1 (`seq`) within one process, named by `process`, so a
    follower (`switchyard events -f`) asks for what came after the last one it saw
    and notices a restart (a new `process`, numbering from 1 again)."""

    def __init__(self, log, limit: int = MAX_EVENTS) -> None:
        self.log = log
        self.recent: deque[dict] = deque(maxlen=limit)
        self.process = f"{os.getpid()}-{int(time.time())}"
        self._seq = itertools.count(1)

    def emit(self, event: str, level: str = "info", **fields) -> None:
        self.recent.append({"seq": next(self._seq), "time": round(time.time(), 3),
                            "event": event, **fields})
        getattr(self.log, level)(event, **fields)

    def list(self, limit: int | None = None, after: int = 0) -> list[dict]:
        items = [e for e in self.recent if e["seq"] > after]
        return items[-limit:] if limit else items


def internal(via: str = "rollout") -> dict[str, Any]:
    """Log fields for a change the proxy made itself."""
    return {"uid": os.getuid(), "pid": os.getpid(), "via": via}


def caller_of(peer: tuple[int, int, int] | None) -> dict:
    """Log fields naming who made a change (pid, uid, gid from SO_PEERCRED)."""
    if peer is None:
        return internal()
    pid, uid, gid = peer
    return {"uid": uid, "pid": pid, "gid": gid}
