"""Restarting the proxy itself without failing a request, as systemd runs it.

PID 1 here is not systemd, so the test does what systemd does: it holds the
listening socket for the whole test and starts each proxy process with the
socket as fd 3, `LISTEN_FDS=1` and `LISTEN_PID` set to the proxy's own pid
(a shell `exec`s into the proxy, so `$$` is that pid), and with
`NOTIFY_SOCKET` pointing at a datagram socket the test reads.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from .loadclient import LoadClient
from .support import ROOT, PoolProcess, ProxyProcess, open_conn, wait_for


class Notifications:
    """The test's own NOTIFY_SOCKET: collects what the proxy sends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def wait(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages):
                return
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError(f"no {text!r} notification; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


# What systemd does between fork and exec: the socket becomes fd 3, and
# LISTEN_PID names the process that will run (exec keeps the pid).
_EXEC_AS_SYSTEMD = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


class Activated:
    """One proxy process started the way systemd starts it."""

    def __init__(self, config_path: str, listener: socket.socket, notify: str) -> None:
        fd = listener.fileno()
        env = dict(os.environ, NOTIFY_SOCKET=notify, PYTHONUNBUFFERED="1")
        with open(config_path + ".log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _EXEC_AS_SYSTEMD, str(fd), sys.executable, "-m",
                 "proxy.cli", "serve", "-c", config_path],
                pass_fds=(fd,), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def pools():
    blue, green = PoolProcess("blue"), PoolProcess("green")
    yield blue, green
    blue.stop()
    green.stop()


@pytest.fixture
def held(tmp_path, pools):
    """The listening socket, held by the test as systemd's .socket unit would."""
    blue, green = pools
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    cfg = ProxyProcess(tmp_path, {"blue": [blue.address], "green": [green.address]},
                       {"blue": 100, "green": 0})  # writes the config; never started itself
    notify = Notifications(os.path.join(os.path.dirname(cfg.admin), "notify.sock"))
    yield listener, cfg, notify
    notify.close()
    listener.close()


def test_proxy_restarts_under_load_without_failing_a_request(held):
    listener, cfg, notify = held
    port = listener.getsockname()[1]
    proxy = Activated(cfg.config_path, listener, notify.path)
    notify.wait("READY=1")
    with LoadClient(port, connections=8, duration=90) as load:
        wait_for(lambda: load.result().ok > 200, what="traffic before the first restart")
        for restart in range(3):
            notify.messages.clear()
            assert proxy.stop() == 0
            notify.wait("STOPPING=1")
            # Between the two processes the kernel queues connections on the
            # socket we hold; the new process accepts them.
            proxy = Activated(cfg.config_path, listener, notify.path)
            notify.wait("READY=1")
            before = load.result().ok
            wait_for(lambda: load.result().ok > before + 200, what=f"traffic after restart {restart}")
        result = load.stop()
    assert proxy.stop() == 0
    assert result.failures == []
    assert result.ok > 800
    assert result.by_pool["blue"] == result.ok


def test_restart_keeps_weights_and_generation(held):
    listener, cfg, notify = held
    port = listener.getsockname()[1]
    proxy = Activated(cfg.config_path, listener, notify.path)
    notify.wait("READY=1")
    cfg.cli("weights", "blue=0", "green=100", check=True)
    generation = cfg.status()["generation"]
    assert proxy.stop() == 0
    notify.messages.clear()
    proxy = Activated(cfg.config_path, listener, notify.path)
    notify.wait("READY=1")
    try:
        status = cfg.status()
        assert status["weights"] == {"blue": 0, "green": 100}
        assert status["generation"] == generation
        conn = open_conn(port)
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        assert resp.getheader("X-Pool") == "green"
    finally:
        proxy.stop()


def test_sigterm_finishes_in_flight_requests_before_exiting(held):
    listener, cfg, notify = held
    port = listener.getsockname()[1]
    proxy = Activated(cfg.config_path, listener, notify.path)
    notify.wait("READY=1")
    conn = open_conn(port, timeout=20)
    conn.request("GET", "/slow?s=2")
    time.sleep(0.5)  # the request is at the upstream now
    proxy.proc.send_signal(signal.SIGTERM)
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and body.startswith(b"slow answer from blue")
    assert resp.getheader("Connection") == "close"  # no keep-alive while stopping
    assert proxy.proc.wait(timeout=30) == 0
