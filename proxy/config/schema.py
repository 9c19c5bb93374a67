"""Which keys a configuration has and how each value is checked: converters
(reader, node, key path) -> value, raising ValueError with the reason."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable

from yaml.nodes import Node, ScalarNode

from .model import (
    AdminConfig,
    ClusterConfig,
    HealthConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    PoolConfig,
    RolloutConfig,
    StickyConfig,
    TesterConfig,
    TimeoutsConfig,
)
from .reader import BAD, Convert, Reader, section, shown
from .values import Address, describe, parse_address, parse_duration, parse_rate, parse_size

# --- converters: (reader, node, key path) -> value ----------------------------------


def _scalar(parse: Callable[[Any], Any]) -> Convert:
    return lambda reader, node, key: parse(reader.value(node))


def _record(kind: type, fields: dict[str, Convert]) -> Convert:
    return lambda reader, node, key: kind(**section(reader, node, key, fields))


def _list_of(parse: Callable[[Any], Any], what: str, at_least_one: bool = False) -> Convert:
    def convert(reader: Reader, node: Node, key: str) -> tuple:
        items = reader.sequence(node)
        if at_least_one and not items:
            raise ValueError(f"list at least one {what}")
        return _unique_items(reader, key, items, parse)
    return convert


def _unique_items(reader: Reader, key: str, nodes: list[Node], parse: Callable) -> tuple:
    first_index: dict[Any, int] = {}  # insertion-ordered, so it is also the result
    for index, node in enumerate(nodes):
        path = f"{key}[{index}]"
        value = reader.field(path, node, _scalar(parse))
        if value is BAD:
            continue
        if value in first_index:
            reader.problem(path, node, f"duplicate of {key}[{first_index[value]}]")
        else:
            first_index[value] = index
    return tuple(first_index)


def _mode(reader: Reader, node: Node, key: str) -> int:
    # Read the raw text: YAML 1.1 turns an unquoted 0600 into 384, and 600 into 600
    # decimal; a file mode is always meant as octal, quoted or not.
    if not isinstance(node, ScalarNode) or not re.fullmatch(r"(0o?)?[0-7]{1,4}", node.value):
        raise ValueError(f'expected an octal file mode like "0600" or "0660", got {shown(node)}')
    mode = int(re.sub(r"^0o", "", node.value), 8)
    if mode > 0o777:
        raise ValueError(f"a socket mode must be at most 0777, got {node.value}")
    return mode


_POOL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _pools(reader: Reader, node: Node, key: str) -> dict[str, PoolConfig]:
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
        values = {} if values is BAD else values
        # Keep a pool even when its body is bad, so `weights` naming it is not flagged too.
        pools[name] = PoolConfig(name=name, upstreams=values.pop("upstreams", ()), **values)
    return pools


def _pool_values(reader: Reader, node: Node, key: str) -> dict[str, Any]:
    return section(reader, node, key, _POOL_FIELDS, required=("upstreams",))


def _weights(reader: Reader, node: Node, key: str) -> dict[str, tuple[int, Node]]:
    pairs = list(reader.mapping(node, key))
    given = {}
    for name, key_node, value_node in pairs:
        weight = reader.field(f"{key}.{name}", value_node, _scalar(_integer(0)))
        if weight is not BAD:
            given[name] = (weight, key_node)
    if len(given) == len(pairs) and not any(weight for weight, _ in given.values()):
        raise ValueError("at least one weight must be greater than 0")
    return given


# --- scalar checks: value -> value, ValueError with the reason ----------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token; RFC 6265 cookie-name


def _integer(low: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {describe(value)}")
        if value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        return value
    return parse


def _nonzero(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def checked(value: Any) -> Any:
        result = parse(value)
        if result == 0:
            raise ValueError(f"must be greater than 0, got {describe(value)}")
        return result
    return checked


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else parse(value)


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise ValueError(f"must be one of {', '.join(options)}, got {describe(value)}")
        return value
    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"expected a non-empty string, got {describe(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def _matching(pattern: str | re.Pattern, expected: str) -> Callable[[Any], str]:
    """A string that `pattern` matches whole; else "`expected`, got ..."."""
    compiled = re.compile(pattern)

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"{expected}, got {describe(value)}")
        return value
    return parse


_token = _matching(_TOKEN, "must be an HTTP token (letters, digits, !#$%&'*+-.^_`|~)")
_url_path = _matching(r"/[\x21-\x7e]*", 'must be a URL path starting with "/"')


def _network(value: Any) -> str:
    if not isinstance(value, str):  # ip_network(5) would quietly mean 0.0.0.5/32
        raise ValueError(f"expected a network like 10.0.0.0/8, got {describe(value)}")
    return str(ipaddress.ip_network(value, strict=False))


def _workers(value: Any) -> int:
    if value == "auto":
        # One per CPU this process may run on (its affinity mask, which a
        # systemd CPUAffinity= or taskset narrows), not every CPU of the host.
        return len(os.sched_getaffinity(0))
    return _integer(1)(value)


_endpoint = _matching(r"https?://[^/\s?#]+/?", "expected an etcd endpoint like http://127.0.0.1:2379")
_cluster_key = _matching(r"(/[\w.-]+)+",
                         'expected a key path like "/switchyard/myapp" (letters, digits, _ . -)')
_host_name = _matching(r"[\w.-]{1,64}", "expected a host name of 1-64 letters, digits, _ . -")


def _lease(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds < 2:  # etcd's own floor with its default election timeout
        raise ValueError(f"must be at least 2s, got {describe(value)}")
    return seconds


def _cluster(reader: Reader, node: Node, key: str) -> ClusterConfig | None:
    values = section(reader, node, key, _CLUSTER_FIELDS, required=("etcd", "key"))
    if "etcd" not in values or "key" not in values:
        return None  # what is missing or wrong is already reported
    return ClusterConfig(**values)


def _tcp_address(value: Any) -> Address:
    address = parse_address(value)
    if address.kind != "tcp":
        raise ValueError("expected host:port: metrics are for a scraper over TCP")
    return address


# --- the keys of each section ---------------------------------------------------------

_duration = _nonzero(parse_duration)
_size = _nonzero(parse_size)
_POOL_FIELDS: dict[str, Convert] = {
    "upstreams": _list_of(parse_address, "upstream", at_least_one=True),
    "balance": _scalar(_choice("least_inflight", "round_robin")),
}

SECTIONS: dict[str, type] = {
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
_CLUSTER_FIELDS: dict[str, Convert] = {
    "etcd": _list_of(lambda value: _endpoint(value).rstrip("/"), "endpoint", at_least_one=True),
    "key": _scalar(_cluster_key), "host": _scalar(_host_name),
    "lease": _scalar(_lease), "timeout": _scalar(_duration),
}
TOP_FIELDS: dict[str, Convert] = {
    "listen": _list_of(lambda text: parse_address(text, allow_port_zero=True), "address", True),
    "state_file": _scalar(_text),
    "secret_file": _scalar(_text),
    "pools": _pools,
    "weights": _weights,
    "trusted_proxies": _list_of(_network, "network"),
    "workers": _scalar(_workers),
    "cluster": _cluster,
    **{name: _record(kind, _FIELDS[kind]) for name, kind in SECTIONS.items()},
}
