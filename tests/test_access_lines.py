"""The JSON access lines: accesslog._render_lines (Python) and its compiled twin
_accessline.render_lines (C) must write the same bytes for the same lines, and
each line must be JSON that says what the request was.  CI runs this file on
the compiled build and on the pure one."""

from __future__ import annotations

import io
import json
import os
import math
import random

import pytest

from proxy.dataplane import accesslog
from proxy.dataplane.accesslog import AccessLog

try:
    from proxy.dataplane._accessline import render_lines as compiled
except ImportError:  # the pure build; SWITCHYARD_EXPECT_HOT_PATH says whether that is right
    compiled = None

# (timestamp, method, path, status, pool, upstream, duration s, bytes, request id, client, error)
CORNERS = [
    (1764626400.0625, b"GET", b"/api/items?id=42", 200, "blue", "blue-1", 0.000312, 3,
     b"a1b2-1", "127.0.0.1", None),
    # Quotes, backslashes and control bytes are escaped; Latin-1 bytes become UTF-8.
    (1764626400.0005, b"POST", b'/a"b\\c\xe9\x7f', 502, None, None, 1.23456789, 0,
     b"id\t\x01\n\r\x08\x0c\xff", "::1", "upstream_reset"),
    (0.0, b"M\xe9", b"/", 499, "gr\u00fcn", "up\u2603", 0.0, 10**12, b"", "unix", "client_gone"),
    # Halfway cases of the three decimals: both must round the same way.
    (2.0005, b"GET", b"/", 200, "blue", "b", 0.0000005, 1, b"r", "10.0.0.1", None),
    (1.0015, b"GET", b"/", 200, "blue", "b", 0.0025, 1, b"r", "10.0.0.1", None),
    (12345.6785, b"GET", b"/", 200, "blue", "b", 12.3456785, 1, b"r", "10.0.0.1", None),
]


def _random_lines(count: int) -> list[tuple]:
    rnd = random.Random(11)

    def some_bytes(most: int) -> bytes:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(most)))

    return [(rnd.uniform(0, 2e9), some_bytes(8), some_bytes(40), rnd.randrange(100, 600),
             rnd.choice([None, "blue", "gr\u00fcn\u2603", 'q"\\\n']),
             rnd.choice([None, "blue-1", "x\ty"]),
             rnd.choice([0.0, rnd.random(), rnd.uniform(0, 100), 1e-9]),
             rnd.randrange(10**12), some_bytes(30), rnd.choice(["127.0.0.1", "::1", "unix"]),
             rnd.choice([None, "client_gone", "upstream_reset"]))
            for _ in range(count)]


def _numbers() -> list[float]:
    """Times and durations where three decimals are hard to get right: halfway
    cases that are exact in binary (x.0625: ties go to even), the doubles
    either side of a decimal halfway point, the edges of the compiled
    renderer's own rounding (0 to 10^15), and what it leaves to Python."""
    rnd = random.Random(5)
    numbers = [k / 16 for k in range(64)] + [1764626400 + k / 16 for k in range(16)]
    for _ in range(2000):
        half = (rnd.randrange(10 ** rnd.randrange(1, 19)) + 0.5) / 1000
        numbers += [math.nextafter(half, 0), half, math.nextafter(half, math.inf)]
        numbers.append(rnd.uniform(0, 10 ** rnd.randrange(-6, 16)))
    return numbers + [1e15, math.nextafter(1e15, 0), 1e16, 2.0 ** 60, 5e-324, -0.0, -0.0625,
                      -1.5, math.inf, -math.inf]


def test_compiled_lines_round_three_decimals_as_python_does():
    if compiled is None:
        pytest.skip("the pure build has only the Python renderer")
    line = CORNERS[0]
    lines = [(n, *line[1:6], n / 1000, *line[7:]) for n in _numbers()]
    assert compiled(lines) == _python(lines)


def _python(lines: list[tuple]) -> str:
    return accesslog._render_lines(None, "request", {"lines": lines})


def test_the_compiled_build_has_the_compiled_renderer():
    if os.environ.get("SWITCHYARD_EXPECT_HOT_PATH") == "compiled":
        assert compiled is not None


@pytest.mark.skipif(compiled is None, reason="the pure build has only the Python renderer")
def test_compiled_and_python_lines_are_the_same_bytes():
    for lines in (CORNERS, _random_lines(3000)):
        assert compiled(lines) == _python(lines)
    assert compiled([]) == _python([]) == ""


@pytest.mark.parametrize("render", [_python, compiled], ids=["python", "compiled"])
def test_each_line_is_json_with_the_request_fields(render):
    if render is None:
        pytest.skip("the pure build has only the Python renderer")
    text = render(CORNERS)
    rows = [json.loads(line) for line in text.split("\n")]
    assert len(rows) == len(CORNERS)
    first, second, third = rows[:3]
    assert first == {"event": "request", "timestamp": 1764626400.062, "method": "GET",
                     "path": "/api/items?id=42", "status": 200, "pool": "blue",
                     "upstream": "blue-1", "duration_ms": 0.312, "bytes": 3,
                     "request_id": "a1b2-1", "client": "127.0.0.1"}
    assert second["path"] == '/a"b\\c\u00e9\x7f' and second["pool"] is None
    assert second["request_id"] == "id\t\x01\n\r\x08\x0c\u00ff"
    assert second["error"] == "upstream_reset" and second["duration_ms"] == 1234.568
    assert third["method"] == "M\u00e9" and third["upstream"] == "up\u2603"
    assert third["bytes"] == 10**12 and third["request_id"] == ""


def test_the_access_log_writes_what_it_recorded():
    class Req:
        method, target, request_id = b"GET", b"/x?y=1", b"rid-1"

    out = io.StringIO()
    log = AccessLog("json", out)
    log.record(Req(), 201, "green", "green-1", 0.002, 17, "127.0.0.1")
    log.record(Req(), 502, None, None, 0.5, 0, "::1", error="upstream_reset")
    log.flush()
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["status"], r["pool"], r["path"], r.get("error")) for r in rows] == [
        (201, "green", "/x?y=1", None), (502, None, "/x?y=1", "upstream_reset")]
    assert rows[0]["duration_ms"] == 2.0 and rows[0]["bytes"] == 17
