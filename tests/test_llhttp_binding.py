"""The compiled build's llhttp binding (proxy/dataplane/_llhttp.pyx) against httptools,
which the pure build uses: the same raw bytes, fed whole and in every split, must reach
the readers the same: the same calls with the same arguments, the same head gathered
for the response reader (the binding does in C what response.py's on_header does with
httptools), the same parser state at the end of each head, and the same exception
(class, message, and what a callback raised)."""

from __future__ import annotations

import os

import httptools
import pytest

from proxy.dataplane.http11 import _LENIENCIES, _MUST_REJECT
from proxy.dataplane.reading import RequestReader
from proxy.dataplane.response import ResponseReader

try:
    from proxy.dataplane import _llhttp
except ImportError:  # the pure build
    _llhttp = None

pytestmark = pytest.mark.skipif(_llhttp is None, reason="the pure build has only httptools")


def test_the_compiled_build_has_the_binding():
    if os.environ.get("SWITCHYARD_EXPECT_HOT_PATH") == "compiled":
        assert _llhttp is not None


class Boom(Exception):
    pass


class RequestRecorder(RequestReader):
    """Records every call the parser makes into the reader (a subclass of the real
    reader, so the binding calls it as it calls the data plane)."""

    def __init__(self, fail_on=None):
        self.events = []
        self.fail_on = fail_on
        self.parser = None

    def _note(self, *event):
        self.events.append(event)
        if event[0] == self.fail_on:
            raise Boom(event[0])

    def on_message_begin(self):
        self._note("begin")

    def on_url(self, url):
        self._note("url", url)

    def on_header(self, name, value):
        self._note("header", name, value)

    def head_parsed(self, method, version, keep_alive):
        # httptools reaches this through the real reader's on_headers_complete
        p = self.parser
        self._note("head", method, version, keep_alive,
                   p.get_method(), p.get_http_version(), p.should_keep_alive())

    def on_body(self, body):
        self._note("body", body)

    def on_message_complete(self):
        self._note("complete", self.parser.should_keep_alive())


class ResponseRecorder(ResponseReader):
    """Records what the response reader is given: with httptools, what its own
    on_status and on_header gathered; with the binding, what the binding did."""

    def __init__(self, fail_on=None):
        self.events = []
        self.fail_on = fail_on
        self.parser = None
        self._new_head()

    _note = RequestRecorder._note

    def head_parsed(self, status):
        p = self.parser
        self._note("head", status, self.reason, b"".join(self.head), self.hop, self.length,
                   p.get_status_code(), p.get_http_version(), p.should_keep_alive())
        self._new_head()  # as start() does for the next response

    def on_body(self, body):
        self._note("body", body)

    def message_done(self, keep_alive):
        self._note("complete", keep_alive, self.parser.should_keep_alive())
        self._new_head()  # trailers gathered by on_header are not the next head's


def _run(parser_class, recorder_class, pieces, fail_on=None):
    proto = recorder_class(fail_on)
    parser = proto.parser = parser_class(proto)
    parser.set_dangerous_leniencies(**dict.fromkeys(_LENIENCIES, False))
    outcome = None
    for piece in pieces:
        try:
            parser.feed_data(piece)
        except httptools.HttpParserUpgrade as exc:
            outcome = ("upgrade", exc.args)
            break
        except httptools.HttpParserError as exc:
            context = exc.__context__
            outcome = (type(exc).__name__, str(exc),
                       type(context).__name__ if context is not None else None,
                       str(context) if context is not None else None)
            break
    # Bodies may come in pieces of any size: compare them joined.
    events, body = [], b""
    for event in proto.events:
        if event[0] == "body":
            body += event[1]
            continue
        if body:
            events.append(("body", body))
            body = b""
        events.append(event)
    if body:
        events.append(("body", body))
    # A URL split by the read comes in pieces: join those too.
    joined = []
    for event in events:
        if joined and event[0] == "url" and joined[-1][0] == event[0]:
            joined[-1] = (event[0], joined[-1][1] + event[1])
        else:
            joined.append(event)
    return joined, outcome


def _splits(message: bytes):
    yield [message]
    for cut in range(1, len(message)):
        yield [message[:cut], message[cut:]]
    yield [message[i:i + 1] for i in range(len(message))]


REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"GET /a?b=c HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nTrailer-A: 1\r\n\r\n",
    b"GET /e HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Obs: caf\xe9\r\nX-Sp:  a b  \r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x05hello",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Empty-Last:\r\n\r\n",
    b"PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nxy",
    b"GET  / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    *_MUST_REJECT,
]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 21:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
    b"X-Pool: blue\r\n\r\nok\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX: y\r\n\r\n",
    b"HTTP/1.0 200 Fine\r\nContent-Type: text/plain\r\n\r\nuntil the close",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi",
    b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    # every name on_header sorts out, in odd cases, among fields it passes on
    b"HTTP/1.1 200 OK\r\nCONNECTION: Keep-Alive, X-Gone\r\nX-Gone: 1\r\nKeep-Alive: timeout=5\r\n"
    b"content-LENGTH: 2\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X-T\r\n"
    b"Upgrade: h2\r\nProxy-Authenticate: Basic\r\nProxy-Authorization: y\r\n"
    b"Contentlength: 1\r\nX-Connection: no\r\nTEE: 1\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Sp:  a b  \r\nX-Obs: caf\xe9\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Last:\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"
    b"Connection: close\r\nX-Trailer: t\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\nKeep-Alive: 2\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\nX-Next: 1\r\n\r\n",
    b"HTTP/1.1 200 \xc3\xa9t\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"v" * 2000 + b"\r\n" + b"Y-" * 300 + b": 1\r\n\r\n",
]


@pytest.mark.parametrize("kind, message", [
    *(("request", m) for m in REQUESTS), *(("response", m) for m in RESPONSES)])
def test_the_same_bytes_parse_the_same(kind, message):
    name, recorder = (("HttpRequestParser", RequestRecorder) if kind == "request"
                      else ("HttpResponseParser", ResponseRecorder))
    for pieces in _splits(message):
        ours = _run(getattr(_llhttp, name), recorder, pieces)
        theirs = _run(getattr(httptools, name), recorder, pieces)
        assert ours == theirs, pieces


@pytest.mark.parametrize("kind, fail_on", [
    *(("request", f) for f in ["begin", "url", "header", "head", "body", "complete"]),
    *(("response", f) for f in ["head", "body", "complete"])])
def test_a_callback_that_raises_fails_the_same(kind, fail_on):
    name, recorder, message = (
        ("HttpRequestParser", RequestRecorder, REQUESTS[2]) if kind == "request"
        else ("HttpResponseParser", ResponseRecorder, RESPONSES[0]))
    ours = _run(getattr(_llhttp, name), recorder, [message], fail_on)
    theirs = _run(getattr(httptools, name), recorder, [message], fail_on)
    assert ours == theirs
    assert ours[1][0] == "HttpParserCallbackError" and ours[1][2] == "Boom"


def test_a_protocol_that_is_not_a_reader_gets_only_the_errors():
    class Sink:
        def __getattr__(self, name):
            raise AssertionError(f"called {name}")

    _llhttp.HttpRequestParser(Sink()).feed_data(REQUESTS[0])
    with pytest.raises(httptools.HttpParserError):
        _llhttp.HttpRequestParser(Sink()).feed_data(_MUST_REJECT[0])


_UPPER_HOP = (b"HTTP/1.1 200 OK\r\nTRANSFER-ENCODING: chunked\r\nCONNECTION: close\r\n"
              b"X-I: I\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
_UNDER_LOCALE = """
import locale, sys
locale.setlocale(locale.LC_ALL, "")
assert locale.getlocale(locale.LC_CTYPE)[0] == "tr_TR", locale.getlocale(locale.LC_CTYPE)
from proxy.dataplane import _llhttp
from tests.test_llhttp_binding import ResponseRecorder, _UPPER_HOP
proto = ResponseRecorder()
proto.parser = _llhttp.HttpResponseParser(proto)
proto.parser.feed_data(_UPPER_HOP)
print(repr(proto.events[0][3:6]))
"""


def test_names_are_sorted_in_ascii_case_in_any_locale(tmp_path):
    # In a Turkish locale the C library's case folding (strncasecmp, tolower)
    # does not take "I" to "i": the binding must fold as bytes.lower() does.
    import shutil
    import subprocess
    import sys

    if shutil.which("localedef") is None or not os.path.exists("/usr/share/i18n/locales/tr_TR"):
        pytest.skip("no localedef or no tr_TR locale source (Debian's `locales`)")
    made = subprocess.run(["localedef", "-i", "tr_TR", "-f", "UTF-8", str(tmp_path / "tr_TR.UTF-8")],
                          capture_output=True, timeout=120)
    assert (tmp_path / "tr_TR.UTF-8").exists(), made.stderr
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, LOCPATH=str(tmp_path), LC_ALL="tr_TR.UTF-8", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", _UNDER_LOCALE], env=env, cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    fields, hop, length = eval(out.stdout)  # noqa: S307 - our own repr
    assert fields == b"X-I: I\r\n" and length is False
    assert hop == ((b"transfer-encoding", b"chunked"), (b"connection", b"close"))
