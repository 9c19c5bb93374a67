"""Durable routing state: what survives a restart of the proxy.

Saved on every change before the admin call answers, atomically: a
temporary file in the same directory, fsync, rename over the old file, fsync
the directory.  A crash at any point leaves either the old or the new file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any


class StateError(Exception):
    """The state could not be saved; the change must not take effect."""

    status = 500


@dataclass(frozen=True)
class SavedState:
    generation: int
    weights: dict[str, int]
    previous: str | None = None
    epochs: dict[str, int] = field(default_factory=dict)
    rollout: dict[str, Any] | None = None
    disabled: dict[str, list[str]] = field(default_factory=dict)  # pool -> upstream addresses

    def to_json(self) -> dict:
        return {
            "version": 1,
            "generation": self.generation,
            "weights": dict(self.weights),
            "previous": self.previous,
            "epochs": dict(self.epochs),
            "rollout": self.rollout,
            "disabled": {p: sorted(a) for p, a in self.disabled.items() if a},
        }


class StateFile:
    """Where one host keeps its routing state.  A fleet's store (cluster/store.py)
    has the same `save`, writing to etcd first."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def save(self, state: SavedState) -> bool:
        """True: `state` is the one in force (SharedState.save says when it is not)."""
        save(self.path, state)
        return True


def save(path: str, state: SavedState) -> None:
    """Write `state` to `path` atomically, or raise StateError and change nothing."""
    directory = os.path.dirname(os.path.abspath(path))
    data = encode(state)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(directory)
    except OSError as exc:
        raise StateError(f"cannot save state to {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: str, pools: list[str]) -> tuple[SavedState | None, str | None]:
    """The saved state, or (None, why) when there is none usable.

    A missing file is the normal first start (no reason given); a file that
    is unreadable or names pools the config no longer has is reported and
    the config's weights are used instead.
    """
    try:
        with open(path, "rb") as f:
            raw = json.load(f)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable state file ({exc})"
    try:
        return checked(raw, pools), None
    except ValueError as exc:
        return None, f"{path}: {exc}; using the config's weights"


def decode(data: bytes, pools: list[str]) -> SavedState:
    """A state as a fleet's store holds it (the state file's JSON); ValueError
    saying why when it is not one, or not for these pools."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    return checked(raw, pools)


def encode(state: SavedState) -> bytes:
    return json.dumps(state.to_json(), indent=2, sort_keys=True).encode() + b"\n"


def checked(raw, pools: list[str]) -> SavedState:
    try:
        state = _parse(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"invalid state file ({exc})") from None
    if set(state.weights) != set(pools):
        raise ValueError(f"state names pools {sorted(state.weights)} but the config has "
                         f"{sorted(pools)}")
    return state


def _parse(raw: dict) -> SavedState:
    rollout = raw.get("rollout")
    if rollout is not None and not isinstance(rollout, dict):
        raise ValueError("rollout must be an object")
    weights = {str(k): int(v) for k, v in raw["weights"].items()}
    if any(w < 0 for w in weights.values()) or not any(weights.values()):
        raise ValueError("weights must be >= 0 with at least one > 0")
    previous = raw.get("previous")
    disabled = raw.get("disabled") or {}
    if not isinstance(disabled, dict) or not all(isinstance(a, list) for a in disabled.values()):
        raise ValueError("disabled must map pools to lists of addresses")
    return SavedState(
        generation=int(raw["generation"]),
        weights=weights,
        previous=None if previous is None else str(previous),
        epochs={str(k): int(v) for k, v in (raw.get("epochs") or {}).items()},
        rollout=raw.get("rollout"),
        disabled={str(p): [str(a) for a in addrs] for p, addrs in disabled.items()},
    )
