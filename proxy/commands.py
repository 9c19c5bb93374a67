"""Arguments of the control commands, shared by the CLI and the admin API.

The CLI builds these from argv and sends `to_json()`; the admin handler
builds them with `from_json()`.  One parser for both, so they cannot drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .config import parse_duration


class CommandError(Exception):
    """A refused command; `status` is the admin API's answer."""

    status = 400


class ConflictError(CommandError):
    status = 409


class PreconditionError(CommandError):
    status = 412


class StaleState(PreconditionError):
    """The routing state changed between reading it and writing the change (in a
    fleet: another host wrote first).  Without If-Match the change is made again
    on the new state, as one host does for two operators in turn."""


def _pool_name(value: Any, pools: list[str], key: str) -> str:
    if not isinstance(value, str) or value not in pools:
        raise CommandError(f"{key}: unknown pool {value!r} (pools: {', '.join(pools)})")
    return value


MAX_WEIGHT = 1_000_000


def _number(value: Any, key: str, lo: float = 0.0, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        raise CommandError(f"{key}: expected a finite number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise CommandError(f"{key}: {value} is out of range")
    return float(value)


def _mapping(body: Any) -> dict:
    if not isinstance(body, dict):
        raise CommandError("expected a JSON object")
    return body


def _no_extra(body: dict, allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise CommandError(f"unknown field {extra[0]!r}")


@dataclass(frozen=True)
class Weights:
    weights: dict[str, int]

    @classmethod
    def from_json(cls, body: Any, pools: list[str]) -> Weights:
        """Integers >= 0, at least one > 0, every configured pool exactly once."""
        body = _mapping(body)
        for name in body:
            _pool_name(name, pools, name)
        missing = [p for p in pools if p not in body]
        if missing:
            raise CommandError(f"missing weight for pool {missing[0]!r}")
        for name, value in body.items():
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 0 <= value <= MAX_WEIGHT:
                raise CommandError(
                    f"{name}: weight must be an integer 0..{MAX_WEIGHT}, got {value!r}")
        if not any(body.values()):
            raise CommandError("at least one weight must be > 0")
        return cls({p: body[p] for p in pools})

    @classmethod
    def from_args(cls, args: list[str]) -> dict[str, int]:
        """`blue=90 green=10` as a dict; the server validates against its pools."""
        out: dict[str, int] = {}
        for arg in args:
            name, sep, value = arg.partition("=")
            if not sep or not name or not value.strip().lstrip("-").isdigit():
                raise CommandError(f"expected POOL=WEIGHT, got {arg!r}")
            if name in out:
                raise CommandError(f"pool {name!r} named twice")
            out[name] = int(value)
        return out


@dataclass(frozen=True)
class Cutover:
    to: str
    force: bool = False
    steps: tuple[int, ...] | None = None
    interval: float | None = None
    max_error_rate: float | None = None
    max_p99: float | None = None
    min_requests: int | None = None

    FIELDS = frozenset({"to", "force", "steps", "interval", "max_error_rate", "max_p99",
                        "min_requests"})

    @classmethod
    def from_json(cls, body: Any, pools: list[str]) -> Cutover:
        body = _mapping(body)
        _no_extra(body, set(cls.FIELDS))
        to = _pool_name(body.get("to"), pools, "to")
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise CommandError("force: expected true or false")
        return cls(
            to=to,
            force=force,
            steps=_steps(body.get("steps")),
            interval=_optional(body, "interval", lo=0.05),
            max_error_rate=_optional(body, "max_error_rate", hi=1.0),
            max_p99=_optional(body, "max_p99", lo=0.001),
            min_requests=_optional_int(body, "min_requests"),
        )

    def to_json(self) -> dict:
        out: dict[str, Any] = {"to": self.to}
        if self.force:
            out["force"] = True
        for key in ("interval", "max_error_rate", "max_p99", "min_requests"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.steps is not None:
            out["steps"] = list(self.steps)
        return out


def _optional(body: dict, key: str, lo: float = 0.0, hi: float | None = None) -> float | None:
    return None if body.get(key) is None else _number(body[key], key, lo, hi)


def _optional_int(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CommandError(f"{key}: expected an integer >= 1")
    return value


def _steps(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise CommandError("steps: expected a non-empty list of percentages")
    steps = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 < item <= 100:
            raise CommandError(f"steps: {item!r} is not a percentage in 1..100")
        if steps and item <= steps[-1]:
            raise CommandError("steps: percentages must increase")
        steps.append(item)
    if steps[-1] != 100:
        raise CommandError("steps: the last step must be 100")
    return tuple(steps)


@dataclass(frozen=True)
class Drain:
    pool: str
    timeout: float | None = None  # seconds; None: timeouts.drain
    upstream: str | None = None   # drain one upstream of the pool (a rolling update)
    force: bool = False           # with upstream: even the pool's last healthy one

    @classmethod
    def from_json(cls, body: Any, pools: list[str]) -> Drain:
        body = _mapping(body)
        _no_extra(body, {"pool", "timeout", "upstream", "force"})
        upstream, force = body.get("upstream"), body.get("force", False)
        if upstream is not None and not isinstance(upstream, str):
            raise CommandError("upstream: expected an address like 127.0.0.1:9501")
        if not isinstance(force, bool):
            raise CommandError("force: expected true or false")
        return cls(_pool_name(body.get("pool"), pools, "pool"),
                   _optional(body, "timeout", hi=86400.0), upstream, force)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"pool": self.pool}
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.upstream is not None:
            out["upstream"] = self.upstream
        if self.force:
            out["force"] = True
        return out


# The longest pause: clients (browsers, curl, load balancers) give up long before.
MAX_PAUSE = 3600.0


@dataclass(frozen=True)
class Pause:
    """`POST /pause`: hold new requests for up to `timeout` seconds (None: the config's)."""

    timeout: float | None = None

    @classmethod
    def from_json(cls, body: Any, pools: list[str]) -> Pause:
        body = _mapping(body)
        _no_extra(body, {"timeout"})
        value = body.get("timeout")
        if value is None:
            return cls()
        if isinstance(value, str):
            try:
                value = parse_duration(value)
            except ValueError as exc:
                raise CommandError(f"timeout: {exc}") from None
        timeout = _number(value, "timeout", 0.0, MAX_PAUSE)
        if timeout <= 0:
            raise CommandError("timeout: must be more than 0")
        return cls(timeout)

    def to_json(self) -> dict:
        return {} if self.timeout is None else {"timeout": self.timeout}


@dataclass(frozen=True)
class UpstreamToggle:
    """`POST /upstream`: one upstream out of (or back into) its pool's rotation."""

    pool: str
    address: str
    enabled: bool
    force: bool = False

    @classmethod
    def from_json(cls, body: Any, pools: list[str]) -> UpstreamToggle:
        body = _mapping(body)
        _no_extra(body, {"pool", "address", "enabled", "force"})
        address = body.get("address")
        if not isinstance(address, str) or not address:
            raise CommandError("address: expected an upstream address like 127.0.0.1:9501")
        enabled, force = body.get("enabled"), body.get("force", False)
        if not isinstance(enabled, bool):
            raise CommandError("enabled: expected true or false")
        if not isinstance(force, bool):
            raise CommandError("force: expected true or false")
        return cls(_pool_name(body.get("pool"), pools, "pool"), address, enabled, force)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"pool": self.pool, "address": self.address, "enabled": self.enabled}
        if self.force:
            out["force"] = True
        return out


@dataclass(frozen=True)
class TesterCookie:
    pool: str
    ttl: float = 3600.0

    @classmethod
    def from_json(cls, body: Any, pools: list[str]) -> TesterCookie:
        body = _mapping(body)
        _no_extra(body, {"pool", "ttl"})
        ttl = body.get("ttl", 3600)
        return cls(_pool_name(body.get("pool"), pools, "pool"), _number(ttl, "ttl", 1, 86400 * 7))

    def to_json(self) -> dict:
        return {"pool": self.pool, "ttl": self.ttl}


def parse_if_match(header: str | None) -> int | None:
    """The generation in `If-Match: "<n>"`, None when absent; `*` matches anything."""
    if header is None or header.strip() == "*":
        return None
    value = header.strip()
    if value.startswith("W/"):
        # If-Match compares strongly (RFC 9110 13.1.1): a weak tag never matches.
        raise PreconditionError("If-Match: a weak entity tag never matches")
    value = value.strip('"')
    if not value.isdigit():
        raise CommandError(f"If-Match: expected \"<generation>\", got {header!r}")
    return int(value)
