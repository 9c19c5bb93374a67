"""One data plane at work: its listening sockets, timers, access log and drain.

The single process (`workers: 1`, server.py) and each worker process
(workers/child.py) run exactly this; they differ only in who changes the
plane's routing: the controller in the same process, or the supervisor over
the control channel.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from .dataplane.accesslog import AccessFile, AccessLog
from .dataplane.client import ClientConnection
from .dataplane.plane import DataPlane

SWEEP_INTERVAL = 0.25
ACCESS_FLUSH_INTERVAL = 0.2
# While stopping, an idle keep-alive connection is closed once it has been
# idle this long; one that carries a request meanwhile is answered with
# `Connection: close` (see DataPlane.close_idle_clients).
DRAIN_IDLE_GRACE = 1.0
BACKLOG = 4096


def access_log_for(config, stream=None) -> tuple[AccessLog | None, AccessFile | None]:
    """The access log `config.log` asks for, and the file under it (reopened on SIGUSR1)."""
    if not config.log.access:
        return None, None
    if config.log.access_file and stream is None:
        stream = AccessFile(config.log.access_file)
    # N workers write the same file or stdout: whole lines per write.
    access = AccessLog(config.log.format, stream, shared=config.workers > 1)
    return access, stream if isinstance(stream, AccessFile) else None


def bind(addresses, copies: int = 1) -> list[list[socket.socket]]:
    """Listening sockets for `listen` (when systemd passed none): one set per worker.

    With `copies` > 1 each TCP address gets one SO_REUSEPORT socket per worker,
    and the kernel spreads new connections evenly over them by their address
    pair; one socket shared by every worker is accepted from by whichever
    wakes first, and keep-alive connections arriving together can all land on
    one (benchmarks/accept_spread.py measures both).  Unix sockets have no
    such option and are shared."""
    sets: list[list[socket.socket]] = [[] for _ in range(copies)]
    for addr in addresses:
        if addr.kind == "unix":
            sock = _bind_unix(addr.path)
            for one in sets:
                one.append(sock)
            continue
        port = addr.port
        if copies > 1 and port:
            _refuse_if_taken(addr.host, port)
        for one in sets:
            made = _bind_tcp(addr.host, port, reuse_port=copies > 1)
            port = made[0].getsockname()[1]  # port 0: every copy on the port the first got
            one.extend(made)
    for sock in {s for one in sets for s in one}:
        sock.listen(BACKLOG)  # connections queue from now on, before any worker serves
    return sets


class Serving:
    def __init__(self, plane: DataPlane, access: AccessLog | None, access_file: AccessFile | None,
                 log) -> None:
        self.plane = plane
        self.access = access
        self.access_file = access_file
        self.log = log
        self.listeners: list[asyncio.AbstractServer] = []
        self._timers: list[asyncio.Task] = []

    async def listen(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        factory = lambda: ClientConnection(self.plane)  # noqa: E731
        for sock in sockets:
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(factory, sock=sock, backlog=BACKLOG)
            else:
                server = await loop.create_server(factory, sock=sock, backlog=BACKLOG)
            self.listeners.append(server)

    def start_timers(self) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.create_task(every(SWEEP_INTERVAL, self.plane.sweep)))
        if self.access is not None:
            self._timers.append(loop.create_task(every(ACCESS_FLUSH_INTERVAL, self.access.flush)))

    def reopen_access_log(self) -> None:
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

    def stop_accepting(self) -> None:
        for listener in self.listeners:
            listener.close()

    async def drain(self, seconds: float) -> None:
        """Finish in-flight requests within `seconds`; close idle connections."""
        plane = self.plane
        plane.draining = True
        deadline = time.monotonic() + seconds
        while True:
            # Sleep first: a connection accepted just before the listeners closed
            # is made (connection_made) on a later turn of the loop, and a drain
            # that counted no client before then would leave it unanswered.
            await asyncio.sleep(0.05)
            if not plane.close_idle_clients(DRAIN_IDLE_GRACE) or time.monotonic() >= deadline:
                break
        for client in list(plane.clients):
            if client.transport is not None:
                client.transport.abort()
        for pool in plane.pools.values():
            for up in pool.upstreams:
                up.close_idle()

    def close(self) -> None:
        for task in self._timers:
            task.cancel()
        if self.access is not None:
            self.access.flush()
        if self.access_file is not None:
            self.access_file.close()


async def every(interval: float, action) -> None:
    while True:
        await asyncio.sleep(interval)
        action()


def names(sockets) -> list[str]:
    out = []
    for sock in sockets:
        name = sock.getsockname()
        out.append(f"{name[0]}:{name[1]}" if isinstance(name, tuple) else f"unix:{name}")
    return out


def _bind_unix(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    return sock


def _refuse_if_taken(host: str, port: int) -> None:
    """Raise EADDRINUSE when something listens on host:port already.

    SO_REUSEPORT would otherwise let us join the sockets of any process of the
    same user on that port, say a switchyard already running, and the two
    would split the traffic, each routing by its own state, without a word.
    A socket bound without it fails the way a single process would."""
    for sock in _bind_tcp(host, port):
        sock.close()


def _bind_tcp(host: str, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """What loop.create_server(host, port, reuse_address=True) binds, as sockets
    that can be handed to worker processes."""
    socks = []
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            for made in socks:
                made.close()
            raise
        socks.append(sock)
    return socks
