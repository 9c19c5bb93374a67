#!/usr/bin/env python3
"""Benchmark switchyard against HAProxy and nginx on the same upstreams, in one run.

    python benchmarks/run.py [--rounds N] [--duration S] [--only haproxy,nginx,switchyard,direct]
                             [--json FILE] [--idle-conns N] [--keep-tmp]

What it does (see benchmarks/README.md for the why of every choice):
  1. starts one nginx serving `200 ok` on two loopback ports (the blue and green pools);
  2. starts the proxies under test in front of them, each weighted 80/20;
  3. runs `wrk -t1 -c50 --latency` against every target for several rounds, rotating the
     order each round, and reads each proxy's CPU time from /proc around every run;
  4. opens N idle TCP connections to each proxy and reads its resident memory;
  5. prints medians, ratios to HAProxy and PASS/FAIL against the product targets (SPEC §4).

Only the standard library is used, so the harness runs before switchyard is installed.
Every process it starts is killed (by process group) on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import http.client
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ALL_TARGETS = ["direct", "haproxy", "haproxy-nolog", "nginx", "caddy", "switchyard",
               "switchyard-pure"]
# Targets whose CPU and memory we measure.  haproxy-nolog is HAProxy without its access
# log (one synchronous line per request to stdout), so the cost of that line is printed.
# switchyard-pure is this tree's proxy/ without its compiled modules (issue 11: the
# benchmark reports both): the fallback `pip install .` gives without a C compiler.
PROXIES = ["haproxy", "haproxy-nolog", "nginx", "caddy", "switchyard", "switchyard-pure"]

WRK_THREADS = 1
WRK_CONNECTIONS = 50
ONE_CONNECTION_S = 3.0       # seconds of wrk -c1 per target and round: latency unloaded
WEIGHTS = {"blue": 80, "green": 20}

# Product targets (docs/SPEC.md §4 and issue 11), as ratios to HAProxy in the same run.
MAX_THROUGHPUT_RATIO = 1.0   # switchyard req/s >= 1.0 x HAProxy
MAX_P99_RATIO = 1.2          # switchyard p99 <= 1.2 x HAProxy
MAX_CPU_RATIO = 1.0          # switchyard CPU per request <= 1.0 x HAProxy
MAX_ADDED_P50_US = 20.0      # at 1 connection, p50 added over direct <= HAProxy's + 20 us
MAX_IDLE_RSS_MB = 100.0      # absolute, with the idle connections open; MB = 10^6 bytes

STARTUP_TIMEOUT = 10.0       # seconds a server gets to accept connections and answer 200
CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB = 1024  # /proc reports kB that are really KiB


# --------------------------------------------------------------------------- processes

def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGKILL the child if this harness dies (even by SIGKILL).

    try/finally covers every exit Python sees; this covers the ones it does not."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Supervisor:
    """Starts servers in their own process groups and kills every group on stop_all()."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], log_dir: Path, nofile: int | None = None,
              stdout_path: Path | None = None, env: dict | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        def preexec() -> None:
            _die_with_parent()
            if nofile:
                # Idle-connection test: the server must be allowed to hold that many sockets.
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

        stdout = open(stdout_path or log_dir / f"{name}.stdout", "ab")
        stderr = open(log_dir / f"{name}.stderr", "ab")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                    start_new_session=True, preexec_fn=preexec,
                                    env={**os.environ, **env} if env else None, cwd=cwd)
        finally:
            stdout.close()
            stderr.close()
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            _kill_group(proc)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def _kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; workers (nginx) may still be finishing: make sure of them too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- /proc readings

def process_tree(root: int) -> list[int]:
    """root and all its live descendants (nginx and haproxy masters have workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds summed over the tree: utime+cutime, stime+cstime.

    Counting cutime/cstime keeps the sums monotonic when a child exits and is reaped
    between two readings (its time moves into the parent's c-fields).  The total is
    exact; the kernel splits it into user and system by sampling, so the split is
    an estimate."""
    user = system = 0
    for pid in process_tree(root):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is field 3 (state) of proc(5); utime..cstime are fields 14..17.
        user += int(fields[11]) + int(fields[13])
        system += int(fields[12]) + int(fields[14])
    return user / CLK_TCK, system / CLK_TCK


def rss_kb(root: int) -> int:
    """VmRSS summed over the tree (shared pages of master+worker are counted twice)."""
    total = 0
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def open_fds(root: int) -> int:
    total = 0
    for pid in process_tree(root):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


# --------------------------------------------------------------------------- readiness

def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open until all are picked, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(port: int, timeout: float = 2.0) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def wait_until_serving(port: int, proc: subprocess.Popen | None, timeout: float) -> str | None:
    """Poll until GET / answers 200. Returns None when ready, else why not.

    200 (not just an open port) because a proxy may listen before its health checks have
    marked any pool healthy, and we must not measure a wall of 503s."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return f"exited with code {proc.returncode}"
        try:
            status, _ = http_get(port, timeout=1.0)
            if status == 200:
                return None
            last = f"answered {status}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    return f"not serving after {timeout:.0f}s ({last})"


def pool_split(port: int, requests: int = 100) -> dict[str, int]:
    """Send cookie-less requests and count which upstream answered (X-Pool header).

    A sanity check that the 80/20 weights are really configured on every proxy."""
    counts: dict[str, int] = {}
    for _ in range(requests):
        try:
            _, headers = http_get(port)
        except OSError:
            headers = {}
        pool = headers.get("x-pool", "?")
        counts[pool] = counts.get(pool, 0) + 1
    return counts


# --------------------------------------------------------------------------- configs

def nginx_temp_paths(prefix: Path) -> str:
    # Debian compiles absolute temp paths under /var/lib/nginx; keep everything in our prefix.
    return "\n".join(f"  {kind}_temp_path {prefix}/{kind}_temp;"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def upstream_nginx_conf(prefix: Path, blue: int, green: int) -> str:
    # One worker: predictable on 2 cores shared by wrk, the proxy and this server.
    # keepalive_requests high so no side ever reconnects during a run.
    return f"""\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  default_type text/plain;
{nginx_temp_paths(prefix)}
  server {{ listen 127.0.0.1:{blue};  location / {{ add_header X-Pool blue;  return 200 "ok\\n"; }} }}
  server {{ listen 127.0.0.1:{green}; location / {{ add_header X-Pool green; return 200 "ok\\n"; }} }}
}}
"""


def haproxy_conf(port: int, blue: int, green: int, maxconn: int, log: bool = True,
                 nbthread: int = 1) -> str:
    # nbthread 1: compare like with like against a single-threaded Python proxy
    # (benchmarks/workers.py also runs nbthread 2 against `workers: 2`).
    # Logs go to stdout, which the harness sends to a file, like the other proxies' logs.
    logging = ("  log stdout format raw local0\n", "  log global\n  option httplog\n") if log \
        else ("", "")
    return f"""\
global
  nbthread {nbthread}
  maxconn {maxconn}
{logging[0]}
defaults
  mode http
{logging[1]}  option http-keep-alive
  option forwardfor
  http-reuse always
  maxconn {maxconn}
  timeout connect 2s
  timeout client 30s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s

frontend fe
  bind 127.0.0.1:{port}
  unique-id-format %[uuid]
  unique-id-header X-Request-Id
  default_backend pools

backend pools
  balance roundrobin
  cookie SERVERID insert indirect nocache
  server blue 127.0.0.1:{blue} weight {WEIGHTS['blue']} cookie blue
  server green 127.0.0.1:{green} weight {WEIGHTS['green']} cookie green
"""


def nginx_proxy_conf(prefix: Path, port: int, blue: int, green: int, nofile: int) -> str:
    # worker_connections counts upstream connections too; leave room under the fd limit.
    connections = max(1024, nofile - 200)
    return f"""\
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
  log_format bench '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                   '$request_time $upstream_addr $request_id';
  access_log {prefix}/access.log bench buffer=64k flush=1s;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_header_timeout 10s;
{nginx_temp_paths(prefix)}
  upstream pools {{
    server 127.0.0.1:{blue} weight={WEIGHTS['blue']};
    server 127.0.0.1:{green} weight={WEIGHTS['green']};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://pools;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Request-Id $request_id;
    }}
  }}
}}
"""


def switchyard_conf(tmp: Path, port: int, blue: int, green: int, workers: int | None = None) -> str:
    # `workers` is written only when asked for, so run.py still benches trees older than it.
    return f"""\
listen: ["127.0.0.1:{port}"]
admin: {{socket: "{tmp}/admin.sock"}}
state_file: "{tmp}/state.json"
pools:
  blue:  {{upstreams: ["127.0.0.1:{blue}"]}}
  green: {{upstreams: ["127.0.0.1:{green}"]}}
weights: {{blue: {WEIGHTS['blue']}, green: {WEIGHTS['green']}}}
health: {{path: /, interval: 1s, timeout: 1s}}
log: {{access: true, format: json}}
""" + (f"workers: {workers}\n" if workers is not None else "")


# --------------------------------------------------------------------------- targets

@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen | None = None   # None for "direct": no proxy process to measure
    access_log: Path | None = None
    rounds: list[dict] = field(default_factory=list)
    idle: dict | None = None
    failed: str | None = None


def start_upstreams(sup: Supervisor, tmp: Path, blue: int, green: int) -> None:
    prefix = tmp / "upstream"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(upstream_nginx_conf(prefix, blue, green))
    proc = sup.start("upstream", ["/usr/sbin/nginx", "-p", str(prefix), "-e", str(prefix / "error.log"),
                                  "-c", str(conf), "-g", "daemon off;"], prefix)
    for port in (blue, green):
        why = wait_until_serving(port, proc, STARTUP_TIMEOUT)
        if why:
            raise SystemExit(f"upstream nginx on :{port} {why}\n{tail(prefix / 'error.log')}"
                             f"\n{tail(prefix / 'upstream.stderr')}")


def start_haproxy(sup: Supervisor, tmp: Path, port: int, blue: int, green: int, nofile: int,
                  name: str = "haproxy") -> Target:
    d = tmp / name
    d.mkdir()
    # HAProxy reserves about 2 fds per connection (client + server side) and refuses to
    # start if maxconn does not fit the fd limit, so maxconn is bounded by it.
    maxconn = min(20000, (nofile - 100) // 2)
    logged = name == "haproxy"
    (d / "haproxy.cfg").write_text(haproxy_conf(port, blue, green, maxconn, log=logged))
    log = d / "access.log"
    proc = sup.start(name, ["/usr/sbin/haproxy", "-db", "-f", str(d / "haproxy.cfg")], d,
                     nofile=nofile, stdout_path=log)
    return Target(name, port, proc, log if logged else None)


def start_nginx_proxy(sup: Supervisor, tmp: Path, port: int, blue: int, green: int, nofile: int) -> Target:
    d = tmp / "nginx"
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(nginx_proxy_conf(d, port, blue, green, nofile))
    proc = sup.start("nginx", ["/usr/sbin/nginx", "-p", str(d), "-e", str(d / "error.log"),
                               "-c", str(conf), "-g", "daemon off;"], d, nofile=nofile)
    return Target("nginx", port, proc, d / "access.log")


def caddy_conf(tmp: Path, port: int, blue: int, green: int) -> str:
    # Caddy 2.6 (Debian's) has no weighted balancing: new clients are spread evenly, then
    # kept on their pool by its cookie.  Its access log is JSON to a file, like ours, not
    # rolled at 100 MB (its default), so the bytes per request below count all of it.
    return f"""\
{{
  admin off
  auto_https off
}}
http://127.0.0.1:{port} {{
  log {{
    output file {tmp / "access.log"} {{
      roll_disabled
    }}
  }}
  reverse_proxy 127.0.0.1:{blue} 127.0.0.1:{green} {{
    lb_policy cookie switchyard_pool
  }}
}}
"""


def start_caddy(sup: Supervisor, tmp: Path, port: int, blue: int, green: int,
                nofile: int) -> Target | str:
    exe = shutil.which("caddy")
    if exe is None:
        return "caddy not found: apt-get install -y caddy"
    d = tmp / "caddy"
    d.mkdir()
    (d / "Caddyfile").write_text(caddy_conf(d, port, blue, green))
    # One OS thread running Go code, as HAProxy runs one thread and we one process.
    proc = sup.start("caddy", [exe, "run", "--config", str(d / "Caddyfile"), "--adapter",
                               "caddyfile"], d, nofile=nofile, env={"GOMAXPROCS": "1"})
    return Target("caddy", port, proc, d / "access.log")


def start_switchyard(sup: Supervisor, tmp: Path, port: int, blue: int, green: int, nofile: int,
                     command: str) -> Target | str:
    exe = shutil.which(command)
    if exe is None:
        return f"`{command}` not found on PATH"
    d = tmp / "switchyard"
    d.mkdir()
    (d / "switchyard.yaml").write_text(switchyard_conf(d, port, blue, green))
    log = d / "access.log"   # stdout: the JSON access log
    proc = sup.start("switchyard", [exe, "serve", "-c", str(d / "switchyard.yaml")], d,
                     nofile=nofile, stdout_path=log)
    return Target("switchyard", port, proc, log)


def hot_path_of(log: Path) -> str:
    """`hot_path` from switchyard's `server_started` line (stdout, with the access lines)."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                if '"server_started"' in line:
                    return json.loads(line).get("hot_path", "unknown (an older switchyard)")
    except (OSError, ValueError):
        pass
    return "unknown"


def start_switchyard_pure(sup: Supervisor, tmp: Path, port: int, blue: int, green: int,
                          nofile: int) -> Target:
    """This tree's proxy/ copied without its compiled modules, run as pure Python."""
    d = tmp / "switchyard-pure"
    d.mkdir()
    shutil.copytree(Path(__file__).resolve().parent.parent / "proxy", d / "tree" / "proxy",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    (d / "switchyard.yaml").write_text(switchyard_conf(d, port, blue, green))
    log = d / "access.log"
    # Run from its own directory: `python -m` puts the current one first on sys.path,
    # and a source tree there (built in place) would be imported instead of the copy.
    proc = sup.start("switchyard-pure", [sys.executable, "-m", "proxy.cli", "serve", "-c",
                                         str(d / "switchyard.yaml")], d, nofile=nofile,
                     stdout_path=log, env={"PYTHONPATH": str(d / "tree")}, cwd=d)
    return Target("switchyard-pure", port, proc, log)


def start_targets(sup: Supervisor, tmp: Path, wanted: list[str], blue: int, green: int,
                  nofile: int, switchyard_cmd: str) -> list[Target]:
    """Start every wanted proxy; one that cannot come up is reported and skipped."""
    ports = dict(zip(PROXIES, free_ports(len(PROXIES))))
    targets = []
    for name in wanted:
        if name == "direct":
            targets.append(Target("direct", blue))
            continue
        if name in ("haproxy", "haproxy-nolog"):
            target = start_haproxy(sup, tmp, ports[name], blue, green, nofile, name)
        elif name == "nginx":
            target = start_nginx_proxy(sup, tmp, ports[name], blue, green, nofile)
        elif name == "caddy":
            target = start_caddy(sup, tmp, ports[name], blue, green, nofile)
        elif name == "switchyard-pure":
            target = start_switchyard_pure(sup, tmp, ports[name], blue, green, nofile)
        else:
            target = start_switchyard(sup, tmp, ports[name], blue, green, nofile, switchyard_cmd)
        if isinstance(target, str):
            print(f"SKIP {name}: {target}")
            continue
        why = wait_until_serving(target.port, target.proc, STARTUP_TIMEOUT)
        if why:
            d = tmp / name
            print(f"SKIP {name}: {why}")
            for f in sorted(d.glob("*.stderr")) + sorted(d.glob("error.log")):
                if tail(f):
                    print(f"  --- {f.name} ---\n" + "\n".join("  " + l for l in tail(f).splitlines()))
            sup.stop(name)
            continue
        targets.append(target)
    return targets


# --------------------------------------------------------------------------- wrk

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text: str) -> float:
    """wrk latency ("812.00us", "1.23ms", "2.00s", "1.00m") in microseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_US[m.group(2)]


def parse_wrk(output: str) -> dict:
    def grab(pattern: str, default: str | None = None) -> str:
        m = re.search(pattern, output, re.M)
        if m:
            return m.group(1)
        if default is None:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return default

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "rps": float(grab(r"^Requests/sec:\s+([\d.]+)")),
        "requests": int(grab(r"^\s*(\d+) requests in")),
        "p50_us": to_us(grab(r"^\s+50%\s+(\S+)")),
        "p99_us": to_us(grab(r"^\s+99%\s+(\S+)")),
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non_2xx": int(grab(r"Non-2xx or 3xx responses:\s+(\d+)", "0")),
    }


def run_wrk(port: int, duration: float, connections: int = WRK_CONNECTIONS,
            threads: int = WRK_THREADS, headers: tuple[str, ...] = ()) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
            *(arg for h in headers for arg in ("-H", h)), f"http://127.0.0.1:{port}/"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        out, _ = proc.communicate(timeout=duration + 30)   # bounded even if wrk hangs
    except BaseException:
        _kill_group(proc, grace=1.0)
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}:\n{out}")
    return parse_wrk(out)


def measure_round(target: Target, duration: float) -> dict:
    """One wrk run, with the proxy's CPU time read around it; then a short one at a
    single connection, for the latency the proxy adds when nothing queues."""
    before = cpu_seconds(target.proc.pid) if target.proc else None
    result = run_wrk(target.port, duration)
    if target.proc:
        after = cpu_seconds(target.proc.pid)
        user, system = after[0] - before[0], after[1] - before[1]
        per_req = 1e6 / max(result["requests"], 1)
        result["cpu_s"] = user + system
        result["cpu_us_per_req"] = (user + system) * per_req
        result["user_us_per_req"] = user * per_req
        result["sys_us_per_req"] = system * per_req
    one = run_wrk(target.port, ONE_CONNECTION_S, connections=1)
    result["p50_1c_us"], result["p99_1c_us"] = one["p50_us"], one["p99_us"]
    result["socket_errors"] += one["socket_errors"]
    result["non_2xx"] += one["non_2xx"]
    return result


# --------------------------------------------------------------------------- idle memory

def raise_own_fd_limit(wanted: int) -> int:
    """Raise our soft RLIMIT_NOFILE as far as allowed; returns the limit now in force.

    Without CAP_SYS_RESOURCE the hard limit cannot be raised, so `wanted` may not be reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    for limit in (target, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_idle_connections(port: int, count: int, deadline: float, batch: int = 256) -> list[socket.socket]:
    """Open up to `count` connected TCP sockets to the port, in batches so the listen
    backlog is not overrun (dropped SYNs would cost a 1 s retransmit each)."""
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        while len(socks) < count and time.monotonic() < deadline:
            pending = []
            for _ in range(min(batch, count - len(socks) - len(pending))):
                s = socket.socket()
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", port))
                if err in (0, errno.EINPROGRESS):
                    pending.append(s)
                    sel.register(s, selectors.EVENT_WRITE)
                else:
                    s.close()
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.2):
                    s = key.fileobj
                    sel.unregister(s)
                    pending.remove(s)
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        socks.append(s)
                    else:
                        s.close()
            for s in pending:              # deadline reached with connects outstanding
                sel.unregister(s)
                s.close()
    finally:
        sel.close()
    return socks


def measure_idle_rss(target: Target, count: int) -> dict:
    """RSS of the proxy (all its processes) while `count` idle client connections are open."""
    pid = target.proc.pid
    rss_before = rss_kb(pid)
    fds_before = open_fds(pid)
    socks = open_idle_connections(target.port, count, deadline=time.monotonic() + 20)
    try:
        # Wait until the proxy has accepted them (its fd count grows), bounded, then let it settle.
        deadline = time.monotonic() + 10
        while open_fds(pid) - fds_before < len(socks) * 0.99 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        rss_after = rss_kb(pid)
        held = open_fds(pid) - fds_before
    finally:
        for s in socks:
            s.close()
    return {"connections_opened": len(socks), "connections_held": held,
            "rss_before_kb": rss_before, "rss_kb": rss_after,
            "rss_mb": rss_after * KIB / 1e6}


# --------------------------------------------------------------------------- reporting

def summarize(target: Target) -> dict:
    ok = [r for r in target.rounds if "rps" in r]
    if not ok:
        return {}
    s = {key: statistics.median(r[key] for r in ok)
         for key in ("rps", "p50_us", "p99_us", "p50_1c_us", "p99_1c_us")
         if all(key in r for r in ok)}   # workers.py measures no 1-connection run
    if target.proc:
        for key in ("cpu_us_per_req", "user_us_per_req", "sys_us_per_req"):
            s[key] = statistics.median(r[key] for r in ok)
    if target.idle:
        s["idle_rss_mb"] = target.idle["rss_mb"]
        s["idle_held"] = target.idle["connections_held"]
    s["errors"] = sum(r["socket_errors"] + r["non_2xx"] for r in ok)
    return s


def ratios(s: dict, ref: dict) -> dict:
    r = {}
    if ref.get("rps") and "rps" in s:
        r["throughput"] = s["rps"] / ref["rps"]
    if ref.get("p99_us") and "p99_us" in s:
        r["p99"] = s["p99_us"] / ref["p99_us"]
    if ref.get("cpu_us_per_req") and "cpu_us_per_req" in s:
        r["cpu"] = s["cpu_us_per_req"] / ref["cpu_us_per_req"]
    return r


def paired_ratios(target: Target, ref: Target) -> dict:
    """Median over rounds of (target / haproxy) within the same round.

    On a shared machine the load drifts between rounds; a same-round ratio cancels part of
    that drift. Saved in the JSON next to the ratio of medians, which the table shows."""
    ref_by_round = {r["round"]: r for r in ref.rounds}
    pairs = [(r, ref_by_round[r["round"]]) for r in target.rounds if r["round"] in ref_by_round]
    out = {}
    for name, key in (("throughput", "rps"), ("p99", "p99_us"), ("cpu", "cpu_us_per_req")):
        values = [a[key] / b[key] for a, b in pairs if a.get(key) and b.get(key)]
        if values:
            out[name] = statistics.median(values)
    return out


def checks(s: dict, r: dict, added_p50: dict) -> dict:
    """PASS/FAIL per product target; None when it could not be measured.  An error or a
    non-2xx answer fails the target: fast errors must not pass for throughput."""
    def check(value, ok):
        return None if value is None else bool(ok(value))
    mine, haproxy = added_p50.get("self"), added_p50.get("haproxy")
    return {
        "no socket errors, no non-2xx answers": check(s.get("errors"), lambda v: v == 0),
        f"p50 at 1 connection added over direct <= haproxy's + {MAX_ADDED_P50_US:g} us": check(
            None if mine is None or haproxy is None else mine - haproxy,
            lambda v: v <= MAX_ADDED_P50_US),
        f"throughput >= {MAX_THROUGHPUT_RATIO}x haproxy": check(r.get("throughput"), lambda v: v >= MAX_THROUGHPUT_RATIO),
        f"p99 <= {MAX_P99_RATIO}x haproxy": check(r.get("p99"), lambda v: v <= MAX_P99_RATIO),
        f"cpu/req <= {MAX_CPU_RATIO}x haproxy": check(r.get("cpu"), lambda v: v <= MAX_CPU_RATIO),
        f"idle rss <= {MAX_IDLE_RSS_MB:g} MB": check(s.get("idle_rss_mb"), lambda v: v <= MAX_IDLE_RSS_MB),
    }


def fmt(value, spec: str, scale: float = 1.0) -> str:
    """Format a number by `spec` (e.g. "9.0f"), or a right-aligned "-" when it is missing."""
    width = int(re.match(r"\d*", spec).group() or 0)
    return "-".rjust(width) if value is None else format(value * scale, spec)


def print_table(summaries: dict[str, dict], rel: dict[str, dict], idle_conns: int) -> None:
    head = (f"{'target':<13} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'1c p50':>7} "
            f"{'1c p99':>7} {'CPU us/req':>10} {'user':>5} {'sys':>5} {'RSS MB':>7} "
            f"{'held':>6} {'errors':>6}  {'x thr':>5} {'x p99':>5} {'x CPU':>5}")
    print(f"\nMedians (RSS with {idle_conns} idle connections; 'held' = connections the proxy "
          f"had accepted; '1c' = wrk -c1, ms; errors = socket errors + non-2xx, all rounds; "
          f"x = ratio to haproxy)")
    print(head)
    print("-" * len(head))
    for name, s in summaries.items():
        r = rel.get(name, {})
        print(f"{name:<13} {fmt(s.get('rps'), '8.0f')} {fmt(s.get('p50_us'), '7.2f', 1e-3)} "
              f"{fmt(s.get('p99_us'), '7.2f', 1e-3)} {fmt(s.get('p50_1c_us'), '7.3f', 1e-3)} "
              f"{fmt(s.get('p99_1c_us'), '7.3f', 1e-3)} {fmt(s.get('cpu_us_per_req'), '10.1f')} "
              f"{fmt(s.get('user_us_per_req'), '5.1f')} {fmt(s.get('sys_us_per_req'), '5.1f')} "
              f"{fmt(s.get('idle_rss_mb'), '7.1f')} {fmt(s.get('idle_held'), '6.0f')} "
              f"{fmt(s.get('errors'), '6.0f')}  {fmt(r.get('throughput'), '5.2f')} "
              f"{fmt(r.get('p99'), '5.2f')} {fmt(r.get('cpu'), '5.2f')}")


def print_checks(all_checks: dict[str, dict]) -> None:
    for name, cs in all_checks.items():
        label = "product targets" if name == "switchyard" else "same targets, for reference"
        print(f"\n{name} ({label}):")
        for what, ok in cs.items():
            print(f"  {'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}  {what}")


def machine_info() -> dict:
    def run(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unavailable"
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "haproxy": run(["/usr/sbin/haproxy", "-v"]), "nginx": run(["/usr/sbin/nginx", "-v"]),
            "wrk": run(["wrk", "-v"]), "python": platform.python_version(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]}


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per target (default 3)")
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--only", default=",".join(ALL_TARGETS),
                   help=f"comma-separated subset of {','.join(ALL_TARGETS)}")
    p.add_argument("--json", type=Path, help="also write raw results to this file")
    p.add_argument("--idle-conns", type=int, default=10000, help="idle connections for the RSS test")
    p.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured wrk per target first")
    p.add_argument("--switchyard-cmd", default="switchyard", help="switchyard executable (default: on PATH)")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs for inspection")
    args = p.parse_args(argv)
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(args.only) - set(ALL_TARGETS)
    if unknown or not args.only:
        p.error(f"--only: unknown target(s) {sorted(unknown)}; choose from {ALL_TARGETS}")
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    return args


def preflight(args: argparse.Namespace) -> int:
    for tool in ("/usr/sbin/nginx", "wrk") + (("/usr/sbin/haproxy",) if "haproxy" in args.only else ()):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install -y haproxy nginx wrk")
    nofile = raise_own_fd_limit(65536)
    needed = args.idle_conns + 200
    if nofile < needed:
        print(f"WARNING: fd limit is {nofile} and cannot be raised (hard limit); "
              f"idle connections reduced from {args.idle_conns} to {nofile - 200}")
        args.idle_conns = nofile - 200
    if nofile < 2 * args.idle_conns + 100 and "haproxy" in args.only:
        print(f"NOTE: with an fd limit of {nofile}, haproxy's maxconn is {(nofile - 100) // 2} "
              f"(it reserves 2 fds per connection); the rest of the {args.idle_conns} idle "
              f"connections wait in its listen backlog - see 'held'.")
    return nofile   # servers are started with this limit too (Supervisor.start nofile=)


def run_benchmark(args: argparse.Namespace, sup: Supervisor, tmp: Path, nofile: int) -> dict:
    blue, green = free_ports(2)
    start_upstreams(sup, tmp, blue, green)
    targets = start_targets(sup, tmp, args.only, blue, green, nofile, args.switchyard_cmd)
    if not targets:
        raise SystemExit("nothing to measure")

    for t in targets:
        if t.proc:
            split = pool_split(t.port)
            print(f"{t.name}: pool split of 100 cookie-less requests: {split}")
            # Weighted random draws land within ~4 sd of 80/20; a proxy that never reaches
            # green (or answers without X-Pool) is not measuring what we think it is.
            low, high = (30, 70) if t.name == "caddy" else (60, 95)  # caddy: no weights
            if not low <= split.get("blue", 0) <= high or not split.get("green"):
                print(f"WARNING: {t.name} does not split traffic as configured between the pools")
        run_wrk(t.port, args.warmup)

    for rnd in range(args.rounds):
        shift = rnd % len(targets)
        order = targets[shift:] + targets[:shift]    # rotate so no target always goes first
        for t in order:
            if t.failed:
                continue
            if t.proc and t.proc.poll() is not None:
                t.failed = f"process exited with {t.proc.returncode} before round {rnd + 1}"
                print(f"{t.name}: {t.failed}")
                continue
            res = measure_round(t, args.duration)
            res["round"] = rnd + 1
            t.rounds.append(res)
            print(f"round {rnd + 1} {t.name:<10} {res['rps']:9.0f} req/s  p50 {res['p50_us'] / 1e3:6.2f} ms  "
                  f"p99 {res['p99_us'] / 1e3:6.2f} ms"
                  + (f"  cpu {res['cpu_us_per_req']:5.1f} us/req (user {res['user_us_per_req']:4.1f}"
                     f" sys {res['sys_us_per_req']:4.1f})" if "cpu_us_per_req" in res else "")
                  + (f"  ERRORS {res['socket_errors']} socket, {res['non_2xx']} non-2xx"
                     if res["socket_errors"] or res["non_2xx"] else ""), flush=True)

    # Memory last: after load, as in production, and so 10k sockets cannot disturb a round.
    for t in targets:
        if t.proc and not t.failed and t.proc.poll() is None:
            t.idle = measure_idle_rss(t, args.idle_conns)
            print(f"{t.name}: {t.idle['rss_mb']:.1f} MB RSS with {t.idle['connections_held']} idle "
                  f"connections held (was {t.idle['rss_before_kb'] / 1e3:.1f} MB with none)", flush=True)

    summaries = {t.name: summarize(t) for t in targets}
    ref = summaries.get("haproxy", {})
    rel = {name: ratios(s, ref) for name, s in summaries.items() if name != "haproxy" and ref}
    haproxy = next((t for t in targets if t.name == "haproxy"), None)
    paired = {t.name: paired_ratios(t, haproxy) for t in targets if haproxy and t is not haproxy}
    direct_p50 = summaries.get("direct", {}).get("p50_1c_us")
    added = {name: s["p50_1c_us"] - direct_p50 for name, s in summaries.items()
             if direct_p50 is not None and "p50_1c_us" in s and name != "direct"}
    all_checks = {name: checks(summaries[name], rel.get(name, {}),
                               {"self": added.get(name), "haproxy": added.get("haproxy")})
                  for name in ("nginx", "caddy", "switchyard", "switchyard-pure")
                  if name in summaries}
    total_requests = {t.name: sum(r["requests"] for r in t.rounds) for t in targets}
    log_bytes = {t.name: (t.access_log.stat().st_size if t.access_log and t.access_log.exists() else 0)
                 for t in targets if t.access_log}

    print_table(summaries, rel, args.idle_conns)
    if added:
        print("at 1 connection, p50 added over direct: "
              + "  ".join(f"{name} {us:.0f} us" for name, us in added.items()))
    for name, p in paired.items():
        if p:
            print(f"{name}: same-round ratios to haproxy (median over rounds): "
                  + "  ".join(f"x {key} {value:.2f}" for key, value in p.items()))
    for name, size in log_bytes.items():
        print(f"{name}: access log {size / max(total_requests[name], 1):.0f} bytes/request "
              f"(evidence that logging was on)")
    for t in targets:
        if t.name.startswith("switchyard") and t.access_log is not None:
            print(f"{t.name}: data plane {hot_path_of(t.access_log)} (its start-up line)")
    if "switchyard" in args.only and "switchyard" not in summaries:
        print("\nswitchyard: not measured (see SKIP above)")
    print_checks(all_checks)

    return {"settings": {"rounds": args.rounds, "duration_s": args.duration, "targets": args.only,
                         "wrk": f"-t{WRK_THREADS} -c{WRK_CONNECTIONS} --latency",
                         "idle_conns": args.idle_conns, "fd_limit": nofile, "weights": WEIGHTS},
            "rounds": {t.name: t.rounds for t in targets},
            "idle": {t.name: t.idle for t in targets if t.idle},
            "failed": {t.name: t.failed for t in targets if t.failed},
            "summary": summaries, "ratios_to_haproxy": rel, "paired_ratios_to_haproxy": paired,
            "checks": all_checks,
            "access_log_bytes": log_bytes}


def _exit_on_signal(signum, _frame):
    # Turn SIGTERM/SIGHUP into an exception so every finally: block (cleanup) runs.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    info = machine_info()
    print(f"machine: {info['nproc']} cpus, {info['cpu']}, kernel {info['kernel']}, load {info['loadavg_at_start']}")
    print(f"         {info['haproxy']}; {info['nginx']}; {info['wrk']}")
    nofile = preflight(args)
    print(f"plan: {args.rounds} rounds x {args.duration:g}s per target, wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}, "
          f"fd limit {nofile}", flush=True)

    sup = Supervisor()
    tmp = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    try:
        result = run_benchmark(args, sup, tmp, nofile)
        result["machine"] = info
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
            print(f"\nraw results: {args.json}")
        return 0
    finally:
        clean_up(sup, tmp, args.keep_tmp)


def clean_up(sup: Supervisor, tmp: Path, keep: bool) -> None:
    """The end of a benchmark (this one, workers.py): every server stopped, the temp
    directory removed unless kept.  A second Ctrl-C must not interrupt it and leave
    servers behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.alarm(0)
    sup.stop_all()
    if keep:
        print(f"configs and logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def entry(main) -> None:
    """`if __name__ == "__main__"` of the benchmarks built on this file: Ctrl-C exits
    130 after the cleanup in `main`'s finally has run."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; all started processes were stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    entry(main)
