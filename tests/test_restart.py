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
import time

import pytest

from .loadclient import LoadClient
from .support import Activated, Notifications, ProxyProcess, listening_socket, open_conn, wait_for


@pytest.fixture
def held(tmp_path, pools, request):
    """The listening socket, held by the test as systemd's .socket unit would
    (parametrized indirectly: the number of `workers`, 1 unless said)."""
    blue, green = pools
    listener = listening_socket()
    workers = getattr(request, "param", 1)
    cfg = ProxyProcess(tmp_path, {"blue": [blue.address], "green": [green.address]},
                       {"blue": 100, "green": 0},  # writes the config; never started itself
                       extra=f"workers: {workers}\n")
    notify = Notifications(os.path.join(os.path.dirname(cfg.admin), "notify.sock"))
    yield listener, cfg, notify
    notify.close()
    listener.close()


@pytest.mark.parametrize("held", [1, 2], indirect=True, ids=["workers-1", "workers-2"])
def test_proxy_restarts_under_load_without_failing_a_request(held):
    """With two workers too: the held socket passes from the old main process's
    workers to the new one's."""
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
