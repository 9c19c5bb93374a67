"""proxy/cluster/etcd.py against a real etcd (the JSON gateway on its client port)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.cluster.etcd import Etcd, Unreachable, prefix_end

from .kit.etcd import EtcdServer


@pytest.fixture(scope="module")
def etcd():
    server = EtcdServer()
    yield server
    server.close()


def run(coro):
    return asyncio.run(coro)


def test_prefix_end_is_the_first_key_past_the_prefix():
    assert prefix_end(b"/sy/hosts/") == b"/sy/hosts0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"


def test_get_put_and_a_key_that_is_not_there(etcd):
    async def scenario():
        client = Etcd([etcd.url])
        try:
            missing, revision = await client.get(b"/t1/absent")
            written = await client.put(b"/t1/state", b'{"generation": 1}')
            value, now = await client.get(b"/t1/state")
            return missing, revision, written, value, now
        finally:
            await client.close()

    missing, revision, written, value, now = run(scenario())
    assert missing is None and written > revision and now == written
    assert value.value == b'{"generation": 1}' and value.mod_revision == written


def test_swap_writes_only_over_the_revision_it_read(etcd):
    async def scenario():
        client = Etcd([etcd.url])
        try:
            created, mine = await client.swap(b"/t2/state", b"one", expected=0)
            again, there = await client.swap(b"/t2/state", b"two", expected=0)
            value, _ = await client.get(b"/t2/state")
            moved, _ = await client.swap(b"/t2/state", b"three", expected=value.mod_revision)
            stale, now = await client.swap(b"/t2/state", b"four", expected=value.mod_revision)
            return created, mine, again, there, moved, stale, now
        finally:
            await client.close()

    created, mine, again, there, moved, stale, now = run(scenario())
    assert created and not again and there.value == b"one"
    assert mine.mod_revision == there.mod_revision  # the revision of what we wrote
    assert moved and not stale and now.value == b"three"  # the second writer sees the first's


def test_a_watch_sees_every_change_from_its_revision(etcd):
    async def scenario():
        client = Etcd([etcd.url])
        try:
            _, start = await client.get(b"/t3/state")
            seen = []

            async def follow():
                async for events in client.watch(b"/t3/", start + 1, prefix=True):
                    seen.extend(events)
                    if len(seen) >= 2:
                        return

            task = asyncio.create_task(follow())
            await client.put(b"/t3/state", b"a")
            await client.put(b"/t3/hosts/h1", b"b")
            await asyncio.wait_for(task, 5)
            return seen
        finally:
            await client.close()

    seen = run(scenario())
    assert [(e.kind, e.key, e.value) for e in seen] == [("put", b"/t3/state", b"a"),
                                                       ("put", b"/t3/hosts/h1", b"b")]


def test_a_key_under_a_lease_goes_when_the_lease_does(etcd):
    async def scenario():
        client = Etcd([etcd.url])
        try:
            lease = await client.grant(5)
            await client.put(b"/t4/hosts/h1", b"healthy", lease=lease)
            ttl = await client.keep_alive(lease)
            before = [v.key for v in await client.get_prefix(b"/t4/hosts/")]
            await client.revoke(lease)
            after = [v.key for v in await client.get_prefix(b"/t4/hosts/")]
            return ttl, before, after
        finally:
            await client.close()

    ttl, before, after = run(scenario())
    assert 0 < ttl <= 5 and before == [b"/t4/hosts/h1"] and after == []


def test_no_endpoint_answering_is_unreachable_within_the_deadline(etcd):
    async def scenario():
        client = Etcd(["http://127.0.0.1:9", etcd.url], timeout=1.0)
        try:
            value, _ = await client.get(b"/t5/none")  # the second endpoint answers
            etcd.stop()
            try:
                await client.get(b"/t5/none")
            except Unreachable as exc:
                return value, str(exc)
            return value, None
        finally:
            etcd.start()
            await client.close()

    value, error = run(scenario())
    assert value is None and error is not None and "127.0.0.1:9" in error
