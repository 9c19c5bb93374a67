"""The proxy's lifecycle, in order.

Start: restore state, check every upstream once, open the admin socket,
listen (sockets from systemd first), notify READY.  Serve until SIGTERM or
SIGINT; SIGHUP reloads the config.  Stop: stop accepting, notify STOPPING,
let in-flight requests finish within `timeouts.drain` while idle keep-alive
connections are closed, persist, exit 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket

import structlog

from . import config as config_module
from .control import state as state_module
from .control.admin import AdminServer
from .control.controller import Controller
from .control.events import EventLog
from .control.health import HealthChecker
from .control.metrics import render as render_metrics
from .control.metrics import serve as serve_metrics
from .dataplane.accesslog import AccessFile, AccessLog
from .dataplane.client import ClientConnection
from .dataplane.http11 import verify_strict
from .dataplane.plane import DataPlane
from .dataplane.router import table_from
from .dataplane.sticky import Signer, load_or_create_secret
from .systemd import Notifier, listen_fds

# Config keys a running process cannot take: sockets bound at start, files
# opened at start, the log set up at start.  A reload that changes one keeps
# the old value in force (and recorded as such) and names it in
# `restart_needed`.
RESTART_ONLY = ("listen", "admin", "state_file", "secret_file", "log", "metrics", "workers")

SWEEP_INTERVAL = 0.25
# While stopping, an idle keep-alive connection is closed once it has been
# idle this long; one that carries a request meanwhile is answered with
# `Connection: close` (see DataPlane.close_idle_clients).
DRAIN_IDLE_GRACE = 1.0
ACCESS_FLUSH_INTERVAL = 0.2


class Server:
    def __init__(self, config: config_module.Config, access_stream=None) -> None:
        self.config = config
        self.log = structlog.get_logger("switchyard")
        self.notifier = Notifier.from_environment()
        self.stopping = asyncio.Event()
        self.listeners: list[asyncio.AbstractServer] = []
        if config.log.access and config.log.access_file and access_stream is None:
            access_stream = AccessFile(config.log.access_file)
        self.access_file = access_stream if isinstance(access_stream, AccessFile) else None
        self.access = AccessLog(config.log.format, access_stream) if config.log.access else None
        self.plane: DataPlane | None = None
        self.controller: Controller | None = None
        self.events: EventLog | None = None
        self.health: HealthChecker | None = None
        self.admin: AdminServer | None = None
        self.metrics = None  # the read-only TCP metrics endpoint, when metrics.listen is set
        self._timers: list[asyncio.Task] = []

    # -- start ---------------------------------------------------------------------

    async def run(self) -> int:
        await self.start()
        try:
            await self.stopping.wait()
        finally:
            await self.shutdown()
        return 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        verify_strict()  # refuse to run with a lenient HTTP parser
        _ensure_dir(os.path.dirname(os.path.abspath(cfg.state_file)))
        signer = Signer(load_or_create_secret(cfg.secret_file))
        self.plane = DataPlane(loop, cfg, table_from(cfg.weights), signer, self.log, self.access)
        self.events = EventLog(self.log)
        self.controller = Controller(self.plane, cfg.state_file, self.events)
        self._restore()
        self.health = HealthChecker(self.plane, self.log, self.events)
        self.plane.on_passive_failure = self.health.passive_failure
        self.health.sync()
        await self.health.check_all_once()
        self.admin = AdminServer(self.controller, cfg, self.log, self.reload,
                                 metrics=lambda: render_metrics(self.controller),
                                 events=self.events)
        await self.admin.start()
        self.metrics = await serve_metrics(cfg.metrics.listen, lambda: render_metrics(self.controller))
        await self._listen(loop)
        self._install_signals(loop)
        self._timers = [loop.create_task(self._every(SWEEP_INTERVAL, self.plane.sweep))]
        if self.access is not None:
            self._timers.append(loop.create_task(self._every(ACCESS_FLUSH_INTERVAL,
                                                             self.access.flush)))
        interval = self.notifier.watchdog_interval()
        if interval:
            self._timers.append(loop.create_task(self._every(interval, self.notifier.watchdog)))
        self.notifier.ready(f"serving, generation {self.plane.table.generation}")
        self.log.info("server_started", listen=[n for s in self.listeners for n in _sockname(s)],
                      admin=cfg.admin.socket, generation=self.plane.table.generation,
                      weights=dict(self.plane.table.weights), pid=os.getpid())

    def _restore(self) -> None:
        cfg = self.config
        saved, why = state_module.load(cfg.state_file, list(cfg.pools))
        if why is not None:
            self.log.warning("state_not_restored", reason=why)
        if saved is not None:
            self.controller.restore(saved)
            self.log.info("state_restored", generation=saved.generation, weights=saved.weights)
        else:
            self.controller.persist()

    async def _listen(self, loop) -> None:
        factory = lambda: ClientConnection(self.plane)  # noqa: E731
        inherited = listen_fds()
        if inherited:
            for sock in inherited:
                self.listeners.append(await loop.create_server(factory, sock=sock, backlog=4096))
            return
        for addr in self.config.listen:
            if addr.kind == "unix":
                sock = _bind_unix(addr.path)
                self.listeners.append(await loop.create_unix_server(factory, sock=sock,
                                                                    backlog=4096))
            else:
                self.listeners.append(await loop.create_server(
                    factory, addr.host, addr.port, reuse_address=True, backlog=4096))

    def _install_signals(self, loop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_access_log)

    def _reopen_access_log(self) -> None:
        """SIGUSR1 (logrotate's postrotate): write to a new file at the same path."""
        if self.access_file is None:
            return
        self.access.flush()
        try:
            self.access_file.reopen()
        except OSError as exc:
            self.log.error("access_log_reopen_failed", path=self.access_file.path, detail=str(exc))
            return
        self.log.info("access_log_reopened", path=self.access_file.path)

    @staticmethod
    async def _every(interval: float, action) -> None:
        while True:
            await asyncio.sleep(interval)
            action()

    # -- reload --------------------------------------------------------------------

    async def reload(self) -> dict:
        """Re-read the config file; an invalid one is reported and changes nothing."""
        self.notifier.reloading()
        try:
            new = config_module.load(self.config.source)
            self._check_reloadable(new)
        except config_module.ConfigError as exc:
            self.log.error("reload_failed", errors=str(exc).splitlines())
            self.notifier.ready("reload failed; previous config in force")
            return {"error": f"invalid config, nothing changed:\n{exc}"}
        old = self.config
        restart_needed = [k for k in RESTART_ONLY if getattr(new, k) != getattr(old, k)]
        applied = [f.name for f in dataclasses.fields(new) if f.name not in RESTART_ONLY
                   and f.name != "source" and getattr(new, f.name) != getattr(old, f.name)]
        new = dataclasses.replace(new, **{k: getattr(old, k) for k in restart_needed})
        try:
            self.controller.fit_to(new)  # saved before anything changes
        except state_module.StateError as exc:
            self.log.error("reload_failed", errors=[str(exc)])
            self.notifier.ready("reload failed; previous config in force")
            return {"error": f"{exc}; nothing changed"}
        self.config = new
        self.plane.apply_config(new)
        self.health.sync()
        self.events.emit("config_reloaded", source=new.source, pools=list(new.pools),
                         applied=applied, restart_needed=restart_needed)
        if restart_needed:
            self.log.warning("reload_needs_restart", keys=restart_needed,
                             detail="the old values stay in force until a restart")
        self.notifier.ready("reloaded")
        return {"reloaded": True, "applied": applied, "restart_needed": restart_needed}

    def _check_reloadable(self, new) -> None:
        weights = {p: w for p, w in self.plane.table.weights.items() if p in new.pools}
        if not any(weights.values()):
            raise config_module.ConfigError(
                [config_module.Problem("pools", None,
                                       "the reload removes every pool that has weight")],
                new.source)

    # -- stop ----------------------------------------------------------------------

    async def shutdown(self) -> None:
        plane = self.plane
        self.log.info("server_stopping", inflight=plane.inflight() if plane else 0)
        self.notifier.stopping()
        for listener in self.listeners:
            listener.close()
        if self.controller is not None:
            self.controller.stopping()
        if plane is not None:
            plane.draining = True
            await self._drain(plane)
        for task in self._timers:
            task.cancel()
        if self.controller is not None:
            await self.controller.close()
        if self.health is not None:
            await self.health.close()
        if self.admin is not None:
            await self.admin.close()
        if self.metrics is not None:
            await self.metrics.cleanup()
        if self.controller is not None:
            try:
                self.controller.persist()
            except state_module.StateError as exc:
                self.log.error("state_save_failed", detail=str(exc))
        if self.access is not None:
            self.access.flush()
        if self.access_file is not None:
            self.access_file.close()
        self.log.info("server_stopped")
        self.notifier.close()

    async def _drain(self, plane: DataPlane) -> None:
        """Finish in-flight requests within timeouts.drain; close idle connections."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeouts.drain
        while plane.close_idle_clients(DRAIN_IDLE_GRACE) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for client in list(plane.clients):
            if client.transport is not None:
                client.transport.abort()
        for pool in plane.pools.values():
            for up in pool.upstreams:
                up.close_idle()


def _ensure_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)


def _bind_unix(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    return sock


def _sockname(server) -> list[str]:
    names = []
    for sock in server.sockets or ():
        name = sock.getsockname()
        names.append(f"{name[0]}:{name[1]}" if isinstance(name, tuple) else f"unix:{name}")
    return names


def serve(config: config_module.Config) -> int:
    import uvloop

    return uvloop.run(Server(config).run())
