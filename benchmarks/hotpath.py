"""Python cost of one proxied request, without sockets.

Drives a ClientConnection and an UpstreamConnection with in-memory
transports, so the number is the interpreter's work per request (parsing,
routing, cookie, head regeneration, access log), free of kernel and
scheduler noise.  Run: python benchmarks/hotpath.py [--no-log]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import uvloop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy import config as config_module  # noqa: E402
from proxy.accesslog import AccessLog  # noqa: E402
from proxy.client import ClientConnection  # noqa: E402
from proxy.plane import DataPlane, table_from  # noqa: E402
from proxy.sticky import Signer  # noqa: E402
from proxy.upstream import UpstreamConnection  # noqa: E402

REQUEST = (b"GET /api/items?id=42 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: wrk\r\n"
           b"Accept: */*\r\nCookie: a=1\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 21:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")


class FakeTransport:
    def __init__(self, peer=("127.0.0.1", 40000)):
        self.peer = peer
        self.written = 0

    def write(self, data):
        self.written += len(data)

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def is_closing(self):
        return False

    def close(self):
        pass

    pause_reading = resume_reading = close


class _Sink:
    """The access log's stream: counts what it is given, keeps nothing."""

    def __init__(self):
        self.written = 0

    def write(self, text):
        self.written += len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def build(log: bool):
    cfg = config_module.from_text(
        "pools:\n  blue: {upstreams: ['127.0.0.1:1']}\n  green: {upstreams: ['127.0.0.1:2']}\n"
        "weights: {blue: 80, green: 20}\n")
    # uvloop, as `switchyard serve` runs: its loop.time() is the C one.
    loop = uvloop.new_event_loop()
    access = AccessLog("json", _Sink()) if log else None

    class Quiet:
        def __getattr__(self, name):
            return lambda *a, **k: None

    plane = DataPlane(loop, cfg, table_from(cfg.weights), Signer(b"k" * 32), Quiet(), access)
    for pool in plane.pools.values():
        for up in pool.upstreams:
            up.healthy = True
            conn = UpstreamConnection(up)
            conn.connection_made(FakeTransport())
            conn.idle_since = 1e18  # never expires
            up.idle.append(conn)
    plane.refresh_health()
    client = ClientConnection(plane)
    client.connection_made(FakeTransport())
    return plane, client, access


def run(n: int, log: bool) -> float:
    plane, client, access = build(log)
    t0 = time.perf_counter()
    for _ in range(n):
        client.data_received(REQUEST)
        client.upstream.data_received(RESPONSE)
    if access is not None:
        access.flush()  # the lines still pending are part of the cost
    return (time.perf_counter() - t0) / n * 1e6


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--no-log", action="store_true")
    args = ap.parse_args()
    run(2000, not args.no_log)
    print(f"{run(args.n, not args.no_log):.2f} us of Python per request "
          f"(access log {'off' if args.no_log else 'on'})")
