"""The data plane's shared context: pools, the routing table, and timers.

Client and upstream connections hold a reference to one `DataPlane`; the
control plane changes routing by swapping `table` (one attribute store, so a
weight change applies to the very next request) and health by flipping
upstream flags and calling `refresh_health`.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import random
import time
from types import MappingProxyType
from typing import TYPE_CHECKING

from .client import DEADLINES, ClientConnection
from .headers import FORWARDING, FRAMING, HOP_BY_HOP
from .pool import Pool
from .router import Choice, RoutingTable, choose_pool
from .sticky import Signer, find_cookie
from .upstream import Upstream

if TYPE_CHECKING:
    import asyncio

    from .accesslog import AccessLog
    from ..config import Config



class DataPlane:
    __slots__ = (
        "loop", "config", "timeouts", "pools", "table", "healthy", "signer", "access",
        "log", "clients", "tunnels", "draining", "max_body", "max_header",
        "body_memory",
        "max_connections", "read_timeouts", "cookie_name",
        "tester_cookie", "our_cookies", "tester_header", "_tester_nets", "_trusted_nets", "_cookie_lines",
        "_drop", "_drop_trusted", "_ids", "_id_prefix", "_random",
        "on_passive_failure", "_outbox",
        "idle", "evicted", "pause",
    )

    def __init__(self, loop, config: Config, table: RoutingTable, signer: Signer,
                 log, access: AccessLog | None) -> None:
        self.loop = loop
        self.signer = signer
        self.log = log
        self.access = access
        self.clients: set[ClientConnection] = set()
        # Client connections waiting for a request, longest idle first (a dict
        # keeps insertion order): at the connection cap the first is closed to
        # admit a new client, as nginx reclaims keep-alive connections.
        self.idle: dict[ClientConnection, None] = {}
        self.evicted = 0
        self.pause = None  # a pause.HeldRequests while `switchyard pause` holds requests
        self.tunnels: set = set()
        self.draining = False
        self.pools: dict[str, Pool] = {}
        self.healthy: frozenset[str] = frozenset()
        self._random = random.random
        self._id_prefix = os.urandom(4).hex().encode()
        self._ids = itertools.count(1)
        self.on_passive_failure = None  # health checker: an upstream refused connects
        self._outbox: list[tuple[asyncio.Transport, bytes]] = []  # see send()
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
        # Seconds per read phase of a client connection (client.DEADLINES), resolved
        # once per config instead of once per request.
        self.read_timeouts = {phase: getattr(config.timeouts, name)
                              for phase, name in DEADLINES.items()}
        self.cookie_name = config.sticky.cookie.encode()
        self.tester_cookie = self.cookie_name + b"_tester"
        self.our_cookies = frozenset({self.cookie_name, self.tester_cookie})
        header = config.tester.header
        self.tester_header = header.lower().encode() if header else None  # None: off
        self._tester_nets = [ipaddress.ip_network(n, strict=False) for n in config.tester.trusted]
        self._trusted_nets = [ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies]
        # Never copied: hop-by-hop and framing fields, Host (re-emitted from the
        # parsed request: an absolute-form target names its own), and fields we
        # set ourselves; from an untrusted peer also its forwarding claims.
        base = HOP_BY_HOP | FRAMING | {b"host", b"expect", b"x-request-id", b"x-forwarded-for"}
        if self.tester_header is not None:
            base |= {self.tester_header}
        self._drop_trusted = frozenset(base)
        self._drop = frozenset(base | FORWARDING)
        self.pools = {name: self._pool(pc) for name, pc in config.pools.items()}
        self._apply_disabled()  # new Upstream objects start enabled

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
            pool.requests, pool.errors, pool.by_class = old.requests, old.errors, old.by_class
            pool.drain_cut = old.drain_cut
            pool.latency = old.latency
        return pool

    def set_table(self, table: RoutingTable) -> None:
        self.table = table
        self._cookie_lines = {
            pool: self._cookie_line(pool, table.epoch(pool)) for pool in table.weights
        }
        self._apply_disabled()

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
        self.refresh_health()

    def _cookie_line(self, pool: str, epoch: int) -> bytes:
        value = self.signer.sticky(pool, epoch)
        max_age = int(self.config.sticky.max_age)
        return (b"Set-Cookie: %s=%s; Max-Age=%d; Path=/; HttpOnly; SameSite=Lax\r\n"
                % (self.cookie_name, value, max_age))

    # -- health --------------------------------------------------------------------

    def refresh_health(self) -> None:
        self.healthy = frozenset(name for name, pool in self.pools.items() if pool.healthy)

    def _upstream_changed(self, upstream: Upstream, cause: str) -> None:
        if self.on_passive_failure is not None:
            self.on_passive_failure(upstream, cause)
        else:
            self.refresh_health()

    # -- per request ---------------------------------------------------------------

    def choose(self, req, peer: str, via_proxy: bool = False) -> Choice | None:
        """The pool for `req` (router.choose_pool); a pool's grace period is
        judged at the request's arrival, which spares a clock read.

        `via_proxy`: `peer` is one of `trusted_proxies`, so the client is the one
        its X-Forwarded-For names (see `client_address`)."""
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
        if req.override is not None and \
                self._is_tester(self.client_address(req.xff, peer) if via_proxy else peer):
            override = req.override.decode("latin-1")
        return choose_pool(self.table, self.healthy, sticky, override, self._random(),
                           req.started)

    def set_cookie_line(self, pool: str, secure: bool = False) -> bytes:
        line = self._cookie_lines[pool]
        # The client came over HTTPS (a trusted TLS terminator says so): Secure.
        return line[:-2] + b"; Secure\r\n" if secure else line

    def drop_set(self, trusted: bool) -> frozenset[bytes]:
        """Lower-case names of request fields that are never copied upstream."""
        return self._drop_trusted if trusted else self._drop

    def upstream_request(self, req, peer: bytes, trusted: bool) -> bytes:
        """The bytes sent upstream: a regenerated head and the buffered body.

        Origin-form target, HTTP/1.1, the client's fields minus those dropped
        (see `drop_set`), then ours: Host, forwarding, request id, framing.
        """
        rid = req.request_id
        if rid is None or len(rid) > 200:
            rid = req.request_id = b"%s-%x" % (self._id_prefix, next(self._ids))
        host = req.host
        parts = [req.method, b" ", req.target, b" HTTP/1.1\r\nHost: ", host or b"localhost",
                 b"\r\n", *req.fields, b"X-Request-Id: ", rid, b"\r\nX-Forwarded-For: "]
        if trusted:
            if req.xff:
                parts += (b", ".join(req.xff), b", ")
            parts += (peer, b"\r\n")
            parts += _missing_forwarding(req.headers, host)
        else:
            parts += (peer, b"\r\nX-Forwarded-Proto: http\r\n")
            if host is not None:
                parts += (b"X-Forwarded-Host: ", host, b"\r\n")
        if req.body_size or req.framed:
            parts.append(b"Content-Length: %d\r\n" % req.body_size)
        if req.upgrade:
            parts.append(b"Connection: upgrade\r\nUpgrade: websocket\r\n")
        parts.append(b"\r\n")
        parts += req.body
        return b"".join(parts)

    # -- output --------------------------------------------------------------------

    def send(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write `data` to `transport` at the end of this pass of the event loop.

        Everything the callbacks of one pass produced (requests to upstreams,
        responses to clients) is written together, in order, once they are all
        done.  Writing each message the moment it was ready woke its reader
        (wrk, nginx) in the middle of our pass, which preempted us: the proxy
        was switched out once or more per request and spent ~43 µs of CPU per
        request instead of ~32 (benchmarks/README.md, "What changed").
        """
        if not self._outbox:
            self.loop.call_soon(self.flush_writes)
        self._outbox.append((transport, data))

    def unsend(self, transport) -> bool:
        """Drop what `send` queued for `transport` and not yet written (its
        connection closed first); True if something was dropped."""
        kept = [item for item in self._outbox if item[0] is not transport]
        dropped = len(kept) != len(self._outbox)
        self._outbox[:] = kept
        return dropped

    def flush_writes(self) -> None:
        """Write everything `send` queued.  Also called before a direct write, a
        close or an abort, so that nothing queued is overtaken or lost."""
        outbox = self._outbox
        if outbox:
            self._outbox = []
            for transport, data in outbox:
                if not transport.is_closing():  # aborted or gone since
                    transport.write(data)

    def client_address(self, xff: tuple[bytes, ...], peer: str) -> str:
        """Who sent a request that came through our trusted proxies: the rightmost
        X-Forwarded-For entry that is not one of them (the leftmost entries are
        the client's own claims and prove nothing); `peer` when there is none."""
        entries = [e.strip().decode("latin-1") for v in xff for e in v.split(b",")]
        for entry in reversed(entries):
            if not self.is_trusted_proxy(entry):
                return entry
        return entries[0] if entries else peer

    def is_trusted_proxy(self, peer: str) -> bool:
        return self._in(peer, self._trusted_nets)

    def _is_tester(self, peer: str) -> bool:
        return self._in(peer, self._tester_nets)

    @staticmethod
    def _in(peer: str, nets) -> bool:
        if not nets:
            return False
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(addr in net for net in nets)

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
        for client in [c for c in self.clients if c.upstream is not None]:
            conn = client.upstream
            if conn.deadline and conn.deadline < now:
                conn.timed_out()
        idle_limit = self.timeouts.upstream_idle
        for pool in self.pools.values():
            for up in pool.upstreams:
                up.close_idle(older_than=idle_limit)

    def status(self) -> dict:
        """What `GET /status` shows about pools (the control plane adds the rest)."""
        table = self.table
        pools = {}
        now = time.monotonic()
        held = self.in_flight_by_pool()
        for name, pool in self.pools.items():
            pools[name] = {
                "healthy": pool.healthy,
                "weight": table.weights.get(name, 0),
                "inflight": pool.inflight,
                "requests": pool.requests,
                "errors": pool.errors,
                "upstreams": [
                    {"address": u.label, "healthy": u.healthy, "enabled": u.enabled,
                     "inflight": u.inflight,
                     # connections it closed under a request, and how many of
                     # those requests went again (retry.py)
                     "closes": u.closes, "resent": u.resent}
                    for u in pool.upstreams
                ],
                # What keeps a drain waiting: the oldest exchanges in flight.
                "holding": [{"kind": kind, "method": method.decode("latin-1"),
                             "path": target[:200].decode("latin-1"),
                             "age": round(now - started, 1)}
                            for kind, started, method, target in held.get(name, ())[:5]],
                "drain_cut": pool.drain_cut,
            }
            if hasattr(pool, "latency"):
                # Per-bucket counts (stats.BOUNDS): `top` turns two of these into p50/p99.
                pools[name]["latency"] = list(pool.latency.counts)
        return pools

    def inflight(self) -> int:
        return sum(1 for c in self.clients if c.current is not None)

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

    def in_flight_by_pool(self) -> dict[str, list[tuple[str, float, bytes, bytes]]]:
        """Exchanges in flight per pool, oldest first: (kind, started, method, target)."""
        out: dict[str, list] = {}
        for client in self.clients:
            held = client.holds()
            if held is not None:
                up, req = held
                out.setdefault(up.pool, []).append(("http", req.started, req.method, req.target))
        for tunnel in self.tunnels:
            req = tunnel.req
            out.setdefault(tunnel.pool.name, []).append(
                ("websocket", req.started, req.method, req.target))
        for items in out.values():
            items.sort(key=lambda item: item[1])
        return out

    def cut(self, pool: str, address: str | None = None) -> int:
        """End every exchange and tunnel still open to `pool` (or to its upstream
        `address`): a drain's deadline.  Returns how many."""
        def held(up) -> bool:
            return up is not None and up.pool == pool and (address is None or up.label == address)

        cut = 0
        for client in [c for c in self.clients if held((c.holds() or (None,))[0])]:
            client.cut_exchange()
            cut += 1
        for tunnel in [t for t in self.tunnels if held(t.upstream)]:
            tunnel.close(error="drain_cut")
            cut += 1
        return cut


def table_from(weights: dict[str, int], generation: int = 0, previous: str | None = None,
               epochs: dict[str, int] | None = None,
               grace_until: dict[str, float] | None = None,
               disabled: dict[str, frozenset[str]] | None = None) -> RoutingTable:
    return RoutingTable(
        generation=generation,
        weights=MappingProxyType(dict(weights)),
        previous=previous,
        epochs=MappingProxyType(dict(epochs or {})),
        grace_until=MappingProxyType(dict(grace_until or {})),
        disabled=MappingProxyType({p: frozenset(a) for p, a in (disabled or {}).items() if a}),
    )


def _missing_forwarding(headers, host: bytes | None) -> list[bytes]:
    """X-Forwarded-Proto/-Host a trusted proxy did not send, filled in by us."""
    names = {n.lower() for n, _ in headers}
    out = []
    if b"x-forwarded-proto" not in names:
        out.append(b"X-Forwarded-Proto: http\r\n")
    if b"x-forwarded-host" not in names and host is not None:
        out += (b"X-Forwarded-Host: ", host, b"\r\n")
    return out
