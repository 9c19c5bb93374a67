"""Real processes and real sockets for the tests: the proxy, pools, a recording upstream."""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_open_connections: list = []


def open_conn(port: int, timeout: float = 10) -> http.client.HTTPConnection:
    """A keep-alive client connection, closed by the autouse fixture after the test."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    _open_connections.append(conn)
    return conn


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


def close_connections() -> None:
    while _open_connections:
        _open_connections.pop().close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class ProxyProcess:
    """`switchyard serve` in a subprocess, on port 0; the bound port is read from its log."""

    def __init__(self, tmp_path, pools: dict[str, list[str]], weights: dict[str, int],
                 extra: str = "", listen: str = "127.0.0.1:0", env: dict | None = None,
                 config_text: str | None = None) -> None:
        self.dir = tmp_path
        # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
        self.admin = os.path.join(tempfile.mkdtemp(prefix="sy-"), "admin.sock")
        self.state_file = str(tmp_path / "state.json")
        self.config_path = str(tmp_path / "switchyard.yaml")
        if config_text is None:
            config_text = self.config(pools, weights, extra, listen)
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.lines: list[dict] = []
        self.port = 0

    def config(self, pools, weights, extra, listen) -> str:
        pool_lines = "\n".join(f"  {name}: {{upstreams: {json.dumps(ups)}}}"
                               for name, ups in pools.items())
        return (f"listen: [\"{listen}\"]\n"
                f"admin: {{socket: {self.admin}}}\n"
                f"state_file: {self.state_file}\n"
                f"pools:\n{pool_lines}\n"
                f"weights: {json.dumps(weights)}\n"
                f"health: {{path: /health, interval: 200ms, timeout: 1s}}\n"
                f"log: {{access: true, format: json}}\n" + extra)

    def start(self, wait: bool = True) -> ProxyProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.update(self.env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "-c", self.config_path],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            started = wait_for(lambda: self.event("server_started"), 15, what="server_started")
            listen = started.get("listen") or []
            if listen and not listen[0].startswith("unix:"):
                self.port = int(listen[0].rsplit(":", 1)[1])
        return self

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
        result = subprocess.run([sys.executable, "-m", "proxy.cli", *args, "--socket", self.admin],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)
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


class PoolProcess:
    """A demo pool (aiohttp, behaves like Hyperf) in its own process."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli.demo", "--pool", name, "--port", str(port)],
            stdout=subprocess.PIPE, cwd=ROOT)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening "):
            raise RuntimeError(f"pool {name} did not start: {line!r}")
        self.port = int(line.split()[1])
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc.stdout.close()


@dataclass
class Exchange:
    """What one upstream connection received, and what it was told to answer."""

    received: bytearray = field(default_factory=bytearray)


class RecordingUpstream:
    """A raw TCP upstream that records every byte and answers from a script.

    `respond(request_bytes) -> bytes | None` is called each time a complete
    request head (and Content-Length body) has arrived on a connection; None
    closes the connection.  Runs in a thread with plain blocking sockets, so
    what it records is exactly what crossed the wire.
    """

    def __init__(self, respond=None) -> None:
        self.respond = respond or (lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.requests: list[bytes] = []
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if ready:
                conn, _ = self.sock.accept()
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(10)
        counted = False
        try:
            while not self._stop:
                request, buf = self._read_request(conn, buf)
                if request is None:
                    return
                if request.startswith(b"GET /health "):  # the proxy's health checks
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                if not counted:
                    counted = True
                    self.connections += 1  # connections that carried proxied requests
                self.requests.append(request)
                answer = self.respond(request)
                if answer is None:
                    return
                if callable(answer):
                    answer(conn)
                else:
                    conn.sendall(answer)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn, buf: bytes) -> tuple[bytes | None, bytes]:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None, buf
            buf += data
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            data = conn.recv(65536)
            if not data:
                return None, buf
            rest += data
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0, until_close: bool = True,
                 expect: int | None = None) -> bytes:
    """Send raw bytes to the proxy; return everything it answered (until close or `expect` bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if expect is not None and len(out) >= expect:
                break
            if not until_close and out.count(b"\r\n\r\n") and _complete(out):
                break
        return out


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def parse_responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    """Split a byte stream of HTTP/1.1 responses (Content-Length or chunked)."""
    out = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete head: {head!r}")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.decode().partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        body, data = _body(headers, data)
        out.append((status, headers, body))
    return out


def _body(headers: dict, data: bytes) -> tuple[bytes, bytes]:
    if "content-length" in headers:
        n = int(headers["content-length"][0])
        return data[:n], data[n:]
    if "chunked" in ",".join(headers.get("transfer-encoding", [])):
        body = b""
        while True:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                _, _, data = data.partition(b"\r\n")
                return body, data
            body += data[:size]
            data = data[size + 2:]
    return data, b""
