"""The commands that talk to the admin socket: one handler per verb, and following
a drain or a rollout to its end."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from .bodies import (
    cutover_command,
    drain_body,
    pause_body,
    tester_cookie_body,
    upstream_body,
    weights_body,
)
from .client import AdminClient
from .exits import EXIT_OK, EXIT_REFUSED
from .follow import run_events
from .render import drain_progress, holders, reload_summary, render_status, rollout_line
from .top import run_top


def run(args, socket_path: str) -> int:
    return asyncio.run(_dispatch(args, socket_path))


async def _dispatch(args, path: str) -> int:
    async with AdminClient(path) as client:
        handler = _HANDLERS[args.command]
        return await handler(client, args)


# -- commands ----------------------------------------------------------------------------

async def _status(client: AdminClient, args) -> int:
    status, data, text = await client.call("GET", "/status")
    if status != 200:
        return _refused(status, data, text)
    print(json.dumps(data, indent=2) if _json(args) else render_status(data))
    return EXIT_OK


async def _weights(client: AdminClient, args) -> int:
    return await _mutate(client, args, "PUT", "/weights", weights_body(args))


async def _cutover(client: AdminClient, args) -> int:
    cmd = cutover_command(args)
    code = await _mutate(client, args, "POST", "/cutover", cmd.to_json())
    if code == EXIT_OK and cmd.steps and getattr(args, "wait", False):
        return await follow_rollout(client, args)
    return code


async def _rollback(client: AdminClient, args) -> int:
    return await _mutate(client, args, "POST", "/rollback", {})


async def _drain(client: AdminClient, args) -> int:
    code = await _mutate(client, args, "POST", "/drain", drain_body(args), quiet=args.wait)
    if code == EXIT_OK and args.wait:
        return await follow_drain(client, args.pool, as_json=_json(args), upstream=args.upstream)
    return code


async def _pause(client: AdminClient, args) -> int:
    return await _mutate(client, args, "POST", "/pause", pause_body(args))


async def _resume(client: AdminClient, args) -> int:
    return await _mutate(client, args, "POST", "/resume", {})


async def _upstream(client: AdminClient, args) -> int:
    return await _mutate(client, args, "POST", "/upstream", upstream_body(args))


async def _reload(client: AdminClient, args) -> int:
    status, data, text = await client.call("POST", "/reload", {}, getattr(args, "if_match", None))
    if status != 200:
        return _refused(status, data, text, as_json=_json(args))
    if _json(args):
        print(json.dumps(data, indent=2))
    else:
        print(render_status(data))
        print()
        print(reload_summary(data))
    return EXIT_OK


async def _tester_cookie(client: AdminClient, args) -> int:
    status, data, text = await client.call("POST", "/tester-cookie", tester_cookie_body(args))
    if status != 200:
        return _refused(status, data, text)
    if _json(args):
        print(json.dumps(data, indent=2))
    else:
        print(data["cookie"])
        print(f"# reaches pool {data['pool']} until {time.ctime(data['expires'])}; e.g.\n"
              f"# curl -H 'Cookie: {data['cookie']}' http://127.0.0.1:8080/", file=sys.stderr)
    return EXIT_OK


async def _mutate(client: AdminClient, args, method: str, path: str, body: Any,
                  quiet: bool = False) -> int:
    status, data, text = await client.call(method, path, body, getattr(args, "if_match", None))
    if status not in (200, 202):
        return _refused(status, data, text, as_json=_json(args))
    if _json(args):
        print(json.dumps(data, indent=2))
    elif not quiet:
        print(render_status(data))
    return EXIT_OK


def _refused(status: int, data: dict, text: str, as_json: bool = False) -> int:
    if as_json:
        print(json.dumps(data or {"error": text}, indent=2))
    message = data.get("error") if isinstance(data, dict) else None
    print(f"switchyard: refused ({status}): {message or text.strip()}", file=sys.stderr)
    return EXIT_REFUSED


def _json(args) -> bool:
    return bool(getattr(args, "json", False))


# -- following a drain or a rollout ---------------------------------------------------------

async def follow_drain(client: AdminClient, pool: str, as_json: bool = False,
                       poll: float = 0.2, upstream: str | None = None) -> int:
    """Print in-flight requests of `pool` (or of its `upstream`) as they fall, and
    what holds them; return when 0 (the proxy cuts what is left at the deadline)."""
    tty = sys.stdout.isatty() and not as_json
    name = pool if upstream is None else f"{pool} {upstream}"
    last = None
    peak = 0
    while True:
        status, data, text = await client.call("GET", "/status")
        if status != 200:
            return _refused(status, data, text)
        info = data["pools"][pool]
        inflight = info["inflight"] if upstream is None else next(
            (u["inflight"] for u in info["upstreams"] if u["address"] == upstream), 0)
        peak = max(peak, inflight)
        shown = (inflight, holders(info.get("holding") or []) if upstream is None else "")
        if shown != last or tty:
            line = drain_progress(name, inflight, peak, shown[1], tty)
            if tty:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                print(line, flush=True)
            last = shown
        if inflight == 0:
            if tty:
                print()
            cut = info.get("drain_cut", 0)
            print(f"{name} drained: no requests in flight"
                  + (f" ({cut} cut at the deadline so far)" if cut else ""))
            return EXIT_OK
        await asyncio.sleep(poll)


async def follow_rollout(client: AdminClient, args, poll: float = 1.0) -> int:
    """Show a progressive rollout's steps; 0 when it completes, 1 when it rolled back."""
    last = None
    while True:
        status, data, text = await client.call("GET", "/status")
        if status != 200:
            return _refused(status, data, text)
        rollout = data.get("rollout")
        line = rollout_line(rollout, data)
        if line != last:
            print(line, flush=True)
            last = line
        if rollout is None or rollout.get("state") in ("completed", "rolled_back", "cancelled",
                                                       "held"):
            state = (rollout or {}).get("state", "completed")
            return EXIT_OK if state == "completed" else EXIT_REFUSED
        await asyncio.sleep(poll)


_HANDLERS = {
    "status": _status,
    "weights": _weights,
    "cutover": _cutover,
    "rollback": _rollback,
    "drain": _drain,
    "upstream": _upstream,
    "pause": _pause,
    "events": run_events,
    "resume": _resume,
    "reload": _reload,
    "top": run_top,
    "tester-cookie": _tester_cookie,
}
