"""The fleet's parts against a real etcd, in one process: the shared state's
compare-and-swap (proxy/cluster/store.py) and the hosts' leases, records and
leader key (members.py).  Two objects stand for two hosts."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from proxy.cluster.etcd import Etcd
from proxy.cluster.members import Membership, Tally
from proxy.cluster.store import FleetUnavailable, Reachability, SharedState
from proxy.commands import StaleState
from proxy.control.state import SavedState, encode
from proxy.dataplane.router import table_from
from proxy.dataplane.stats import BOUNDS, Snapshot

from .kit.etcd import EtcdServer


@pytest.fixture(scope="module")
def etcd():
    server = EtcdServer()
    yield server
    server.close()


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def emit(self, name: str, **fields) -> None:
        self.seen.append((name, fields))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]


class Log:
    def error(self, *args, **kwargs) -> None:
        pass


def host(etcd_url: str, key: str, tmp_path, name: str, state: SavedState):
    """A SharedState as one host has it: `state` in force, adopting what it is given."""
    events = Events()
    client = Etcd([etcd_url], timeout=1.0)
    store = SharedState(client, key, str(tmp_path / f"{name}.json"), lambda: ["blue", "green"],
                        Reachability(events), events, Log())
    held = {"state": state}
    store.current = lambda: held["state"]
    store.adopt = lambda s: held.update(state=s)
    return store, held, events, client


def state(generation: int, blue: int, green: int) -> SavedState:
    return SavedState(generation, {"blue": blue, "green": green})


def test_two_hosts_saving_from_one_revision_one_wins_and_the_other_takes_its_state(
        etcd, tmp_path):
    async def scenario():
        a, a_held, _, ca = host(etcd.url, "/p1", tmp_path, "a", state(0, 100, 0))
        b, b_held, b_events, cb = host(etcd.url, "/p1", tmp_path, "b", state(0, 100, 0))
        try:
            await a.sync()  # empty key: a's state becomes the fleet's
            await b.sync()
            assert a.revision == b.revision > 0
            await a.save(state(1, 0, 100))
            with pytest.raises(StaleState, match="another host changed .* generation 1"):
                await b.save(state(1, 50, 50))
            return a, b, b_held["state"]
        finally:
            await ca.close()
            await cb.close()

    a, b, b_state = asyncio.run(scenario())
    assert b_state == state(1, 0, 100)  # b took a's change, not its own
    assert a.revision == b.revision
    with open(tmp_path / "a.json") as f:
        assert json.load(f)["weights"] == {"blue": 0, "green": 100}  # mirrored
    with open(tmp_path / "b.json") as f:
        assert json.load(f)["generation"] == 1


def test_a_state_for_other_pools_is_refused_not_applied(etcd, tmp_path):
    async def scenario():
        a, a_held, events, client = host(etcd.url, "/p2", tmp_path, "a", state(3, 100, 0))
        try:
            await client.put(b"/p2/state", encode(SavedState(9, {"blue": 50, "canary": 50})))
            await a.sync()
            return a_held["state"], events.seen
        finally:
            await client.close()

    kept, seen = asyncio.run(scenario())
    assert kept == state(3, 100, 0)
    refused = [fields for name, fields in seen if name == "fleet_state_refused"]
    assert refused and "canary" in refused[0]["reason"]


def test_etcd_unreachable_is_a_503_that_changes_nothing_and_says_since_when(etcd, tmp_path):
    async def scenario():
        events = Events()
        client = Etcd(["http://127.0.0.1:9"], timeout=0.5)  # nothing listens there
        store = SharedState(client, "/p3", str(tmp_path / "s.json"), lambda: ["blue", "green"],
                            Reachability(events), events, Log())
        try:
            with pytest.raises(FleetUnavailable) as raised:
                await store.save(state(1, 0, 100))
            return raised.value, store, events
        finally:
            await client.close()

    error, store, events = asyncio.run(scenario())
    assert error.status == 503 and "etcd is unreachable (since " in str(error)
    assert "nothing changed" in str(error)
    assert not store.reach.reachable and store.reach.since is not None
    assert events.names() == ["cluster_unreachable"]
    assert not (tmp_path / "s.json").exists()  # not saved here either
    store.reach.up()
    assert store.reach.reachable and events.names()[-1] == "cluster_reachable"


def plane(generation: int, pools: dict[str, tuple[bool, int, int]]):
    """What Membership reads of a data plane: a table, pools with health and counters."""
    def pool(healthy, requests, errors):
        latency = SimpleNamespace(counts=[requests] + [0] * len(BOUNDS))
        return SimpleNamespace(healthy=healthy, requests=requests, errors=errors,
                               latency=latency)
    return SimpleNamespace(table=table_from({"blue": 100, "green": 0}, generation),
                           pools={name: pool(*v) for name, v in pools.items()})


def test_hosts_publish_health_and_counters_and_one_of_them_leads(etcd):
    async def scenario():
        client = Etcd([etcd.url])
        events = Events()
        a = Membership(client, "/p4", "a", 2, plane(1, {"blue": (True, 10, 1),
                                                        "green": (True, 4, 0)}),
                       Reachability(events), events)
        b = Membership(client, "/p4", "b", 2, plane(1, {"blue": (True, 20, 2),
                                                        "green": (False, 6, 3)}),
                       Reachability(events), events)
        try:
            await a.beat()
            await b.beat()
            await a.beat()  # a reads b's record
            first = (a.leading, b.leading, a.leader, b.leader)
            unhealthy = await a.unhealthy("green")
            a.counters("green")  # the mark a rollout's step would take
            for p, (requests, errors) in ((a.plane, (14, 1)), (b.plane, (16, 5))):
                green = p.pools["green"]
                green.requests, green.errors = requests, errors
                green.latency.counts[0] = requests
            await b.beat()
            await a.beat()
            total = a.counters("green")  # what both hosts counted since the mark
            await a.leave()  # a stops: its lease, record and leader key go now
            await b.beat()
            return first, unhealthy, total, b.leading, sorted(b.records)
        finally:
            await b.leave()
            await client.close()

    first, unhealthy, total, b_leads, b_sees = asyncio.run(scenario())
    assert first == (True, False, "a", "a")
    assert unhealthy == ["b"]
    assert (total.requests, total.errors, total.latency[0]) == (20, 3, 20)
    assert b_leads and b_sees == ["b"]


def snap(requests: int, errors: int) -> Snapshot:
    return Snapshot(requests, errors, (requests,) + (0,) * len(BOUNDS))


def test_the_fleets_counters_never_go_back():
    """A rollout's window is the difference of two sums: a host that joins brings no
    history, one that restarts goes on from what it had, one that leaves keeps it."""
    tally = Tally()
    tally.see("a", "green", snap(100, 5))
    tally.see("a", "green", snap(110, 6))
    assert (tally.total("green").requests, tally.total("green").errors) == (10, 1)
    tally.see("b", "green", snap(5000, 900))  # joins with a history: none of it counts
    tally.see("b", "green", snap(5004, 900))
    assert tally.total("green").requests == 14
    tally.see("a", "green", snap(3, 3))  # a restarted: its 10 stay, its 3 new ones add
    assert (tally.total("green").requests, tally.total("green").errors) == (17, 4)
    assert tally.total("green").latency[0] == 17 and tally.total("blue").requests == 0
