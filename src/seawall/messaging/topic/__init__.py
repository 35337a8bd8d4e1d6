"""Durable pub/sub topics with consumer groups: ``open_topic(engine, name)``.

::

    orders = open_topic("sqlite:///shop.db", "orders", retention_age=7 * 86400)
    orders.publish({"id": 42, "total": 1250}, key="customer-7")
    billing = orders.group("billing")
    for message in billing.receive(max_messages=10, wait=5):
        charge(message.body)
        billing.ack(message)

Every group gets every message; the consumers of one group compete; messages with
the same key reach a group in order (one at a time). Groups replay with ``seek`` and
``seek_time``. Engines: ``memory://``, ``sqlite:///``, ``postgresql://``,
``redis://`` and ``nats://``; each implements :class:`TopicStore` and passes the
same conformance suite (NATS without per-key order: see docs/messaging/topics.md).
"""

from __future__ import annotations

from seawall.messaging.topic._errors import (
    StaleTopicReceiptError,
    TopicError,
    UnknownGroupError,
    UnknownTopicError,
)
from seawall.messaging.topic._events import TopicMessageDeadLettered, TopicMessageRedelivered
from seawall.messaging.topic._model import (
    TopicDeadLetter,
    TopicMessage,
    TopicReceipt,
    TopicRecord,
)
from seawall.messaging.topic._open import list_topics, open_topic
from seawall.messaging.topic._store import TopicStore
from seawall.messaging.topic._topic import ConsumerGroup, Topic

__all__ = [
    "ConsumerGroup",
    "StaleTopicReceiptError",
    "Topic",
    "TopicDeadLetter",
    "TopicError",
    "TopicMessage",
    "TopicMessageDeadLettered",
    "TopicMessageRedelivered",
    "TopicReceipt",
    "TopicRecord",
    "TopicStore",
    "UnknownGroupError",
    "UnknownTopicError",
    "list_topics",
    "open_topic",
]
