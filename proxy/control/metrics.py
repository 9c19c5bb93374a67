"""`GET /metrics`: the Prometheus text exposition format (version 0.0.4).

Rendered on demand from the counters the data plane keeps anyway; nothing
here runs per request.
"""

from __future__ import annotations

from aiohttp import web

from ..dataplane.stats import BOUNDS
from .rollout import RUNNING


def render(controller) -> str:
    plane = controller.plane
    out: list[str] = []
    _requests(out, plane)
    _latency(out, plane)
    _upstreams(out, plane)
    _routing(out, controller)
    _workers(out, plane)
    if controller.peers is not None:
        _fleet(out, controller.peers.view())
    return "\n".join(out) + "\n"


def _fleet(out: list[str], fleet: dict) -> None:
    """With `cluster`: what an alert on a fleet needs (etcd gone, a host gone)."""
    _family(out, "switchyard_cluster_reachable", "gauge", "1 while etcd answers this host.")
    out.append(f"switchyard_cluster_reachable {int(fleet['reachable'])}")
    _family(out, "switchyard_cluster_hosts", "gauge", "Live hosts of the fleet, as last read.")
    out.append(f"switchyard_cluster_hosts {len(fleet['hosts'])}")
    _family(out, "switchyard_cluster_leader", "gauge",
            "1 on the host that runs the fleet's rollouts.")
    out.append(f"switchyard_cluster_leader {int(fleet['leading'])}")


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _requests(out: list[str], plane) -> None:
    _family(out, "switchyard_requests_total", "counter",
            "Finished requests by pool and status class (error: no upstream answer).")
    for name, pool in plane.pools.items():
        for cls, count in pool.classes().items():
            out.append(f'switchyard_requests_total{{pool="{name}",class="{cls}"}} {count}')
    _family(out, "switchyard_errors_total", "counter",
            "Requests that failed: 5xx from the upstream, refused connects, timeouts.")
    for name, pool in plane.pools.items():
        out.append(f'switchyard_errors_total{{pool="{name}"}} {pool.errors}')
    _family(out, "switchyard_inflight_requests", "gauge", "Requests being answered now.")
    for name, pool in plane.pools.items():
        out.append(f'switchyard_inflight_requests{{pool="{name}"}} {pool.inflight}')
    _family(out, "switchyard_client_connections", "gauge", "Open client connections.")
    out.append(f"switchyard_client_connections {plane.client_count()}")
    _family(out, "switchyard_websockets", "gauge", "Open WebSocket tunnels.")
    out.append(f"switchyard_websockets {plane.tunnel_count()}")
    _family(out, "switchyard_paused", "gauge", "1 while `switchyard pause` holds new requests.")
    out.append(f"switchyard_paused {int(plane.pause is not None)}")
    _family(out, "switchyard_held_requests", "gauge", "Requests waiting for the pause to end.")
    out.append(f"switchyard_held_requests {plane.pause.waiting() if plane.pause else 0}")


def _latency(out: list[str], plane) -> None:
    _family(out, "switchyard_request_duration_seconds", "histogram",
            "Time from the whole request received to the whole response sent, per pool.")
    for name, pool in plane.pools.items():
        hist = getattr(pool, "latency", None)
        if hist is None:
            continue
        cumulative = 0
        for bound, count in zip((*BOUNDS, None), hist.counts):
            cumulative += count
            le = "+Inf" if bound is None else repr(bound)
            out.append(f'switchyard_request_duration_seconds_bucket{{pool="{name}",le="{le}"}} '
                       f"{cumulative}")
        out.append(f'switchyard_request_duration_seconds_sum{{pool="{name}"}} {hist.sum}')
        out.append(f'switchyard_request_duration_seconds_count{{pool="{name}"}} {hist.total}')


def _upstreams(out: list[str], plane) -> None:
    _family(out, "switchyard_upstream_healthy", "gauge", "1 when the upstream passes checks.")
    for name, pool in plane.pools.items():
        for up in pool.upstreams:
            out.append(f'switchyard_upstream_healthy{{pool="{name}",upstream="{up.label}"}} '
                       f"{int(up.healthy)}")
    _per_upstream(out, plane, "switchyard_upstream_closes_total",
                  "Connections the upstream closed under a request before answering it "
                  "(Swoole: workers recycling at max_request).", lambda up: up.closes)
    _per_upstream(out, plane, "switchyard_upstream_resent_total",
                  "Of those, requests sent again: provably unread, or with an Idempotency-Key.",
                  lambda up: up.resent)
    _family(out, "switchyard_pool_healthy", "gauge", "1 when at least one upstream is healthy.")
    for name, pool in plane.pools.items():
        out.append(f'switchyard_pool_healthy{{pool="{name}"}} {int(pool.healthy)}')


def _routing(out: list[str], controller) -> None:
    table = controller.table
    _family(out, "switchyard_pool_weight", "gauge", "Current routing weight.")
    for name, weight in table.weights.items():
        out.append(f'switchyard_pool_weight{{pool="{name}"}} {weight}')
    _family(out, "switchyard_generation", "gauge", "Routing state generation.")
    out.append(f"switchyard_generation {table.generation}")
    _family(out, "switchyard_rollout_step", "gauge",
            "Step of the running rollout (1-based), 0 when none runs.")
    r = controller.rollout
    running = r is not None and r.state == RUNNING
    out.append(f"switchyard_rollout_step {r.step_index + 1 if running else 0}")
    _family(out, "switchyard_rollout_percent", "gauge", "Share of traffic the rollout gives its target.")
    out.append(f"switchyard_rollout_percent {r.percent if running else 0}")


def _workers(out: list[str], plane) -> None:
    workers = plane.workers_view()
    if workers is None:
        return
    _family(out, "switchyard_workers", "gauge", "Data-plane processes serving now.")
    out.append(f"switchyard_workers {len(workers)}")
    _family(out, "switchyard_worker_restarts_total", "counter",
            "Worker processes that exited (each is started again).")
    out.append(f"switchyard_worker_restarts_total {plane.worker_restarts()}")


def _per_upstream(out: list[str], plane, name: str, help_text: str, value) -> None:
    _family(out, name, "counter", help_text)
    for pool_name, pool in plane.pools.items():
        for up in pool.upstreams:
            out.append(f'{name}{{pool="{pool_name}",upstream="{up.label}"}} {value(up)}')


async def serve(address, render, settle=None) -> web.AppRunner | None:
    """`metrics.listen`: GET /metrics over TCP for Prometheus, and nothing else.

    Read-only by construction: the only route renders text; every change of
    routing stays on the admin socket, where the peer's uid is checked.
    """
    if address is None:
        return None

    async def metrics(request: web.Request) -> web.Response:
        if settle is not None:
            await settle(change=False)  # the workers' counters, summed now
        return web.Response(text=render(), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})

    app = web.Application(client_max_size=1024)
    app.add_routes([web.get("/metrics", metrics)])
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, address.host, address.port, reuse_address=True).start()
    return runner
