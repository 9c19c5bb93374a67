"""The proxy's lifecycle, in order.

Start: restore state, check every upstream once, open the admin socket,
listen (sockets from systemd first) in this process or, with `workers` > 1,
in N worker processes (workers/supervisor.py), notify READY.  Serve until SIGTERM or
SIGINT; SIGHUP reloads the config.  Stop: stop accepting (with workers: tell
them, and close our copies of the sockets), notify STOPPING,
let in-flight requests finish within `timeouts.drain` while idle keep-alive
connections are closed, persist, exit 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

import structlog

from . import config as config_module
from .cluster.fleet import Fleet
from .commands import CommandError
from .control import state as state_module
from .control.admin import AdminServer
from .control.controller import Controller
from .control.events import EventLog
from .control.health import HealthChecker
from .control.metrics import render as render_metrics
from .control.metrics import serve as serve_metrics
from .dataplane import hot_path
from .dataplane.http11 import verify_strict
from .dataplane.plane import DataPlane
from .dataplane.router import table_from
from .dataplane.sticky import Signer, load_or_create_secret
from .serving import Serving, access_log_for, bind, every, names
from .systemd import Notifier, listen_fds
from .workers.supervisor import Supervisor

# Config keys a running process cannot take: sockets bound at start, files
# opened at start, the log set up at start.  A reload that changes one keeps
# the old value in force (and recorded as such) and names it in
# `restart_needed`.
RESTART_ONLY = ("listen", "admin", "state_file", "secret_file", "log", "metrics", "workers",
                "cluster")


class Server:
    def __init__(self, config: config_module.Config, access_stream=None) -> None:
        self.config = config
        self.log = structlog.get_logger("switchyard")
        self.notifier = Notifier.from_environment()
        self.stopping = asyncio.Event()
        self.access_stream = access_stream
        self.sockets: list = []
        # Exactly one of these carries the traffic: an in-process data plane
        # (`workers: 1`), or N worker processes under a supervisor.
        self.serving: Serving | None = None
        self.supervisor: Supervisor | None = None
        self.plane: DataPlane | None = None
        self.controller: Controller | None = None
        self.events: EventLog | None = None
        self.health: HealthChecker | None = None
        self.admin: AdminServer | None = None
        self.metrics = None  # the read-only TCP metrics endpoint, when metrics.listen is set
        self.fleet: Fleet | None = None  # with `cluster`: the routing state is on etcd
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
        secret = load_or_create_secret(cfg.secret_file)
        table = table_from(cfg.weights)
        self.events = EventLog(self.log)
        if cfg.workers > 1:
            self.supervisor = Supervisor(loop, cfg, table, secret, self.log, self.events)
            self.plane = self.supervisor.plane
        else:
            access, access_file = access_log_for(cfg, self.access_stream)
            self.plane = DataPlane(loop, cfg, table, Signer(secret), self.log, access)
            self.serving = Serving(self.plane, access, access_file, self.log)
        self.controller = Controller(self.plane, cfg.state_file, self.events)
        self._restore()
        self.health = HealthChecker(self.plane, self.log, self.events)
        self.plane.on_passive_failure = self.health.passive_failure
        self.health.sync()
        await self.health.check_all_once()
        if cfg.cluster is not None:
            # After the first health checks, so that the record this host
            # publishes says how its pools are from the start.
            self.fleet = Fleet(cfg.cluster, cfg.state_file, self.plane, self.events, self.log)
            self.fleet.attach(self.controller)
            await self.fleet.start()
        settle = self.supervisor.sync if self.supervisor is not None else None
        self.admin = AdminServer(self.controller, cfg, self.log, self.reload,
                                 metrics=lambda: render_metrics(self.controller),
                                 events=self.events, settle=settle)
        await self.admin.start()
        self.metrics = await serve_metrics(cfg.metrics.listen,
                                           lambda: render_metrics(self.controller), settle)
        # systemd's sockets are shared by every worker: they are what outlives us
        # across a restart.  Our own are one SO_REUSEPORT set per worker.
        inherited = listen_fds()
        per_worker = [inherited] * cfg.workers if inherited else bind(cfg.listen, cfg.workers)
        self.sockets = per_worker[0]
        if self.supervisor is not None:
            await self.supervisor.start(per_worker)
        else:
            await self.serving.listen(self.sockets)
            self.serving.start_timers()
        self._install_signals(loop)
        interval = self.notifier.watchdog_interval()
        if interval:
            self._timers.append(loop.create_task(every(interval, self.notifier.watchdog)))
        self.notifier.ready(f"serving, generation {self.plane.table.generation}")
        self.log.info("server_started", listen=names(self.sockets), workers=cfg.workers,
                      hot_path=hot_path(),
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

    def _install_signals(self, loop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_access_log)

    def _reopen_access_log(self) -> None:
        """SIGUSR1 (logrotate's postrotate): every data plane reopens its access file."""
        if self.supervisor is not None:
            self.supervisor.broadcast("reopen")
        else:
            self.serving.reopen_access_log()

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
            await self.controller.fit_to(new)  # saved before anything changes
        except (state_module.StateError, CommandError) as exc:  # not saved: changes nothing
            self.log.error("reload_failed", errors=[str(exc)])
            self.notifier.ready("reload failed; previous config in force")
            # 503 when the fleet's etcd is unreachable, 412 when its state moved on.
            return {"error": f"{exc}; nothing changed", "status": exc.status}
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
        if self.serving is not None:
            self.serving.stop_accepting()
        if plane is not None:
            plane.draining = True  # nothing new may start: no pause, say status and the workers
        if self.controller is not None:
            self.controller.stopping()
        if self.supervisor is not None:
            await self.supervisor.stop(self.config.timeouts.drain)
        elif self.serving is not None:
            await self.serving.drain(self.config.timeouts.drain)
        for task in self._timers:
            task.cancel()
        if self.fleet is not None:
            # Leaves the fleet now, not when its lease runs out; first, so that no
            # change from etcd restarts the rollout clock once it is closed.
            await self.fleet.close()
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
        if self.serving is not None:
            self.serving.close()
        self.log.info("server_stopped")
        self.notifier.close()


def _ensure_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)


def serve(config: config_module.Config) -> int:
    import uvloop

    return uvloop.run(Server(config).run())
