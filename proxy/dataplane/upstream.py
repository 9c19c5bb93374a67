"""An upstream: one address of a pool, its idle connections and its counters.

The connections themselves, and sending a request on one, are connection.py;
this module only keeps them.  Health is decided by the control plane
(control/health.py); an upstream only reports what it saw (`on_change`).
"""

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Address

# Idle connections kept per upstream beyond what is in use.  Swoole keeps a
# connection per coroutine cheaply, but there is no point hoarding more than
# the concurrency we have seen.
MAX_IDLE = 512

# An upstream closing connections under our requests is logged at most this
# often (with the count since), not once per request.
CLOSE_REPORT_INTERVAL = 60.0
_HYPERF_HINT = ("Swoole closed keep-alive connections that held requests: most likely workers "
                "recycling (max_request) in SWOOLE_BASE mode; set max_request to 0 or use "
                "SWOOLE_PROCESS in config/autoload/server.php")


class Upstream:
    """One upstream address, its idle connections and its counters."""

    __slots__ = (
        "address", "label", "pool", "loop", "connect_timeout", "idle_timeout",
        "response_timeout", "idle", "inflight", "healthy", "passive_failures", "eject_after",
        "on_change", "closes", "resent", "_reported", "_last_report", "log_event", "enabled",
    )

    def __init__(self, address: Address, pool: str, loop, connect_timeout: float = 2.0,
                 idle_timeout: float = 30.0, eject_after: int = 3,
                 response_timeout: float = 60.0) -> None:
        self.address = address
        self.label = str(address)  # for logs, formatted once
        self.pool = pool
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.response_timeout = response_timeout
        self.idle: list = []  # of connection.UpstreamConnection, the newest last
        self.inflight = 0
        self.healthy = True  # written by DataPlane.set_health only, for the health checker
        self.enabled = True  # in its pool's rotation (RoutingTable.disabled says otherwise)
        self.passive_failures = 0
        self.eject_after = eject_after
        self.on_change = None  # set by the data plane: passive ejection goes to health
        self.log_event = None  # set by the data plane: its event logger
        # Connections the upstream closed under a request before answering it,
        # and how many of those requests were sent again (unread, or keyed).
        self.closes = 0
        self.resent = 0
        self._reported = (0, 0)  # (closes, resent) at the last report
        self._last_report = -CLOSE_REPORT_INTERVAL

    def __repr__(self) -> str:
        state = ("up" if self.healthy else "down") + ("" if self.enabled else ",disabled")
        return f"<Upstream {self.address} {state} inflight={self.inflight} idle={len(self.idle)}>"

    def note_connect_failure(self) -> None:
        """Refused connects mean the workers are gone: after `eject_after` in a row,
        report it (passive ejection; the health checker marks it down)."""
        self.passive_failures += 1
        if self.healthy and self.passive_failures >= self.eject_after and \
                self.on_change is not None:
            self.on_change(self, "passive")

    def note_close(self, resent: bool) -> None:
        """The upstream closed a connection under one of our requests (`resent`:
        and the request went again).  Reported at most once a minute, with the
        counts since the last report."""
        self.closes += 1
        self.resent += resent
        now = monotonic()
        if now - self._last_report >= CLOSE_REPORT_INTERVAL and self.log_event is not None:
            closes, resent_before = self._reported
            self.log_event("upstream_closed_under_request", pool=self.pool,
                           upstream=self.label, count=self.closes - closes,
                           resent=self.resent - resent_before, hint=_HYPERF_HINT)
            self._last_report = now
            self._reported = (self.closes, self.resent)

    def release(self, conn) -> None:
        if conn.transport is None or len(self.idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = monotonic()
        self.idle.append(conn)

    def close_idle(self, older_than: float | None = None) -> None:
        """Close idle connections (all, or those idle longer than `older_than` s)."""
        now = monotonic()
        keep = []
        for conn in self.idle:
            if older_than is not None and now - conn.idle_since < older_than:
                keep.append(conn)
            else:
                conn.close()
        self.idle = keep
