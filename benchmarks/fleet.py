#!/usr/bin/env python3
"""How fast a change made on one host of a fleet routes new requests on the others (issue 13).

    python benchmarks/fleet.py [--hosts N] [--switches N] [--workers N]

What it does (benchmarks/README.md, "Fleet", says why):
  1. starts a real etcd (Debian's etcd-server) on free loopback ports with a temporary data
     directory, the two demo pools (blue, green), and N switchyard hosts sharing one
     `cluster.key` (tests/kit: the same processes the tests start);
  2. on every host but the one changed, a client sends requests without a cookie, one after
     the other on one keep-alive connection, and records when each was sent and which pool
     answered;
  3. makes `--switches` changes, alternating cutover to green and back to blue (--force: the
     health gate is not what is timed), each on the next host in turn, and for every other
     host finds the first request sent after the admin call answered that went to the new
     pool, and whether any request after it (up to the next change) still went to the old;
  4. prints, per change: the admin call's time (it includes etcd's compare-and-swap) and,
     over all (change, host) pairs, the time from the answer to the first new-pool request:
     median, p90 and max; and the count of old-pool answers after the first new-pool one.

Every process is stopped on exit; the run is bounded by an alarm.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.kit.etcd import EtcdServer  # noqa: E402
from tests.support import PoolProcess, ProxyProcess, admin, edit_config, wait_for  # noqa: E402

SETTLE = 1.0  # seconds between two changes, so each one's propagation is seen alone


class Prober(threading.Thread):
    """Requests through one host, back to back: (sent at, pool that answered)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.seen: list[tuple[float, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                self.seen.append((sent, resp.getheader("X-Pool") or "?"))
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def after(self, since: float, until: float, pool: str) -> tuple[float | None, int]:
        """The delay from `since` to the first request sent then that `pool` answered,
        and how many sent after that one (before `until`) another pool answered."""
        window = [(t, p) for t, p in list(self.seen) if since <= t < until]
        first = next((t for t, p in window if p == pool), None)
        if first is None:
            return None, 0
        return first - since, sum(1 for t, p in window if t > first and p != pool)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="`workers` of every host")
    args = parser.parse_args()
    signal.alarm(int(60 + args.switches * (SETTLE + 3)))
    etcd = EtcdServer()
    blue, green = PoolProcess("blue"), PoolProcess("green")
    hosts: list[ProxyProcess] = []
    probers: list[Prober] = []
    try:
        for i in range(args.hosts):
            home = Path(tempfile.mkdtemp(prefix=f"sy-fleet-{i}-"))
            host = ProxyProcess(
                home, {"blue": [blue.address], "green": [green.address]},
                {"blue": 100, "green": 0},
                extra=f'cluster: {{etcd: ["{etcd.url}"], key: /bench, host: h{i}}}\n'
                      f"workers: {args.workers}\n")
            # The probes' access lines are not what is measured.
            edit_config(host, lambda text: text.replace("access: true", "access: false"))
            hosts.append(host.start())
        wait_for(lambda: all(len(h.status()["cluster"]["hosts"]) == args.hosts for h in hosts),
                 15, 0.2, what="every host to see the others")
        probers = [Prober(h.port) for h in hosts]
        for p in probers:
            p.start()
        changes = []
        for n in range(args.switches):
            to = "green" if n % 2 == 0 else "blue"
            origin = n % args.hosts
            started = time.monotonic()
            code, _, body = admin(hosts[origin], "POST", "/cutover", {"to": to, "force": True})
            answered = time.monotonic()
            if code != 200:
                print(f"change {n}: {code} {body}")
                return 1
            changes.append((origin, to, started, answered))
            time.sleep(SETTLE)
        end = time.monotonic()
        delays, late, missed = [], 0, 0
        for i, (origin, to, _, answered) in enumerate(changes):
            # Up to the next change's start: the watch may bring that one to the
            # other hosts before its own admin call has answered.
            until = changes[i + 1][2] if i + 1 < len(changes) else end
            for h, prober in enumerate(probers):
                if h == origin:
                    continue
                delay, old = prober.after(answered, until, to)
                if delay is None:
                    missed += 1
                else:
                    delays.append(delay)
                    late += old
        calls = [answered - started for _, _, started, answered in changes]
        requests = sum(len(p.seen) for p in probers)
    finally:
        for p in probers:
            p.stopping.set()
        for h in hosts:
            h.stop()
        blue.stop()
        green.stop()
        etcd.close()
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    print(f"fleet: {args.hosts} hosts (workers: {args.workers}), {args.switches} changes, "
          f"{requests} probe requests, etcd {etcd.url}")
    print(f"admin call (cutover, etcd compare-and-swap included): median {ms(statistics.median(calls))}, "
          f"max {ms(max(calls))}")
    if delays:
        delays.sort()
        p90 = delays[int(0.9 * (len(delays) - 1))]
        print(f"answer -> first new-pool request on another host ({len(delays)} pairs): "
              f"median {ms(statistics.median(delays))}, p90 {ms(p90)}, max {ms(max(delays))}")
    print(f"old-pool answers after the first new-pool one: {late}; pairs never switched: {missed}")
    return 0 if missed == 0 and late == 0 else 1


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
