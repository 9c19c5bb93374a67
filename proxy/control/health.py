"""Upstream health: active HTTP checks, passive ejection, and the transitions.

All state changes of an upstream's health go through `HealthState`, so the
rules (how many successes to come back, how many failures to go) live in
one place.  The checker only observes and reports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp


@dataclass
class HealthState:
    """Consecutive-outcome counting with hysteresis.

    An upstream starts unknown: its first check decides at once, so a pool
    that was never started is not assumed healthy at cutover time.
    """

    rise: int
    fall: int
    healthy: bool = False
    known: bool = False
    successes: int = 0
    failures: int = 0

    def observe(self, ok: bool) -> bool:
        """Record one outcome; return True when `healthy` changed."""
        if ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0
        was = self.healthy
        if not self.known:
            self.known = True
            self.healthy = ok
        elif ok and not was and self.successes >= self.rise:
            self.healthy = True
        elif not ok and was and self.failures >= self.fall:
            self.healthy = False
        return was != self.healthy

    def eject(self) -> bool:
        """Passive ejection (refused connects): down now, back after `rise` checks."""
        was = self.healthy
        self.healthy = False
        self.successes = 0
        return was


class HealthChecker:
    """One task per upstream, checking `health.path` every `health.interval`."""

    def __init__(self, plane, log, events=None) -> None:
        self.plane = plane
        self.log = log
        self.events = events
        self._tasks: dict[object, asyncio.Task] = {}
        self._states: dict[object, HealthState] = {}

    def sync(self) -> None:
        """Start checking new upstreams and stop checking removed ones (after reload)."""
        current = {up for pool in self.plane.pools.values() for up in pool.upstreams}
        for up in list(self._tasks):
            if up not in current:
                self._tasks.pop(up).cancel()
                self._states.pop(up, None)
        cfg = self.plane.config.health
        for up in current:
            if up not in self._tasks:
                state = self._states.setdefault(up, HealthState(cfg.rise, cfg.fall))
                self.plane.set_health(up, state.healthy)
                self._tasks[up] = asyncio.get_running_loop().create_task(self._loop(up))

    async def check_all_once(self) -> None:
        """One round of checks, so the first routing decisions see real health."""
        await asyncio.gather(*(self._check(up) for up in list(self._tasks)))

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _loop(self, up) -> None:
        while True:
            await asyncio.sleep(self.plane.config.health.interval)
            await self._check(up)

    async def _check(self, up) -> None:
        cfg = self.plane.config.health
        ok, detail = await probe(up.address, cfg.path, cfg.timeout)
        state = self._states.get(up)
        if state is not None and state.observe(ok):
            self._changed(up, state, "check", detail)

    def passive_failure(self, up, cause: str) -> None:
        state = self._states.get(up)
        if state is not None and state.eject():
            self._changed(up, state, cause, "connect failures")

    def _changed(self, up, state: HealthState, cause: str, detail: str) -> None:
        self.plane.set_health(up, state.healthy)
        fields = dict(pool=up.pool, upstream=str(up.address), healthy=state.healthy,
                      cause=cause, detail=detail)
        level = "info" if state.healthy else "warning"  # coming back is good news
        if self.events is not None:
            self.events.emit("upstream_health_changed", level=level, **fields)
        else:
            getattr(self.log, level)("upstream_health_changed", **fields)


async def probe(address, path: str, timeout: float) -> tuple[bool, str]:
    """GET `path` on one upstream; healthy on 2xx or 3xx within `timeout`."""
    if address.kind == "unix":
        connector = aiohttp.UnixConnector(path=address.path, force_close=True)
        url = f"http://localhost{path}"
    else:
        connector = aiohttp.TCPConnector(force_close=True)
        host = f"[{address.host}]" if ":" in address.host else address.host
        url = f"http://{host}:{address.port}{path}"
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout),
                                   allow_redirects=False) as resp:
                await resp.read()
                return resp.status < 400, f"status {resp.status}"
    except asyncio.TimeoutError:
        return False, "timeout"
    except (aiohttp.ClientError, OSError) as exc:
        return False, str(exc) or exc.__class__.__name__
