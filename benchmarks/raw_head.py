"""Should the response head be forwarded as the raw bytes llhttp validated?

Issue 11 suggests it: no Python callback per field, only the hop-by-hop lines cut
out.  This times both ways of parsing nginx's answer to wrk in the same process:
llhttp with an `on_header` callback that sorts fields as switchyard does
(response.py), and llhttp without one, then finding the fields to cut in the raw
head with `re` on a lower-cased copy.  Same machine, same run: only the ratio
means anything.

    python benchmarks/raw_head.py
"""

from __future__ import annotations

import os
import re
import sys
import timeit

import httptools

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy.dataplane.headers import HOP_BY_HOP  # noqa: E402

RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 21:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")
_CUT = re.compile(rb"\r\n(" + b"|".join(sorted(HOP_BY_HOP | {b"content-length"}, key=len,
                                               reverse=True)) + rb"):")


class Callbacks:
    """As response.py does it: one call per field, sorted as they come."""

    def reset(self) -> None:
        self.head, self.hop = [b""], ()

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            self.hop += ((lname, value),)
            return
        self.head += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


class RawHead(Callbacks):
    """No per-field callback (httptools then registers none); the fields to cut
    are found in the raw head once it is complete."""

    on_header = None  # type: ignore[assignment]

    def on_headers_complete(self) -> None:
        end = RESPONSE.find(b"\r\n\r\n") + 2
        self.cut = [m.span() for m in _CUT.finditer(RESPONSE[:end].lower())]


def per_parse(protocol, n: int) -> float:
    parser = httptools.HttpResponseParser(protocol)

    def once():
        protocol.reset()
        parser.feed_data(RESPONSE)
    return timeit.timeit(once, number=n) / n * 1e6


if __name__ == "__main__":
    n = 100_000
    callbacks = min(per_parse(Callbacks(), n) for _ in range(3))
    raw = min(per_parse(RawHead(), n) for _ in range(3))
    print(f"callback per field: {callbacks:.2f} us per response")
    print(f"raw head + re:      {raw:.2f} us per response ({raw / callbacks:.2f}x)")
