"""Header names and the counters of request-reply."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CORRELATION_ID_HEADER",
    "NO_RESPONDERS",
    "REPLY_STATUS_HEADER",
    "REPLY_TO_HEADER",
    "RequesterStats",
]

REPLY_TO_HEADER = "reply-to"
"""Where the reply goes: the requester's reply queue (or NATS inbox)."""
CORRELATION_ID_HEADER = "correlation-id"
"""Which request a reply answers; the requester matches replies by it."""
REPLY_STATUS_HEADER = "reply-status"
"""``ok`` (the body is the reply) or ``error`` (the body is the error text)."""
NO_RESPONDERS = "no-responders"
"""The status a transport reports when the broker says nobody listens (NATS 503)."""


@dataclass(frozen=True, slots=True)
class RequesterStats:
    """What a requester did so far.

    ``sent``: requests sent; ``replied``: answered with a reply; ``failed``:
    answered with an error reply; ``timed_out``: no reply in time;
    ``late_replies``: replies dropped because their request had timed out (or was
    unknown); ``pending``: requests waiting now.
    """

    sent: int
    replied: int
    failed: int
    timed_out: int
    late_replies: int
    pending: int
