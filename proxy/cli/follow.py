"""`switchyard events [-f]`: the routing events, and following them live.

Reads `GET /events?after=SEQ` every half second.  When the proxy restarts (the
admin socket goes away, then answers with a new `process`), it says so and
goes on with the new process's events: a restart is when an operator most
wants to watch.
"""

from __future__ import annotations

import asyncio
import json
import select
import sys
import time

from .client import AdminClient, Unreachable
from .exits import EXIT_OK, EXIT_REFUSED

POLL = 0.5
RECENT = 50  # events shown before following


async def run_events(client: AdminClient, args) -> int:
    follow, as_json = args.follow, bool(getattr(args, "json", False))
    process, after = None, 0
    while True:
        try:
            status, data, text = await client.call(
                "GET", f"/events?after={after}" + ("" if process else f"&limit={RECENT}"),
                timeout=10)
        except Unreachable as exc:
            if not follow or process is None:
                raise
            _note(f"proxy unreachable ({exc}); retrying")
            process, after = "gone", 0
            await asyncio.sleep(1)
            continue
        if status != 200:
            print(f"switchyard events: admin answered {status}: {text.strip()}", file=sys.stderr)
            return EXIT_REFUSED
        if process not in (None, data.get("process")):
            if process != "gone" or after:
                _note("the proxy restarted")
            after = 0
            if process == "gone":
                _note("reconnected")
        process = data.get("process")
        for event in data.get("events", []):
            print(json.dumps(event) if as_json else render(event), flush=True)
            after = max(after, event.get("seq", 0))
        if not follow:
            return EXIT_OK
        if _reader_gone():
            # `events -f | head -1`: the reader left while no event came to fail a write,
            # and a quiet proxy may not send one for hours.  Leave as a broken pipe would.
            raise BrokenPipeError
        await asyncio.sleep(POLL)


def render(event: dict) -> str:
    """`14:02:11  cutover  old={'blue': 100, ...} new=... uid=0`: time, name, fields."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time", 0)))
    fields = " ".join(f"{k}={_value(v)}" for k, v in event.items()
                      if k not in ("time", "event", "seq", "pid", "gid"))
    return f"{stamp}  {event.get('event', '?'):<24} {fields}".rstrip()


def _value(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _reader_gone() -> bool:
    """True once stdout is a pipe whose reading end is closed (poll says POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (ValueError, OSError):  # stdout closed or not a real file
        return False


def _note(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)
