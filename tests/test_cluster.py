"""A fleet (SPEC §2.6): three switchyard processes on this machine, each with its
own config and state file, sharing one routing state on a real etcd.

Each host routes to the same two demo pools (blue, green), so a request
through any host says by its X-Pool header which routing that host applies.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from .kit.etcd import EtcdServer
from .support import ProxyProcess, admin, get, open_conn, wait_for


@pytest.fixture(scope="module")
def etcd():
    server = EtcdServer()
    yield server
    server.close()


@pytest.fixture
def fleet(tmp_path, pools, etcd, request):
    """fleet(names, greens={name: [addresses]}, extra="", own={name: config}) ->
    started hosts, one ProxyProcess each, under a key of this test's own."""
    blue, green = pools
    started: list[ProxyProcess] = []
    key = "/sy/" + request.node.name.replace("[", "-").replace("]", "")[:60]

    def start(names=("a", "b", "c"), greens: dict | None = None, extra: str = "",
              lease: str = "3s", own: dict | None = None) -> list[ProxyProcess]:
        hosts = []
        for name in names:
            os.makedirs(tmp_path / name, exist_ok=True)
            proxy = ProxyProcess(
                tmp_path / name,
                {"blue": [blue.address], "green": (greens or {}).get(name, [green.address])},
                {"blue": 100, "green": 0},
                extra=f'cluster: {{etcd: ["{etcd.url}"], key: {key}, host: {name}, '
                      f"lease: {lease}}}\n" + extra + (own or {}).get(name, ""))
            started.append(proxy)
            try:
                hosts.append(proxy.start())
            except AssertionError:
                raise AssertionError(f"host {name} did not start: {proxy.lines[-5:]}") from None
        wait_for(lambda: all(len(h.status()["cluster"]["hosts"]) == len(names) for h in hosts),
                 10, 0.2, what="every host to see the others")
        return hosts

    yield start
    for proxy in started:
        if proxy.proc is not None and proxy.proc.poll() is None:
            proxy.stop()
        elif proxy.proc is not None:
            proxy.kill()


def pool_of(proxy: ProxyProcess) -> str:
    """The pool a new request through `proxy` goes to (a new client: no cookie)."""
    conn = open_conn(proxy.port)
    try:
        resp, _ = get(conn)
        return resp.getheader("X-Pool")
    finally:
        conn.close()


def routes_all_to(hosts, pool: str) -> bool:
    return all(all(pool_of(h) == pool for _ in range(5)) for h in hosts)


def test_a_cutover_and_a_rollback_on_one_host_reach_every_host(fleet):
    a, b, c = fleet(own={"c": "workers: 2\n"})  # c forwards in two worker processes
    status, _, body = admin(a, "POST", "/cutover", {"to": "green"})
    assert status == 200, body
    # Applied through etcd's watch; bounded here, measured in benchmarks/fleet.py.
    wait_for(lambda: routes_all_to([a, b, c], "green"), 5, 0.05, what="green on every host")
    generations = {h.status()["generation"] for h in (a, b, c)}
    assert generations == {1}
    # The person's view: every host, its generation; the metrics an alert needs.
    text = b.cli("status", check=True).stdout
    assert "fleet /sy/" in text and "this host is b, etcd reachable" in text
    assert [line.split()[:2] for line in text.splitlines() if line[:2] in ("a ", "b ", "c ")] \
        == [["a", "1"], ["b", "1"], ["c", "1"]]
    metrics = admin(c, "GET", "/metrics")[2].decode()
    assert "switchyard_cluster_reachable 1" in metrics and "switchyard_cluster_hosts 3" in metrics
    for h in (b, c):
        applied = h.events("fleet_state_applied")[-1]
        assert applied["generation"] == 1 and applied["new"] == {"blue": 0, "green": 100}

    status, _, body = admin(b, "POST", "/rollback")
    assert status == 200, body
    wait_for(lambda: routes_all_to([a, b, c], "blue"), 5, 0.05, what="blue on every host")
    views = [h.status() for h in (a, b, c)]
    assert {v["generation"] for v in views} == {2} and {v["previous"] for v in views} == {None}
    # Every host keeps the fleet's state in its own state file too.
    for h in (a, b, c):
        with open(h.state_file) as f:
            assert json.load(f)["generation"] == 2


def test_if_match_races_between_hosts_are_won_once(fleet):
    a, b, c = fleet()
    generation = a.status()["generation"]
    results = {}

    def put(host, weights):
        results[host.dir.name] = admin(host, "PUT", "/weights", weights,
                                       {"If-Match": f'"{generation}"'})

    racers = [threading.Thread(target=put, args=(a, {"blue": 90, "green": 10})),
              threading.Thread(target=put, args=(b, {"blue": 10, "green": 90}))]
    for t in racers:
        t.start()
    for t in racers:
        t.join(30)
    codes = sorted(r[0] for r in results.values())
    assert codes == [200, 412], results
    winner = next(r[2] for r in results.values() if r[0] == 200)
    loser = next(r[2] for r in results.values() if r[0] == 412)
    # As on one host: the state moved on from the generation the caller named.
    assert f"state is at generation {generation + 1}, not {generation}" in loser["error"]
    wait_for(lambda: all(h.status()["weights"] == winner["weights"] for h in (a, b, c)), 5,
             0.1, what="every host on the winner's weights")

    # Without If-Match, two operators on two hosts both get their change, in turn.
    start = a.status()["generation"]
    results.clear()
    racers = [threading.Thread(target=lambda: results.update(
                  a=admin(a, "PUT", "/weights", {"blue": 70, "green": 30}))),
              threading.Thread(target=lambda: results.update(
                  b=admin(b, "PUT", "/weights", {"blue": 30, "green": 70})))]
    for t in racers:
        t.start()
    for t in racers:
        t.join(30)
    assert [results["a"][0], results["b"][0]] == [200, 200], results
    wait_for(lambda: {h.status()["generation"] for h in (a, b, c)} == {start + 2}, 5, 0.1,
             what="both changes on every host")


def test_a_cutover_is_refused_naming_the_hosts_where_the_target_is_not_healthy(
        fleet, dead_port):
    a, b, c = fleet(greens={"c": [f"127.0.0.1:{dead_port.getsockname()[1]}"]},
                    extra="timeouts: {cutover_wait: 1s}\n")
    status, _, body = admin(a, "POST", "/cutover", {"to": "green"})
    assert status == 409, body
    assert "on c after 1s" in body["error"] and "nothing changed" in body["error"]
    assert all(h.status()["weights"] == {"blue": 100, "green": 0} for h in (a, b, c))
    hosts = {h["host"]: h for h in a.status()["cluster"]["hosts"]}
    assert hosts["c"]["pools"]["green"]["healthy"] is False
    assert hosts["b"]["pools"]["green"]["healthy"] is True
    # --force is the operator saying they know.
    status, _, body = admin(a, "POST", "/cutover", {"to": "green", "force": True})
    assert status == 200, body


def test_etcd_down_traffic_flows_and_changes_are_refused_then_the_hosts_converge(
        fleet, etcd):
    a, b, c = fleet()
    assert admin(a, "PUT", "/weights", {"blue": 0, "green": 100})[0] == 200
    wait_for(lambda: routes_all_to([a, b, c], "green"), 5, 0.05, what="green everywhere")
    etcd.stop()
    try:
        wait_for(lambda: not any(h.status()["cluster"]["reachable"] for h in (a, b, c)), 10,
                 0.2, what="every host to notice")
        # Traffic keeps its last known routing on every host: 30 requests each, all answered.
        for h in (a, b, c):
            conn = open_conn(h.port)
            answers = [get(conn) for _ in range(30)]
            assert [(r.status, r.getheader("X-Pool")) for r, _ in answers] == [(200, "green")] * 30
        view = b.status()["cluster"]
        assert view["unreachable_since"] and view["unreachable_for"] >= 0 and view["error"]
        status, _, body = admin(b, "POST", "/rollback")
        assert status == 503 and "etcd is unreachable" in body["error"]
        assert "nothing changed" in body["error"]
        assert b.status()["generation"] == 1
        # A host restarted meanwhile starts on its own state file.
        assert c.restart() == 0
        assert c.status()["weights"] == {"blue": 0, "green": 100}
        assert pool_of(c) == "green"
    finally:
        etcd.start()
    wait_for(lambda: all(h.status()["cluster"]["reachable"] for h in (a, b, c)), 15, 0.2,
             what="every host to reach etcd again")
    status, _, body = admin(c, "POST", "/rollback")
    assert status == 200, body
    wait_for(lambda: routes_all_to([a, b, c], "blue"), 5, 0.05, what="blue everywhere")
    assert {h.status()["generation"] for h in (a, b, c)} == {2}


def test_a_rollout_goes_on_when_the_host_running_it_dies(fleet):
    hosts = fleet(extra="rollout: {min_requests: 0}\n")
    status, _, body = admin(hosts[0], "POST", "/cutover",
                            {"to": "green", "steps": [50, 100], "interval": 5})
    assert status == 202, body
    leader = wait_for(lambda: hosts[0].status()["cluster"]["leader"], 5, 0.1, what="a leader")
    by_name = {h.dir.name: h for h in hosts}
    at_leader = by_name[leader].status()
    assert at_leader["cluster"]["leading"] is True
    # Mid-rollout: step 1 of 2 (each step holds 5 s; one status call is quick).
    assert at_leader["rollout"]["state"] == "running" and at_leader["rollout"]["percent"] == 50
    by_name[leader].kill()  # SIGKILL: no goodbye; its lease runs out (3 s)
    rest = [h for name, h in by_name.items() if name != leader]
    new = wait_for(lambda: (rest[0].status()["cluster"]["leader"] or leader) != leader
                   and rest[0].status()["cluster"]["leader"], 10, 0.1, what="another leader")
    assert new in [h.dir.name for h in rest]
    wait_for(lambda: all((h.status()["rollout"] or {}).get("state") == "completed"
                         for h in rest), 20, 0.2, what="the rollout to complete")
    assert all(h.status()["weights"] == {"blue": 0, "green": 100} for h in rest)
    assert routes_all_to(rest, "green")
    assert {x["host"] for x in rest[0].status()["cluster"]["hosts"]} == {h.dir.name for h in rest}
    # A host that took over ran the rest of it and saved the end (on a loaded
    # machine a short lease can pass from one survivor to the other meanwhile).
    assert by_name[new].event("cluster_leader") is not None
    assert any(h.event("rollout_completed") for h in rest), [
        (h.dir.name, [e for e in h.lines if e.get("event") != "request"][-8:])
        for h in rest]


def test_a_host_that_stops_leaves_the_fleet_at_once(fleet):
    a, b = fleet(names=("a", "b"), lease="30s")
    assert b.stop() == 0
    # Its lease is revoked on the way out, not left to run out in 30 s.
    wait_for(lambda: [h["host"] for h in a.status()["cluster"]["hosts"]] == ["a"], 5, 0.1,
             what="b gone from a's view")


def test_a_frozen_etcd_is_unreachable_and_the_watch_is_made_again_after_it(fleet, etcd):
    """SIGSTOP: etcd's connections stay open and silent, as when its machine vanishes
    from the network.  A watch on such a connection would wait forever; the hosts
    drop it when calls time out, and watch again once etcd answers."""
    a, b = fleet(names=("a", "b"))
    os.kill(etcd.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: not any(h.status()["cluster"]["reachable"] for h in (a, b)), 15, 0.2,
                 what="both hosts to notice")
        assert all(pool_of(h) == "blue" for h in (a, b))  # traffic keeps its routing
    finally:
        os.kill(etcd.proc.pid, signal.SIGCONT)
    wait_for(lambda: all(h.status()["cluster"]["reachable"] for h in (a, b)), 15, 0.2,
             what="both hosts to reach etcd again")
    assert admin(a, "POST", "/cutover", {"to": "green"})[0] == 200
    wait_for(lambda: routes_all_to([a, b], "green"), 5, 0.05, what="green on both")
    assert b.events("fleet_state_applied")[-1]["generation"] == 1
