"""The HTTP/1.1 rules the proxy enforces beyond what llhttp already checks.

llhttp in strict mode rejects malformed framing, bare CR/LF, obs-fold,
control characters and invalid field names; this module makes sure it runs
strict (and refuses to start otherwise) and adds what llhttp leaves to the
application: exactly one valid Host, a known transfer coding, and
origin-form targets.
"""

from __future__ import annotations

import re

import httptools

from .errors import BadRequestError, MethodNotImplementedError

_LENIENCIES = (
    "lenient_headers", "lenient_chunked_length", "lenient_keep_alive",
    "lenient_transfer_encoding", "lenient_version", "lenient_data_after_close",
    "lenient_optional_lf_after_cr", "lenient_optional_cr_before_lf",
    "lenient_optional_crlf_after_chunk", "lenient_spaces_after_chunk_size",
)

# RFC 3986 host: reg-name (unreserved / pct-encoded / sub-delims), IPv4, or
# [IPv6]; then an optional numeric port.
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{1,5})?\Z")
_ORIGIN_FORM = re.compile(rb"/[\x21-\x7e]*\Z")


def strict_request_parser(protocol) -> httptools.HttpRequestParser:
    parser = _parsers()[0](protocol)
    parser.set_dangerous_leniencies(**dict.fromkeys(_LENIENCIES, False))
    return parser


def strict_response_parser(protocol) -> httptools.HttpResponseParser:
    parser = _parsers()[1](protocol)
    parser.set_dangerous_leniencies(**dict.fromkeys(_LENIENCIES, False))
    return parser


_PARSERS: tuple = ()


def _parsers() -> tuple:
    """(request parser class, response parser class): the compiled build's own
    binding of llhttp (_llhttp.pyx: the same parser and interface, with callbacks
    that do not enter Python), else httptools'.  Chosen at the first parser, not
    at import: _llhttp cimports the readers, whose modules import this one."""
    global _PARSERS
    if not _PARSERS:
        try:
            from ._llhttp import HttpRequestParser, HttpResponseParser
        except (ImportError, ValueError):  # not built; or built against other types (stale)
            HttpRequestParser, HttpResponseParser = (httptools.HttpRequestParser,
                                                     httptools.HttpResponseParser)
        _PARSERS = (HttpRequestParser, HttpResponseParser)
    return _PARSERS


# Requests llhttp must refuse; if any passes, the parser is lenient somewhere.
_MUST_REJECT = (
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.7\r\nHost: x\r\n\r\n",
)


class _Sink:
    def __getattr__(self, name):
        return lambda *args: None


def verify_strict() -> None:
    """Raise RuntimeError unless llhttp rejects every known-bad request."""
    for sample in _MUST_REJECT:
        parser = strict_request_parser(_Sink())
        try:
            parser.feed_data(sample)
        except httptools.HttpParserError:
            continue
        raise RuntimeError(f"the HTTP parser accepted {sample!r}: it runs with a leniency")


def check_host(value: bytes) -> None:
    if not _HOST.match(value):
        raise BadRequestError(f"invalid Host {value[:64]!r}")


def check_transfer_encoding(value: bytes, version: str) -> None:
    """Only `chunked`, once, on HTTP/1.1: any other coding we could not undo."""
    if version != "1.1":
        raise BadRequestError("Transfer-Encoding on HTTP/1.0")
    codings = [c.strip().lower() for c in value.split(b",")]
    chunked = codings.count(b"chunked")
    if chunked > 1:
        raise BadRequestError("chunked applied twice")
    if chunked and codings[-1] != b"chunked":
        raise BadRequestError("chunked must be the last transfer coding")
    if len(codings) > 1 or not chunked:
        # RFC 9112 6.1: a coding we do not understand is 501, not 400.
        unknown = next(c for c in codings if c != b"chunked")
        raise MethodNotImplementedError(f"transfer coding {unknown[:32]!r}")


def origin_form(method: bytes, target: bytes) -> tuple[bytes, bytes | None]:
    """(origin-form target, Host from an absolute-form target or None)."""
    if target.startswith(b"/"):
        if not _ORIGIN_FORM.match(target):
            raise BadRequestError("invalid request target")
        return target, None
    if target == b"*" and method == b"OPTIONS":
        return target, None
    lower = target[:8].lower()
    if lower.startswith(b"http://") or lower.startswith(b"https://"):
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            raise BadRequestError("invalid absolute-form target") from None
        if not url.host or url.userinfo:
            raise BadRequestError("invalid absolute-form target")
        host = url.host if url.port is None else b"%s:%d" % (url.host, url.port)
        path = url.path or b"/"
        if url.query is not None:
            path += b"?" + url.query
        return origin_form(method, path)[0], host
    raise BadRequestError("invalid request target")
