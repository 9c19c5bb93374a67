"""The control channel between the supervisor and one worker process.

A socketpair made by the supervisor before it spawns the worker: private to
the two processes, which run the same code, so messages are pickled Python
values (a Config, a RoutingTable) in frames of a 4-byte length and the bytes.
Nothing crosses it per request: routing changes go one way; their
acknowledgements, carrying the worker's counters, and the rare report of an
upstream refusing connects come back (supervisor.py).
"""

from __future__ import annotations

import asyncio
import copyreg
import pickle
import socket
import struct
import types
from typing import Any, Callable

_LENGTH = struct.Struct("!I")

# Config and RoutingTable keep their mappings read-only (MappingProxyType),
# which pickle does not know: it travels as a dict and arrives read-only again.
def read_only(mapping: dict) -> types.MappingProxyType:
    return types.MappingProxyType(mapping)


copyreg.pickle(types.MappingProxyType, lambda m: (read_only, (dict(m),)))
# A frame larger than this is a bug (a config is a few KiB): the far side is
# dropped rather than buffered without end.
MAX_FRAME = 16 * 1024 * 1024


class Channel(asyncio.Protocol):
    """Frames in and out of one stream socket; `on_message(value)` per frame in,
    `on_lost()` once when the far side has gone."""

    def __init__(self, on_message: Callable[[Any], None], on_lost: Callable[[], None]) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    @classmethod
    async def over(cls, sock: socket.socket, on_message, on_lost) -> Channel:
        loop = asyncio.get_running_loop()
        _, channel = await loop.create_unix_connection(lambda: cls(on_message, on_lost), sock=sock)
        return channel

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, value: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # the far side is gone; on_lost has said so or is about to
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.write(_LENGTH.pack(len(data)) + data)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buf)
            if size > MAX_FRAME:
                self.close()
                return
            end = _LENGTH.size + size
            if len(buf) < end:
                return
            value = pickle.loads(bytes(buf[_LENGTH.size:end]))
            del buf[:end]
            self.on_message(value)

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.on_lost()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
