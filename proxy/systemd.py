"""systemd integration without libsystemd: socket activation and sd_notify.

Both protocols are small enough to speak directly, and doing so keeps a C
dependency out of a package that must install into a plain venv.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

# sd_listen_fds(3): passed descriptors always start right after stdio.
LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """Sockets passed by systemd socket activation, or [] when not activated.

    Same rules as sd_listen_fds(3): the variables count only when LISTEN_PID is
    our own pid, because they are inherited by children that must not take the
    sockets for themselves.
    """
    try:
        count = _activated_fd_count()
    finally:
        # libsystemd unsets them whatever the outcome, so that a process we
        # spawn later never mistakes them for its own.
        if unset_environment:
            for name in _LISTEN_VARS:
                os.environ.pop(name, None)
    return [_adopt(fd) for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count)]


def _activated_fd_count() -> int:
    if _parse_int(os.environ.get("LISTEN_PID")) != os.getpid():
        return 0
    count = _parse_int(os.environ.get("LISTEN_FDS"))
    return count if count is not None and count > 0 else 0


def _adopt(fd: int) -> socket.socket:
    # systemd hands the descriptors over inheritable; a child we spawn (the
    # demo pools, say) must not keep our listening socket open behind our back.
    os.set_inheritable(fd, False)
    # With fileno= the kernel is asked for family, type and protocol, so TCP,
    # TCP6 and unix stream sockets all come back as what they are.
    return socket.socket(fileno=fd)


def _parse_int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class Notifier:
    """Sends sd_notify(3) messages; every method is a no-op without NOTIFY_SOCKET.

    A failed send is logged and swallowed: telling systemd how we are doing
    must never be the reason the proxy stops serving.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = _unix_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._log = structlog.get_logger()
        self._sock: socket.socket | None = None
        if self._address is not None:
            # Datagrams never block for long, but a full receive queue would
            # stall the event loop; non-blocking turns that into a logged error.
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"), _watchdog_usec_for_us())

    def __repr__(self) -> str:
        return f"<Notifier address={self._address!r} watchdog_usec={self._watchdog_usec}>"

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """Announce a reload; send ready() again once it is done.

        MONOTONIC_USEC is what Type=notify-reload (systemd >= 253) requires to
        match the reload to its request; older versions ignore the field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def status(self, text: str) -> None:
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog() calls, or None when nobody is watching.

        Half of WatchdogSec=, as sd_watchdog_enabled(3) recommends, so one late
        tick of the event loop does not get the service killed.
        """
        if not self.enabled or not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, message: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            self._log.warning("sd_notify_failed", message=message, error=str(exc))


def _unix_address(notify_socket: str) -> bytes:
    # "@name" is Linux's abstract namespace, spelled with a leading NUL byte.
    if notify_socket.startswith("@"):
        return b"\0" + os.fsencode(notify_socket[1:])
    return os.fsencode(notify_socket)


def _watchdog_usec_for_us() -> int | None:
    # WATCHDOG_PID names the process systemd expects pings from; a child that
    # inherited the variables is not being watched.
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and _parse_int(pid) != os.getpid():
        return None
    usec = _parse_int(os.environ.get("WATCHDOG_USEC"))
    return usec if usec is not None and usec > 0 else None


def _one_line(text: str) -> str:
    # The protocol is newline-separated assignments; a newline inside STATUS=
    # would start a bogus assignment of its own.
    return " ".join(text.splitlines())
