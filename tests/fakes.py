"""Stand-ins for what the event loop hands the protocol classes, for in-process tests."""

from __future__ import annotations

import socket


class FakeSocket:
    """What `transport.get_extra_info("socket")` gives: SO_ERROR, and no real fd."""

    def __init__(self, so_error: int = 0) -> None:
        self.so_error = so_error

    def getsockopt(self, level, option):
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR)
        error, self.so_error = self.so_error, 0  # reading SO_ERROR clears it
        return error

    def fileno(self) -> int:
        return -1  # os.dup() fails: nothing can be read beyond what a test delivers


class FakeTransport:
    """Records writes; closing, aborting and reading flags as a test can check them."""

    def __init__(self, peer=None, so_error: int = 0) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.reading = True
        self.peer = peer
        self.sock = FakeSocket(so_error)

    @property
    def data(self) -> bytes:
        return b"".join(self.written)

    def get_extra_info(self, name: str):
        return {"peername": self.peer, "socket": self.sock}.get(name)

    def set_write_buffer_limits(self, high=None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
