#!/usr/bin/env python3
"""Fault scenarios on real Swoole upstreams: switchyard and HAProxy 2.6 side by side.

    python benchmarks/swoole_faults.py [--duration 30] [--only NAME[,NAME]]
                                       [--targets direct,switchyard,haproxy,haproxy-retry]
                                       [--keep-tmp]

Every scenario runs once per target, each time on fresh Swoole servers (tests/swoole/
http_app.php, Hyperf 3 skeleton settings, SWOOLE_BASE, 2 workers) and a fresh proxy:

  direct         no proxy: the load straight at Swoole (recycle scenarios only), a baseline
  switchyard     `python -m proxy.cli serve -c FILE` from this checkout
  haproxy        HAProxy 2.6 with its defaults (retries 3, retry-on conn-failure,
                 http-reuse safe, no redispatch)
  haproxy-retry  + retry-on conn-failure empty-response, retries 3, option redispatch,
                 http-reuse safe

Both proxies health-check GET /health every 500 ms (rise 2, fall 2) and write an access log.

Scenarios (--only takes these names):
  recycle-5000      one pool, max_request 5000, MixedLoad for --duration seconds
  recycle-300       the same with max_request 300: a worker recycles every few hundred ms
  deploys           4 blue/green cycles under load: start the idle color, switch all
                    traffic to it (switchyard: cutover + drain --wait; HAProxy: runtime API
                    `set server be/NEW state ready`, then `... be/OLD state maint` and wait
                    for its sessions to end), then SIGTERM the old color
  stop-mid-request  one pool of two servers with max_wait_time 1; 4 `GET /slow?ms=1500` are
                    in flight when one server gets SIGTERM (light load besides); counts how
                    often the app ran each slow request

The load (tests/swoolekit.py MixedLoad) never retries: 16 GET connections (GET /write, a GET
route that writes, so a replayed GET shows up in the applied log), 2 POST connections and
2 keyed POST connections (Idempotency-Key).  After each run the client's outcomes are
compared with the app's applied log.  Columns:

  requests          requests sent (each exactly once)
  failed GET/POST/POST+key   requests without a complete 2xx answer, by kind
  applied twice     requests the app applied more than once (the proxy replayed them)
  ran twice         requests the app started more than once (stop-mid-request: /slow)
  answered, not applied      2xx to the client but never applied: a lie
  failed, applied   the client saw an error, but the app did apply it (outcome unknown
                    to the client; a retrying client would apply it twice)
  took >1s          requests (any outcome, /slow excepted) that waited more than 1 s: a
                    stall, e.g. Swoole holding a connection until max_wait_time

Only the standard library and this repository are used.  Every process runs in its own
process group and is killed on exit, Ctrl-C and SIGTERM included; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.swoolekit import (MixedLoad, MixedResult, RawConnection, Record,  # noqa: E402
                             RequestFailed, SwooleServer, check_applied, free_port,
                             read_log, require_swoole)

TARGETS = ["direct", "switchyard", "haproxy", "haproxy-retry"]
GET_PATH = "/write"
HEALTH = {"interval_ms": 500, "rise": 2, "fall": 2}
STARTUP_TIMEOUT = 15.0
SWITCH_TIMEOUT = 40.0


class ScenarioError(RuntimeError):
    """A scenario could not run as planned (a proxy did not start, a switch failed)."""


# --------------------------------------------------------------------------- processes

def start_group(argv: list[str], log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    """A child in its own process group, stdout and stderr to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                cwd=cwd, start_new_session=True)


def kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds, always sweep it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise ScenarioError(f"timed out after {timeout:g}s waiting for {what}")


def get_pool(port: int, path: str = "/health") -> str | None:
    """X-Pool of one GET through the port, None if it did not answer 200."""
    try:
        conn = RawConnection(port, timeout=2)
    except RequestFailed:
        return None
    try:
        answer = conn.request(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return answer.headers.get("x-pool") if answer.status == 200 else None
    except RequestFailed:
        return None
    finally:
        conn.close()


# --------------------------------------------------------------------------- proxies

@dataclass
class Pool:
    name: str
    servers: list[SwooleServer]
    weight: int


class Direct:
    """No proxy: the load goes straight to the pool's only server."""

    name = "direct"

    def __init__(self, tmp: Path) -> None:
        self.port = 0

    def start(self, pools: list[Pool]) -> None:
        servers = [s for p in pools for s in p.servers]
        if len(servers) != 1:
            raise ScenarioError("direct needs exactly one upstream")
        self.port = servers[0].port

    def switch(self, new: str, old: str) -> None:
        raise ScenarioError("direct cannot switch pools")

    def stop(self) -> None:
        pass


class Switchyard:
    """`python -m proxy.cli serve -c FILE` on a fixed free port; switches with the CLI."""

    name = "switchyard"

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "switchyard"
        self.dir.mkdir()
        # Unix socket paths are limited to 107 bytes; keep the admin socket short.
        self.admin = os.path.join(tempfile.mkdtemp(prefix="sy-"), "admin.sock")
        self.log = self.dir / "switchyard.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def config(self, pools: list[Pool]) -> str:
        pool_lines = "\n".join(f"  {p.name}: {{upstreams: {json.dumps([s.address for s in p.servers])}}}"
                               for p in pools)
        weights = {p.name: p.weight for p in pools}
        return (f'listen: ["127.0.0.1:{self.port}"]\n'
                f"admin: {{socket: {self.admin}}}\n"
                f"state_file: {self.dir}/state.json\n"
                f"pools:\n{pool_lines}\n"
                f"weights: {json.dumps(weights)}\n"
                f"health: {{path: /health, interval: {HEALTH['interval_ms']}ms, timeout: 1s, "
                f"rise: {HEALTH['rise']}, fall: {HEALTH['fall']}}}\n"
                f"timeouts: {{drain: 5s}}\n"
                f"log: {{access: true, format: json}}\n")

    def start(self, pools: list[Pool]) -> None:
        cfg = self.dir / "switchyard.yaml"
        cfg.write_text(self.config(pools))
        self.proc = start_group([sys.executable, "-m", "proxy.cli", "serve", "-c", str(cfg)],
                                self.log)
        try:
            wait_until(lambda: self.proc.poll() is not None or b'"server_started"' in self.log.read_bytes(),
                       STARTUP_TIMEOUT, "switchyard's server_started")
            if self.proc.poll() is not None:
                raise ScenarioError(f"switchyard exited with {self.proc.returncode}")
            wait_until(lambda: get_pool(self.port) is not None, STARTUP_TIMEOUT,
                       "switchyard to route (its health checks to pass)")
        except ScenarioError as exc:
            raise ScenarioError(f"{exc}\n{tail(self.log)}") from None

    def cli(self, *args: str) -> None:
        try:
            p = subprocess.run([sys.executable, "-m", "proxy.cli", *args, "--socket", self.admin],
                               capture_output=True, text=True, cwd=ROOT, timeout=SWITCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ScenarioError(f"switchyard {' '.join(args)} did not finish "
                                f"in {SWITCH_TIMEOUT:g}s") from None
        if p.returncode != 0:
            raise ScenarioError(f"switchyard {' '.join(args)} exited {p.returncode}: "
                                f"{(p.stdout + p.stderr).strip()[-500:]}")

    def switch(self, new: str, old: str) -> None:
        self.cli("cutover", new)          # waits until `new` is healthy, then moves all traffic
        self.cli("drain", old, "--wait")  # follows the old pool's in-flight requests down to 0

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, grace=10)
        shutil.rmtree(os.path.dirname(self.admin), ignore_errors=True)


class HAProxy:
    """HAProxy 2.6 in the foreground; switches through its runtime API (stats socket)."""

    def __init__(self, tmp: Path, retry: bool) -> None:
        self.name = "haproxy-retry" if retry else "haproxy"
        self.retry = retry
        self.dir = tmp / self.name
        self.dir.mkdir()
        self.sock = str(self.dir / "admin.sock")
        self.log = self.dir / "haproxy.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def config(self, pools: list[Pool]) -> str:
        retry = ("  retries 3\n  retry-on conn-failure empty-response\n  option redispatch\n"
                 "  http-reuse safe\n") if self.retry else ""
        servers = []
        for p in pools:
            for s in p.servers:
                # One server per Swoole process, named like its pool when the pool has one.
                name = p.name if len(p.servers) == 1 else s.name
                servers.append(f"  server {name} {s.address} check{'' if p.weight else ' disabled'}")
        return f"""\
global
  nbthread 1
  maxconn 4096
  stats socket {self.sock} mode 600 level admin
  log stdout format raw local0

defaults
  mode http
  log global
  option httplog
  option http-keep-alive
  timeout connect 2s
  timeout client 30s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 10s
  default-server inter {HEALTH['interval_ms']}ms rise {HEALTH['rise']} fall {HEALTH['fall']}
{retry}
frontend fe
  bind 127.0.0.1:{self.port}
  default_backend be

backend be
  balance roundrobin
  option httpchk GET /health
{chr(10).join(servers)}
"""

    def start(self, pools: list[Pool]) -> None:
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(self.config(pools))
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True,
                               text=True, timeout=30)
        if check.returncode != 0:
            raise ScenarioError(f"haproxy config rejected: {check.stdout}{check.stderr}")
        self.proc = start_group(["haproxy", "-db", "-f", str(cfg)], self.log)
        try:
            wait_until(lambda: self.proc.poll() is not None or get_pool(self.port) is not None,
                       STARTUP_TIMEOUT, "haproxy to route")
        except ScenarioError as exc:
            raise ScenarioError(f"{exc}\n{tail(self.log)}") from None
        if self.proc.poll() is not None:
            raise ScenarioError(f"haproxy exited with {self.proc.returncode}\n{tail(self.log)}")

    def api(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.sock)
            s.sendall(command.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode(errors="replace")

    def server_stat(self, server: str) -> dict[str, str]:
        lines = self.api("show stat").splitlines()
        names = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(names, line.split(",")))
            if row.get("pxname") == "be" and row.get("svname") == server:
                return row
        raise ScenarioError(f"haproxy has no server be/{server}")

    def switch(self, new: str, old: str) -> None:
        self.api(f"set server be/{new} state ready")
        wait_until(lambda: self.server_stat(new)["status"].startswith("UP"), SWITCH_TIMEOUT,
                   f"haproxy to see be/{new} UP")
        self.api(f"set server be/{old} state maint")
        wait_until(lambda: self.server_stat(old)["scur"] == "0", SWITCH_TIMEOUT,
                   f"be/{old}'s sessions to end")

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, grace=3)


def make_target(name: str, tmp: Path):
    if name == "direct":
        return Direct(tmp)
    if name == "switchyard":
        return Switchyard(tmp)
    return HAProxy(tmp, retry=name == "haproxy-retry")


# --------------------------------------------------------------------------- one run

@dataclass
class Row:
    scenario: str
    target: str
    result: MixedResult | None = None
    applied: list[dict] = field(default_factory=list)
    started: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def numbers(self) -> dict:
        r = self.result
        check = check_applied(r, self.applied)
        starts = Counter(line.get("test_id") for line in self.started)
        ids = {rec.id for rec in r.records}
        return {
            "requests": r.requests,
            "failed GET": len(r.failed("GET")),
            "failed POST": len(r.failed("POST")),
            "failed POST+key": len(r.failed("POST+key")),
            "applied twice": len(check.applied_twice),
            "ran twice": sum(1 for i, n in starts.items() if i in ids and n > 1),
            "answered, not applied": len(check.answered_not_applied),
            "failed, applied": len(check.failed_but_applied),
            # A stall is a fault too: Swoole can hold a request max_wait_time seconds
            # before it closes. /slow requests take 1.5 s by design and are left out.
            "took >1s": sum(1 for rec in r.records
                            if rec.elapsed > 1.0 and not rec.path.startswith("/slow")),
            "_twice_by_kind": dict(check.by_kind(check.applied_twice)),
        }


def outcome_note(result: MixedResult) -> str:
    """Failures by kind and outcome, e.g. "GET reset=3 status=502:2"."""
    parts = []
    for kind in ("GET", "POST", "POST+key"):
        c = Counter(f"{r.outcome}:{r.status}" if r.outcome == "status" else r.outcome
                    for r in result.failed(kind))
        if c:
            parts.append(f"{kind} " + " ".join(f"{o}={n}" for o, n in sorted(c.items())))
    return "; ".join(parts) or "no failures"


def mixed_load(port: int, duration: float, light: bool = False) -> MixedLoad:
    if light:
        return MixedLoad(port, get_connections=4, post_connections=1, keyed_connections=1,
                         get_path=GET_PATH, duration=duration, max_requests=2_000_000)
    return MixedLoad(port, get_connections=16, post_connections=2, keyed_connections=2,
                     get_path=GET_PATH, duration=duration, max_requests=2_000_000)


class Run:
    """One scenario on one target: its servers, its proxy, cleaned up by close()."""

    def __init__(self, scenario: str, target: str, tmp: Path) -> None:
        self.dir = tmp / f"{scenario}-{target}"
        self.dir.mkdir()
        self.log = self.dir / "applied.log"  # shared by every Swoole server of this run
        self.proxy = make_target(target, self.dir)
        self.servers: list[SwooleServer] = []
        self.row = Row(scenario, target)

    def server(self, name: str, port: int | None = None, **settings) -> SwooleServer:
        s = SwooleServer(self.dir, name=name, port=port, log=self.log, **settings)
        self.servers.append(s)
        return s

    def lines(self, event: str) -> list[dict]:
        """Lines of one event in the run's applied log, from every server."""
        return [line for line in read_log(self.log) if line.get("event") == event]

    def close(self) -> None:
        self.proxy.stop()
        for s in self.servers:
            s.kill()


# --------------------------------------------------------------------------- scenarios

def recycle(max_request: int):
    def scenario(run: Run, duration: float) -> None:
        blue = run.server("blue", max_request=max_request).start()
        run.proxy.start([Pool("blue", [blue], 100)])
        load = mixed_load(run.proxy.port, duration).start()
        time.sleep(duration)
        run.row.result = load.stop()
        recycles = len(run.lines("worker_stop"))
        run.row.notes.append(f"{recycles} worker recycles")
    return scenario


def deploys(run: Run, duration: float, cycles: int = 4) -> None:
    if isinstance(run.proxy, Direct):
        raise ScenarioError("n/a: needs a proxy to switch")
    ports = {"blue": free_port(), "green": free_port()}
    live = {"blue": run.server("blue", ports["blue"]).start()}
    green = SwooleServer(run.dir, name="green", port=ports["green"], log=run.log)
    run.proxy.start([Pool("blue", [live["blue"]], 100), Pool("green", [green], 0)])
    load = mixed_load(run.proxy.port, duration + cycles * 60).start()
    t0, slot, old = time.monotonic(), duration / cycles, "blue"
    try:
        for i in range(cycles):
            time.sleep(max(0.0, t0 + i * slot + slot / 2 - time.monotonic()))
            new = "green" if old == "blue" else "blue"
            began = time.monotonic()
            live[new] = run.server(new, ports[new]).start()
            run.proxy.switch(new, old)
            switched = time.monotonic()
            live.pop(old).stop()   # SIGTERM; Swoole's graceful stop, bounded by max_wait_time
            run.row.notes.append(f"cycle {i + 1} {old}->{new}: switch {switched - began:.1f}s, "
                                 f"stop {time.monotonic() - switched:.1f}s")
            old = new
        time.sleep(max(0.5, t0 + duration - time.monotonic()))
    finally:
        run.row.result = load.stop()


def stop_mid_request(run: Run, duration: float) -> None:
    if isinstance(run.proxy, Direct):
        raise ScenarioError("n/a: needs two upstreams behind a proxy")
    a = run.server("blue-a", max_wait_time=1).start()
    b = run.server("blue-b", max_wait_time=1).start()
    run.proxy.start([Pool("blue", [a, b], 100)])
    rounds = max(2, min(6, int(duration // 3)))
    load = mixed_load(run.proxy.port, rounds * 60, light=True).start()
    slow: list[Record] = []
    try:
        for n in range(rounds):
            wait_until(lambda: get_pool(run.proxy.port) == "blue-a" or None, 20,
                       "the proxy to route to blue-a again", interval=0.1)
            threads = [threading.Thread(target=slow_get, args=(run.proxy.port, f"slow-{n}-{i}", slow))
                       for i in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.3)  # all four started (1.5 s each), none finished
            a.stop()         # max_wait_time 1: the worker is killed ~1 s later, mid-request
            for t in threads:
                t.join(timeout=20)
            if n + 1 < rounds:
                a.start()
    finally:
        result = load.stop()
    result.records.extend(slow)
    run.row.result = result
    started = Counter(line["test_id"] for line in run.lines("started"))
    on_a = {line["test_id"] for line in run.lines("started") if line["name"] == "blue-a"}
    ok = sum(r.outcome == "ok" for r in slow)
    run.row.notes.append(f"slow GETs: {len(slow)}, {len(on_a)} were running on the stopped server; "
                         f"app ran them {sum(started[r.id] for r in slow)} times in all; "
                         f"client got 2xx for {ok}; "
                         + (", ".join(f"{r.id}:{r.outcome}{'(' + str(r.status) + ')' if r.status else ''}"
                                      for r in slow if r.id in on_a)))


def slow_get(port: int, test_id: str, out: list[Record]) -> None:
    """One GET /slow?ms=1500 on a new connection, sent once; its Record appended to out."""
    path = "/slow?ms=1500"
    at = time.monotonic()
    status, outcome, detail = None, "ok", ""
    try:
        conn = RawConnection(port, timeout=15)
        try:
            answer = conn.request(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  f"X-Test-Id: {test_id}\r\n\r\n".encode())
        finally:
            conn.close()
        status = answer.status
        if not 200 <= status < 300:
            outcome, detail = "status", f"status {status}"
    except RequestFailed as exc:
        outcome, detail = exc.outcome, exc.detail
    out.append(Record(test_id, "GET", path, False, outcome, status, detail, 0, 0.0,
                      time.monotonic() - at))


SCENARIOS = {
    "recycle-5000": recycle(5000),
    "recycle-300": recycle(300),
    "deploys": deploys,
    "stop-mid-request": stop_mid_request,
}


def run_one(scenario: str, target: str, tmp: Path, duration: float) -> Row:
    run = Run(scenario, target, tmp)
    began = time.monotonic()
    try:
        SCENARIOS[scenario](run, duration)
    except ScenarioError as exc:
        run.row.error = str(exc)
    except Exception as exc:  # one broken run must not hide the others' results
        run.row.error = f"{type(exc).__name__}: {exc}"
    finally:
        run.close()
    row = run.row
    if row.result is not None:
        row.applied = run.lines("applied")
        row.started = run.lines("started")
        row.notes.insert(0, f"{time.monotonic() - began:.0f}s, {outcome_note(row.result)}")
        if row.result.stuck_threads:
            row.notes.append(f"{row.result.stuck_threads} load threads did not stop")
    return row


# --------------------------------------------------------------------------- report

COLUMNS = ["requests", "failed GET", "failed POST", "failed POST+key", "applied twice",
           "ran twice", "answered, not applied", "failed, applied", "took >1s"]


def print_table(rows: list[Row]) -> None:
    widths = [16, 13] + [max(8, len(c)) for c in COLUMNS]
    head = "  ".join(h.ljust(w) if i < 2 else h.rjust(w)
                     for i, (h, w) in enumerate(zip(["scenario", "target"] + COLUMNS, widths)))
    print("\n" + head + "\n" + "-" * len(head))
    for row in rows:
        if row.result is None:
            cells = [row.scenario.ljust(widths[0]), row.target.ljust(widths[1]),
                     (row.error or "").splitlines()[0][:100]]
            print("  ".join(cells))
            continue
        n = row.numbers()
        cells = [row.scenario.ljust(widths[0]), row.target.ljust(widths[1])]
        cells += [str(n[c]).rjust(w) for c, w in zip(COLUMNS, widths[2:])]
        print("  ".join(cells) + (f"   ERROR: {row.error.splitlines()[0][:80]}" if row.error else ""))
    print("\nnotes:")
    for row in rows:
        if row.result is None and not row.error:
            continue
        twice = row.numbers()["_twice_by_kind"] if row.result else {}
        print(f"  {row.scenario} / {row.target}:")
        for note in row.notes + ([f"applied twice by kind: {twice}"] if twice else []):
            print(f"      {note}")
        if row.error:
            print("      error: " + row.error.replace("\n", "\n             "))


def machine_info(swoole: str) -> str:
    def first_line(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unavailable"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    return (f"machine: {os.cpu_count()} cpus ({cpu}), kernel {platform.release()}, "
            f"load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n"
            f"         Swoole {swoole}; {first_line(['php', '-v'])}; {first_line(['haproxy', '-v'])}; "
            f"Python {platform.python_version()}")


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30, help="seconds of load per run (default 30)")
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"scenarios: {','.join(SCENARIOS)}")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"targets: {','.join(TARGETS)}")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs, logs and applied logs")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if set(args.only) - set(SCENARIOS) or not args.only:
        p.error(f"--only: choose from {','.join(SCENARIOS)}")
    if set(args.targets) - set(TARGETS) or not args.targets:
        p.error(f"--targets: choose from {','.join(TARGETS)}")
    if args.duration < 2:
        p.error("--duration must be at least 2")
    return args


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)  # so every finally: (cleanup) runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    swoole = require_swoole()
    if shutil.which("haproxy") is None and any(t.startswith("haproxy") for t in args.targets):
        raise SystemExit("haproxy not found: apt-get install -y haproxy")
    print(machine_info(swoole))
    print(f"plan: {', '.join(args.only)} x {', '.join(args.targets)}; {args.duration:g}s of load "
          f"per run; 16 GET {GET_PATH} + 2 POST /write + 2 keyed POST /write connections", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="swoole-faults-"))
    rows: list[Row] = []
    try:
        for scenario in args.only:
            for target in args.targets:
                row = run_one(scenario, target, tmp, args.duration)
                rows.append(row)
                status = (f"{row.result.requests} requests, {outcome_note(row.result)}"
                          if row.result else row.error.splitlines()[0])
                print(f"{scenario:<16} {target:<13} {status}", flush=True)
        print_table(rows)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        # Each Run cleaned up its own processes; swoolekit's atexit sweeps any server left.
        if args.keep_tmp:
            print(f"\nconfigs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
