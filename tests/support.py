"""The test kit: real processes and real sockets for the end-to-end tests.

Import what a test needs from here; the fixtures built on it (pools, start_proxy,
upstreams, dead_port) are in tests/conftest.py.

- waiting, ports, memory      wait_for, free_port, rss_kb, rss_mb
- the client side             open_conn, get, sticky_cookie, cookie_for; raw bytes with
                              raw_exchange, converse, parse_responses (tests/kit/http.py)
- upstreams                   RecordingUpstream and its scripts (tests/kit/upstreams.py),
                              PoolProcess
- the proxy                   ProxyProcess, switchyard (the command), admin (the API)
- systemd's part              listening_socket, Activated, Notifications (tests/kit/systemd.py)
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .kit import ROOT
from .kit.http import (Reply, converse, parse_responses, raw_exchange, read_response,  # noqa: F401
                       read_until_closed, request_fields)
from .kit.systemd import Activated, Notifications, listening_socket  # noqa: F401
from .kit.upstreams import RecordingUpstream, answering, ok_response  # noqa: F401


# -- waiting, ports, memory ------------------------------------------------------------------

def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll until `predicate()` is truthy and return its value; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    """A loopback port that was free a moment ago (the usual small race applies)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def rss_mb(pid: int) -> float:
    """rss_kb in MB, as the resilience tests report and bound it."""
    return rss_kb(pid) / 1024


# -- the client side -------------------------------------------------------------------------

_open_connections: list = []


def open_conn(port: int, timeout: float = 10) -> http.client.HTTPConnection:
    """A keep-alive client connection, closed by the autouse fixture after the test."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    _open_connections.append(conn)
    return conn


def close_connections() -> None:
    while _open_connections:
        _open_connections.pop().close()


def get(conn: http.client.HTTPConnection, path: str = "/", headers: dict | None = None):
    """One GET on a keep-alive connection: (response, body)."""
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


def sticky_cookie(resp) -> str | None:
    """`switchyard_pool=...` from the response's Set-Cookie, or None."""
    for name, value in resp.getheaders():
        if name.lower() == "set-cookie" and value.startswith("switchyard_pool="):
            return value.split(";", 1)[0]
    return None


def cookie_for(proxy: ProxyProcess, pool: str, tries: int = 500) -> str:
    """A sticky cookie the proxy minted for `pool` (the pool must have weight)."""
    conn = open_conn(proxy.port)
    for _ in range(tries):
        resp, _ = get(conn)
        if resp.getheader("X-Pool") == pool:
            return sticky_cookie(resp)
    raise AssertionError(f"no response from {pool} in {tries} requests")


# -- upstream processes ----------------------------------------------------------------------

class ServerProcess:
    """A server in its own process that prints `listening PORT` once it listens."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=ROOT)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"{name} did not start: {line!r}")
        self.port = int(line.split()[1])
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()


class PoolProcess(ServerProcess):
    """A demo pool (aiohttp, behaves like Hyperf: X-Pool, /health, /slow, /events)."""

    def __init__(self, name: str, port: int = 0) -> None:
        super().__init__([sys.executable, "-m", "proxy.cli.demo", "--pool", name,
                          "--port", str(port)], f"pool {name}")


# -- the proxy ---------------------------------------------------------------------------------

def _env(env: dict | None) -> dict[str, str]:
    """This process's environment plus `env`; a None value removes that variable."""
    full = dict(os.environ, PYTHONPATH=ROOT)
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return full


def switchyard(*args: str, env: dict | None = None, cwd: str = ROOT,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """`switchyard ARGS`, the real command in a subprocess, run to its end.
    `env` is added to this process's environment (None removes a variable)."""
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=_env(env))


def spawn_switchyard(*args: str, env: dict | None = None, cwd: str = ROOT, text: bool = True,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.Popen:
    """`switchyard ARGS` left running (serve, events -f, top, demo...); the caller ends it."""
    return subprocess.Popen([sys.executable, "-m", "proxy.cli", *args], stdout=stdout,
                            stderr=stderr, text=text, cwd=cwd, env=_env(env))


BLUE_ONLY = {"blue": 100, "green": 0}


class ProxyProcess:
    """`switchyard serve` in a subprocess, on port 0; the bound port is read from its log.

    `pools` maps a pool to its upstream addresses, or to its whole settings
    ({"upstreams": [...], "balance": ...}); `health` replaces the health settings."""

    HEALTH = "{path: /health, interval: 200ms, timeout: 1s}"

    def __init__(self, tmp_path, pools: dict[str, list[str] | dict], weights: dict[str, int],
                 extra: str = "", listen: str = "127.0.0.1:0", env: dict | None = None,
                 health: str | None = None) -> None:
        self.dir = tmp_path
        # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
        self.admin = os.path.join(tempfile.mkdtemp(prefix="sy-"), "admin.sock")
        self.state_file = str(tmp_path / "state.json")
        self.config_path = str(tmp_path / "switchyard.yaml")
        with open(self.config_path, "w") as f:
            f.write(self.config(pools, weights, extra, listen, health or self.HEALTH))
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.lines: list[dict] = []
        self.port = 0

    def config(self, pools, weights, extra, listen, health) -> str:
        pool_lines = "\n".join(
            f"  {name}: {{" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in
                                         (p if isinstance(p, dict) else {"upstreams": p}).items())
            + "}" for name, p in pools.items())
        return (f"listen: [\"{listen}\"]\n"
                f"admin: {{socket: {self.admin}}}\n"
                f"state_file: {self.state_file}\n"
                f"pools:\n{pool_lines}\n"
                f"weights: {json.dumps(weights)}\n"
                f"health: {health}\n"
                f"log: {{access: true, format: json}}\n" + extra)

    def start(self, wait: bool = True) -> ProxyProcess:
        self.proc = spawn_switchyard("serve", "-c", self.config_path, text=False,
                                     stderr=subprocess.STDOUT,
                                     env={"PYTHONUNBUFFERED": "1", **(self.env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            started = wait_for(lambda: self.event("server_started"), 15, what="server_started")
            listen = started.get("listen") or []
            if listen and not listen[0].startswith("unix:"):
                self.port = int(listen[0].rsplit(":", 1)[1])
        return self

    def restart(self) -> int:
        """Stop (its exit code is returned) and start again: same config, state and socket."""
        code = self.stop()
        self.lines.clear()
        self.start()
        return code

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"event": "raw", "text": raw.decode(errors="replace")})

    def event(self, name: str) -> dict | None:
        for line in list(self.lines):
            if line.get("event") == name:
                return line
        return None

    def events(self, name: str) -> list[dict]:
        return [line for line in list(self.lines) if line.get("event") == name]

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        """`switchyard ARGS --socket` this proxy's admin socket."""
        result = switchyard(*args, "--socket", self.admin)
        if check and result.returncode != 0:
            raise AssertionError(f"switchyard {' '.join(args)}: {result.returncode}\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json", check=True).stdout)

    def stop(self, sig=None) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig or 15)
        try:
            return self.proc.wait(timeout=40)
        finally:
            self._close_pipe()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        self._reader.join(timeout=5)
        self.proc.stdout.close()


def edit_config(proxy: ProxyProcess, edit) -> str:
    """Rewrite the proxy's config file with `edit(text) -> text`; return the new text."""
    with open(proxy.config_path) as f:
        text = edit(f.read())
    with open(proxy.config_path, "w") as f:
        f.write(text)
    return text


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: the admin API's transport."""

    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("switchyard", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def admin(proxy: ProxyProcess, method: str, path: str, body=None,
          headers: dict | None = None) -> tuple[int, dict, object]:
    """One admin API call over the Unix socket: (status, lower-case headers, the body
    parsed as JSON, or its raw bytes when it is not JSON)."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    conn = UnixHTTPConnection(proxy.admin)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        head = {name.lower(): value for name, value in resp.getheaders()}
    finally:
        conn.close()
    try:
        data = json.loads(raw)
    except ValueError:
        data = raw
    return resp.status, head, data


def upstream_status(proxy: ProxyProcess, pool: str, address: str) -> dict:
    """One upstream's entry in `status`."""
    ups = proxy.status()["pools"][pool]["upstreams"]
    return next(u for u in ups if u["address"] == address)
