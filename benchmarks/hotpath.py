"""Python cost of one proxied request, without sockets.

Drives ClientConnections and UpstreamConnections with in-memory transports,
so the number is the interpreter's work per request (parsing, routing,
cookie, head regeneration, access log), free of kernel and scheduler noise.
`CLIENTS` clients send a request each, then their upstreams answer: one pass
of the event loop under load, with the writes the plane queued going out at
its end, as in `switchyard serve`.

    python benchmarks/hotpath.py [-n N] [--no-log] [--wrk]

`--wrk` uses the exact messages of `benchmarks/run.py` (wrk's one-field
request, the nginx upstream's answer) instead of a browser-like request.
For a noise-free count, see `instructions.sh`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import uvloop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy import config as config_module  # noqa: E402

try:  # the layered package (issue 10)
    from proxy.dataplane.accesslog import AccessLog
    from proxy.dataplane.client import ClientConnection
    from proxy.dataplane.connection import UpstreamConnection
    from proxy.dataplane.plane import DataPlane
    from proxy.dataplane.router import table_from
    from proxy.dataplane.sticky import Signer
except ImportError:  # a tree from before it, for a before/after comparison
    from proxy.accesslog import AccessLog
    from proxy.client import ClientConnection
    from proxy.plane import DataPlane, table_from
    from proxy.sticky import Signer
    from proxy.upstream import UpstreamConnection

BROWSER = (
    b"GET /api/items?id=42 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nCookie: a=1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 21:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n",
)
WRK = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 21:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
    b"X-Pool: blue\r\n\r\nok\n",
)
CLIENTS = 16  # requests per pass of the loop; wrk's 50 connections give 10-25


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


class _Quiet:
    def __getattr__(self, name):
        return lambda *a, **k: None


def build(log: bool):
    cfg = config_module.from_text(
        "pools:\n  blue: {upstreams: ['127.0.0.1:1']}\n  green: {upstreams: ['127.0.0.1:2']}\n"
        "weights: {blue: 80, green: 20}\n")
    # uvloop, as `switchyard serve` runs: its loop.time() and call_soon are the C ones.
    loop = uvloop.new_event_loop()
    access = AccessLog("json", _Sink()) if log else None
    plane = DataPlane(loop, cfg, table_from(cfg.weights), Signer(b"k" * 32), _Quiet(), access)
    for pool in plane.pools.values():
        for up in pool.upstreams:
            for _ in range(CLIENTS):
                conn = UpstreamConnection(up)
                conn.connection_made(FakeTransport())
                conn.idle_since = 1e18  # never expires
                up.idle.append(conn)
    if hasattr(plane, "set_health"):
        for pool in plane.pools.values():
            for up in pool.upstreams:
                plane.set_health(up, True)
    else:
        plane.refresh_health()
    clients = []
    for i in range(CLIENTS):
        client = ClientConnection(plane)
        client.connection_made(FakeTransport(("127.0.0.1", 40000 + i)))
        clients.append(client)
    return loop, plane, clients, access


def _upstream_of(client):
    current = client.current
    return current.conn if hasattr(current, "conn") else client.upstream


def run(n: int, log: bool, messages=BROWSER) -> float:
    """Microseconds of Python per request, over about `n` requests."""
    request, response = messages
    loop, plane, clients, access = build(log)
    # Trees from before the plane queued writes (commit 2685e05) write at once.
    outbox = getattr(plane, "outbox", None)
    flush_writes = outbox.flush if outbox else getattr(plane, "flush_writes", lambda: None)
    passes = max(1, n // CLIENTS)
    t0 = time.perf_counter()
    for i in range(passes):
        for client in clients:
            client.data_received(request)
        flush_writes()  # the end of the pass: the queued requests go out
        for client in clients:
            _upstream_of(client).data_received(response)
        flush_writes()
        if i % 64 == 63:
            # Run the loop once, so that the flush_writes callbacks `send`
            # scheduled are run (and cost) as in the server, not hoarded.
            loop.call_soon(loop.stop)
            loop.run_forever()
    if access is not None:
        access.flush()  # the lines still pending are part of the cost
    elapsed = time.perf_counter() - t0
    loop.close()
    return elapsed / (passes * CLIENTS) * 1e6


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--no-log", action="store_true")
    ap.add_argument("--wrk", action="store_true", help="benchmarks/run.py's messages")
    args = ap.parse_args()
    messages = WRK if args.wrk else BROWSER
    run(2048, not args.no_log, messages)
    print(f"{run(args.n, not args.no_log, messages):.2f} us of Python per request "
          f"(access log {'off' if args.no_log else 'on'}, "
          f"{'wrk' if args.wrk else 'browser-like'} request)")
