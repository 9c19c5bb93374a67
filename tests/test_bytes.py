"""The compiled build's bytes operations (proxy/dataplane/_bytes.pyx) against what the
pure build uses: bytes.join for the heads and answers it sends (the same result for
every list, and the lone part itself, as bytes.join returns it), and the request id's
`%`-format."""

from __future__ import annotations

import os
import random

import pytest

from proxy.dataplane import forwarding, writes

try:
    from proxy.dataplane._bytes import join as compiled
    from proxy.dataplane._bytes import request_id
except ImportError:  # the pure build
    compiled = request_id = None

pytestmark = pytest.mark.skipif(compiled is None, reason="the pure build has only bytes.join")


def test_the_compiled_build_has_them_and_uses_them():
    if os.environ.get("SWITCHYARD_EXPECT_HOT_PATH") == "compiled":
        assert writes.join is compiled and forwarding.request_id is request_id


def _lists():
    rnd = random.Random(3)
    yield []
    yield [b""]
    yield [b"", b""]
    yield [b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"]
    yield [b"\x00\xff" * 5000, b"", b"tail"]
    for _ in range(500):
        yield [bytes(rnd.randrange(256) for _ in range(rnd.randrange(40)))
               for _ in range(rnd.randrange(30))]


def test_it_joins_as_bytes_join_does():
    for parts in _lists():
        assert compiled(parts) == b"".join(parts)
        assert type(compiled(parts)) is bytes


def test_a_lone_part_is_returned_itself():
    part = b"HTTP/1.1 200 OK\r\n\r\n"
    assert compiled([part]) is part


def test_parts_that_are_not_bytes_go_to_bytes_join():
    assert compiled([b"a", bytearray(b"b"), memoryview(b"c")]) == b"abc"
    assert type(compiled([bytearray(b"b")])) is bytes
    with pytest.raises(TypeError):
        compiled([b"a", "b"])
    with pytest.raises(TypeError):
        compiled((b"a",))  # a list only, as the data plane passes


def test_request_ids_are_the_format_they_replace():
    rnd = random.Random(7)
    numbers = [0, 1, 9, 10, 15, 16, 255, 256, 2 ** 32, 2 ** 63, 2 ** 64 - 1]
    numbers += [rnd.randrange(2 ** rnd.randrange(1, 65)) for _ in range(2000)]
    for prefix in (b"", b"246ba7fd", bytes(range(256))):
        for number in numbers:
            assert request_id(prefix, number) == b"%s-%x" % (prefix, number)
    with pytest.raises(OverflowError):
        request_id(b"p", 2 ** 64)
    with pytest.raises(OverflowError):
        request_id(b"p", -1)
    with pytest.raises(TypeError):
        request_id(None, 1)
