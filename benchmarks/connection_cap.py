#!/usr/bin/env python3
"""At the connection cap, a new client is served: the longest-idle keep-alive
connection makes room (nginx reclaims keep-alive connections the same way).

    python benchmarks/connection_cap.py [--connections 10000]

Starts a demo pool and `switchyard serve` with `limits.max_connections` equal to
--connections, opens that many keep-alive connections (each carries one request,
then stays idle), then connects once more and prints what the new client got,
how many of the old connections the proxy closed to admit it (the first opened,
the longest idle, is expected) and whether all the others are still served.
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUEST = b"GET / HTTP/1.1\r\nHost: cap\r\n\r\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    args = parser.parse_args()
    n = args.connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 1000)), hard))
    work = tempfile.mkdtemp(prefix="sy-cap-")
    pool = subprocess.Popen([sys.executable, "-m", "proxy.cli.demo", "--pool", "blue"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    proxy = None
    try:
        pool_port = int(pool.stdout.readline().split()[1])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = os.path.join(work, "switchyard.yaml")
        with open(config, "w") as f:
            f.write(f'listen: ["127.0.0.1:{port}"]\nadmin: {{socket: {work}/admin.sock}}\n'
                    f"state_file: {work}/state.json\n"
                    f'pools: {{blue: {{upstreams: ["127.0.0.1:{pool_port}"]}}, '
                    f'green: {{upstreams: ["127.0.0.1:{pool_port}"]}}}}\n'
                    f"weights: {{blue: 100, green: 0}}\nlog: {{access: false}}\n"
                    f"limits: {{max_connections: {n}}}\n"
                    f"timeouts: {{client_idle: 10m}}\n")
        proxy = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "-c", config],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 preexec_fn=_raise_nofile(n + 1000))
        _wait_port(port)
        conns = []
        started = time.monotonic()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(REQUEST)
            _read_response(s)
            conns.append(s)
        print(f"{n} keep-alive connections opened and served, then idle "
              f"({time.monotonic() - started:.1f}s)")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as newcomer:
            newcomer.sendall(REQUEST)
            status = _read_response(newcomer)
        print(f"a new client at the cap got: HTTP {status}")
        time.sleep(0.5)
        closed = [i for i, s in enumerate(conns) if _closed(s)]
        print(f"closed by the proxy to make room: {len(closed)} (indexes {closed[:5]})")
        still = sum(1 for i, s in enumerate(conns) if i not in closed and _served(s))
        print(f"old connections still served: {still} of {n - len(closed)}")
        for s in conns:
            s.close()
        return 0 if status == 200 and closed == [0] and still == n - 1 else 1
    finally:
        for proc in (proxy, pool):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=10)


def _raise_nofile(limit: int):
    def raise_it() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    return raise_it


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the proxy did not listen on {port}")


def _read_response(s: socket.socket) -> int:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return 0
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += s.recv(65536)
    return int(head.split()[1])


def _closed(s: socket.socket) -> bool:
    """The proxy closed it (a FIN waiting); select() cannot take fds past 1024."""
    poll = select.poll()
    poll.register(s, select.POLLIN)
    return bool(poll.poll(0)) and s.recv(1) == b""


def _served(s: socket.socket) -> bool:
    try:
        s.sendall(REQUEST)
        return _read_response(s) == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
