#!/usr/bin/env python3
"""`workers: 1` and `workers: 2` beside HAProxy `nbthread 1` and `nbthread 2`, in one run (issue 12).

    python benchmarks/workers.py [--rounds N] [--duration S] [--wrk-threads T] [--connections C]
                                 [--switchyard-cmd CMD] [--json FILE] [--keep-tmp]

What it does (benchmarks/README.md, "Workers", says why):
  1. starts one nginx serving `200 ok` on two loopback ports (run.py's upstreams);
  2. starts four proxies in front of them, configured as in run.py (80/20 weights, sticky
     cookies, access log on): HAProxy with nbthread 1 and 2, switchyard with workers 1 and 2;
  3. runs wrk against each for several rounds, rotating the order each round, and reads
     from /proc around every run the CPU time of each process tree (switchyard's main
     process and its workers), of the upstream nginx, of wrk and of the whole machine;
  4. for `workers: 2`, reads `GET /status` over the admin socket before, during and after
     every run: the requests each worker served (the difference) and the client
     connections each held (mid-run);
  5. prints medians, the ratios switchyard-wN / haproxy-tN, each one's scaling from 1 to 2,
     the CPU budget of the machine, the spread over the workers and their memory.

Standard library only, plus run.py beside it. Every process it starts is killed (by process
group) on exit, and the whole run is bounded by an alarm.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import signal
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benchmarks/run.py: processes, configs, wrk, /proc readings)
from run import (  # noqa: E402
    STARTUP_TIMEOUT, Supervisor, Target, cpu_seconds, free_ports, haproxy_conf, machine_info,
    pool_split, process_tree, raise_own_fd_limit, run_wrk, start_upstreams, summarize,
    switchyard_conf, tail, wait_until_serving,
)

# name -> (product, threads or workers)
TARGETS = {
    "haproxy-t1": ("haproxy", 1),
    "haproxy-t2": ("haproxy", 2),
    "switchyard-w1": ("switchyard", 1),
    "switchyard-w2": ("switchyard", 2),
}
# wrk -t1 -c50: chosen by measurement, see README "Workers" (-t2 cost more CPU, gained nothing).
WRK_THREADS = 1
WRK_CONNECTIONS = 50
STATUS_TIMEOUT = 5.0  # seconds for one GET /status over the admin socket
ROUND_SLACK = 45.0     # per wrk run, beyond its duration: /status calls, readings, wrk's own bound


# --------------------------------------------------------------------------- starting the targets

def start_haproxy(sup: Supervisor, tmp: Path, name: str, port: int, blue: int, green: int,
                  nofile: int, nbthread: int) -> Target:
    d = tmp / name
    d.mkdir()
    maxconn = min(20000, (nofile - 100) // 2)   # as run.py: 2 fds per connection must fit
    (d / "haproxy.cfg").write_text(haproxy_conf(port, blue, green, maxconn, log=True,
                                                nbthread=nbthread))
    log = d / "access.log"
    proc = sup.start(name, ["/usr/sbin/haproxy", "-db", "-f", str(d / "haproxy.cfg")], d,
                     nofile=nofile, stdout_path=log)
    return Target(name, port, proc, log)


def start_switchyard(sup: Supervisor, tmp: Path, name: str, port: int, blue: int, green: int,
                     nofile: int, command: str, workers: int) -> Target | str:
    exe = shutil.which(command)
    if exe is None:
        return f"`{command}` not found on PATH"
    d = tmp / name
    d.mkdir()
    (d / "switchyard.yaml").write_text(switchyard_conf(d, port, blue, green, workers=workers))
    log = d / "access.log"   # stdout, which the workers inherit: the JSON access log
    proc = sup.start(name, [exe, "serve", "-c", str(d / "switchyard.yaml")], d,
                     nofile=nofile, stdout_path=log)
    return Target(name, port, proc, log)


def start_targets(sup: Supervisor, tmp: Path, blue: int, green: int, nofile: int,
                  command: str) -> list[Target]:
    ports = dict(zip(TARGETS, free_ports(len(TARGETS))))
    targets = []
    for name, (product, n) in TARGETS.items():
        if product == "haproxy":
            target = start_haproxy(sup, tmp, name, ports[name], blue, green, nofile, n)
        else:
            target = start_switchyard(sup, tmp, name, ports[name], blue, green, nofile, command, n)
        if isinstance(target, str):
            print(f"SKIP {name}: {target}")
            continue
        why = wait_until_serving(target.port, target.proc, STARTUP_TIMEOUT)
        if why:
            print(f"SKIP {name}: {why}")
            for f in sorted((tmp / name).glob("*.stderr")):
                if tail(f):
                    print("\n".join("  " + line for line in tail(f).splitlines()))
            sup.stop(name)
            continue
        targets.append(target)
    return targets


def admin_socket(tmp: Path, target: Target) -> Path | None:
    return tmp / target.name / "admin.sock" if TARGETS[target.name][0] == "switchyard" else None


# --------------------------------------------------------------------------- readings

class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket (the admin API)."""

    def __init__(self, path: Path, timeout: float = STATUS_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def admin_status(path: Path) -> dict:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", "/status")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET /status answered {resp.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


def workers_of(status: dict) -> dict[int, dict]:
    """pid -> {requests, inflight, clients, restarts} from a status (empty for workers: 1)."""
    return {w["pid"]: w for w in status.get("workers", [])}


def own_cpu(pid: int) -> float:
    """CPU seconds of one process (all its threads), without its children's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / run.CLK_TCK


def machine_jiffies() -> dict[str, int]:
    """The first line of /proc/stat: the whole machine, all CPUs, in clock ticks."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    values = Path("/proc/stat").read_text().splitlines()[0].split()[1:1 + len(names)]
    return dict(zip(names, map(int, values)))


def children_cpu() -> float:
    """CPU seconds of the children this harness has waited for (wrk, once it has exited)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def connections_by_pid(port: int, pids) -> dict[int, int]:
    """Established TCP connections to `port` whose accepted end each process holds.

    Read from /proc (the socket inodes of /proc/net/tcp, matched against each process's
    fd table), as tests/test_workers.py does: a check of `clients` in /status that does not
    go through the code under test."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    out = {}
    for pid in pids:
        held = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                held += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
            except OSError:
                continue
        out[pid] = held
    return out


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes that map them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- one round

def measure_round(target: Target, duration: float, threads: int, connections: int,
                  upstream_pid: int, admin: Path | None) -> dict:
    """One wrk run; CPU of the target's tree, of its main process alone, of the upstream
    nginx, of wrk and of the machine read around it; per-worker counts from /status."""
    root = target.proc.pid
    workers_before = workers_of(admin_status(admin)) if admin else {}
    mid: dict = {}

    def read_mid() -> None:
        try:
            mid.update(workers_of(admin_status(admin)))
            mid["proc"] = connections_by_pid(target.port, workers_before)
        except (OSError, RuntimeError, ValueError) as exc:
            mid["error"] = repr(exc)

    timer = threading.Timer(duration / 2, read_mid) if workers_before else None
    jiffies0, wrk0 = machine_jiffies(), children_cpu()
    tree0, main0, up0 = sum(cpu_seconds(root)), own_cpu(root), sum(cpu_seconds(upstream_pid))
    user0, sys0 = cpu_seconds(root)
    each0 = {pid: own_cpu(pid) for pid in workers_before}
    t0 = time.monotonic()
    if timer:
        timer.start()
    try:
        result = run_wrk(target.port, duration, connections=connections, threads=threads)
    finally:
        if timer:
            timer.cancel()
            timer.join()
    wall = time.monotonic() - t0
    user1, sys1 = cpu_seconds(root)
    tree1, main1, up1 = user1 + sys1, own_cpu(root), sum(cpu_seconds(upstream_pid))
    jiffies1, wrk1 = machine_jiffies(), children_cpu()
    each = {pid: own_cpu(pid) - each0[pid] for pid in each0}
    workers_after = workers_of(admin_status(admin)) if admin else {}

    per_req = 1e6 / max(result["requests"], 1)
    result.update({
        "cpu_s": tree1 - tree0,
        "cpu_us_per_req": (tree1 - tree0) * per_req,
        "user_us_per_req": (user1 - user0) * per_req,
        "sys_us_per_req": (sys1 - sys0) * per_req,
        "main_us_per_req": (main1 - main0) * per_req,
        "main_ms_per_s": (main1 - main0) * 1e3 / wall,
        "nginx_us_per_req": (up1 - up0) * per_req,
        "wrk_us_per_req": (wrk1 - wrk0) * per_req,
        "budget": cpu_budget(jiffies0, jiffies1, {
            "proxy": tree1 - tree0, "nginx": up1 - up0, "wrk": wrk1 - wrk0}),
        "wall_s": wall,
    })
    if workers_before:
        result["workers"] = worker_spread(workers_before, mid, workers_after, each)
    return result


def cpu_budget(before: dict, after: dict, known: dict[str, float]) -> dict[str, float]:
    """Where the machine's CPU went during one run, as % of all its CPUs together.

    `rest` is busy time none of the three accounts for: other tenants (the test suite),
    this harness, and (only on kernels with CONFIG_IRQ_TIME_ACCOUNTING) softirq time,
    which tick-based accounting charges to the process it interrupted."""
    delta = {k: after[k] - before[k] for k in after}
    total = sum(delta.values()) or 1
    pct = {name: 100 * seconds * run.CLK_TCK / total for name, seconds in known.items()}
    idle = 100 * (delta["idle"] + delta["iowait"]) / total
    steal = 100 * delta["steal"] / total
    pct["rest"] = max(0.0, 100 - idle - steal - sum(pct.values()))
    pct["idle"], pct["steal"] = idle, steal
    return pct


def worker_spread(before: dict[int, dict], mid: dict, after: dict[int, dict],
                  cpu: dict[int, float]) -> dict:
    """Requests each worker served during the run, its CPU seconds, and the client
    connections it held mid-run (by /status and by /proc)."""
    pids = sorted(set(before) | set(after))
    served = {pid: after.get(pid, {}).get("requests", 0) - before.get(pid, {}).get("requests", 0)
              for pid in pids}
    clients = {pid: mid.get(pid, {}).get("clients") for pid in pids}
    restarts = sum(w.get("restarts", 0) for w in after.values()) - \
        sum(w.get("restarts", 0) for w in before.values())
    total = sum(served.values()) or 1
    return {"pids": pids, "requests": {str(p): served[p] for p in pids},
            "share": {str(p): served[p] / total for p in pids},
            "clients_mid_run": {str(p): clients[p] for p in pids},
            "proc_conns_mid_run": {str(p): mid.get("proc", {}).get(p) for p in pids},
            "cpu_s": {str(p): cpu.get(p) for p in pids},
            "max_min_requests": max_min(served.values()),
            "restarts": restarts, "mid_error": mid.get("error"),
            "pids_changed": set(before) != set(after)}


def max_min(values) -> float | None:
    values = list(values)
    if not values or min(values) <= 0:
        return None   # one worker served nothing: no finite ratio
    return max(values) / min(values)


# --------------------------------------------------------------------------- reporting

def ratio(a: dict, b: dict, key: str) -> float | None:
    return a[key] / b[key] if a.get(key) and b.get(key) else None


def paired(ta: Target, tb: Target, key: str) -> float | None:
    """Median over rounds of a/b within the same round (cancels part of the drift)."""
    by_round = {r["round"]: r for r in tb.rounds}
    values = [r[key] / by_round[r["round"]][key] for r in ta.rounds
              if r["round"] in by_round and r.get(key) and by_round[r["round"]].get(key)]
    return statistics.median(values) if values else None


def f(value, spec: str) -> str:
    return run.fmt(value, spec)


def print_table(summaries: dict[str, dict], targets: list[Target]) -> None:
    head = (f"{'target':<14} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} "
            f"{'user':>5} {'sys':>5} {'main':>5} {'errors':>6}")
    print("\nMedians over rounds (CPU = whole process tree; main = switchyard's main process "
          "alone, or HAProxy's one process; errors = socket errors + non-2xx, all rounds)")
    print(head)
    print("-" * len(head))
    for t in targets:
        s = summaries[t.name]
        main = statistics.median(r["main_us_per_req"] for r in t.rounds) if t.rounds else None
        print(f"{t.name:<14} {f(s.get('rps'), '8.0f')}"
              f" {run.fmt(s.get('p50_us'), '7.2f', 1e-3)} {run.fmt(s.get('p99_us'), '7.2f', 1e-3)} "
              f"{f(s.get('cpu_us_per_req'), '10.1f')} {f(s.get('user_us_per_req'), '5.1f')} "
              f"{f(s.get('sys_us_per_req'), '5.1f')} {f(main, '5.1f')} {f(s.get('errors'), '6.0f')}")


def print_ratios(summaries: dict[str, dict], by_name: dict[str, Target]) -> dict:
    out: dict = {}
    print("\nRatios (of the medians; in brackets the median of same-round ratios)")
    pairs = [("switchyard-w1", "haproxy-t1"), ("switchyard-w2", "haproxy-t2"),
             ("haproxy-t2", "haproxy-t1"), ("switchyard-w2", "switchyard-w1")]
    for a, b in pairs:
        if a not in by_name or b not in by_name:
            continue
        row = {}
        for label, key in (("throughput", "rps"), ("CPU/req", "cpu_us_per_req"), ("p99", "p99_us")):
            row[label] = (ratio(summaries[a], summaries[b], key), paired(by_name[a], by_name[b], key))
        kind = "scaling 2 vs 1" if a.split("-")[0] == b.split("-")[0] else "vs HAProxy"
        print(f"  {a + ' / ' + b:<30} ({kind:<14})  " + "  ".join(
            f"{label} {f(m, '5.2f')} [{f(p, '4.2f')}]" for label, (m, p) in row.items()))
        out[f"{a}/{b}"] = {label: {"of_medians": m, "same_round": p} for label, (m, p) in row.items()}
    return out


def print_budget(targets: list[Target]) -> dict:
    keys = ("proxy", "nginx", "wrk", "rest", "idle", "steal")
    print(f"\nWhere the machine's {os.cpu_count()} CPUs went during the runs "
          f"(median over rounds, % of all CPUs together; rest = every other process: other tenants, "
          f"this harness), and the CPU per request of nginx and wrk")
    print(f"{'target':<14} " + " ".join(f"{k:>6}" for k in keys) + f" {'nginx us/req':>12} {'wrk us/req':>10}")
    out = {}
    for t in targets:
        if not t.rounds:
            continue
        med = {k: statistics.median(r["budget"][k] for r in t.rounds) for k in keys}
        for k in ("nginx_us_per_req", "wrk_us_per_req"):
            med[k] = statistics.median(r[k] for r in t.rounds)
        out[t.name] = med
        print(f"{t.name:<14} " + " ".join(f"{med[k]:6.1f}" for k in keys)
              + f" {med['nginx_us_per_req']:12.1f} {med['wrk_us_per_req']:10.1f}")
    for t in targets:
        if t.name == "switchyard-w2" and t.rounds:
            ms = statistics.median(r["main_ms_per_s"] for r in t.rounds)
            print(f"{t.name}: the main process (control plane: health checks, 250 ms reports, "
                  f"/status) used {ms:.1f} ms of CPU per second of load ({ms / 10:.2f}% of one CPU)")
    return out


def print_spread(t: Target) -> None:
    rounds = [r for r in t.rounds if "workers" in r]
    if not rounds:
        return
    print(f"\n{t.name}: requests per worker (from GET /status before and after each run) and "
          f"client connections held mid-run (by /status / by /proc), CPU seconds of each worker")
    for r in rounds:
        w = r["workers"]
        served = sum(w["requests"].values())
        cells = "  ".join(f"pid {p}: {w['requests'][str(p)]:7d} ({100 * w['share'][str(p)]:4.1f}%, "
                          f"{w['clients_mid_run'][str(p)]}/{w['proc_conns_mid_run'][str(p)]} conns, "
                          f"cpu {f(w['cpu_s'][str(p)], '.2f')} s = "
                          f"{f(per_request(w['cpu_s'][str(p)], w['requests'][str(p)]), '.1f')} us/req)"
                          for p in w["pids"])
        extra = "".join([f"  RESTARTS {w['restarts']}" if w["restarts"] else "",
                         "  WORKER PIDS CHANGED" if w["pids_changed"] else "",
                         f"  mid-run status failed: {w['mid_error']}" if w["mid_error"] else ""])
        print(f"  round {r['round']}: {cells}  max/min {f(w['max_min_requests'], '4.2f')}  "
              f"(workers counted {served}, wrk {r['requests']}){extra}")


def per_request(seconds: float | None, requests: int) -> float | None:
    return None if seconds is None or requests <= 0 else seconds * 1e6 / requests


def memory(t: Target) -> dict:
    """RSS and PSS of each process of the target, after the load."""
    procs = {}
    for pid in process_tree(t.proc.pid):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        role = "worker" if "proxy.workers.child" in cmd else "main"
        procs[pid] = {"role": role, "rss_kb": status_kb(pid, "VmRSS"), "pss_kb": pss_kb(pid)}
    return procs


def print_memory(targets: list[Target]) -> dict:
    print("\nMemory after the load, idle (RSS; PSS in brackets, shared pages divided; MB = 10^6 bytes)")
    out = {}
    for t in targets:
        if TARGETS[t.name][0] != "switchyard" or t.proc.poll() is not None:
            continue
        procs = out[t.name] = memory(t)
        cells = "  ".join(f"{p['role']} {p['rss_kb'] * run.KIB / 1e6:.1f} MB "
                          f"[{p['pss_kb'] * run.KIB / 1e6:.1f}]" for p in procs.values())
        total = sum(p["rss_kb"] for p in procs.values()) * run.KIB / 1e6
        print(f"  {t.name:<14} {cells}  (total RSS {total:.1f} MB)")
    return out


def log_lines(t: Target) -> dict:
    """Lines in the access log (the workers share one stdout, opened for appending) and
    how many are not whole JSON: two workers' batches must not interleave mid-line."""
    lines = bad = 0
    with open(t.access_log, "rb") as log:
        for line in log:
            lines += 1
            try:
                json.loads(line)
            except ValueError:
                bad += 1
    return {"lines": lines, "not_json": bad}


def print_logs(targets: list[Target]) -> dict:
    out = {}
    for t in targets:
        if TARGETS[t.name][0] == "switchyard" and t.access_log and t.access_log.exists():
            out[t.name] = log_lines(t)
            served = sum(r["requests"] for r in t.rounds)
            print(f"{t.name}: access log {out[t.name]['lines']} lines ({out[t.name]['not_json']} not "
                  f"JSON) for {served} requests in the measured runs (plus warm-up and checks)")
    return out


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rotating rounds per target (default 3)")
    p.add_argument("--duration", type=float, default=8, help="seconds per wrk run (default 8)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured wrk per target first")
    p.add_argument("--wrk-threads", type=int, default=WRK_THREADS, help=f"wrk -t (default {WRK_THREADS})")
    p.add_argument("--connections", type=int, default=WRK_CONNECTIONS,
                   help=f"wrk -c (default {WRK_CONNECTIONS})")
    p.add_argument("--switchyard-cmd", default="switchyard", help="switchyard executable (default: on PATH)")
    p.add_argument("--json", type=Path, help="also write raw results to this file")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs for inspection")
    p.add_argument("--wrk-check", action="store_true",
                   help="only compare wrk -t1 with -t2 (direct and on the 2-CPU targets), then exit")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.wrk_threads < 1 or args.connections < 1:
        p.error("--rounds, --duration, --wrk-threads and --connections must be at least 1")
    return args


def time_budget(args: argparse.Namespace) -> int:
    """Seconds the whole run may take before the alarm ends it (cleanup included)."""
    starts = (len(TARGETS) + 1) * (STARTUP_TIMEOUT + 5)
    checks = len(TARGETS) * (args.warmup + 30)          # pool split + warm-up
    rounds = args.rounds * len(TARGETS) * (args.duration + ROUND_SLACK)
    return int(starts + checks + rounds + 60)


def run_benchmark(args: argparse.Namespace, sup: Supervisor, tmp: Path, nofile: int) -> dict:
    blue, green = free_ports(2)
    start_upstreams(sup, tmp, blue, green)
    upstream_pid = sup.procs["upstream"].pid
    targets = start_targets(sup, tmp, blue, green, nofile, args.switchyard_cmd)
    if not targets:
        raise SystemExit("nothing to measure")
    for t in targets:
        split = pool_split(t.port)
        print(f"{t.name}: pool split of 100 cookie-less requests: {split}")
        if not 60 <= split.get("blue", 0) <= 95 or not split.get("green"):
            print(f"WARNING: {t.name} does not split traffic as configured between the pools")
        run_wrk(t.port, args.warmup, connections=args.connections, threads=args.wrk_threads)

    for rnd in range(args.rounds):
        shift = rnd % len(targets)
        for t in targets[shift:] + targets[:shift]:
            if t.failed:
                continue
            if t.proc.poll() is not None:
                t.failed = f"process exited with {t.proc.returncode} before round {rnd + 1}"
                print(f"{t.name}: {t.failed}")
                continue
            res = measure_round(t, args.duration, args.wrk_threads, args.connections,
                                upstream_pid, admin_socket(tmp, t))
            res["round"] = rnd + 1
            t.rounds.append(res)
            b = res["budget"]
            print(f"round {rnd + 1} {t.name:<14} {res['rps']:8.0f} req/s  p50 {res['p50_us'] / 1e3:5.2f} ms  "
                  f"p99 {res['p99_us'] / 1e3:5.2f} ms  cpu {res['cpu_us_per_req']:5.1f} us/req "
                  f"(main {res['main_us_per_req']:4.1f})  machine: proxy {b['proxy']:.0f}% "
                  f"nginx {b['nginx']:.0f}% wrk {b['wrk']:.0f}% rest {b['rest']:.0f}% idle {b['idle']:.0f}%"
                  + (f"  ERRORS {res['socket_errors']} socket, {res['non_2xx']} non-2xx"
                     if res["socket_errors"] or res["non_2xx"] else ""), flush=True)

    by_name = {t.name: t for t in targets}
    summaries = {t.name: summarize(t) for t in targets}
    print_table(summaries, targets)
    rel = print_ratios(summaries, by_name)
    budget = print_budget(targets)
    for t in targets:
        print_spread(t)
    mem = print_memory(targets)
    logs = print_logs(targets)
    return {"settings": {"rounds": args.rounds, "duration_s": args.duration,
                         "wrk": f"-t{args.wrk_threads} -c{args.connections} --latency",
                         "fd_limit": nofile, "weights": run.WEIGHTS,
                         "switchyard_cmd": args.switchyard_cmd},
            "rounds": {t.name: t.rounds for t in targets},
            "failed": {t.name: t.failed for t in targets if t.failed},
            "summary": summaries, "ratios": rel, "cpu_budget": budget, "memory": mem,
            "access_log": logs}


def wrk_check(args: argparse.Namespace, sup: Supervisor, tmp: Path, nofile: int) -> dict:
    """wrk -t1 against -t2 at the same -c, alternating, on nginx directly and on the two
    2-CPU targets: is wrk's one thread the limit, and what does a second one cost?"""
    blue, green = free_ports(2)
    start_upstreams(sup, tmp, blue, green)
    targets = {t.name: t for t in start_targets(sup, tmp, blue, green, nofile, args.switchyard_cmd)}
    checked = [("direct", blue, None)] + [(name, targets[name].port, targets[name].proc.pid)
                                          for name in ("haproxy-t2", "switchyard-w2") if name in targets]
    out: dict = {}
    for rnd in range(args.rounds):
        for name, port, pid in checked:
            for threads in ((1, 2) if rnd % 2 == 0 else (2, 1)):
                cpu0, wrk0 = sum(cpu_seconds(pid)) if pid else 0.0, children_cpu()
                r = run_wrk(port, args.duration, connections=args.connections, threads=threads)
                cpu1, wrk1 = sum(cpu_seconds(pid)) if pid else 0.0, children_cpu()
                row = {"round": rnd + 1, "threads": threads, "rps": r["rps"], "p99_us": r["p99_us"],
                       "wrk_us_per_req": (wrk1 - wrk0) * 1e6 / max(r["requests"], 1),
                       "wrk_busy_per_thread": (wrk1 - wrk0) / args.duration / threads,
                       "proxy_us_per_req": (cpu1 - cpu0) * 1e6 / max(r["requests"], 1) if pid else None}
                out.setdefault(name, []).append(row)
                print(f"round {rnd + 1} {name:<14} wrk -t{threads} -c{args.connections}: "
                      f"{r['rps']:8.0f} req/s  p99 {r['p99_us'] / 1e3:6.2f} ms  wrk {row['wrk_us_per_req']:4.1f} "
                      f"us/req, each wrk thread busy {100 * row['wrk_busy_per_thread']:3.0f}%"
                      + (f"  proxy {row['proxy_us_per_req']:5.1f} us/req" if pid else ""), flush=True)
    print("\nMedians over rounds")
    for name, rows in out.items():
        for threads in (1, 2):
            mine = [r for r in rows if r["threads"] == threads]
            med = {k: statistics.median(r[k] for r in mine) for k in ("rps", "wrk_us_per_req",
                                                                      "wrk_busy_per_thread")}
            proxy = [r["proxy_us_per_req"] for r in mine if r["proxy_us_per_req"] is not None]
            print(f"  {name:<14} -t{threads}: {med['rps']:8.0f} req/s  wrk {med['wrk_us_per_req']:4.1f} us/req"
                  f"  each thread busy {100 * med['wrk_busy_per_thread']:3.0f}%"
                  + (f"  proxy {statistics.median(proxy):5.1f} us/req" if proxy else ""))
    return {"wrk_check": out}


def _on_alarm(signum, frame):
    print("\nTIME LIMIT: the run took longer than its budget; stopping", file=sys.stderr, flush=True)
    raise SystemExit(124)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, run._exit_on_signal)
    signal.signal(signal.SIGHUP, run._exit_on_signal)
    signal.signal(signal.SIGALRM, _on_alarm)
    budget = time_budget(args)
    signal.alarm(budget)
    info = machine_info()
    print(f"machine: {info['nproc']} cpus, {info['cpu']}, kernel {info['kernel']}, load {info['loadavg_at_start']}")
    print(f"         {info['haproxy']}; {info['nginx']}; {info['wrk']}")
    for tool in ("/usr/sbin/nginx", "/usr/sbin/haproxy", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install -y haproxy nginx wrk")
    nofile = raise_own_fd_limit(65536)
    print(f"plan: {args.rounds} rounds x {args.duration:g}s per target, wrk -t{args.wrk_threads} "
          f"-c{args.connections}, fd limit {nofile}, time limit {budget}s", flush=True)

    sup = Supervisor()
    tmp = Path(tempfile.mkdtemp(prefix="switchyard-workers-"))
    try:
        result = (wrk_check if args.wrk_check else run_benchmark)(args, sup, tmp, nofile)
        result["machine"] = info
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
            print(f"\nraw results: {args.json}")
        return 0
    finally:
        run.clean_up(sup, tmp, args.keep_tmp)


if __name__ == "__main__":
    run.entry(main)
