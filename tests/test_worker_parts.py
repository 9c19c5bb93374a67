"""The pieces of `workers: N` that need no process: the channel's framing and
the sums of the workers' counters (proxy/workers/channel.py, report.py)."""

from __future__ import annotations

import pickle
import struct
import types
from types import SimpleNamespace

from proxy.config.values import parse_address
from proxy.dataplane.pool import Pool
from proxy.dataplane.router import table_from
from proxy.dataplane.upstream import Upstream
from proxy.workers.channel import MAX_FRAME, Channel
from proxy.workers.report import Totals


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def channel() -> tuple[Channel, list]:
    got: list = []
    ch = Channel(got.append, lambda: got.append("lost"))
    ch.connection_made(FakeTransport())
    return ch, got


def test_frames_survive_any_split_of_the_bytes():
    sender, _ = channel()
    table = table_from({"blue": 90, "green": 10}, generation=7, epochs={"blue": 2})
    messages = [(1, "table", (table,)), (2, "health", ("blue", "127.0.0.1:9501", False)),
                (3, "report", ())]
    for message in messages:
        sender.send(message)
    wire = bytes(sender.transport.written)
    # What went on the wire: a 4-byte big-endian length, then the pickle.
    (size,) = struct.unpack_from("!I", wire)
    assert pickle.loads(wire[4:4 + size]) == messages[0]
    for cut in range(len(wire) + 1):
        receiver, got = channel()
        receiver.data_received(wire[:cut])
        receiver.data_received(wire[cut:])
        assert got == messages
        # A routing table arrives with its read-only mappings still read-only.
        assert isinstance(got[0][2][0].weights, types.MappingProxyType)


def test_an_oversized_frame_closes_the_channel_unread():
    receiver, got = channel()
    receiver.data_received(struct.pack("!I", MAX_FRAME + 1) + b"x" * 10)
    assert got == [] and receiver.transport.closed


def test_a_send_after_the_far_side_went_is_dropped():
    sender, _ = channel()
    sender.transport.closed = True
    sender.send((1, "report", ()))
    assert sender.transport.written == b""


def mirror() -> SimpleNamespace:
    """The supervisor's plane as report.Totals sees it: pools of upstreams."""
    ups = [Upstream(parse_address("127.0.0.1:9501"), "blue", None),
           Upstream(parse_address("127.0.0.1:9502"), "blue", None)]
    return SimpleNamespace(pools={"blue": Pool("blue", ups)})


def worker_report(by_class, inflight, closes=0, latency_bucket=0, holding=()) -> dict:
    counts = [0] * 16
    counts[latency_bucket] = sum(by_class)
    return {"pid": 1, "clients": 3, "tunnels": 1, "held": 2,
            "holding": {"blue": list(holding)} if holding else {},
            "pools": {"blue": {"by_class": by_class, "latency": (counts, sum(by_class), 0.5),
                               "drain_cut": 1,
                               "upstreams": {"127.0.0.1:9501": (inflight, closes, 0),
                                             "gone:1": (5, 5, 5)}}}}


def test_the_mirror_shows_the_sum_of_the_workers():
    totals, plane = Totals(), mirror()
    totals.update(0, worker_report([0, 0, 10, 0, 0, 1], inflight=2, closes=1,
                                   holding=[("http", 5.0, b"GET", b"/b")]))
    totals.update(1, worker_report([1, 0, 20, 0, 0, 0], inflight=3, latency_bucket=3,
                                   holding=[("http", 4.0, b"GET", b"/a")]))
    totals.apply(plane)
    pool = plane.pools["blue"]
    assert pool.by_class == [1, 0, 30, 0, 0, 1] and pool.requests == 32 and pool.errors == 2
    assert pool.latency.counts[0] == 11 and pool.latency.counts[3] == 21
    assert pool.latency.total == 32 and pool.drain_cut == 2
    first, second = pool.upstreams
    assert (first.inflight, first.closes) == (5, 1) and second.inflight == 0
    assert totals.total("clients") == 6 and totals.total("held") == 4
    assert [target for _, _, _, target in totals.holding()["blue"]] == [b"/a", b"/b"]


def test_a_retired_worker_leaves_its_counts_but_not_its_in_flight():
    totals, plane = Totals(), mirror()
    totals.update(0, worker_report([0, 0, 10, 0, 0, 0], inflight=2, closes=1))
    totals.update(1, worker_report([0, 0, 5, 0, 0, 0], inflight=1))
    totals.retire(0)
    totals.update(0, worker_report([0, 0, 0, 0, 0, 0], inflight=0))  # its replacement
    totals.apply(plane)
    pool = plane.pools["blue"]
    assert pool.requests == 15 and pool.drain_cut == 3  # never backwards
    assert pool.upstreams[0].inflight == 1 and pool.upstreams[0].closes == 1
    totals.retire(7)  # a slot that never reported: nothing to keep
    totals.apply(plane)
    assert pool.requests == 15


class Writes:
    """A text stream that records what each flush would write in one syscall."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self.writes.append(self._buffer)
            self._buffer = ""

    def isatty(self) -> bool:
        return False


def test_workers_write_the_access_log_in_whole_lines():
    """Two workers share stdout (a pipe to journald) or a file: every write is whole
    lines, each write small enough for a pipe to take at once."""
    from proxy.dataplane.accesslog import SHARED_WRITE, AccessLog

    req = SimpleNamespace(method=b"GET", target=b"/" + b"x" * 150, request_id=b"id")
    for shared, most_writes in ((True, None), (False, 1)):
        out = Writes()
        log = AccessLog("json", out, shared=shared)
        for _ in range(300):
            log.record(req, 200, "blue", "127.0.0.1:9501", 0.001, 10, "127.0.0.1")
        log.flush()
        lines = "".join(out.writes).splitlines()
        assert len(lines) == 300 and all(line.startswith("{") for line in lines)
        assert all(w.endswith("\n") for w in out.writes)
        if shared:
            assert len(out.writes) > 1 and all(len(w) <= SHARED_WRITE + 1 for w in out.writes)
        else:
            assert len(out.writes) == most_writes  # one process: one write per batch


def test_a_worker_that_cannot_apply_a_change_exits_unacknowledged(monkeypatch):
    """It must not serve one more request without the change, not even on a
    keep-alive connection: it exits at once, and its replacement starts with the
    whole state (the supervisor's wait for it ends when its channel closes)."""
    import asyncio

    from proxy.workers import child

    class Exited(Exception):
        pass

    def exit_now(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(child.os, "_exit", exit_now)

    class Plane:
        def set_table(self, table):
            raise RuntimeError("a table this worker cannot take")

    class Recorder:
        def __init__(self) -> None:
            self.sent: list = []

        def send(self, value) -> None:
            self.sent.append(value)

    async def scenario():
        worker = child.Worker(channel_fd=-1)
        worker.plane, worker.channel, worker._early = Plane(), Recorder(), None
        try:
            worker._received((7, "table", (object(),)))
        except Exited as exc:
            return worker.channel, exc.args[0]
        return worker.channel, None

    channel, code = asyncio.run(scenario())
    assert code == 70 and channel.sent == []
