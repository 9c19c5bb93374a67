"""The admin API's Unix socket: created with its mode from the start (umask set
around bind, so there is no window where it is wider), each peer known by
SO_PEERCRED, and only the allowed ones served."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct

_PEERCRED = struct.Struct("3i")


def bind_unix(path: str, mode: int, group: str | None) -> socket.socket:
    """A listening Unix socket whose mode is right from the moment it exists."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o750 if group else 0o700, exist_ok=True)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    if group is not None:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _remove_stale(path: str) -> None:
    """Remove a socket file left by a dead process; refuse to steal a live one."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another process is serving this admin socket")


def peer_credentials(transport) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return None
    return _PEERCRED.unpack(raw)


def allowed(peer: tuple[int, int, int] | None, cfg) -> bool:
    """root, our own uid, admin.uids, and members of admin.group (`cfg` is AdminConfig)."""
    if peer is None:
        return False
    _, uid, gid = peer
    if uid in (0, os.getuid()) or uid in cfg.uids:
        return True
    if cfg.group is None:
        return False
    try:
        group = grp.getgrnam(cfg.group)
    except KeyError:
        return False
    return gid == group.gr_gid or _user_in_group(uid, group)


def _user_in_group(uid: int, group) -> bool:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return name in group.gr_mem


class Refuse:
    """Protocol for connections over admin.max_connections: closed at once."""

    def connection_made(self, transport) -> None:
        transport.close()

    def connection_lost(self, exc) -> None:
        pass

    def data_received(self, data) -> None:
        pass

    def eof_received(self) -> bool:
        return False
