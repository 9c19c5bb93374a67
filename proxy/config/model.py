"""The configuration as the proxy uses it: frozen dataclasses; their defaults are
what a key left out of the file means."""

from __future__ import annotations

from dataclasses import dataclass

from .values import Address


@dataclass(frozen=True)
class PoolConfig:
    name: str
    upstreams: tuple[Address, ...]
    balance: str = "least_inflight"  # or "round_robin"


@dataclass(frozen=True)
class HealthConfig:
    path: str = "/health"
    interval: float = 1.0
    timeout: float = 1.0
    rise: int = 2  # consecutive successes before an upstream counts as healthy
    fall: int = 2  # consecutive failures before it counts as unhealthy
    eject_after: int = 3  # consecutive passive connect failures before ejection


@dataclass(frozen=True)
class StickyConfig:
    cookie: str = "switchyard_pool"
    max_age: float = 3600.0
    grace: float = 0.0  # seconds a pool whose weight fell to 0 still honours its cookies


@dataclass(frozen=True)
class TimeoutsConfig:
    client_header: float = 10.0
    client_body: float = 30.0
    client_idle: float = 60.0
    client_send: float = 60.0
    upstream_connect: float = 2.0
    upstream_response: float = 60.0
    upstream_idle: float = 30.0
    drain: float = 30.0
    cutover_wait: float = 30.0
    pause: float = 30.0  # how long `switchyard pause` holds requests without --timeout


@dataclass(frozen=True)
class LimitsConfig:
    # Swoole's package_max_length (2 MB by default, Hyperf keeps it) counts the
    # head too; the head we forward is at most max_header plus the few fields
    # we add, so 64 KB less than 2 MB is a body Swoole always takes.
    max_body: int = 2 * 2**20 - 64 * 2**10
    max_header: int = 32 * 2**10
    max_connections: int = 10000
    body_memory: int = 2**20  # above this a request body spills to a temp file


@dataclass(frozen=True)
class MetricsConfig:
    # A TCP address serving GET /metrics only (read-only, for Prometheus); None: the
    # metrics are on the admin socket alone.
    listen: Address | None = None


@dataclass(frozen=True)
class AdminConfig:
    socket: str = "/run/switchyard/admin.sock"
    mode: int = 0o600
    group: str | None = None
    uids: tuple[int, ...] = ()
    max_connections: int = 32
    max_request: int = 65536
    idle_timeout: float = 10.0


@dataclass(frozen=True)
class TesterConfig:
    # Off unless configured: behind nginx every request comes from 127.0.0.1, so a
    # header honoured by default would let any visitor reach an unreleased pool.
    header: str | None = None
    trusted: tuple[str, ...] = ("127.0.0.1/32", "::1/128")


@dataclass(frozen=True)
class LogConfig:
    access: bool = True
    format: str = "auto"  # auto | json | console
    level: str = "info"  # debug | info | warning | error
    # Access lines to this file (JSON) instead of stdout; reopened on SIGUSR1.
    access_file: str | None = None


@dataclass(frozen=True)
class RolloutConfig:
    interval: float = 30.0
    max_error_rate: float = 0.01
    max_p99: float | None = None
    min_requests: int = 50


@dataclass(frozen=True)
class ClusterConfig:
    """A fleet sharing its routing state on etcd (SPEC §2.6)."""

    etcd: tuple[str, ...]  # endpoints, http://host:port
    key: str  # the fleet's prefix: routing state at KEY/state, hosts at KEY/hosts/NAME
    host: str = ""  # this host's name in the fleet; "" means the machine's hostname
    lease: float = 10.0  # a dead host leaves the fleet (and the rollout) this long after
    timeout: float = 2.0  # each call to etcd


DEFAULT_LISTEN = (Address("tcp", host="127.0.0.1", port=8080),)
DEFAULT_STATE_FILE = "/var/lib/switchyard/state.json"


@dataclass(frozen=True)
class Config:
    listen: tuple[Address, ...]
    admin: AdminConfig
    state_file: str
    secret_file: str
    pools: dict[str, PoolConfig]  # in file order; treat as read-only
    health: HealthConfig
    weights: dict[str, int]  # every configured pool, missing ones 0
    sticky: StickyConfig
    timeouts: TimeoutsConfig
    limits: LimitsConfig
    trusted_proxies: tuple[str, ...]
    tester: TesterConfig
    log: LogConfig
    rollout: RolloutConfig
    metrics: MetricsConfig
    workers: int  # data-plane processes (>= 1); more than 1 runs them under a supervisor
    source: str
    cluster: ClusterConfig | None = None  # None: one host, its state_file
