"""The plain values of a configuration (and of the CLI and admin API): durations,
sizes, rates and addresses, each parsed from what a person writes."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from decimal import Decimal

_DURATION = re.compile(r"(-?(?:\d+(?:\.\d*)?|\.\d+))\s*(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"(-?(?:\d+(?:\.\d*)?|\.\d+))\s*([kmg]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def describe(value: object) -> str:
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
        raise ValueError(f"expected a duration like 30s, got {describe(value)}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must not be negative, got {describe(value)}")
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
        raise ValueError(f"expected a size like 16KB, got {describe(value)}")
    if size < 0:
        raise ValueError(f"a size must not be negative, got {describe(value)}")
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
        raise ValueError(f"expected a rate like 1% or 0.01, got {describe(value)}")
    if not 0 <= rate <= 1:  # also rejects nan
        raise ValueError(f"a rate must be between 0% and 100%, got {describe(value)}")
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
        raise ValueError(f"expected an address like 127.0.0.1:9501 or unix:/path, got {describe(text)}")
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
