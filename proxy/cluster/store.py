"""The fleet's routing state on etcd: one key, written by compare-and-swap, watched.

Every change a host makes is a transaction on `KEY/state` that succeeds only
if the key's mod_revision is still the one this host last applied; so two
hosts cannot both move from the same state, and If-Match means the same as
on one host.  A host that loses the race takes the winner's state and says
the change was stale (412, or made again without If-Match: admin.py).
What other hosts write arrives through a watch and is applied through
`Controller.adopt`.  Each state in force is also written to this host's
state file, so the host can start while etcd is down.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from ..commands import StaleState
from ..control.state import SavedState, StateError, decode, encode, save
from .etcd import Etcd, Unreachable, Value

RETRY = 1.0  # seconds between attempts to reach etcd again


class FleetUnavailable(StateError):
    """etcd did not answer: nothing was changed anywhere."""

    status = 503


class Reachability:
    """Whether etcd answered the last call, and since when it has not (wall clock)."""

    def __init__(self, events) -> None:
        self.events = events
        self.since: float | None = None
        self.error = ""
        # Set while etcd does not answer: a watch that looks open may be dead (a
        # host that vanished sends no reset), so it is dropped and made again.
        self.lost = asyncio.Event()

    @property
    def reachable(self) -> bool:
        return self.since is None

    def up(self) -> None:
        if self.since is not None:
            self.events.emit("cluster_reachable", after=round(time.time() - self.since, 1))
            self.since, self.error = None, ""
            self.lost.clear()

    def down(self, exc: Exception) -> None:
        self.error = str(exc)
        self.lost.set()
        if self.since is None:
            self.since = time.time()
            self.events.emit("cluster_unreachable", level="error", error=self.error)

    def refusal(self) -> FleetUnavailable:
        since = time.strftime("%H:%M:%S", time.localtime(self.since or time.time()))
        return FleetUnavailable(f"etcd is unreachable (since {since}: {self.error}); "
                                "nothing changed, traffic keeps its last known routing")


class SharedState:
    def __init__(self, etcd: Etcd, key: str, state_file: str, pools: Callable[[], list[str]],
                 reach: Reachability, events, log) -> None:
        self.etcd = etcd
        self.key = f"{key}/state".encode()
        self.state_file = state_file
        self.pools = pools  # the configured pools now (a reload may change them)
        self.reach = reach
        self.events = events
        self.log = log
        self.revision = 0  # the mod_revision of the state in force here (0: none from etcd)
        # Set by the fleet: the state in force here, and how another host's is applied.
        self.current: Callable[[], SavedState] | None = None
        self.adopt: Callable[[SavedState], None] | None = None
        self._rewatch = asyncio.Event()  # check() found what the watch missed
        self._saving: bytes | None = None  # what save() is writing, until etcd answers

    # -- a change made here --------------------------------------------------------

    async def save(self, state: SavedState) -> bool:
        """Write `state` over the revision in force here, or raise and change nothing.

        True when it is the state in force here now; False when, while etcd
        answered, the watch already applied a newer one (another host's change,
        made after ours): ours is saved, but it must not replace that one.
        """
        data = encode(state)
        self._saving = data
        try:
            written, there = await self.etcd.swap(self.key, data, self.revision)
        except Unreachable as exc:
            self.reach.down(exc)
            raise self.reach.refusal() from None
        finally:
            self._saving = None
        self.reach.up()
        if not written and there is not None and there.value == data:
            # Our own write, committed by an endpoint that then did not answer in
            # time and retried on the next one (etcd.py): it is there.
            written = True
        if not written:
            if there is None:
                self.revision = 0  # the key was deleted: the next try creates it
            else:
                self.take(there)
            raise StaleState("another host changed the fleet's routing state first (now "
                             f"generation {self.current().generation}); nothing changed")
        if self.revision > there.mod_revision:
            return False
        self.revision = there.mod_revision
        self._mirror(state)
        return True

    def _mirror(self, state: SavedState) -> None:
        """The state file follows; failing that is logged, not undone: the
        change is the fleet's already."""
        try:
            save(self.state_file, state)
        except StateError as exc:
            self.log.error("state_save_failed", detail=str(exc), fleet_revision=self.revision)

    # -- changes from elsewhere ----------------------------------------------------

    def take(self, value: Value) -> None:
        """Apply the state etcd holds at `value`, unless this host has it already."""
        if value.mod_revision <= self.revision:
            return
        if value.value == self._saving:
            # Our own write, watched before etcd's answer to it: save() applies it
            # (applying it here would also end a rollout under the clock's feet).
            return
        self.revision = value.mod_revision
        try:
            state = decode(value.value, self.pools())
        except ValueError as exc:
            # Not applied; this host's next change overwrites it (it holds the revision).
            self.events.emit("fleet_state_refused", level="error", revision=value.mod_revision,
                             reason=str(exc))
            return
        self.adopt(state)
        self._mirror(state)

    async def sync(self) -> int:
        """Take the state etcd holds now (or give it ours when it holds none); the
        store's revision at that moment, where a watch goes on from."""
        value, revision = await self.etcd.get(self.key)
        self.reach.up()
        if value is None:
            await self._seed()
        else:
            self.take(value)
        return revision

    async def follow(self) -> None:
        """Keep the state in force here the fleet's: read it, then watch it; when etcd
        goes away, retry every RETRY s, and on its return take what it holds."""
        while True:
            try:
                revision = await self.sync()
                await self._watch(revision + 1)
            except Unreachable as exc:
                self.reach.down(exc)
            except Exception as exc:  # a bug or a reply of a shape we never saw: go on
                self.log.error("fleet_watch_failed", error=repr(exc))
            await asyncio.sleep(RETRY)

    async def _watch(self, start: int) -> None:
        """Apply each change from `start` on, until the watch breaks or any call to
        etcd fails (then the watch may be dead without knowing it)."""
        async def changes() -> None:
            async for events in self.etcd.watch(self.key, start):
                for event in events:
                    if event.kind == "put":
                        self.take(Value(event.key, event.value, event.mod_revision))
                    else:
                        self.revision = 0  # deleted: this host's next change recreates it

        self._rewatch.clear()
        watch = asyncio.ensure_future(changes())
        lost = asyncio.ensure_future(self.reach.lost.wait())
        missed = asyncio.ensure_future(self._rewatch.wait())
        try:
            await asyncio.wait({watch, lost, missed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, lost, missed):
                task.cancel()
            await asyncio.gather(watch, lost, missed, return_exceptions=True)
        if watch.done() and not watch.cancelled() and watch.exception() is not None:
            raise watch.exception()

    async def check(self) -> None:
        """A look at the key beside the watch (fleet.py does it every few beats):
        a change a broken watch missed is taken all the same."""
        value, _ = await self.etcd.get(self.key)
        if value is not None and value.mod_revision > self.revision:
            # The watch should have brought it: it is dead (its endpoint gone, say,
            # while another answers), so it is made again.
            self.take(value)
            self._rewatch.set()

    async def _seed(self) -> None:
        """An empty key (a new fleet, or etcd lost its data): this host's state
        becomes the fleet's, unless another host's got there first."""
        state = self.current()
        written, there = await self.etcd.swap(self.key, encode(state), 0)
        if written:
            self.revision = there.mod_revision
            self.events.emit("fleet_state_seeded", generation=state.generation,
                             weights=dict(state.weights))
        elif there is not None:
            self.take(there)
