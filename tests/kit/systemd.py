"""systemd's part in a restart, played by the test: PID 1 is not systemd here, so the
test holds the listening socket, hands it to each proxy process as fd 3, and reads
what the proxy sends to NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from . import ROOT


def listening_socket() -> socket.socket:
    """A listening socket on a loopback port, held by the test as systemd's .socket unit
    would hold it: it outlives each proxy process it is handed to."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    return listener


class Notifications:
    """A NOTIFY_SOCKET of the test's own: collects what the proxy sends systemd."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def wait(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages):
                return
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError(f"no {text!r} notification; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


# What systemd does between fork and exec: the socket becomes fd 3, and
# LISTEN_PID names the process that will run (exec keeps the pid).
_EXEC_AS_SYSTEMD = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


class Activated:
    """One proxy process started the way systemd starts it: PID 1 is not systemd here,
    so the test holds the listening socket and hands it over as fd 3."""

    def __init__(self, config_path: str, listener: socket.socket, notify: str) -> None:
        fd = listener.fileno()
        env = dict(os.environ, NOTIFY_SOCKET=notify, PYTHONUNBUFFERED="1")
        with open(config_path + ".log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _EXEC_AS_SYSTEMD, str(fd), sys.executable, "-m",
                 "proxy.cli", "serve", "-c", config_path],
                pass_fds=(fd,), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)
