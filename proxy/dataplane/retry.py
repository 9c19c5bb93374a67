"""When a request may be sent to an upstream a second time: the one rule.

A request is sent again only when the proxy can show that the application
never read it, whatever the method.  What the proxy can know, on one host:

- A refused or timed-out connect reached nobody (`NOT_SENT`).
- A socket closed with unread data in its receive buffer is answered with a
  reset, not a FIN (Linux `tcp_close`; for Unix sockets the peer gets
  ECONNRESET).  Swoole never sets SO_LINGER, so when it closes a keep-alive
  connection that still holds our request (a worker past `max_request` stops
  reading its connections, waits for its coroutines, then closes them all),
  we see a reset.  The same holds when our request reached a socket the
  upstream had already closed: its kernel answers the data with a reset, which
  we read as EPIPE pending on the socket after the FIN.  Either way the
  application never read the request (`UNREAD`).  An application reads a
  request whole before it runs it (Swoole dispatches to a worker only then),
  so a reset during the upload proves the same.
- A FIN alone, with no byte of an answer, is what a worker that read the
  request and then died or was stopped (`max_wait_time`) leaves behind; so is
  a response timeout.  The request may have run (`UNKNOWN`, `TIMED_OUT`).
- Once any byte of an answer arrived, the request certainly reached the
  application (`ANSWERED`).

So: `NOT_SENT` and `UNREAD` are sent again, on a new connection; a request
with an `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header:
the application promises to recognise a repeat) is also sent again after
`UNKNOWN`.  A timed-out request is not, keyed or not: it is most likely still
running, and a second copy would hold a second worker as long.
"""

from __future__ import annotations

import enum


class Delivery(enum.Enum):
    """How far a failed request got, as far as the proxy can prove."""

    NOT_SENT = "not_sent"    # no connection: nothing was written
    UNREAD = "unread"        # the upstream reset the connection with our request unread
    UNKNOWN = "unknown"      # closed without an answer: a worker may have read it
    TIMED_OUT = "timed_out"  # no answer within timeouts.upstream_response
    ANSWERED = "answered"    # part of an answer arrived


NOT_SENT = Delivery.NOT_SENT
UNREAD = Delivery.UNREAD
UNKNOWN = Delivery.UNKNOWN
TIMED_OUT = Delivery.TIMED_OUT
ANSWERED = Delivery.ANSWERED

# A request is tried at most this often in all (the first try included).
MAX_TRIES = 3


def may_resend(delivery: Delivery, keyed: bool, tries: int, max_tries: int = MAX_TRIES) -> bool:
    """Whether a request that failed as `delivery` after `tries` tries goes again.

    `keyed`: the request carries an `Idempotency-Key` header.
    """
    if tries >= max_tries:
        return False
    if delivery is NOT_SENT or delivery is UNREAD:
        return True
    return keyed and delivery is UNKNOWN


def delivery_at_close(answered: bool, reset: bool) -> Delivery:
    """A connection that carried our request closed before the answer was whole.

    `answered`: a byte of the answer had arrived; `reset`: the close was a
    reset (ECONNRESET or EPIPE), as opposed to a plain FIN.
    """
    if answered:
        return ANSWERED
    return UNREAD if reset else UNKNOWN
