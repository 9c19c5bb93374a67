"""Every failure the data plane answers, and the status it maps to.

One flat table: a reader who wants to know why a client got a 502 finds the
answer here, not spread over the protocol code.
"""

from __future__ import annotations

from http import HTTPStatus


class ProxyError(Exception):
    """A request that cannot be forwarded; `status` is what the client gets."""

    status = 502
    event = "proxy_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.__class__.__name__)
        self.detail = detail


class BadRequestError(ProxyError):
    status = 400
    event = "bad_request"


class BodyTooLargeError(ProxyError):
    status = 413
    event = "body_too_large"


class ExpectationFailedError(ProxyError):
    status = 417
    event = "expectation_failed"


class TargetTooLongError(ProxyError):
    status = 414
    event = "target_too_long"


class HeaderTooLargeError(ProxyError):
    status = 431
    event = "header_too_large"


class MethodNotImplementedError(ProxyError):
    status = 501
    event = "method_not_implemented"


class VersionNotSupportedError(ProxyError):
    status = 505
    event = "version_not_supported"


class NoHealthyPoolError(ProxyError):
    status = 503
    event = "no_healthy_pool"


class UpstreamConnectError(ProxyError):
    """Refused or failed connect: nothing reached the upstream, safe to retry."""

    status = 502
    event = "upstream_connect_failed"


class UpstreamResetError(ProxyError):
    """The upstream closed or reset the connection before a full response."""

    status = 502
    event = "upstream_reset"


class UpstreamProtocolError(ProxyError):
    """The upstream's response was not valid HTTP/1.1."""

    status = 502
    event = "upstream_bad_response"


class UpstreamTimeoutError(ProxyError):
    status = 504
    event = "upstream_timeout"


class InternalError(ProxyError):
    """A bug in the proxy: the request fails, the connection and process live on."""

    status = 500
    event = "internal_error"


class DrainCutError(ProxyError):
    """A drain's deadline passed with the exchange still open (a stream, a long poll)."""

    status = 503
    event = "drain_cut"


def error_response(status: int, close: bool = True) -> bytes:
    """A short, complete plain-text response for `status`."""
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}\n".encode()
    head = f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body
