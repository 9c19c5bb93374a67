"""The data plane's shared context: pools, the routing table, and timers.

Client connections and their exchanges hold a reference to one `DataPlane`;
the control plane changes routing by swapping `table` (one attribute store, so
a weight change applies to the very next request) and health through
`set_health` (the health checker's verdict, or a worker told it by the
supervisor).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from .forwarding import Forwarding
from .inflight import in_flight
from .pause import HeldRequests
from .pool import Pool
from .router import Choice, RoutingTable, choose_pool
from .sticky import Signer, find_cookie
from .upstream import Upstream
from .writes import Outbox

if TYPE_CHECKING:
    from .accesslog import AccessLog
    from ..config import Config


class DataPlane:
    __slots__ = (
        "loop", "config", "timeouts", "pools", "table", "healthy", "signer", "access",
        "log", "clients", "tunnels", "draining", "max_body", "max_header", "body_memory",
        "max_connections", "read_timeouts", "cookie_name", "tester_cookie", "our_cookies",
        "_cookie_lines", "_random", "on_passive_failure", "outbox", "forwarding",
        "idle", "evicted", "pause",
    )

    def __init__(self, loop, config: Config, table: RoutingTable, signer: Signer,
                 log, access: AccessLog | None) -> None:
        self.loop = loop
        self.signer = signer
        self.log = log
        self.access = access
        self.clients: set = set()  # of client.ClientConnection (which imports us)
        # Client connections waiting for a request, longest idle first (a dict
        # keeps insertion order): at the connection cap the first is closed to
        # admit a new client, as nginx reclaims keep-alive connections.
        self.idle: dict = {}
        self.evicted = 0
        self.pause = None  # a pause.HeldRequests while `switchyard pause` holds requests
        self.tunnels: set = set()
        self.draining = False
        self.pools: dict[str, Pool] = {}
        self.healthy: frozenset[str] = frozenset()
        self._random = random.random
        self.on_passive_failure = None  # health checker: an upstream refused connects
        self.outbox = Outbox(loop)
        self.forwarding = Forwarding(config)
        self.table = table  # apply_config reads its disabled upstreams
        self.apply_config(config)
        self.set_table(table)

    # -- configuration -------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        """Take a (re)loaded config; upstreams that stay keep their connections."""
        self.config = config
        self.timeouts = config.timeouts
        self.max_body = config.limits.max_body
        self.max_header = config.limits.max_header
        self.body_memory = config.limits.body_memory
        self.max_connections = config.limits.max_connections
        # Seconds per read phase of a client connection, resolved once per config.
        # (Imported here: the compiled reading module cimports this one at load.)
        from .reading import DEADLINES
        self.read_timeouts = {phase: getattr(config.timeouts, name)
                              for phase, name in DEADLINES.items()}
        self.cookie_name = config.sticky.cookie.encode()
        self.tester_cookie = self.cookie_name + b"_tester"
        self.our_cookies = frozenset({self.cookie_name, self.tester_cookie})
        self.forwarding.configure(config)
        self.pools = {name: self._pool(pc) for name, pc in config.pools.items()}
        self._apply_disabled()  # new Upstream objects start enabled
        self._mint_cookies()  # the cookie's name or max_age may be new

    def _pool(self, pc) -> Pool:
        old = self.pools.get(pc.name)
        known = {str(u.address): u for u in old.upstreams} if old else {}
        ups = []
        for addr in pc.upstreams:
            up = known.pop(str(addr), None)
            if up is None:
                up = Upstream(addr, pc.name, self.loop)
            # New or kept over a reload (with its connections and counters): the settings
            # of this config.
            up.connect_timeout = self.config.timeouts.upstream_connect
            up.idle_timeout = self.config.timeouts.upstream_idle
            up.response_timeout = self.config.timeouts.upstream_response
            up.eject_after = self.config.health.eject_after
            up.on_change = self._upstream_changed
            up.log_event = self.log_event
            ups.append(up)
        for gone in known.values():
            gone.close_idle()  # in-flight requests on them finish on their own
        pool = Pool(pc.name, ups, pc.balance)
        if old is not None:
            # Counters carry over a reload (requests still in flight count into the
            # old object; what they add there is lost, a known, small undercount).
            pool.by_class = old.by_class
            pool.drain_cut = old.drain_cut
            pool.latency = old.latency
        return pool

    def set_table(self, table: RoutingTable) -> None:
        self.table = table
        self._mint_cookies()
        self._apply_disabled()

    def _mint_cookies(self) -> None:
        """The Set-Cookie line of each pool, made once per table or config."""
        table = self.table
        self._cookie_lines = {pool: self._cookie_line(pool, table.epoch(pool))
                              for pool in table.weights}

    def _apply_disabled(self) -> None:
        """Mirror the table's disabled upstreams on the Upstream objects (read per pick)."""
        disabled = self.table.disabled
        for name, pool in self.pools.items():
            off = disabled.get(name, frozenset())
            for up in pool.upstreams:
                enabled = up.label not in off
                if up.enabled and not enabled:
                    up.close_idle()  # nothing new goes there; its idle connections go now
                up.enabled = enabled
        self._refresh_health()

    def _cookie_line(self, pool: str, epoch: int) -> bytes:
        value = self.signer.sticky(pool, epoch)
        max_age = int(self.config.sticky.max_age)
        return (b"Set-Cookie: %s=%s; Max-Age=%d; Path=/; HttpOnly; SameSite=Lax\r\n"
                % (self.cookie_name, value, max_age))

    # -- health --------------------------------------------------------------------

    def upstream(self, pool: str, label: str) -> Upstream | None:
        """The upstream `label` of `pool`, if the config still has it."""
        for up in self.pools[pool].upstreams if pool in self.pools else ():
            if up.label == label:
                return up
        return None

    def set_health(self, upstream: Upstream, healthy: bool) -> None:
        """The health checker's verdict on `upstream` (control/health.py decides)."""
        upstream.healthy = healthy
        upstream.passive_failures = 0  # a verdict starts the count of refusals anew
        self._refresh_health()

    def _refresh_health(self) -> None:
        # The pools a request may go to, computed here once, not per request.
        self.healthy = frozenset(name for name, pool in self.pools.items() if pool.healthy)

    def _upstream_changed(self, upstream: Upstream, cause: str) -> None:
        if self.on_passive_failure is not None:
            self.on_passive_failure(upstream, cause)

    # -- pause (control/pausing.py decides when) -----------------------------------

    def start_pause(self, timeout: float) -> HeldRequests:
        """Hold new requests for `timeout` seconds; a pause already on keeps what it
        holds and gets the new deadline."""
        if self.pause is None:
            self.pause = HeldRequests(timeout)
        else:
            self.pause.until = time.monotonic() + timeout
        return self.pause

    def end_pause(self) -> int:
        """Let the held requests through, oldest first; how many went."""
        held, self.pause = self.pause, None
        return held.release() if held is not None else 0

    # -- per request ---------------------------------------------------------------

    def choose(self, req, peer: str, via_proxy: bool = False) -> Choice | None:
        """The pool for `req` (router.choose_pool); a pool's grace period is
        judged at the request's arrival, which spares a clock read.

        `via_proxy`: `peer` is one of `trusted_proxies`, so the client is the one
        its X-Forwarded-For names (see `Forwarding.client_address`)."""
        sticky = override = None
        cookie = req.cookie
        # Both of our cookies start with cookie_name: one search rules them out.
        if cookie is not None and cookie.find(self.cookie_name) >= 0:
            value = find_cookie(cookie, self.cookie_name)
            if value is not None:
                sticky = self.signer.verify_sticky(value)
            tester = find_cookie(cookie, self.tester_cookie)
            if tester is not None:
                override = self.signer.verify_tester(tester)
        fw = self.forwarding
        if req.override is not None and \
                fw.is_tester(fw.client_address(req.xff, peer) if via_proxy else peer):
            override = req.override.decode("latin-1")
        return choose_pool(self.table, self.healthy, sticky, override, self._random(),
                           req.started)

    def set_cookie_line(self, pool: str, secure: bool = False) -> bytes:
        line = self._cookie_lines[pool]
        # The client came over HTTPS (a trusted TLS terminator says so): Secure.
        return line[:-2] + b"; Secure\r\n" if secure else line

    def log_event(self, event: str, **fields) -> None:
        self.log.warning(event, **{k: v for k, v in fields.items() if v is not None})

    # -- timers and shutdown -------------------------------------------------------

    def sweep(self) -> None:
        """Enforce deadlines; run a few times a second instead of a timer per request."""
        now = time.monotonic()
        for client in [c for c in self.clients if c.deadline and c.deadline < now]:
            if client.transport is not None:
                client.timed_out(now)
        for client in [c for c in self.clients if c.send_deadline and c.send_deadline < now]:
            if client.transport is not None:
                client.send_timed_out()
        for client in [c for c in self.clients if c.current and c.current.conn]:
            conn = client.current.conn
            if conn.deadline and conn.deadline < now:
                conn.timed_out()
        idle_limit = self.timeouts.upstream_idle
        for pool in self.pools.values():
            for up in pool.upstreams:
                up.close_idle(older_than=idle_limit)

    def inflight(self) -> int:
        return sum(1 for c in self.clients if c.current is not None)

    def client_count(self) -> int:
        return len(self.clients)

    def tunnel_count(self) -> int:
        return len(self.tunnels)

    def workers_view(self) -> list[dict] | None:
        """The data-plane processes, for `status`: None when this one is the only one."""
        return None

    def holding(self) -> dict[str, list[tuple[str, float, bytes, bytes]]]:
        """What is in flight per pool, oldest first: what keeps a drain waiting."""
        return in_flight(self.clients, self.tunnels)

    def evict_idle(self) -> bool:
        """Close the longest-idle client connection; False when none is idle."""
        while self.idle:
            client = next(iter(self.idle))
            del self.idle[client]
            if client.close_if_idle():
                self.evicted += 1
                return True
        return False

    def close_idle_clients(self, idle_for: float = 0.0) -> int:
        """Close connections idle for `idle_for` seconds or more; return how many
        connections are still counted (those just closed leave a moment later).

        While the proxy drains, a connection that carries a request gets its
        answer with `Connection: close`, the one notice a client cannot miss;
        closing an idle connection races with a request the client may be
        sending at that moment (HAProxy's `idle-close-on-response` makes the
        same trade), so a connection idle for a moment only is given `idle_for`
        to use or lose.
        """
        cutoff = time.monotonic() - idle_for
        for client in [c for c in self.idle if c.idle_since <= cutoff]:
            client.close_if_idle()
        return len(self.clients)

    def cut(self, pool: str, address: str | None = None) -> int:
        """End every exchange and tunnel still open to `pool` (or to its upstream
        `address`): a drain's deadline.  Returns how many, and counts them in the
        pool's `drain_cut`."""
        def held(up) -> bool:
            return up is not None and up.pool == pool and (address is None or up.label == address)

        cut = 0
        for exchange in [c.current for c in self.clients if c.current is not None]:
            if held(exchange.holds()):
                exchange.cut()
                cut += 1
        for tunnel in [t for t in self.tunnels if held(t.upstream)]:
            tunnel.close(error="drain_cut")
            cut += 1
        if pool in self.pools:
            self.pools[pool].drain_cut += cut
        return cut

    async def cut_everywhere(self, pool: str, address: str | None = None) -> int:
        """`cut` on every data plane there is: this one (workers/broadcast.py has N)."""
        return self.cut(pool, address)
