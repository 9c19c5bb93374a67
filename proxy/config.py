"""The switchyard configuration: one frozen object built from a YAML file, validated once.

Loading has no side effects: it reads one file and never logs or exits. Every problem
found is collected with its key path and line, then raised together as one ConfigError,
so `switchyard check` shows all of them at once and a bad `reload` changes nothing.
We walk yaml.compose()'s node tree instead of yaml.safe_load()'s dicts because only
the nodes know their line numbers and only they reveal duplicate keys.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


@dataclass(frozen=True)
class Problem:
    key: str  # dotted path with [i] for list items; "" for the whole file
    line: int | None  # 1-based
    message: str

    def format(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """Every problem found in one configuration; str() prints one line per problem."""

    def __init__(self, problems: list[Problem], source: str = "<string>") -> None:
        super().__init__(problems, source)
        self.problems = list(problems)
        self.source = source

    def __str__(self) -> str:
        return "\n".join(problem.format(self.source) for problem in self.problems)


# --- plain values -------------------------------------------------------------------

_DURATION = re.compile(r"(-?(?:\d+(?:\.\d*)?|\.\d+))\s*(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"(-?(?:\d+(?:\.\d*)?|\.\d+))\s*([kmg]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def _describe(value: object) -> str:
    """A value as the user wrote it in YAML, not as Python would print it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def _is_number(value: object) -> bool:
    # bool is an int in Python, but `timeout: yes` is a mistake, not one second.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(value: object) -> float:
    """Seconds from "500ms", "30s", "5m", "1h" or a plain number of seconds."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a duration (use 500ms, 30s, 5m, 1h or seconds)")
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    elif _is_number(value):
        seconds = float(value)
    else:
        raise ValueError(f"expected a duration like 30s, got {_describe(value)}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must not be negative, got {_describe(value)}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from "512B", "16KB", "100MB", "1GB" (KB = 1024) or a plain number of bytes."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a size (use 512B, 16KB, 100MB, 1GB or bytes)")
        size = int(Decimal(match[1]) * _SIZE_UNITS[(match[2] or "b").lower()])
    elif isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        raise ValueError(f"expected a size like 16KB, got {_describe(value)}")
    if size < 0:
        raise ValueError(f"a size must not be negative, got {_describe(value)}")
    return size


def parse_rate(value: object) -> float:
    """A fraction from "1%" or 0.01 (the CLI and admin API accept the same forms)."""
    text = value.strip() if isinstance(value, str) else ""
    if text.endswith("%"):
        try:
            rate = float(text[:-1]) / 100
        except ValueError:
            raise ValueError(f"{value!r} is not a rate (use 1% or 0.01)") from None
    elif _is_number(value):
        rate = float(value)
    else:
        raise ValueError(f"expected a rate like 1% or 0.01, got {_describe(value)}")
    if not 0 <= rate <= 1:  # also rejects nan
        raise ValueError(f"a rate must be between 0% and 100%, got {_describe(value)}")
    return rate


# --- addresses ----------------------------------------------------------------------

_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the terminating NUL


@dataclass(frozen=True, slots=True)
class Address:
    kind: str  # "tcp" | "unix"
    host: str = ""  # IPv6 stored without brackets
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: object, allow_port_zero: bool = False) -> Address:
    """"host:port", "[v6]:port" or "unix:/path"; port 0 (pick any) only for listeners."""
    if not isinstance(text, str):
        raise ValueError(f"expected an address like 127.0.0.1:9501 or unix:/path, got {_describe(text)}")
    if text.startswith("unix:"):
        return Address("unix", path=_unix_path(text[len("unix:"):]))
    if "://" in text:
        raise ValueError(f"{text!r}: write host:port without a scheme")
    host, port = _split_host_port(text)
    return Address("tcp", host=host, port=_port(port, text, allow_port_zero))


def _unix_path(path: str) -> str:
    if not path or "\0" in path:
        raise ValueError("a unix socket address needs a path: unix:/run/app.sock")
    if len(path.encode()) > _SUN_PATH_MAX:
        raise ValueError(f"unix socket path is longer than {_SUN_PATH_MAX} bytes: {path}")
    return path


def _split_host_port(text: str) -> tuple[str, str]:
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]:")
        if not bracket:
            raise ValueError(f"{text!r}: expected [IPv6]:port")
        _check_ip(host, ipaddress.IPv6Address, text)
        return host, port
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{text!r}: expected host:port or unix:/path")
    if ":" in host:
        raise ValueError(f"{text!r}: an IPv6 address needs brackets, like [::1]:9501")
    if re.fullmatch(r"[0-9.]+", host):
        _check_ip(host, ipaddress.IPv4Address, text)
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{text!r}: {host!r} is not a valid host name")
    return host, port


def _check_ip(host: str, kind: type, text: str) -> None:
    try:
        kind(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not a valid {kind.__name__[:4]} address") from None


def _port(port: str, text: str, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if not port.isascii() or not port.isdigit() or not low <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from {low} to 65535")
    return int(port)


# --- the configuration --------------------------------------------------------------


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
    source: str


def load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([Problem("", None, f"cannot read: {error}")], path) from error
    return from_text(text, path)


def from_text(text: str, source: str = "<string>") -> Config:
    root = _compose(text, source)
    reader = _Reader()
    config = _build(reader, root, source)
    if reader.problems:  # in file order, however the walk happened to find them
        problems = sorted(reader.problems, key=lambda problem: problem.line or 0)
        raise ConfigError(problems, source)
    return config


def _compose(text: str, source: str) -> MappingNode:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else None
        raise ConfigError([Problem("", line, f"invalid YAML: {error.problem}")], source) from error
    except yaml.YAMLError as error:
        raise ConfigError([Problem("", None, f"invalid YAML: {error}")], source) from error
    if root is None or _is_null(root):
        raise ConfigError([Problem("", None, "the file is empty; at least `pools` must be set")], source)
    if not isinstance(root, MappingNode):
        message = f"the top level must be a mapping of settings, got {_shown(root)}"
        raise ConfigError([Problem("", _line(root), message)], source)
    return root


def _build(reader: _Reader, root: MappingNode, source: str) -> Config:
    values = _section(reader, root, "", _TOP_FIELDS, required=("pools",))
    pools = values.get("pools", {})
    state_file = values.get("state_file", DEFAULT_STATE_FILE)
    sections = {name: values.get(name, kind()) for name, kind in _SECTIONS.items()}
    return Config(
        listen=values.get("listen", DEFAULT_LISTEN),
        state_file=state_file,
        secret_file=values.get("secret_file", os.path.join(os.path.dirname(state_file), "secret")),
        pools=pools,
        weights=_resolve_weights(reader, pools, values.get("weights")),
        trusted_proxies=values.get("trusted_proxies", ()),
        source=source,
        **sections,
    )


def _resolve_weights(reader: _Reader, pools: dict, given: dict | None) -> dict[str, int]:
    if given is None:  # a fresh install sends everything to the first pool
        return {name: 100 if index == 0 else 0 for index, name in enumerate(pools)}
    weights = dict.fromkeys(pools, 0)
    for name, (weight, key_node) in given.items():
        if name in pools:
            weights[name] = weight
        elif pools:  # with no valid pools the pools error already says it all
            reader.problem(f"weights.{name}", key_node, f"no such pool (pools are: {', '.join(pools)})")
    return weights


# --- walking the YAML node tree -----------------------------------------------------

_BAD = object()  # a value that failed validation; its problem is already recorded
_NULL_TAG = "tag:yaml.org,2002:null"
Convert = Callable[["_Reader", Node, str], Any]


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def _shown(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "null" if _is_null(node) else repr(node.value)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


class _Reader:
    """Converts nodes to values and records every problem with its key path and line."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, key: str, node: Node, message: str) -> None:
        self.problems.append(Problem(key, _line(node), message))

    def field(self, key: str, node: Node, convert: Convert) -> Any:
        try:
            return convert(self, node, key)
        except ValueError as error:
            self.problem(key, node, str(error))
            return _BAD

    def value(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise ValueError(f"expected a single value, got {_shown(node)}")
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as error:
            raise ValueError(f"unreadable value: {getattr(error, 'problem', error)}") from None

    def sequence(self, node: Node) -> list[Node]:
        if _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise ValueError(f"expected a list, got {_shown(node)}")
        return list(node.value)

    def mapping(self, node: Node, key: str) -> Iterator[tuple[str, Node, Node]]:
        """(name, key node, value node) per entry; duplicates and odd keys are reported."""
        if _is_null(node):  # `health:` with nothing under it means all defaults
            return
        if not isinstance(node, MappingNode):
            raise ValueError(f"expected a mapping, got {_shown(node)}")
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(key, key_node, "keys must be plain names")
            elif key_node.value in first_line:
                message = f"duplicate key (first set on line {first_line[key_node.value]})"
                self.problem(_join(key, key_node.value), key_node, message)
            else:
                first_line[key_node.value] = _line(key_node)
                yield key_node.value, key_node, value_node


def _section(reader: _Reader, node: Node, key: str, fields: dict[str, Convert],
             required: tuple[str, ...] = ()) -> dict[str, Any]:
    values: dict[str, Any] = {}
    seen = set()
    for name, key_node, value_node in reader.mapping(node, key):
        seen.add(name)
        if name not in fields:
            reader.problem(_join(key, name), key_node, _unknown_key(name, fields))
            continue
        value = reader.field(_join(key, name), value_node, fields[name])
        if value is not _BAD:
            values[name] = value
    for name in required:
        if name not in seen:
            reader.problem(_join(key, name), node, "required")
    return values


def _unknown_key(name: str, fields: dict[str, Convert]) -> str:
    close = difflib.get_close_matches(name, fields, n=1)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


# --- converters: (reader, node, key path) -> value, ValueError on a bad value --------


def _scalar(parse: Callable[[Any], Any]) -> Convert:
    return lambda reader, node, key: parse(reader.value(node))


def _record(kind: type, fields: dict[str, Convert]) -> Convert:
    return lambda reader, node, key: kind(**_section(reader, node, key, fields))


def _list_of(parse: Callable[[Any], Any], what: str, at_least_one: bool = False) -> Convert:
    def convert(reader: _Reader, node: Node, key: str) -> tuple:
        items = reader.sequence(node)
        if at_least_one and not items:
            raise ValueError(f"list at least one {what}")
        return _unique_items(reader, key, items, parse)
    return convert


def _unique_items(reader: _Reader, key: str, nodes: list[Node], parse: Callable) -> tuple:
    first_index: dict[Any, int] = {}  # insertion-ordered, so it is also the result
    for index, node in enumerate(nodes):
        path = f"{key}[{index}]"
        value = reader.field(path, node, _scalar(parse))
        if value is _BAD:
            continue
        if value in first_index:
            reader.problem(path, node, f"duplicate of {key}[{first_index[value]}]")
        else:
            first_index[value] = index
    return tuple(first_index)


def _mode(reader: _Reader, node: Node, key: str) -> int:
    # Read the raw text: YAML 1.1 turns an unquoted 0600 into 384, and 600 into 600
    # decimal; a file mode is always meant as octal, quoted or not.
    if not isinstance(node, ScalarNode) or not re.fullmatch(r"(0o?)?[0-7]{1,4}", node.value):
        raise ValueError(f'expected an octal file mode like "0600" or "0660", got {_shown(node)}')
    mode = int(re.sub(r"^0o", "", node.value), 8)
    if mode > 0o777:
        raise ValueError(f"a socket mode must be at most 0777, got {node.value}")
    return mode


_POOL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _pools(reader: _Reader, node: Node, key: str) -> dict[str, PoolConfig]:
    pools: dict[str, PoolConfig] = {}
    entries = list(reader.mapping(node, key))
    if not entries:
        raise ValueError("define at least one pool")
    for name, key_node, body in entries:
        if not _POOL_NAME.fullmatch(name):
            message = "a pool name must be 1-32 of a-z 0-9 _ -, starting with a letter"
            reader.problem(f"{key}.{name}", key_node, message)
            continue
        values = reader.field(f"{key}.{name}", body, _pool_values)
        values = {} if values is _BAD else values
        # Keep a pool even when its body is bad, so `weights` naming it is not flagged too.
        pools[name] = PoolConfig(name=name, upstreams=values.pop("upstreams", ()), **values)
    return pools


def _pool_values(reader: _Reader, node: Node, key: str) -> dict[str, Any]:
    return _section(reader, node, key, _POOL_FIELDS, required=("upstreams",))


def _weights(reader: _Reader, node: Node, key: str) -> dict[str, tuple[int, Node]]:
    pairs = list(reader.mapping(node, key))
    given = {}
    for name, key_node, value_node in pairs:
        weight = reader.field(f"{key}.{name}", value_node, _scalar(_integer(0)))
        if weight is not _BAD:
            given[name] = (weight, key_node)
    if len(given) == len(pairs) and not any(weight for weight, _ in given.values()):
        raise ValueError("at least one weight must be greater than 0")
    return given


# --- scalar checks: value -> value, ValueError with the reason ----------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token; RFC 6265 cookie-name


def _integer(low: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_describe(value)}")
        if value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        return value
    return parse


def _nonzero(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def checked(value: Any) -> Any:
        result = parse(value)
        if result == 0:
            raise ValueError(f"must be greater than 0, got {_describe(value)}")
        return result
    return checked


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else parse(value)


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise ValueError(f"must be one of {', '.join(options)}, got {_describe(value)}")
        return value
    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"expected a non-empty string, got {_describe(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_describe(value)}")
    return value


def _token(value: Any) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError(f"must be an HTTP token (letters, digits, !#$%&'*+-.^_`|~), got {_describe(value)}")
    return value


def _url_path(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"/[\x21-\x7e]*", value):
        raise ValueError(f'must be a URL path starting with "/", got {_describe(value)}')
    return value


def _network(value: Any) -> str:
    if not isinstance(value, str):  # ip_network(5) would quietly mean 0.0.0.5/32
        raise ValueError(f"expected a network like 10.0.0.0/8, got {_describe(value)}")
    return str(ipaddress.ip_network(value, strict=False))


def _tcp_address(value: Any) -> Address:
    address = parse_address(value)
    if address.kind != "tcp":
        raise ValueError("expected host:port: metrics are for a scraper over TCP")
    return address


_duration = _nonzero(parse_duration)
_size = _nonzero(parse_size)
_POOL_FIELDS: dict[str, Convert] = {
    "upstreams": _list_of(parse_address, "upstream", at_least_one=True),
    "balance": _scalar(_choice("least_inflight", "round_robin")),
}

_SECTIONS: dict[str, type] = {
    "admin": AdminConfig, "health": HealthConfig, "sticky": StickyConfig,
    "timeouts": TimeoutsConfig, "limits": LimitsConfig, "tester": TesterConfig,
    "log": LogConfig, "rollout": RolloutConfig, "metrics": MetricsConfig,
}
_FIELDS: dict[type, dict[str, Convert]] = {
    AdminConfig: {
        "socket": _scalar(_text), "mode": _mode, "group": _scalar(_optional(_text)),
        "uids": _list_of(_integer(0), "uid"), "max_connections": _scalar(_integer(1)),
        "max_request": _scalar(_size), "idle_timeout": _scalar(_duration),
    },
    HealthConfig: {
        "path": _scalar(_url_path), "interval": _scalar(_duration), "timeout": _scalar(_duration),
        "rise": _scalar(_integer(1)), "fall": _scalar(_integer(1)), "eject_after": _scalar(_integer(1)),
    },
    StickyConfig: {
        "cookie": _scalar(_token), "max_age": _scalar(_duration), "grace": _scalar(parse_duration),
    },
    TimeoutsConfig: {
        **{name: _scalar(_duration) for name in TimeoutsConfig.__dataclass_fields__},
        # Zero is meaningful here: exit without waiting, or check health just once.
        "drain": _scalar(parse_duration), "cutover_wait": _scalar(parse_duration),
    },
    LimitsConfig: {
        "max_body": _scalar(_size), "max_header": _scalar(_size),
        "max_connections": _scalar(_integer(1)), "body_memory": _scalar(parse_size),
    },
    TesterConfig: {"header": _scalar(_optional(_token)),
                   "trusted": _list_of(_network, "network")},
    LogConfig: {
        "access": _scalar(_boolean), "format": _scalar(_choice("auto", "json", "console")),
        "level": _scalar(_choice("debug", "info", "warning", "error")),
        "access_file": _scalar(_optional(_text)),
    },
    MetricsConfig: {"listen": _scalar(_optional(_tcp_address))},
    RolloutConfig: {
        "interval": _scalar(_duration), "max_error_rate": _scalar(parse_rate),
        "max_p99": _scalar(_optional(_duration)), "min_requests": _scalar(_integer(0)),
    },
}
_TOP_FIELDS: dict[str, Convert] = {
    "listen": _list_of(lambda text: parse_address(text, allow_port_zero=True), "address", True),
    "state_file": _scalar(_text),
    "secret_file": _scalar(_text),
    "pools": _pools,
    "weights": _weights,
    "trusted_proxies": _list_of(_network, "network"),
    **{name: _record(kind, _FIELDS[kind]) for name, kind in _SECTIONS.items()},
}
