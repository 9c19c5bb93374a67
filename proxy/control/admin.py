"""The admin API: HTTP/1.1 with JSON bodies on a Unix socket.

The socket is created with its configured mode from the start, every peer's
uid is checked with SO_PEERCRED (both in admin_socket), and connections,
request sizes and idle time are bounded.  Handlers parse their input with the
same types the CLI uses and answer errors as JSON; nothing an admin client
sends can crash the proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..commands import (
    CommandError,
    Cutover,
    Drain,
    Pause,
    StaleState,
    TesterCookie,
    UpstreamToggle,
    Weights,
    parse_if_match,
)
from .admin_socket import Refuse, allowed, bind_unix, peer_credentials
from .controller import Controller
from .events import caller_of
from .state import StateError

PEER_KEY = web.AppKey("peer", object)
STALE_RETRIES = 5


class AdminServer:
    def __init__(self, controller: Controller, config, log, reload: Callable[[], Awaitable[dict]],
                 metrics: Callable[[], str] | None = None, events: Callable[[], list] | None = None,
                 settle: Callable[..., Awaitable[None]] | None = None) -> None:
        self.controller = controller
        self.config = config
        self.log = log
        self.reload = reload
        self.metrics = metrics
        self.events = events
        # With worker processes: returns once every worker has applied every
        # change so far, with their counters summed (workers/supervisor.py).
        self.settle = settle
        self.runner: web.AppRunner | None = None
        self.server = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config.admin
        app = web.Application(client_max_size=cfg.max_request, middlewares=[self._guard])
        app.add_routes([
            web.get("/status", self.get_status),
            web.put("/weights", self.put_weights),
            web.post("/cutover", self.post_cutover),
            web.post("/rollback", self.post_rollback),
            web.post("/drain", self.post_drain),
            web.post("/upstream", self.post_upstream),
            web.post("/pause", self.post_pause),
            web.post("/resume", self.post_resume),
            web.post("/reload", self.post_reload),
            web.post("/tester-cookie", self.post_tester_cookie),
            web.get("/metrics", self.get_metrics),
            web.get("/events", self.get_events),
        ])
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    keepalive_timeout=cfg.idle_timeout,
                                    max_line_size=8190, max_field_size=8190)
        await self.runner.setup()
        sock = bind_unix(cfg.socket, cfg.mode, cfg.group)
        loop = asyncio.get_running_loop()
        handler = self.runner.server
        limit = cfg.max_connections
        self.server = await loop.create_unix_server(
            lambda: handler() if len(handler.connections) < limit else Refuse(), sock=sock)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.runner is not None:
            await self.runner.cleanup()
        try:
            os.unlink(self.config.admin.socket)
        except OSError:
            pass

    # -- middleware: who may call, and errors as JSON ------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        peer = peer_credentials(request.transport)
        if not allowed(peer, self.config.admin):
            self.log.warning("admin_refused", uid=peer[1] if peer else None,
                             pid=peer[0] if peer else None, path=request.path)
            return _error(403, "this uid may not use the admin socket")
        request[PEER_KEY] = peer
        try:
            if self.settle is not None and request.method == "GET":
                # What status and metrics show is the workers' now.
                await self.settle(change=False)
            response = await self._handle(handler, request)
            if self.settle is not None and request.method != "GET":
                # A change is answered once every worker routes by it (SPEC §2.4).
                await self.settle(change=True)
            return response
        except CommandError as exc:
            return _error(exc.status, str(exc))
        except StateError as exc:  # 500 for the state file, 503 for an unreachable etcd
            self.log.error("state_save_failed", detail=str(exc))
            return _error(exc.status, str(exc))
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)
        except Exception as exc:  # a bug answers 500 in JSON; the proxy keeps running
            self.log.error("admin_internal_error", path=request.path, error=repr(exc))
            return _error(500, f"internal error: {exc!r}")

    async def _handle(self, handler, request: web.Request) -> web.StreamResponse:
        """The handler; run again when its change was stale (another change, in a
        fleet another host's, got saved first): two operators then act in turn, as
        on one host.  With If-Match, only while the generation it names is still in
        force (a rollout's end saves the same generation again), else 412."""
        for attempt in range(STALE_RETRIES):
            try:
                return await handler(request)
            except StaleState:
                if attempt == STALE_RETRIES - 1:
                    raise
                self._precondition(request)
        raise AssertionError("unreachable")

    # -- handlers ------------------------------------------------------------------

    async def get_status(self, request: web.Request) -> web.Response:
        return self._state_response(self.controller.status())

    async def put_weights(self, request: web.Request) -> web.Response:
        cmd = Weights.from_json(await _json(request), self.controller.pools)
        self._precondition(request)
        return self._state_response(await self.controller.set_weights(cmd, self._caller(request)))

    async def post_cutover(self, request: web.Request) -> web.Response:
        cmd = Cutover.from_json(await _json(request), self.controller.pools)
        expected = parse_if_match(request.headers.get("If-Match"))
        self.controller.check_generation(expected)
        if cmd.steps is not None:
            result = await self.controller.start_rollout(cmd, self._caller(request), expected)
            return self._state_response(result, status=202)
        result = await self.controller.cutover(cmd, self._caller(request), expected)
        return self._state_response(result)

    async def post_rollback(self, request: web.Request) -> web.Response:
        await _json(request, optional=True)
        self._precondition(request)
        return self._state_response(await self.controller.rollback(self._caller(request)))

    async def post_drain(self, request: web.Request) -> web.Response:
        cmd = Drain.from_json(await _json(request), self.controller.pools)
        self._precondition(request)
        return self._state_response(await self.controller.drain(cmd, self._caller(request)))

    async def post_upstream(self, request: web.Request) -> web.Response:
        cmd = UpstreamToggle.from_json(await _json(request), self.controller.pools)
        self._precondition(request)
        return self._state_response(await self.controller.set_upstream(cmd,
                                                                       self._caller(request)))

    async def post_pause(self, request: web.Request) -> web.Response:
        cmd = Pause.from_json(await _json(request, optional=True) or {}, self.controller.pools)
        self._precondition(request)
        return self._state_response(self.controller.pause(cmd, self._caller(request)))

    async def post_resume(self, request: web.Request) -> web.Response:
        await _json(request, optional=True)
        self._precondition(request)
        return self._state_response(self.controller.resume(self._caller(request)))

    async def post_reload(self, request: web.Request) -> web.Response:
        await _json(request, optional=True)
        self._precondition(request)
        result = await self.reload()
        if "error" in result:
            return _error(result.get("status", 400), result["error"])
        return self._state_response({**self.controller.status(), "applied": result["applied"],
                                     "restart_needed": result["restart_needed"]})

    async def post_tester_cookie(self, request: web.Request) -> web.Response:
        cmd = TesterCookie.from_json(await _json(request), self.controller.pools)
        plane = self.controller.plane
        expires = int(time.time() + cmd.ttl)
        value = plane.signer.tester(cmd.pool, expires).decode()
        name = plane.tester_cookie.decode()
        self.log.info("tester_cookie_issued", pool=cmd.pool, expires=expires,
                      **self._caller(request))
        return web.json_response({"cookie": f"{name}={value}", "name": name, "value": value,
                                  "pool": cmd.pool, "expires": expires})

    async def get_metrics(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return _error(404, "metrics are not available")
        return web.Response(text=self.metrics(), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def get_events(self, request: web.Request) -> web.Response:
        if self.events is None:
            return _error(404, "events are not available")
        try:
            limit = int(request.query.get("limit", "0")) or None
            after = int(request.query.get("after", "0"))
        except ValueError:
            return _error(400, "limit, after: expected integers")
        return web.json_response({"events": self.events.list(limit, after),
                                  "process": self.events.process})

    # -- helpers -------------------------------------------------------------------

    def _precondition(self, request: web.Request) -> None:
        self.controller.check_generation(parse_if_match(request.headers.get("If-Match")))

    def _caller(self, request: web.Request) -> dict:
        return caller_of(request.get(PEER_KEY))

    def _state_response(self, body: dict, status: int = 200) -> web.Response:
        return web.json_response(body, status=status,
                                 headers={"ETag": f'"{body["generation"]}"'})


async def _json(request: web.Request, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise CommandError("expected a JSON body")
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise CommandError("invalid JSON: nested too deeply") from None


def _no_constant(name: str):
    """NaN and Infinity are not JSON (RFC 8259), and not a weight or a threshold."""
    raise ValueError(f"{name} is not a valid JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object; a key given twice is an error, not "the last one wins"."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice")
        out[key] = value
    return out


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
