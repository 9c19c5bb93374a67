"""`workers: 2`: two data-plane processes under one control plane (docs/SPEC.md §2.3, §2.4).

Real processes and real sockets: which worker serves a client connection is
read from /proc (the worker whose fd table holds the server side of it), so
a test can say "every connection of every worker", not "some requests".
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from .support import (
    ProxyProcess,
    admin,
    get,
    open_conn,
    wait_for,
)

WORKERS = "workers: 2\n"


def worker_pids(proxy) -> list[int]:
    return [w["pid"] for w in proxy.status()["workers"]]


def server_side_owner(client: socket.socket, proxy_port: int, pids: list[int]) -> int | None:
    """The pid of the worker holding the accepted end of `client`'s connection."""
    client_port = client.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == proxy_port and \
                    int(remote.split(":")[1], 16) == client_port:
                inode = fields[9]
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def connections_on_both(proxy, count: int, most: int = 200):
    """At least `count` keep-alive connections, each having carried one request,
    and as many more as it takes for both workers to hold some (which worker
    accepts is the kernel's choice); returns [(conn, pid)]."""
    pids = worker_pids(proxy)
    conns = []
    while len(conns) < count or {pid for _, pid in conns} != set(pids):
        assert len(conns) < most, f"{most} connections, all on one worker of {pids}"
        conn = open_conn(proxy.port)
        resp, _ = get(conn)
        assert resp.status == 200
        conns.append((conn, server_side_owner(conn.sock, proxy.port, pids)))
    return conns


def test_two_workers_each_a_child_of_the_main_process(start_proxy):
    proxy = start_proxy(extra=WORKERS)
    workers = proxy.status()["workers"]
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
    for w in workers:
        with open(f"/proc/{w['pid']}/stat") as stat:
            assert int(stat.read().rsplit(")", 1)[1].split()[1]) == proxy.proc.pid
        with open(f"/proc/{w['pid']}/environ", "rb") as environ:
            # libuv's one-accept-per-wake-up, for sockets shared by the workers
            assert b"UV_TCP_SINGLE_ACCEPT=1" in environ.read().split(b"\0")


def test_each_worker_accepts_on_its_own_port_socket_and_connections_spread(start_proxy):
    """Sockets the proxy binds itself are one SO_REUSEPORT socket per worker: the
    kernel spreads connections over them, where on one shared socket a burst of
    keep-alive connections can all land on one worker (benchmarks/accept_spread.py)."""
    proxy = start_proxy(extra=WORKERS)
    pids = worker_pids(proxy)
    listening = {pid: _listening_inodes(pid, proxy.port) for pid in pids}
    assert all(len(v) == 1 for v in listening.values()) and \
        listening[pids[0]] != listening[pids[1]]
    conns = [open_conn(proxy.port) for _ in range(40)]
    for conn in conns:
        assert get(conn)[0].status == 200
    owners = [server_side_owner(conn.sock, proxy.port, pids) for conn in conns]
    assert min(owners.count(pid) for pid in pids) >= 8, owners  # binomial: < 1e-4 to fail


def _listening_inodes(pid: int, port: int) -> set[str]:
    with open("/proc/net/tcp") as table:
        listening = {f[9] for f in (line.split() for line in table.readlines()[1:])
                     if f[3] == "0A" and int(f[1].split(":")[1], 16) == port}
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in listening:
            held.add(link[8:-1])
    return held


def test_every_keepalive_connection_follows_a_weight_change_on_its_next_request(start_proxy):
    proxy = start_proxy(extra=WORKERS)
    conns = connections_on_both(proxy, 40)
    for weights, pool in (("blue=0 green=100", "green"), ("blue=100 green=0", "blue")):
        assert proxy.cli("weights", *weights.split(), check=True).returncode == 0
        # The call has returned: the very next request of every connection, on
        # either worker, follows it.
        for conn, pid in conns:
            resp, _ = get(conn)
            assert resp.getheader("X-Pool") == pool, f"a connection on worker {pid}"


def test_status_and_metrics_are_the_sums_over_workers(start_proxy):
    proxy = start_proxy(extra=WORKERS)
    conns = connections_on_both(proxy, 10)
    for conn, _ in conns:
        for _ in range(4):
            assert get(conn)[0].status == 200
    status = proxy.status()
    served = len(conns) * 5
    assert status["pools"]["blue"]["requests"] == served
    assert sum(w["requests"] for w in status["workers"]) == served
    assert all(w["requests"] > 0 and w["inflight"] == 0 for w in status["workers"])
    assert sum(status["pools"]["blue"]["latency"]) == served
    _, _, raw = admin(proxy, "GET", "/metrics")
    text = raw.decode()
    assert f'switchyard_requests_total{{pool="blue",class="2xx"}} {served}' in text
    assert "switchyard_workers 2" in text
    shown = proxy.cli("status", check=True).stdout
    assert "WORKER" in shown and all(str(w["pid"]) in shown for w in status["workers"])
    assert f"switchyard_client_connections {len(conns)}" in text


def test_a_killed_worker_is_replaced_and_the_other_fails_nothing(start_proxy):
    proxy = start_proxy(extra=WORKERS)
    conns = connections_on_both(proxy, 16)
    victim = conns[0][1]
    failures: dict[int, list[str]] = {pid: [] for _, pid in conns}
    answered: dict[int, int] = {pid: 0 for _, pid in conns}
    stop = threading.Event()

    def keep_asking(conn, pid) -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                resp, _ = get(conn)
                assert resp.status == 200
                answered[pid] += 1
            except Exception as exc:  # counted, never retried
                failures[pid].append(repr(exc))
                return

    threads = [threading.Thread(target=keep_asking, args=c) for c in conns]
    for t in threads:
        t.start()
    wait_for(lambda: min(answered.values()) > 20, what="traffic on both workers")
    before = proxy.status()["pools"]["blue"]["requests"]
    os.kill(victim, signal.SIGKILL)
    # New clients are served meanwhile: the other worker accepts from the socket
    # the main process holds.
    for _ in range(50):
        assert get(open_conn(proxy.port))[0].status == 200
    wait_for(lambda: proxy.event("worker_started"), what="the replacement worker")
    survivor = next(pid for pid in answered if pid != victim)
    mark = answered[survivor]
    wait_for(lambda: answered[survivor] > mark + 50, what="traffic on the survivor")
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert failures[survivor] == []
    status = proxy.status()
    assert len(status["workers"]) == 2 and victim not in {w["pid"] for w in status["workers"]}
    assert sum(w["restarts"] for w in status["workers"]) == 1
    # Counters never go backwards: what the dead worker counted is kept.
    assert status["pools"]["blue"]["requests"] >= before
    exited = proxy.event("worker_exited")
    assert exited["pid"] == victim and exited["status"] == "signal SIGKILL"
    # The replacement routes by the current state.
    proxy.cli("weights", "blue=0", "green=100", check=True)
    for _ in range(20):
        assert get(open_conn(proxy.port))[0].getheader("X-Pool") == "green"


def test_pause_holds_requests_on_every_worker(start_proxy):
    proxy = start_proxy(extra=WORKERS)
    conns = connections_on_both(proxy, 6)
    proxy.cli("pause", "--timeout", "30s", check=True)
    results: list = []
    threads = [threading.Thread(target=lambda c=c: results.append(get(c)[0].getheader("X-Pool")))
               for c, _ in conns]
    for t in threads:
        t.start()
    wait_for(lambda: (proxy.status()["pause"] or {}).get("waiting") == len(conns),
             what="the requests held across both workers")
    assert results == []
    proxy.cli("weights", "blue=0", "green=100", check=True)
    proxy.cli("resume", check=True)
    for t in threads:
        t.join(timeout=10)
    assert results == ["green"] * len(conns)  # held, then routed by what was current at resume


def test_drain_reports_and_cuts_across_workers(start_proxy):
    proxy = start_proxy(extra=WORKERS)
    conns = connections_on_both(proxy, 8)
    pids = worker_pids(proxy)
    for conn, _ in conns:  # all on blue, on both workers
        conn.request("GET", "/slow?s=20")
    slow = len(conns)
    wait_for(lambda: proxy.status()["pools"]["blue"]["inflight"] == slow,
             what="the slow requests in flight")
    status = proxy.status()
    assert {w["pid"] for w in status["workers"] if w["inflight"]} == set(pids)
    proxy.cli("weights", "blue=99", "green=1", check=True)  # a drain needs another pool
    proxy.cli("drain", "blue", "--timeout", "1s", check=True)
    holding = proxy.status()["pools"]["blue"]["holding"]
    assert len(holding) == 5 and {h["path"] for h in holding} == {"/slow?s=20"}
    wait_for(lambda: proxy.status()["pools"]["blue"]["drain_cut"] == slow,
             what="the drain's deadline cutting blue on both workers")
    assert proxy.status()["pools"]["blue"]["inflight"] == 0
    assert proxy.event("drain_deadline")["cut"] == slow
    for conn, _ in conns:
        conn.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_reaches_every_worker(start_proxy, workers):
    """A new cookie name is the one set at once, on every connection of every worker
    (with one process too: the cookie line used to be made only on a table change,
    so a renamed cookie was set under its old name and never read back)."""
    proxy = start_proxy(extra=f"workers: {workers}\n")
    conns = connections_on_both(proxy, 10) if workers > 1 else [(open_conn(proxy.port), None)]
    with open(proxy.config_path) as f:
        text = f.read()
    with open(proxy.config_path, "w") as f:
        f.write(text + "sticky: {cookie: reloaded_pool}\n")
    result = proxy.cli("reload", "--json", check=True)
    assert "sticky" in result.stdout
    for conn, pid in conns:
        resp, _ = get(conn)
        assert "reloaded_pool=" in (resp.getheader("Set-Cookie") or ""), f"worker {pid}"


def test_passive_ejection_seen_by_one_worker_takes_the_upstream_out_of_every_worker(
        start_proxy, upstreams):
    """Refused connects are counted where they happen; the worker reports them, the
    one health checker ejects the upstream, and every worker stops using it."""
    dead, live = upstreams(), upstreams()
    proxy = start_proxy([dead.address, live.address], [live.address], extra=WORKERS,
                        health="{path: /health, interval: 1h, timeout: 1s, eject_after: 2}")
    conns = connections_on_both(proxy, 6)
    dead.close()
    # eject_after counts the refusals one worker met in a row: one worker meets them.
    one = next(conn for conn, pid in conns if pid == conns[0][1])

    def ejected() -> bool:
        ups = proxy.status()["pools"]["blue"]["upstreams"]
        return not next(u for u in ups if u["address"] == dead.address)["healthy"]

    for _ in range(20):
        assert get(one)[0].status == 200  # sent again on the live one: never read
        if ejected():
            break
    assert ejected()
    assert proxy.events("upstream_health_changed")[-1]["cause"] == "passive"
    retried = len(proxy.events("upstream_retry"))
    for conn, _ in conns:  # both workers: nothing goes to the ejected upstream any more
        for _ in range(5):
            assert get(conn)[0].status == 200
    assert len(proxy.events("upstream_retry")) == retried


def test_a_worker_that_cannot_confirm_a_change_is_replaced(start_proxy):
    """A stopped (hung) worker would keep routing by the old weights: the change is
    answered within the acknowledgement timeout, and the worker is killed and
    replaced by one that starts with the new state."""
    proxy = start_proxy(extra=WORKERS)
    hung = worker_pids(proxy)[0]
    os.kill(hung, signal.SIGSTOP)
    try:
        proxy.cli("weights", "blue=0", "green=100", check=True)  # answered, not hung
        unresponsive = wait_for(lambda: proxy.event("worker_unresponsive"), what="the event")
        assert unresponsive["pid"] == hung
        wait_for(lambda: proxy.event("worker_started"), what="its replacement")
    finally:
        try:
            os.kill(hung, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert hung not in worker_pids(proxy)
    for _ in range(20):
        assert get(open_conn(proxy.port))[0].getheader("X-Pool") == "green"


def test_a_second_proxy_on_the_same_port_is_refused_not_joined(start_proxy, tmp_path):
    """SO_REUSEPORT would let a second switchyard of the same user join the first's
    sockets and silently take half its traffic: it fails as a single process would."""
    from .support import free_port

    port = free_port()
    first = start_proxy(extra=WORKERS, listen=f"127.0.0.1:{port}")
    (tmp_path / "second").mkdir()
    second = ProxyProcess(tmp_path / "second", {"blue": ["127.0.0.1:1"], "green": ["127.0.0.1:1"]},
                          {"blue": 100, "green": 0}, extra=WORKERS, listen=f"127.0.0.1:{port}")
    second.start(wait=False)
    try:
        assert second.proc.wait(timeout=30) != 0
    finally:
        second.kill()
    said = " ".join(line.get("text", "") for line in second.lines)
    assert "Address already in use" in said, said
    assert first.status()["workers"] and get(open_conn(first.port))[0].status == 200


def test_a_stopping_proxy_refuses_new_connections_while_it_finishes(start_proxy):
    """As a single process closes its listeners: the main process closes its copies
    of the sockets it bound, so a new connection is refused at once instead of
    waiting in a queue nobody will accept from."""
    proxy = start_proxy(extra=WORKERS)
    slow = open_conn(proxy.port)
    slow.request("GET", "/slow?s=3")
    wait_for(lambda: proxy.status()["pools"]["blue"]["inflight"] == 1, what="the slow request")
    proxy.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: proxy.event("worker_draining"), what="the workers draining")

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_for(refused, timeout=5, what="new connections refused")
    resp = slow.getresponse()
    assert resp.status == 200 and resp.getheader("Connection") == "close"
    assert proxy.proc.wait(timeout=30) == 0
