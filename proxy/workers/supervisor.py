"""`workers: N`: N data-plane processes under the one control plane.

The main process keeps the admin socket, health checks, the state file,
rollouts and reload.  It binds the listening sockets (one SO_REUSEPORT socket
per worker for each address, serving.bind) or is passed systemd's (shared by
every worker), and holds them while it runs, so a connection that arrives
while a worker is being replaced waits in the kernel's queue for its
replacement instead of being refused.  The supervisor starts the workers,
sends them every change of routing through its `FleetPlane` (fleet.py), and
restarts one that dies.

Ordering is the guarantee: a worker applies messages in the order they were
sent and acknowledges each.  `sync()` sends a no-op and waits until every
worker has acknowledged it, so once it returns every worker has applied every
change made before it: the admin API calls it before answering a change
(SPEC §2.4, "the next request after the call returns follows it").  A worker
that cannot acknowledge a change within ACK_TIMEOUT is killed and replaced,
rather than left serving on a routing it never confirmed; one that cannot
apply it exits by itself (child.py).  A worker that is only late with its
counters is not killed for that: a stalled log sink stalls every worker, and
killing them all would drop every request in flight.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from ..dataplane.sticky import Signer
from .channel import Channel
from .broadcast import FleetPlane
from .report import Totals, inflight_of, requests_of

ACK_TIMEOUT = 5.0  # for a change, and for a new worker's first acknowledgement
REPORT_INTERVAL = 0.25  # counters refreshed for rollouts, drains and `top`
STEADY = 10.0  # a worker that ran this long is restarted at once
# Kept short: with SO_REUSEPORT, connections the kernel hashes to a dead
# worker's socket wait for its replacement.
MAX_BACKOFF = 2.0


@dataclass(eq=False)
class Worker:
    slot: int
    process: asyncio.subprocess.Process
    channel: Channel
    started: float = field(default_factory=time.time)
    waits: dict = field(default_factory=dict)  # seq -> future of its acknowledgement

    def acknowledged(self, seq: int, result) -> None:
        for pending in [s for s in self.waits if s <= seq]:
            future = self.waits.pop(pending)
            if not future.done():
                future.set_result(result if pending == seq else None)

    @property
    def left(self) -> bool:
        """Its channel has closed: it is stopping or gone, and answers nothing more."""
        return self.channel.transport is None

    def gone(self) -> None:
        self.acknowledged(sys.maxsize, None)


class Supervisor:
    def __init__(self, loop, config, table, secret: bytes, log, events) -> None:
        self.loop = loop
        self.count = config.workers
        self.log = log
        self.events = events
        self.totals = Totals()
        self.workers: dict[int, Worker] = {}  # slot -> the process now in it
        self.restarts: dict[int, int] = {}  # slot -> times its worker was replaced
        self._failures: dict[int, int] = {}  # slot -> quick deaths in a row
        self._seq = 0
        self._sockets: list[list[socket.socket]] = []  # per slot: the sockets it accepts on
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self.secret = secret  # the workers sign and check cookies with the same key
        self.plane = FleetPlane(loop, config, table, Signer(secret), log, self)

    # -- start, stop -----------------------------------------------------------------

    async def start(self, sockets: list[list[socket.socket]]) -> None:
        """Start every worker on its listening sockets (`sockets[slot]`, held here
        for the worker's whole life and its replacement's); return once each
        serves (or raise)."""
        self._sockets = sockets
        await asyncio.gather(*(self._spawn(slot) for slot in range(self.count)))
        self._task(self._refresh())

    async def stop(self, seconds: float) -> None:
        """Every worker finishes what it carries within `seconds`, then exits."""
        self._stopping = True
        self.broadcast("stop")
        # Our copies of the listening sockets go too, as a single process closes
        # its listeners: sockets we bound stop taking connections once the
        # workers have closed theirs; systemd's stay open in systemd.
        for sock in {sock for socks in self._sockets for sock in socks}:
            sock.close()
        exits = [asyncio.ensure_future(w.process.wait()) for w in self.workers.values()]
        if exits:
            await asyncio.wait(exits, timeout=seconds + ACK_TIMEOUT)
        for worker in list(self.workers.values()):
            if worker.process.returncode is None:
                self.log.error("worker_kill", slot=worker.slot, pid=worker.process.pid,
                               detail="still running after the drain")
                worker.process.kill()
        await asyncio.gather(*(w.process.wait() for w in self.workers.values()))
        for task in self._tasks:
            task.cancel()

    async def _spawn(self, slot: int) -> None:
        mine, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p))
        # On a socket shared by the workers (systemd's), libuv accepts until the
        # queue is empty, so one worker can take a whole burst of connections;
        # with this it takes one and lets the others have a go (accept_spread.py).
        env.setdefault("UV_TCP_SINGLE_ACCEPT", "1")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.workers.child", str(theirs.fileno()),
            pass_fds=[theirs.fileno(), *(s.fileno() for s in self._sockets[slot])], env=env)
        theirs.close()
        worker: Worker | None = None

        def received(message) -> None:
            self._received(worker, message)

        def lost() -> None:
            worker.gone()  # nothing more will be acknowledged: wait for it no longer

        channel = await Channel.over(mine, received, lost)
        worker = Worker(slot, process, channel)
        self.workers[slot] = worker
        self._task(self._watch(worker))
        seq = self._seq
        ready = worker.waits[seq] = self.loop.create_future()
        channel.send((seq, "hello", self._hello(slot)))
        try:
            started = await asyncio.wait_for(asyncio.shield(ready), ACK_TIMEOUT)
        except asyncio.TimeoutError:
            process.kill()
            raise RuntimeError(f"worker {slot} (pid {process.pid}) did not start "
                               f"within {ACK_TIMEOUT:g}s") from None
        if started is None:  # its channel closed before it served: it died starting
            raise RuntimeError(f"worker {slot} (pid {process.pid}) exited at start")
        if self._stopping:  # stop() came while it started, and did not reach it
            channel.send((self._seq, "stop", ()))

    def _hello(self, slot: int) -> dict:
        plane = self.plane
        pause = plane.pause
        return {
            "slot": slot,
            "config": plane.config,
            "table": plane.table,
            "secret": self.secret,
            "health": [(u.pool, u.label, u.healthy) for p in plane.pools.values()
                       for u in p.upstreams],
            "pause": None if pause is None else max(0.0, pause.until - time.monotonic()),
            "listen": [s.fileno() for s in self._sockets[slot]],
        }

    async def _watch(self, worker: Worker) -> None:
        """Replace `worker` when it exits, unless the proxy is stopping."""
        code = await worker.process.wait()
        worker.channel.close()
        worker.gone()
        self.totals.retire(worker.slot)
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        if self._stopping:
            return
        ran = time.time() - worker.started
        quick = self._failures[worker.slot] = 0 if ran >= STEADY else \
            self._failures.get(worker.slot, 0) + 1
        self.restarts[worker.slot] = self.restarts.get(worker.slot, 0) + 1
        self.events.emit("worker_exited", level="error", slot=worker.slot,
                         pid=worker.process.pid, status=_status(code), ran=round(ran, 1),
                         restart_in=_backoff(quick))
        await self._replace(worker.slot, quick)

    async def _replace(self, slot: int, quick: int) -> None:
        """Start a worker in `slot` again, retrying (a fork can fail: EAGAIN, EMFILE)
        until one serves or the proxy stops."""
        while not self._stopping:
            await asyncio.sleep(_backoff(quick))
            if self._stopping:
                return
            try:
                await self._spawn(slot)
            except (RuntimeError, OSError) as exc:
                # A worker that died starting is replaced by its own watch.
                self.events.emit("worker_start_failed", level="error", slot=slot, error=str(exc))
                if slot in self.workers:
                    return
                quick += 1
                continue
            self.events.emit("worker_started", slot=slot, pid=self.workers[slot].process.pid)
            return

    # -- the channel -----------------------------------------------------------------

    def broadcast(self, op: str, *args) -> int:
        """Send one change to every worker, in order; its sequence number."""
        self._seq += 1
        for worker in self.workers.values():
            worker.channel.send((self._seq, op, args))
        return self._seq

    async def call(self, op: str, *args, change: bool = True) -> list:
        """Send `op` to every worker and wait until each has applied it: their results.
        `change`: a worker that has not confirmed it within ACK_TIMEOUT is killed."""
        seq = self.broadcast(op, *args)
        waits = {w: w.waits.setdefault(seq, self.loop.create_future())
                 for w in self.workers.values() if not w.left}
        if waits:
            await asyncio.wait(waits.values(), timeout=ACK_TIMEOUT)
        for worker, future in waits.items():
            if change and not future.done() and worker.process.returncode is None:
                # It has not applied what every other worker has: it must not serve.
                self.events.emit("worker_unresponsive", level="error", slot=worker.slot,
                                 pid=worker.process.pid, op=op)
                worker.process.kill()
        self.totals.apply(self.plane)
        return [f.result() for f in waits.values() if f.done()]

    async def sync(self, change: bool = True) -> None:
        """Return once every worker has applied every change sent before the call,
        with the counters refreshed.  `change`: one was made, and a worker that
        cannot confirm it is killed; otherwise only its counters are late."""
        await self.call("report", change=change)

    def _received(self, worker: Worker, message) -> None:
        if message[0] == "ack":
            _, seq, result, rep = message
            self.totals.update(worker.slot, rep)
            worker.acknowledged(seq, result)
        elif message[0] == "passive":
            _, pool, label, cause = message
            up = self.plane.upstream(pool, label)
            if up is not None and self.plane.on_passive_failure is not None:
                self.plane.on_passive_failure(up, cause)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            await self.sync(change=False)

    def _task(self, coro) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what status shows -----------------------------------------------------------

    def workers_view(self) -> list[dict]:
        out = []
        for slot, worker in sorted(self.workers.items()):
            rep = self.totals.live.get(slot)
            out.append({"pid": worker.process.pid, "slot": slot,
                        "requests": requests_of(rep) if rep else 0,
                        "inflight": inflight_of(rep) if rep else 0,
                        "clients": rep["clients"] if rep else 0,
                        "restarts": self.restarts.get(slot, 0),
                        "since": round(worker.started, 3)})
        return out


def _backoff(quick_deaths: int) -> float:
    """Seconds before a worker is started again, after that many deaths in a row
    within STEADY of their start."""
    return min(MAX_BACKOFF, 0.25 * 2 ** (quick_deaths - 1)) if quick_deaths else 0.0


def _status(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"


def _package_root() -> str:
    # The directory holding the `proxy` package this process runs, so that the
    # workers run the very same code (a source tree or an installed package).
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
