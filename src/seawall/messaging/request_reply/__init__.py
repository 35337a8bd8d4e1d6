"""Request-reply over durable queues or NATS: correlation ids, reply queues, timeouts.

::

    pricing = Requester(engine, "pricing", timeout=2.0)
    quote = pricing.request({"sku": "A-1"})                # RequestTimeoutError after 2 s

    Responder(engine, "pricing", lambda request: {"price": 12}).run()

Replies are matched by correlation id; a reply that arrives after its request timed
out is dropped and counted (``pricing.stats().late_replies``). The same API runs on
queue engines (memory, SQLite, PostgreSQL, Redis) and on ``nats://``.
"""

from __future__ import annotations

from seawall.messaging.request_reply._errors import (
    NoRespondersError,
    NotARequestError,
    RemoteError,
    RequestReplyError,
    RequestTimeoutError,
)
from seawall.messaging.request_reply._events import (
    LateReplyDropped,
    ReplyUndeliverable,
    RequestTimedOut,
)
from seawall.messaging.request_reply._model import (
    CORRELATION_ID_HEADER,
    REPLY_STATUS_HEADER,
    REPLY_TO_HEADER,
    RequesterStats,
)
from seawall.messaging.request_reply._requester import DEFAULT_REQUEST_TIMEOUT, Requester
from seawall.messaging.request_reply._responder import (
    Responder,
    areply,
    areply_error,
    reply,
    reply_error,
    responder,
)

__all__ = [
    "CORRELATION_ID_HEADER",
    "DEFAULT_REQUEST_TIMEOUT",
    "LateReplyDropped",
    "NoRespondersError",
    "NotARequestError",
    "REPLY_STATUS_HEADER",
    "REPLY_TO_HEADER",
    "RemoteError",
    "ReplyUndeliverable",
    "RequestReplyError",
    "RequestTimedOut",
    "RequestTimeoutError",
    "Requester",
    "RequesterStats",
    "Responder",
    "areply",
    "areply_error",
    "reply",
    "reply_error",
    "responder",
]
