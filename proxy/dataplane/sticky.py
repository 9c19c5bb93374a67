"""Signed sticky-session cookies.

A cookie names a pool and that pool's cookie epoch, signed with HMAC-SHA256
under a secret kept in the state directory.  The epoch lets a rollback disown
every cookie that points at the pool being left without touching the secret
(which would also log out the users of the pool we roll back to).

Tester cookies reach a pool of weight 0; they carry an expiry instead of an
epoch and a different tag, so a sticky cookie can never pass for one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

SECRET_BYTES = 32
_CACHE_LIMIT = 16384


class Signer:
    """Makes and checks cookie values; verification results are cached.

    The same few thousand cookie values arrive again and again, and an HMAC
    costs more than the rest of the routing decision, so a bounded dict of
    already-verified values pays for itself on the hot path.
    """

    __slots__ = ("_key", "_cache")

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("sticky secret must be at least 16 bytes")
        self._key = key
        self._cache: dict[bytes, tuple[str, int] | None] = {}

    def _mac(self, payload: bytes) -> bytes:
        digest = hmac.new(self._key, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def sticky(self, pool: str, epoch: int) -> bytes:
        payload = b"%s.%d" % (pool.encode(), epoch)
        return payload + b"." + self._mac(payload)

    def tester(self, pool: str, expires: int) -> bytes:
        payload = b"t.%s.%d" % (pool.encode(), expires)
        return payload + b"." + self._mac(payload)

    def verify_sticky(self, value: bytes) -> tuple[str, int] | None:
        """(pool, epoch) for an authentic value, else None."""
        try:
            return self._cache[value]
        except KeyError:
            pass
        result = self._check(value, parts=3)
        decoded = (result[0], int(result[1])) if result else None
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[value] = decoded
        return decoded

    def verify_tester(self, value: bytes, now: float | None = None) -> str | None:
        """The pool an authentic, unexpired tester cookie names, else None."""
        result = self._check(value, parts=4)
        if result is None or result[0] != "t":
            return None
        expires = int(result[2])
        if expires < (time.time() if now is None else now):
            return None
        return result[1]

    def _check(self, value: bytes, parts: int) -> list[str] | None:
        fields = value.split(b".")
        if len(fields) != parts or not all(fields):
            return None
        payload, mac = value.rsplit(b".", 1)
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            text = payload.decode("ascii").split(".")
            int(text[-1])
        except (UnicodeDecodeError, ValueError):
            return None
        return text


def load_or_create_secret(path: str) -> bytes:
    """Read the signing secret, creating it (mode 0600) on first start."""
    try:
        with open(path, "rb") as f:
            key = f.read()
    except FileNotFoundError:
        key = os.urandom(SECRET_BYTES)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        return key
    if len(key) < 16:
        raise ValueError(f"{path}: sticky secret is shorter than 16 bytes")
    return key


def find_cookie(header: bytes, name: bytes) -> bytes | None:
    """The value of cookie `name` in a Cookie header, or None.

    Cookie headers are `a=1; b=2`; a cheap substring test first keeps the
    common no-cookie case away from the split.  (`find`, not `in`: for bytes,
    `in` first tries the needle as an int and raises and clears a TypeError.)
    """
    if header.find(name) < 0:
        return None
    for item in header.split(b";"):
        key, sep, value = item.strip().partition(b"=")
        if sep and key == name:
            return value.strip(b'"')
    return None


def without_cookies(header: bytes, names: frozenset[bytes]) -> bytes:
    """A Cookie header's value without the cookies called one of `names`."""
    kept = [item.strip() for item in header.split(b";")
            if item.strip().partition(b"=")[0] not in names]
    return b"; ".join(item for item in kept if item)
