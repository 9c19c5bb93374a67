"""Progressive cutover under real traffic: it completes, or rolls itself back."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import ROOT, admin, answering, free_port, get, open_conn, wait_for


class Traffic:
    """Cookie-less GETs from a few threads, counted by pool and status, bounded in time."""

    def __init__(self, port: int, threads: int = 4, duration: float = 60.0) -> None:
        self.port = port
        self.counts: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()
        self.stop_at = time.monotonic() + duration
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while not self.stopped.is_set() and time.monotonic() < self.stop_at:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                key = (resp.getheader("X-Pool") or "-", resp.status)
                with self.lock:
                    self.counts[key] = self.counts.get(key, 0) + 1
                time.sleep(0.002)
        finally:
            conn.close()

    def stop(self) -> dict:
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=15)
        return dict(self.counts)


@pytest.fixture
def setup(upstreams, start_proxy, request):
    """Blue and green recording upstreams behind a proxy (parametrized indirectly:
    the number of `workers`, 1 unless said; with more, the main process carries no
    traffic and judges a rollout on the counters its workers report)."""
    blue = upstreams(respond=answering("blue"))
    green = upstreams(respond=answering("green"))
    extra = f"workers: {getattr(request, 'param', 1)}\n"
    return start_proxy([blue.address], [green.address], extra=extra), blue, green


WORKERS = pytest.mark.parametrize("setup", [1, 2], indirect=True, ids=["workers-1", "workers-2"])


def rollout(proxy) -> dict | None:
    return proxy.status()["rollout"]


@WORKERS
def test_failing_green_is_rolled_back_automatically_with_the_reason(setup):
    proxy, blue, green = setup
    green.respond = answering("green", status=500)
    traffic = Traffic(proxy.port)
    try:
        result = proxy.cli("cutover", "green", "--steps", "10,50,100", "--interval", "2s",
                           "--max-error-rate", "1%", "--min-requests", "20", "--wait")
    finally:
        counts = traffic.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rolled back" in result.stdout
    state = rollout(proxy)
    assert state["state"] == "rolled_back" and state["step_index"] == 0
    assert "error rate 100.00% over 1.00%" in state["reason"]
    status = proxy.status()
    assert status["weights"] == {"blue": 100, "green": 0}
    assert counts.get(("green", 500), 0) > 0  # green really got its 10 %
    events = json.loads(proxy.cli("status", "--json").stdout)  # still answering
    assert events["generation"] >= 2
    names = [e["event"] for e in admin(proxy, "GET", "/events")[2]["events"]]
    assert "rollout_started" in names and "rollout_rolled_back" in names and "rolled_back" in names


@WORKERS
def test_healthy_green_completes_every_step(setup):
    proxy, blue, green = setup
    traffic = Traffic(proxy.port)
    try:
        result = proxy.cli("cutover", "green", "--steps", "25,50,100", "--interval", "1s",
                           "--max-error-rate", "1%", "--min-requests", "10", "--wait")
    finally:
        counts = traffic.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    state = rollout(proxy)
    assert state["state"] == "completed" and state["percent"] == 100
    assert proxy.status()["weights"] == {"blue": 0, "green": 100}
    assert counts and all(status == 200 for (_, status) in counts)
    steps = [e for e in admin(proxy, "GET", "/events")[2]["events"]
             if e["event"] == "rollout_step"]
    assert [e["percent"] for e in steps] == [50, 100]


def test_p99_guard_rolls_back_a_slow_green(setup):
    proxy, blue, green = setup
    green.respond = answering("green", delay=0.3)
    traffic = Traffic(proxy.port, threads=6)
    try:
        result = proxy.cli("cutover", "green", "--steps", "20,100", "--interval", "3s",
                           "--max-error-rate", "5%", "--max-p99", "100ms",
                           "--min-requests", "10", "--wait")
    finally:
        traffic.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "p99" in rollout(proxy)["reason"]
    assert proxy.status()["weights"] == {"blue": 100, "green": 0}


def test_restart_mid_rollout_holds_at_its_step(setup):
    proxy, blue, green = setup
    started = proxy.cli("cutover", "green", "--steps", "30,100", "--interval", "10m", "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["rollout"]["state"] == "running"
    assert proxy.restart() == 0
    state = proxy.status()
    assert state["weights"] == {"blue": 70, "green": 30}
    assert state["rollout"]["state"] == "held"
    assert "restarted" in state["rollout"]["reason"]
    # Rolling back ends it.
    assert proxy.cli("rollback").returncode == 0
    assert proxy.status()["weights"] == {"blue": 100, "green": 0}
    assert proxy.status()["rollout"]["state"] == "rolled_back"


def test_new_weights_cancel_a_running_rollout(setup):
    proxy, blue, green = setup
    proxy.cli("cutover", "green", "--steps", "30,100", "--interval", "10m", check=True)
    proxy.cli("weights", "blue=90", "green=10", check=True)
    assert rollout(proxy)["state"] == "cancelled"
    assert proxy.status()["weights"] == {"blue": 90, "green": 10}


def test_a_rollout_waiting_for_traffic_says_so_and_a_plain_cutover_clears_it(setup):
    proxy, blue, green = setup
    started = proxy.cli("cutover", "green", "--steps", "50,100", "--interval", "200ms",
                        "--min-requests", "50")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: (rollout(proxy) or {}).get("reason"), what="the rollout's waiting reason")
    assert rollout(proxy)["reason"] == "0/50 requests to judge this step"
    assert "waiting: 0/50 requests to judge this step" in proxy.cli("status").stdout
    assert proxy.cli("cutover", "green", "--force").returncode == 0  # plain: ends it
    assert rollout(proxy)["state"] == "cancelled"
    assert proxy.cli("weights", "blue=100", "green=0").returncode == 0
    assert rollout(proxy) is None  # an ended rollout does not outlive the next change
    proxy.restart()
    assert rollout(proxy) is None and "rollout" not in proxy.cli("status").stdout


def test_metrics_parse_as_prometheus_text(setup):
    proxy, blue, green = setup
    conn = open_conn(proxy.port, timeout=5)
    for _ in range(20):
        get(conn)
    text = admin(proxy, "GET", "/metrics")[2].decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["pool"], s.labels["class"]): s.value
                for s in families["switchyard_requests"].samples}
    assert requests[("blue", "2xx")] == 20
    assert "switchyard_request_duration_seconds" in families
    assert "switchyard_upstream_healthy" in families
    assert [s.value for s in families["switchyard_generation"].samples] == [0]
    assert [s.value for s in families["switchyard_rollout_step"].samples] == [0]


def test_metrics_on_a_tcp_port_are_read_only_and_parse(upstreams, start_proxy):
    port = free_port()
    blue = upstreams(respond=answering("blue"))
    proxy = start_proxy([blue.address], [blue.address],
                        extra=f'metrics: {{listen: "127.0.0.1:{port}"}}\n')
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"switchyard_requests", "switchyard_upstream_closes",
            "switchyard_pool_weight"} <= families
    for method, path in [("POST", "/metrics"), ("GET", "/status"), ("PUT", "/weights")]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=b"{}" if method != "GET" else None)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code in (404, 405)
        refused.value.close()
    assert proxy.status()["weights"] == {"blue": 100, "green": 0}


def test_the_grafana_dashboard_asks_only_for_metrics_the_proxy_exports(setup):
    proxy, _, _ = setup
    exported = {f.name for f in text_string_to_metric_families(
        admin(proxy, "GET", "/metrics")[2].decode())}
    with open(os.path.join(ROOT, "config", "grafana", "switchyard.json")) as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {re.sub(r"_(total|bucket)$", "", n) for e in exprs
             for n in re.findall(r"switchyard_[a-z_]+", e)}
    assert names and names <= exported, names - exported

