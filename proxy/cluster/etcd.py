"""A small etcd v3 client over etcd's JSON gateway (grpc-gateway), with aiohttp.

Why the gateway and not a gRPC client: etcd serves it on the client port by
default (3.4: `/v3/...`), it needs nothing beyond aiohttp, which the admin
API and the health checks already use, and the fleet needs only five calls:
range, put, a compare-and-swap transaction, watch and leases.  Keys and
values travel base64-encoded; 64-bit numbers arrive as strings; a field at
its zero value is left out (proto3 JSON), so `succeeded` is absent when a
transaction's compare failed.

Every call has a deadline and raises `Unreachable` when no endpoint answers,
so a caller can keep routing on its last known state and say since when.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import AsyncIterator

import aiohttp


class Unreachable(Exception):
    """No etcd endpoint answered within the deadline."""


@dataclass(frozen=True)
class Value:
    key: bytes
    value: bytes
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Event:
    kind: str  # "put" or "delete"
    key: bytes
    value: bytes
    mod_revision: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _value(kv: dict) -> Value:
    return Value(_unb64(kv.get("key")), _unb64(kv.get("value")), int(kv.get("mod_revision", 0)),
                 int(kv.get("lease", 0)))


def prefix_end(prefix: bytes) -> bytes:
    """The key just past every key starting with `prefix` (etcd's range_end)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


class Etcd:
    def __init__(self, endpoints: list[str], timeout: float = 2.0) -> None:
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._current = 0  # the endpoint that answered last
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise Unreachable("the etcd client is closed (this host is leaving the fleet)")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _call(self, path: str, body: dict) -> dict:
        """POST `body` to `path` on the endpoint that answered last, then the others.

        An error answer counts as that endpoint failing (a member without
        quorum answers 503 "no leader" while another member is fine)."""
        errors = []
        for i in range(len(self.endpoints)):
            index = (self._current + i) % len(self.endpoints)
            url = self.endpoints[index] + path
            try:
                async with self._client().post(
                        url, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                    data = await resp.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                errors.append(f"{url}: {exc or exc.__class__.__name__}")
                continue
            if resp.status != 200 or not isinstance(data, dict) or "error" in data:
                message = data.get("message", data) if isinstance(data, dict) else data
                errors.append(f"{url}: {resp.status} {message}")
                continue
            self._current = index
            return data
        raise Unreachable("; ".join(errors))

    async def get(self, key: bytes) -> tuple[Value | None, int]:
        """The value at `key` (None when absent) and the store's revision."""
        data = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        return (_value(kvs[0]) if kvs else None), int(data["header"]["revision"])

    async def get_prefix(self, prefix: bytes) -> list[Value]:
        data = await self._call("/v3/kv/range",
                                {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return [_value(kv) for kv in data.get("kvs") or []]

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Write `value` at `key`; the new revision."""
        body = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        data = await self._call("/v3/kv/put", body)
        return int(data["header"]["revision"])

    async def swap(self, key: bytes, value: bytes, expected: int, lease: int = 0
                   ) -> tuple[bool, Value | None]:
        """Write `value` at `key` only if the key's mod_revision is still `expected`
        (0: only if the key does not exist), under `lease` if given.  (True, what
        was written, with its revision) or (False, what is there now, None when
        nothing is) when someone else wrote first."""
        compare = {"key": _b64(key), "result": "EQUAL"}
        if expected:
            compare.update(target="MOD", mod_revision=str(expected))
        else:
            compare.update(target="CREATE", create_revision="0")
        put = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        data = await self._call("/v3/kv/txn", {
            "compare": [compare],
            "success": [{"request_put": put}],
            "failure": [{"request_range": {"key": _b64(key)}}],
        })
        if data.get("succeeded"):
            return True, Value(key, value, int(data["header"]["revision"]), lease)
        kvs = data["responses"][0]["response_range"].get("kvs") or []
        return False, (_value(kvs[0]) if kvs else None)

    async def grant(self, ttl: int) -> int:
        data = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(data["ID"])

    async def keep_alive(self, lease: int) -> int:
        """Renew `lease` once; its remaining TTL (0: it had expired).  The gateway
        streams this call: an error arrives as `{"error": ...}` with status 200,
        which _call refuses, so an error is never read as an expired lease."""
        data = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int((data.get("result") or {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": str(lease)})

    async def watch(self, key: bytes, start_revision: int, prefix: bool = False
                    ) -> AsyncIterator[list[Event]]:
        """Each batch of changes to `key` (or under it) from `start_revision` on,
        as etcd sends them; ends (raising Unreachable) when the stream breaks."""
        create = {"key": _b64(key), "start_revision": str(start_revision)}
        if prefix:
            create["range_end"] = _b64(prefix_end(key))
        url = self.endpoints[self._current] + "/v3/watch"
        try:
            async with self._client().post(
                    url, json={"create_request": create},
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)) as resp:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result") or {}
                    if result.get("canceled"):  # e.g. its revision was compacted away
                        raise Unreachable(f"{url}: watch canceled by etcd: "
                                          f"{result.get('cancel_reason', '')}")
                    events = [Event("delete" if e.get("type") == "DELETE" else "put",
                                    _unb64(e["kv"].get("key")), _unb64(e["kv"].get("value")),
                                    int(e["kv"].get("mod_revision", 0)))
                              for e in result.get("events") or ()]
                    if events:
                        yield events
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise Unreachable(f"{url}: watch ended: {exc or exc.__class__.__name__}") from None
        raise Unreachable(f"{url}: watch ended")
