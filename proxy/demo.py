"""`switchyard demo`: two Hyperf-like pools and the proxy, to try in a minute.

The pools are small aiohttp apps that behave like a Hyperf (Swoole) server
as seen from the proxy: a `Server: Hyperf` header, a header naming the pool,
`/health`, a session cookie, and a server-sent-events endpoint.  Everything
the demo writes goes under ./run/.

`python -m proxy.demo --pool blue --port 9501` runs one pool alone (tests use
it as a real upstream process).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import sys

from aiohttp import web

RUN_DIR = "run"


# -- the demo pools ------------------------------------------------------------------

def make_pool_app(name: str, release: str = "1.0") -> web.Application:
    async def hello(request: web.Request) -> web.Response:
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

    app = web.Application(middlewares=[hyperf_headers])
    app.add_routes([web.get("/health", health), web.get("/events", events),
                    web.post("/echo", echo), web.get("/slow", slow),
                    web.get("/{tail:.*}", hello)])
    return app


async def start_pool(name: str, host: str = "127.0.0.1", port: int = 0,
                     release: str = "1.0") -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_pool_app(name, release), access_log=None)
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


def run_demo(first_port: int = 8080) -> int:
    import uvloop

    return uvloop.run(_demo(first_port))


async def _demo(first_port: int) -> int:
    from . import config as config_module
    from .accesslog import configure
    from .server import Server

    run_dir = os.path.abspath(RUN_DIR)
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    blue, blue_port = await start_pool("blue", release="1.0")
    green, green_port = await start_pool("green", release="2.0")
    port = free_port("127.0.0.1", first_port)
    path = os.path.join(run_dir, "switchyard.yaml")
    with open(path, "w") as f:
        f.write(demo_config(port, blue_port, green_port, run_dir))
    cfg = config_module.load(path)
    configure("console", "info", stream=sys.stderr)
    access = open(os.path.join(run_dir, "access.log"), "a", buffering=1 << 16)
    server = Server(cfg, access_stream=access)
    try:
        await server.start()
        _banner(port, blue_port, green_port, cfg.admin.socket, run_dir)
        await server.stopping.wait()
    finally:
        await server.shutdown()
        await blue.cleanup()
        await green.cleanup()
        access.close()
    return 0


def _banner(port: int, blue: int, green: int, admin: str, run_dir: str) -> None:
    env = f"SWITCHYARD_SOCKET={admin}"
    print(f"""
switchyard demo is running (Ctrl-C stops everything)

  proxy  http://127.0.0.1:{port}/
  blue   http://127.0.0.1:{blue}/   release 1.0, all traffic
  green  http://127.0.0.1:{green}/   release 2.0, no traffic yet

Try next:
  curl -i http://127.0.0.1:{port}/
  {env} switchyard status
  {env} switchyard weights blue=50 green=50
  {env} switchyard cutover green
  {env} switchyard rollback
  curl -N http://127.0.0.1:{port}/events      # server-sent events through the proxy

Config, state, and access log: {run_dir}/
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
