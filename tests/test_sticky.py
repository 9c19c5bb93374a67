"""Signed cookies: forged, tampered and garbage values count as absent."""

import os

import pytest

from proxy.dataplane.sticky import Signer, find_cookie, load_or_create_secret

KEY = b"k" * 32


def test_sticky_round_trip():
    s = Signer(KEY)
    assert s.verify_sticky(s.sticky("green", 3)) == ("green", 3)


@pytest.mark.parametrize("value", [
    b"", b"green", b"green.0", b"green.0.", b"..", b"green.0.AAAAAAAAAAAAAAAAAAAAAA",
    b"\xff\xfe.0.abc", b"green.x.abc", b"a" * 5000, b"green.0.abc.def",
])
def test_garbage_cookies_are_absent(value):
    assert Signer(KEY).verify_sticky(value) is None


def test_tampered_pool_or_epoch_is_rejected():
    s = Signer(KEY)
    value = s.sticky("blue", 0)
    mac = value.rsplit(b".", 1)[1]
    assert s.verify_sticky(b"green.0." + mac) is None
    assert s.verify_sticky(b"blue.1." + mac) is None


def test_cookie_from_another_secret_is_rejected():
    assert Signer(KEY).verify_sticky(Signer(b"x" * 32).sticky("blue", 0)) is None


def test_tester_cookie_expires_and_is_not_a_sticky_cookie():
    s = Signer(KEY)
    value = s.tester("green", 2_000)
    assert s.verify_tester(value, now=1_000) == "green"
    assert s.verify_tester(value, now=3_000) is None
    assert s.verify_sticky(value) is None
    assert s.verify_tester(s.sticky("green", 0), now=0) is None


def test_secret_is_created_once_with_mode_0600(tmp_path):
    path = str(tmp_path / "secret")
    key = load_or_create_secret(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_or_create_secret(path) == key


@pytest.mark.parametrize("header, expected", [
    (b"switchyard_pool=abc", b"abc"),
    (b"a=1; switchyard_pool=abc; b=2", b"abc"),
    (b"a=1;switchyard_pool=\"abc\"", b"abc"),
    (b"xswitchyard_pool=abc", None),
    (b"switchyard_pool_tester=abc", None),
    (b"", None),
])
def test_find_cookie(header, expected):
    assert find_cookie(header, b"switchyard_pool") == expected
