#!/usr/bin/env python3
"""How a shared accept socket and SO_REUSEPORT spread connections and requests over 2 processes.

    python benchmarks/accept_spread.py [--rounds N] [--duration S] [--connections C] [--json FILE]

The mechanism under test is the accept path the switchyard workers use: uvloop's
`loop.create_server(sock=...)` on a listening socket, in N processes.  Two modes:

  shared     one listening socket made by this parent and inherited by both processes
             (what `workers: N` does: the main process binds, the workers accept);
  shared-single  the same, with UV_TCP_SINGLE_ACCEPT=1 in the servers' environment: libuv
             accepts one connection per wake-up and yields, instead of until the queue is
             empty (what the workers run with on systemd's shared sockets);
  reuseport  each process binds its own SO_REUSEPORT socket to the same port, and the
             kernel picks the socket for each new connection by a hash of its addresses
             (what `workers: N` does with the sockets it binds itself).

Each process is a small uvloop + httptools HTTP/1.1 server answering a fixed `200 ok`
(keep-alive unless the client asks otherwise), counting the connections it accepted and the
requests it answered.  Two loads, each by wrk: keep-alive (`-c C`, the connections made once
at the start), and short connections (`-H "Connection: close"`: one request per connection).
Printed per mode, load and round: each process's connections and requests, and the max/min
ratio of each (1.00 is an even spread).

Standard library, uvloop and httptools only (run.py beside it runs wrk and kills what it
starts).  The servers are started in their own process groups, asked to die with this
process, and killed on exit; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httptools
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benchmarks/run.py: wrk, process groups, machine info)

PROCESSES = 2
MODES = ("shared", "shared-single", "reuseport")
LOADS = {"keep-alive": (), "close": ("Connection: close",)}
BACKLOG = 4096
REPLY_TIMEOUT = 5.0   # seconds a server gets to answer "count" or to say "ready"

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok\n"


# --------------------------------------------------------------------------- the server (child)

class Counts:
    __slots__ = ("connections", "requests", "open")

    def __init__(self) -> None:
        self.connections = self.requests = self.open = 0


class Http(asyncio.Protocol):
    """One client connection: llhttp callbacks, a fixed answer per request."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.counts.connections += 1
        self.counts.open += 1

    def connection_lost(self, exc) -> None:
        self.counts.open -= 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:
            self.transport.close()

    # llhttp
    def on_message_complete(self) -> None:
        self.counts.requests += 1
        if self.parser.should_keep_alive():
            self.transport.write(OK)
        else:
            self.transport.write(OK_CLOSE)
            self.transport.close()


def serve(listen_fd: int | None, port: int | None) -> int:
    """Serve on an inherited listening socket (`listen_fd`) or on an own SO_REUSEPORT one.

    Control: a line "count" on stdin is answered by a JSON line on stdout; stdin closing
    (the parent gone) ends the process."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        if listen_fd is not None:
            sock = socket.socket(fileno=listen_fd)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(BACKLOG)
        counts = Counts()
        await loop.create_server(lambda: Http(counts), sock=sock, backlog=BACKLOG)
        done = loop.create_future()

        class Control(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                for _ in range(data.count(b"\n")):
                    reply = {"pid": os.getpid(), "connections": counts.connections,
                             "requests": counts.requests, "open": counts.open,
                             "cpu_s": sum(os.times()[:2])}
                    sys.stdout.write(json.dumps(reply) + "\n")
                    sys.stdout.flush()

            def connection_lost(self, exc) -> None:
                if not done.done():
                    done.set_result(None)

        await loop.connect_read_pipe(Control, sys.stdin)
        print("ready", flush=True)
        await done

    uvloop.run(main())
    return 0


# --------------------------------------------------------------------------- the parent

class Server:
    """One server process, driven over its stdin/stdout."""

    def __init__(self, argv: list[str], pass_fds: tuple[int, ...] = (), env=None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=pass_fds, text=True,
                                     env=env,
                                     start_new_session=True, preexec_fn=run._die_with_parent)

    def line(self) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], REPLY_TIMEOUT)
        if not ready:
            raise RuntimeError(f"server {self.proc.pid} did not answer within {REPLY_TIMEOUT:g}s")
        text = self.proc.stdout.readline()
        if not text:
            raise RuntimeError(f"server {self.proc.pid} exited: {self.proc.stderr.read()[-2000:]}")
        return text.strip()

    def counts(self) -> dict:
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return json.loads(self.line())

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        run._kill_group(self.proc, grace=2.0)


def start_mode(mode: str) -> tuple[int, list[Server], socket.socket]:
    """Two servers in `mode`; the port, the servers, and the socket this parent keeps.

    shared: the listening socket itself, bound and listening before the servers start.
    reuseport: a SO_REUSEPORT socket bound but not listening, which holds the port for the
    servers' own sockets and is never given a connection (only listening sockets are)."""
    me = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if mode.startswith("shared"):
        sock.bind(("127.0.0.1", 0))
        sock.listen(BACKLOG)
        env = {k: v for k, v in os.environ.items() if k != "UV_TCP_SINGLE_ACCEPT"}
        if mode == "shared-single":
            env["UV_TCP_SINGLE_ACCEPT"] = "1"
        servers = [Server(me + ["--fd", str(sock.fileno())], pass_fds=(sock.fileno(),), env=env)
                   for _ in range(PROCESSES)]
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        servers = [Server(me + ["--port", str(port)]) for _ in range(PROCESSES)]
    for server in servers:
        if server.line() != "ready":
            raise RuntimeError(f"{mode} server {server.proc.pid} did not start")
    return sock.getsockname()[1], servers, sock


def measure(port: int, servers: list[Server], duration: float, connections: int,
            headers: tuple[str, ...]) -> dict:
    before = [s.counts() for s in servers]
    result = run.run_wrk(port, duration, connections=connections, threads=1, headers=headers)
    after = [s.counts() for s in servers]
    per = [{"pid": b["pid"], "connections": a["connections"] - b["connections"],
            "requests": a["requests"] - b["requests"], "cpu_s": a["cpu_s"] - b["cpu_s"]}
           for b, a in zip(before, after)]
    return {"rps": result["rps"], "requests_wrk": result["requests"],
            "errors": result["socket_errors"] + result["non_2xx"], "per_process": per,
            "max_min_connections": max_min(p["connections"] for p in per),
            "max_min_requests": max_min(p["requests"] for p in per)}


def max_min(values) -> float | None:
    values = list(values)
    return None if not values or min(values) <= 0 else max(values) / min(values)


def fmt_ratio(value: float | None) -> str:
    return "  inf" if value is None else f"{value:5.2f}"


def print_round(rnd: int, mode: str, load: str, r: dict) -> None:
    cells = "  ".join(f"[{p['connections']:6d} conns {p['requests']:7d} req {p['cpu_s']:5.2f} s cpu]"
                      for p in r["per_process"])
    print(f"round {rnd} {mode:<13} {load:<10} {r['rps']:8.0f} req/s  {cells}  max/min conns "
          f"{fmt_ratio(r['max_min_connections'])} req {fmt_ratio(r['max_min_requests'])}"
          + (f"  ERRORS {r['errors']}" if r["errors"] else ""), flush=True)


def print_summary(results: dict) -> dict:
    print("\nSummary (median over rounds of the max/min ratio; 1.00 = even; inf = a process got none;"
          " shares = % of all rounds together)")
    print(f"{'mode':<14} {'load':<11} {'req/s':>8} {'conns max/min':>13} {'req max/min':>11}  "
          f"{'conn shares':>13}  {'req shares':>13}")
    out = {}
    for (mode, load), rounds in results.items():
        def med(key):
            values = [r[key] if r[key] is not None else float("inf") for r in rounds]
            return statistics.median(values)
        conns = [sum(r["per_process"][i]["connections"] for r in rounds) for i in range(PROCESSES)]
        reqs = [sum(r["per_process"][i]["requests"] for r in rounds) for i in range(PROCESSES)]
        share = lambda xs: "/".join(f"{100 * x / max(sum(xs), 1):.0f}" for x in xs)  # noqa: E731
        row = {"rps": statistics.median(r["rps"] for r in rounds),
               "max_min_connections": med("max_min_connections"),
               "max_min_requests": med("max_min_requests"),
               "connection_shares": share(conns), "request_shares": share(reqs)}
        out[f"{mode}/{load}"] = row
        print(f"{mode:<14} {load:<11} {row['rps']:8.0f} {row['max_min_connections']:13.2f} "
              f"{row['max_min_requests']:11.2f}  {row['connection_shares']:>13}  "
              f"{row['request_shares']:>13}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds per mode and load (default 5)")
    p.add_argument("--duration", type=float, default=3, help="seconds per wrk run (default 3)")
    p.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    p.add_argument("--json", type=Path, help="also write raw results to this file")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.connections < 1:
        p.error("--rounds, --duration and --connections must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args.fd, args.port)
    signal.signal(signal.SIGTERM, run._exit_on_signal)
    signal.signal(signal.SIGHUP, run._exit_on_signal)
    signal.signal(signal.SIGALRM, run._exit_on_signal)
    budget = int(len(MODES) * len(LOADS) * args.rounds * (args.duration + 40) + 60)
    signal.alarm(budget)   # wrk is bounded by run_wrk; this bounds everything else too
    info = run.machine_info()
    print(f"machine: {info['nproc']} cpus, {info['cpu']}, kernel {info['kernel']}, load {info['loadavg_at_start']}")
    print(f"plan: {PROCESSES} processes per mode, {args.rounds} rounds x {args.duration:g}s per mode "
          f"and load, wrk -t1 -c{args.connections}, time limit {budget}s", flush=True)
    started: list[Server] = []
    kept: list[socket.socket] = []
    try:
        modes = {}
        for mode in MODES:
            port, servers, sock = start_mode(mode)
            started += servers
            kept.append(sock)
            modes[mode] = (port, servers)
        results: dict = {(mode, load): [] for load in LOADS for mode in MODES}
        for rnd in range(1, args.rounds + 1):
            order = list(MODES) if rnd % 2 else list(reversed(MODES))   # alternate who goes first
            for load, headers in LOADS.items():
                for mode in order:
                    port, servers = modes[mode]
                    r = measure(port, servers, args.duration, args.connections, headers)
                    r["round"] = rnd
                    results[(mode, load)].append(r)
                    print_round(rnd, mode, load, r)
                    time.sleep(0.5)   # let the closed connections leave the tables
        summary = print_summary(results)
        if args.json:
            args.json.write_text(json.dumps({
                "settings": vars(args) | {"json": str(args.json), "processes": PROCESSES},
                "machine": info, "summary": summary,
                "rounds": {f"{m}/{l}": rs for (m, l), rs in results.items()}}, indent=2) + "\n")
            print(f"\nraw results: {args.json}")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.alarm(0)
        for server in started:
            server.stop()
        for sock in kept:
            sock.close()


if __name__ == "__main__":
    run.entry(main)
