"""`switchyard top`: per-pool req/s, errors and latency, refreshed every second.

Each refresh reads `GET /status` and compares it with the previous one, so
the figures are for the last interval, not since start.  On a terminal the
view is redrawn in place; otherwise a plain snapshot is printed and flushed
each time (for `watch`-less logging or piping into a file).  When the proxy
restarts, `top` says it cannot reach it and keeps trying: a restart is when
an operator most wants to watch.
"""

from __future__ import annotations

import asyncio
import sys
import time

from ..dataplane.stats import quantile
from .client import Unreachable
from .exits import EXIT_OK, EXIT_REFUSED
from .render import table

CLEAR = "\x1b[H\x1b[2J"


async def run_top(client, args) -> int:
    interval = max(0.2, getattr(args, "interval", 1.0))
    count = getattr(args, "count", 0)
    tty = sys.stdout.isatty()
    previous, previous_at = None, 0.0
    shown = 0
    while count == 0 or shown < count:
        try:
            status, data, text = await client.call("GET", "/status", timeout=5)
        except Unreachable as exc:
            if shown == 0:
                raise  # never reached: a wrong socket, say so (exit 3)
            note = f"switchyard top  {time.strftime('%H:%M:%S')}  proxy unreachable, " \
                   f"retrying ({exc})\n"
            sys.stdout.write((CLEAR if tty else "") + note)
            sys.stdout.flush()
            previous = None
            await asyncio.sleep(interval)
            continue
        if status != 200:
            print(f"switchyard top: admin answered {status}: {text.strip()}", file=sys.stderr)
            return EXIT_REFUSED
        now = time.monotonic()
        screen = render(data, previous, now - previous_at if previous else 0.0)
        sys.stdout.write((CLEAR if tty else "") + screen + ("" if tty else "\n"))
        sys.stdout.flush()
        previous, previous_at = data, now
        shown += 1
        if count == 0 or shown < count:
            await asyncio.sleep(interval)
    return EXIT_OK


def render(data: dict, previous: dict | None, elapsed: float) -> str:
    head = (f"switchyard top  {time.strftime('%H:%M:%S')}  generation {data['generation']}  "
            f"previous {data.get('previous') or '-'}")
    rows = [("POOL", "WEIGHT", "HEALTH", "REQ/S", "ERRORS", "P50", "P99", "IN-FLIGHT")]
    for name, pool in data["pools"].items():
        rows.append(_row(name, pool, (previous or {}).get("pools", {}).get(name), elapsed))
    lines = [head, ""] + table(rows, right_from=3, min_widths=_WIDTHS)
    rollout = data.get("rollout")
    if rollout:
        lines += ["", _rollout(rollout)]
    return "\n".join(lines) + "\n"


def _row(name: str, pool: dict, before: dict | None, elapsed: float) -> tuple[str, ...]:
    health = "healthy" if pool["healthy"] else "UNHEALTHY"
    if before is None or elapsed <= 0:
        return (name, str(pool["weight"]), health, "-", "-", "-", "-", str(pool["inflight"]))
    requests = pool["requests"] - before["requests"]
    errors = pool["errors"] - before["errors"]
    rate = f"{errors / requests:.1%}" if requests else "-"
    deltas = [a - b for a, b in zip(pool.get("latency", []), before.get("latency", []))]
    return (name, str(pool["weight"]), health, f"{requests / elapsed:.0f}", rate,
            _ms(quantile(deltas, 0.5) if deltas else None),
            _ms(quantile(deltas, 0.99) if deltas else None), str(pool["inflight"]))


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def _rollout(r: dict) -> str:
    window = r.get("window") or {}
    line = (f"rollout {r['state']}: step {r['step_index'] + 1}/{len(r['steps'])} "
            f"({r['percent']}% to {r['to']} from {r['from']})")
    if window:
        p99 = window.get("p99_ms")
        line += (f", window {window.get('requests', 0)} requests, "
                 f"{window.get('error_rate', 0):.2%} errors, p99 "
                 f"{'-' if p99 is None else f'{p99}ms'}")
    if r.get("next_step_in") is not None:
        line += f", next step in {r['next_step_in']:.0f}s"
    if r.get("reason"):
        line += f"\n  {r['reason']}"
    return line


# Columns keep their width from one refresh to the next (wider only for long names).
_WIDTHS = (8, 6, 9, 7, 7, 9, 9, 9)
