"""`switchyard demo`: two Hyperf-like pools and the proxy, to try in a minute.

The pools are small aiohttp apps that behave like a Hyperf (Swoole) server
as seen from the proxy: a `Server: Hyperf` header, a header naming the pool,
`/health`, a session cookie, and a server-sent-events endpoint.  A pool can
be told to fail a share of its requests (`--bad-green 20%`, or
`POST /_demo/bad?rate=20%` on the pool's own port), and a small load
generator sends cookie-less requests through the proxy, so a progressive
cutover's automatic rollback can be watched in `switchyard top`.  Everything
the demo writes goes under ./run/.

`python -m proxy.cli.demo --pool blue --port 9501` runs one pool alone (tests use
it as a real upstream process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import socket
import sys

import aiohttp
from aiohttp import web

from .exits import EXIT_OK

RUN_DIR = "run"


# -- the demo pools ------------------------------------------------------------------

def make_pool_app(name: str, release: str = "1.0", bad: float = 0.0) -> web.Application:
    failing = {"rate": bad}  # the share of requests answered 500 (a broken release)

    async def hello(request: web.Request) -> web.Response:
        if random.random() < failing["rate"]:
            return web.Response(status=500, text=f"{name} (release {release}) is broken\n")
        resp = web.Response(text=f"Hello from {name} (release {release})\n")
        if "HYPERF_SESSION_ID" not in request.cookies:
            resp.set_cookie("HYPERF_SESSION_ID", secrets.token_hex(16), httponly=True)
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pool": name})

    async def events(request: web.Request) -> web.StreamResponse:
        count = min(int(request.query.get("n", "5")), 100)
        delay = min(float(request.query.get("delay", "0.5")), 5.0)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i in range(count):
            await resp.write(f"id: {i}\ndata: {name} event {i}\n\n".encode())
            await asyncio.sleep(delay)
        return resp

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body, content_type="application/octet-stream")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(min(float(request.query.get("s", "1")), 30.0))
        return web.Response(text=f"slow answer from {name}\n")

    @web.middleware
    async def hyperf_headers(request: web.Request, handler):
        resp = await handler(request)
        resp.headers["Server"] = "Hyperf"
        resp.headers["X-Pool"] = name
        return resp

    async def set_bad(request: web.Request) -> web.Response:
        from ..config import parse_rate

        try:
            failing["rate"] = parse_rate(request.query.get("rate", "0"))
        except ValueError as exc:
            return web.Response(status=400, text=f"rate: {exc}\n")
        return web.Response(text=f"{name} now fails {failing['rate']:.0%} of requests\n")

    app = web.Application(middlewares=[hyperf_headers])
    app.add_routes([web.get("/health", health), web.get("/events", events),
                    web.post("/echo", echo), web.get("/slow", slow),
                    web.post("/_demo/bad", set_bad), web.get("/{tail:.*}", hello)])
    return app


async def start_pool(name: str, host: str = "127.0.0.1", port: int = 0,
                     release: str = "1.0", bad: float = 0.0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_pool_app(name, release, bad), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    return runner, bound


# -- switchyard demo --------------------------------------------------------------------

def free_port(host: str, first: int, tries: int = 50) -> int:
    for port in range(first, first + tries):
        with socket.socket() as s:
            try:
                s.bind((host, port))
                return port
            except OSError:
                continue
    raise OSError(f"no free port in {first}..{first + tries - 1}")


def demo_config(port: int, blue: int, green: int, run_dir: str) -> str:
    return f"""\
# Written by `switchyard demo`; edit it and run `switchyard reload`.
listen: ["127.0.0.1:{port}"]
admin: {{socket: {run_dir}/admin.sock, mode: "0600"}}
state_file: {run_dir}/state.json
pools:
  blue:  {{upstreams: ["127.0.0.1:{blue}"]}}
  green: {{upstreams: ["127.0.0.1:{green}"]}}
health: {{path: /health, interval: 1s, timeout: 1s}}
weights: {{blue: 100, green: 0}}
sticky: {{cookie: switchyard_pool, max_age: 1h}}
log: {{access: true, format: json}}
"""


def run_demo(first_port: int = 8080, load: float = 20.0, bad_green: float = 0.0,
             fresh: bool = False) -> int:
    import uvloop

    return uvloop.run(_demo(first_port, load, bad_green, fresh))


async def _demo(first_port: int, load: float, bad_green: float, fresh: bool) -> int:
    from .. import config as config_module
    from ..dataplane.accesslog import configure
    from ..server import Server

    run_dir = os.path.abspath(RUN_DIR)
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    if fresh:  # forget the last run's weights, generation and rollout
        for name in ("state.json", "access.log"):
            try:
                os.unlink(os.path.join(run_dir, name))
            except FileNotFoundError:
                pass
    blue, blue_port = await start_pool("blue", release="1.0")
    green, green_port = await start_pool("green", release="2.0", bad=bad_green)
    port = free_port("127.0.0.1", first_port)
    path = os.path.join(run_dir, "switchyard.yaml")
    with open(path, "w") as f:
        f.write(demo_config(port, blue_port, green_port, run_dir))
    cfg = config_module.load(path)
    configure("console", "info", stream=sys.stderr)
    access = open(os.path.join(run_dir, "access.log"), "a", buffering=1 << 16)
    server = Server(cfg, access_stream=access)
    traffic = None
    try:
        await server.start()
        _banner(port, blue_port, green_port, cfg.admin.socket, run_dir,
                dict(server.plane.table.weights), load, bad_green)
        if load > 0:
            traffic = asyncio.get_running_loop().create_task(_load(port, load))
        await server.stopping.wait()
    finally:
        if traffic is not None:
            traffic.cancel()
            await asyncio.gather(traffic, return_exceptions=True)
        await server.shutdown()
        await blue.cleanup()
        await green.cleanup()
        access.close()
    return EXIT_OK


async def _load(port: int, rate: float) -> None:
    """Cookie-less GETs through the proxy, `rate` a second: new visitors, so each
    one is routed by the weights (and `top` has something to show)."""
    url = f"http://127.0.0.1:{port}/"
    interval = 1.0 / rate
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        while True:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass  # the proxy counts it; the demo goes on
            await asyncio.sleep(interval)


def _share(weights: dict[str, int], pool: str) -> str:
    total = sum(weights.values())
    if not total or not weights.get(pool):
        return "no traffic"
    return "all traffic" if weights[pool] == total else f"{weights[pool] * 100 // total}% of traffic"


def _banner(port: int, blue: int, green: int, admin: str, run_dir: str,
            weights: dict[str, int], load: float, bad_green: float) -> None:
    env = f"SWITCHYARD_SOCKET={admin}"
    broken = f", fails {bad_green:.0%} of requests" if bad_green else ""
    traffic = (f"a load of {load:g} requests/s runs through the proxy (--load 0: none)"
               if load > 0 else "no load runs (--load 20 starts one)")
    print(f"""
switchyard demo is running (Ctrl-C stops everything)

  proxy  http://127.0.0.1:{port}/
  blue   http://127.0.0.1:{blue}/   release 1.0, {_share(weights, "blue")}
  green  http://127.0.0.1:{green}/   release 2.0, {_share(weights, "green")}{broken}
  {traffic}

Try next:
  curl -i http://127.0.0.1:{port}/
  {env} switchyard status
  {env} switchyard top                      # in a second terminal
  {env} switchyard weights blue=50 green=50
  {env} switchyard cutover green --steps 10,50,100 --interval 10s --max-error-rate 5% --wait
  curl -X POST 'http://127.0.0.1:{green}/_demo/bad?rate=20%'   # break green: watch it roll back
  {env} switchyard rollback
  {env} switchyard events -f
  curl -N http://127.0.0.1:{port}/events      # server-sent events through the proxy

Config, state, and access log: {run_dir}/   (--fresh forgets the last run's state)
""", flush=True)


# -- one pool alone, for tests ---------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="run one demo pool")
    parser.add_argument("--pool", default="blue")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        runner, port = await start_pool(args.pool, args.host, args.port)
        print(f"listening {port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
