"""An upstream the test controls: a raw TCP server that records what the proxy sent it."""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def ok_response(request: bytes) -> bytes:
    """200 "ok": what a RecordingUpstream answers unless told otherwise."""
    return OK


def answering(name: str, status: int = 200, delay: float = 0.0):
    """A script for RecordingUpstream: every answer says who sent it (`X-Pool: name`,
    body "name\\n"), after `delay` seconds, with `status`."""
    body = f"{name}\n".encode()

    def respond(request: bytes) -> bytes:
        if delay:
            time.sleep(delay)
        return (b"HTTP/1.1 %d X\r\nX-Pool: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (status, name.encode(), len(body), body))
    return respond


@dataclass
class _Wire:
    """The raw bytes one upstream connection received."""

    received: bytearray = field(default_factory=bytearray)
    health: bool | None = None  # a health-check connection? decided by its first bytes


class _Tap:
    """The upstream's socket of one connection, copying every byte it receives
    (a peek is not a receive) into its _Wire."""

    def __init__(self, sock: socket.socket, wire: _Wire) -> None:
        self._sock, self._wire = sock, wire

    def recv(self, n: int, flags: int = 0) -> bytes:
        data = self._sock.recv(n, flags)
        if data and not flags & socket.MSG_PEEK:
            if self._wire.health is None:
                self._wire.health = data.startswith(b"GET /health ")
            self._wire.received += data
        return data

    def __getattr__(self, name):
        return getattr(self._sock, name)


class RecordingUpstream:
    """A raw TCP upstream that records every request and every byte, and answers from a script.

    `respond(request_bytes)` is called each time a complete request head (and its
    Content-Length body) has arrived on a connection; it returns the bytes to send, a
    callable that gets the connection's socket and answers itself, or None to close the
    connection.  `requests` holds the parsed requests (the proxy's health checks left
    out); `forwarded()` the raw bytes of every other connection, so a test can say the
    upstream received nothing at all, not even a partial head.  Runs in threads with
    plain blocking sockets, so what it records is exactly what crossed the wire.
    """

    def __init__(self, respond=None) -> None:
        self.respond = self._initial_respond = respond or ok_response
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.requests: list[bytes] = []
        self.connections = 0  # connections that carried proxied requests
        self._wires: list[_Wire] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def forwarded(self) -> bytes:
        """Every byte received on connections other than health checks (since reset())."""
        return b"".join(bytes(w.received) for w in list(self._wires) if w.health is False)

    def reset(self) -> None:
        """Forget what was received, and answer as at the start again."""
        self.requests.clear()
        self.respond = self._initial_respond
        for wire in list(self._wires):
            del wire.received[:]

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if ready:
                conn, _ = self.sock.accept()
                wire = _Wire()
                self._wires.append(wire)
                threading.Thread(target=self._handle, args=(_Tap(conn, wire),),
                                 daemon=True).start()

    def _handle(self, conn) -> None:
        buf = b""
        conn.settimeout(10)
        counted = False
        try:
            while not self._stop:
                request, buf = self._read_request(conn, buf)
                if request is None:
                    return
                if request.startswith(b"GET /health "):  # the proxy's health checks
                    conn.sendall(OK)
                    continue
                if not counted:
                    counted = True
                    self.connections += 1
                self.requests.append(request)
                answer = self.respond(request)
                if answer is None:
                    return
                if callable(answer):
                    answer(conn)
                else:
                    conn.sendall(answer)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn, buf: bytes) -> tuple[bytes | None, bytes]:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None, buf
            buf += data
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                # One the proxy should never have sent (`5, 5`, `abc`) counts as 0, so
                # the test sees the message rather than a dead thread.
                length = int(value.strip()) if value.strip().isdigit() else 0
        while len(rest) < length:
            data = conn.recv(65536)
            if not data:
                return None, buf
            rest += data
        return head + b"\r\n\r\n" + rest[:length], rest[length:]
