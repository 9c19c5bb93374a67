"""A worker process: one data plane on the listening sockets the supervisor holds.

Started by the supervisor as `python -m proxy.workers.child FD`, FD being its
end of the control channel.  The first message ("hello") carries everything
the plane needs: the config, the routing table, the sticky-cookie secret, the
health of every upstream, a pause in force, and the numbers of the listening
sockets (inherited, so systemd's sockets work as our own).  Every later
message is one change, applied in order and acknowledged with this worker's
counters.  The worker never reads the config file or the state file: what it
routes by is what the supervisor sent, so all workers route alike.

It stops, finishing what is in flight as a single process does, on "stop"
(the supervisor's SIGTERM), on SIGTERM or SIGINT of its own (a terminal's
Ctrl-C reaches the whole process group), or when the supervisor has gone
(the channel closes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

import structlog

from ..dataplane.accesslog import configure
from ..dataplane.plane import DataPlane
from ..dataplane.sticky import Signer
from ..serving import Serving, access_log_for
from .channel import Channel
from .report import report


class Worker:
    def __init__(self, channel_fd: int) -> None:
        self.channel_fd = channel_fd
        self.log = structlog.get_logger("switchyard")
        self.channel: Channel | None = None
        self.plane: DataPlane | None = None
        self.serving: Serving | None = None
        self.stopping = asyncio.Event()
        self._hello: asyncio.Future = asyncio.get_running_loop().create_future()
        # Changes that came behind the hello, before the plane was built: applied
        # then, in order.
        self._early: list | None = []

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_soon)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the supervisor reloads
        loop.add_signal_handler(signal.SIGUSR1, lambda: self.serving and
                                self.serving.reopen_access_log())
        sock = socket.socket(fileno=self.channel_fd)
        # The channel closing means the supervisor has gone (it exited, or was
        # killed): stop as on SIGTERM.
        self.channel = await Channel.over(sock, self._received, self._stop_soon)
        seq, hello = await self._hello
        if self.stopping.is_set():
            return 0  # told to stop before the hello came
        await self._start(hello)
        self.channel.send(("ack", seq, os.getpid(), report(self.plane)))  # serving now
        early, self._early = self._early, None
        for message in early:
            self._apply(message)
        await self.stopping.wait()
        await self._stop()
        return 0

    async def _start(self, hello: dict) -> None:
        cfg = hello["config"]
        configure(cfg.log.format, cfg.log.level)
        self.log = structlog.get_logger("switchyard").bind(worker=hello["slot"])
        access, access_file = access_log_for(cfg)
        loop = asyncio.get_running_loop()
        plane = self.plane = DataPlane(loop, cfg, hello["table"], Signer(hello["secret"]),
                                       self.log, access)
        for pool, label, healthy in hello["health"]:
            self._set_health(pool, label, healthy)
        if hello["pause"] is not None:
            plane.start_pause(hello["pause"])
        plane.on_passive_failure = self._passive_failure
        self.serving = Serving(plane, access, access_file, self.log)
        sockets = [socket.socket(fileno=fd) for fd in hello["listen"]]
        await self.serving.listen(sockets)
        self.serving.start_timers()

    async def _stop(self) -> None:
        if self.serving is None:
            return
        self.serving.stop_accepting()
        self.plane.end_pause()  # held requests go on, so that the drain finishes them
        started = time.monotonic()
        self.log.info("worker_draining", inflight=self.plane.inflight(),
                      clients=self.plane.client_count())
        await self.serving.drain(self.plane.config.timeouts.drain)
        self.log.info("worker_drained", seconds=round(time.monotonic() - started, 3),
                      clients=self.plane.client_count())
        self.serving.close()

    # -- the channel -----------------------------------------------------------------

    def _received(self, message) -> None:
        if message[1] == "hello":
            self._hello.set_result((message[0], message[2]))
        elif self._early is not None:
            self._early.append(message)
        else:
            self._apply(message)

    def _apply(self, message) -> None:
        seq, op, args = message
        try:
            result = getattr(self, f"_op_{op}")(*args)
        except Exception as exc:
            # A worker that could not apply a change must not serve one more
            # request without it, not even on a keep-alive connection: it exits
            # now (what it had in flight is lost with it), the supervisor's wait
            # for it ends, and its replacement starts with the whole state.
            self.log.error("worker_op_failed", op=op, error=repr(exc))
            if self.serving is not None and self.serving.access is not None:
                self.serving.access.flush()
            os._exit(70)  # EX_SOFTWARE
        self.channel.send(("ack", seq, result, report(self.plane)))

    def _stop_soon(self) -> None:
        self.stopping.set()
        if not self._hello.done():
            self._hello.set_result((0, None))

    def _passive_failure(self, up, cause: str) -> None:
        self.channel.send(("passive", up.pool, up.label, cause))

    def _set_health(self, pool: str, label: str, healthy: bool) -> None:
        up = self.plane.upstream(pool, label)
        if up is not None:
            self.plane.set_health(up, healthy)

    # One method per change the supervisor sends (fleet.FleetPlane says when).
    def _op_table(self, table) -> None:
        self.plane.set_table(table)

    def _op_health(self, pool: str, label: str, healthy: bool) -> None:
        self._set_health(pool, label, healthy)

    def _op_config(self, config) -> None:
        self.plane.apply_config(config)

    def _op_pause(self, timeout: float) -> None:
        self.plane.start_pause(timeout)

    def _op_resume(self) -> int:
        return self.plane.end_pause()

    def _op_cut(self, pool: str, address: str | None) -> int:
        return self.plane.cut(pool, address)

    def _op_report(self) -> None:
        """Nothing to change: the acknowledgement carries the counters."""

    def _op_reopen(self) -> None:
        self.serving.reopen_access_log()

    def _op_stop(self) -> None:
        self._stop_soon()


def main(argv: list[str]) -> int:
    import uvloop

    async def run() -> int:
        return await Worker(int(argv[1])).run()

    return uvloop.run(run())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
