"""The one rule for sending a request again (proxy/retry.py), by table."""

from __future__ import annotations

import pytest

from proxy.dataplane.retry import (
    ANSWERED,
    MAX_TRIES,
    NOT_SENT,
    TIMED_OUT,
    UNKNOWN,
    UNREAD,
    delivery_at_close,
    may_resend,
)

# (delivery, keyed, tries so far, sent again?)
RULE = [
    (NOT_SENT, False, 1, True),     # a refused connect reached nobody
    (UNREAD, False, 1, True),       # reset with our request unread: never ran
    (UNREAD, True, 1, True),
    (UNKNOWN, False, 1, False),     # a FIN and no answer: a worker may have run it
    (UNKNOWN, True, 1, True),       # ... unless the app dedupes by Idempotency-Key
    (TIMED_OUT, False, 1, False),   # most likely still running
    (TIMED_OUT, True, 1, False),    # a second copy would hold a second worker
    (ANSWERED, False, 1, False),    # part of an answer: it certainly reached the app
    (ANSWERED, True, 1, False),
    (NOT_SENT, False, MAX_TRIES, False),  # never more than MAX_TRIES tries in all
    (UNREAD, True, MAX_TRIES, False),
    (UNREAD, False, MAX_TRIES - 1, True),
]


@pytest.mark.parametrize("delivery, keyed, tries, again", RULE,
                         ids=[f"{d.value}-{'keyed' if k else 'plain'}-try{t}"
                              for d, k, t, _ in RULE])
def test_a_request_is_sent_again_only_when_it_provably_was_not_read_or_is_keyed(
        delivery, keyed, tries, again):
    assert may_resend(delivery, keyed, tries) is again


@pytest.mark.parametrize("answered, reset, delivery", [
    (False, True, UNREAD),    # RST or EPIPE before any answer byte
    (False, False, UNKNOWN),  # a plain FIN before any answer byte
    (True, True, ANSWERED),   # whatever the close, an answer had started
    (True, False, ANSWERED),
])
def test_how_far_a_request_got_when_its_connection_closed(answered, reset, delivery):
    assert delivery_at_close(answered, reset) is delivery
