"""HTTP over the admin Unix socket, the one way the CLI talks to the proxy."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class Unreachable(Exception):
    pass


class AdminClient:
    """One session per command."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.path))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, body: Any = None,
                   if_match: int | None = None, timeout: float = 120) -> tuple[int, dict, str]:
        headers = {} if if_match is None else {"If-Match": f'"{if_match}"'}
        try:
            async with self.session.request(
                    method, f"http://switchyard{path}", json=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                text = await resp.text()
        except (aiohttp.ClientConnectionError, OSError, asyncio.TimeoutError) as exc:
            raise Unreachable(f"{self.path}: {exc or exc.__class__.__name__}") from None
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        return resp.status, data, text
