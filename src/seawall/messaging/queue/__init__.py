"""Durable, at-least-once queues on any engine: ``seawall.connect(url).queue(name)``.

::

    emails = seawall.connect("sqlite:///shop.db").queue("emails")
    emails.send({"to": "a@example.com"}, priority=5, delay=10)
    for message in emails.receive(max_messages=10, visibility_timeout=30):
        deliver(message.body)
        message.ack()

Messages carry a delivery count; a message delivered ``max_deliveries`` times
without an ack moves to the dead letters (``queue.dead_letters``) with its last
error. Every method has an asyncio twin (``asend``, ``areceive``, ``aack``, ...).
Engines: ``memory://``, ``sqlite:///``, ``postgresql://``, ``redis://``, ``amqp://``
(RabbitMQ) and ``nats://`` (JetStream); each implements :class:`QueueStore` and passes
the same conformance suite (the brokers skip, with the reason, what they cannot keep).
"""

from __future__ import annotations

from seawall.messaging.queue._errors import (
    MessageTooLargeError,
    QueueError,
    StaleReceiptError,
    UnknownQueueError,
)
from seawall.messaging.queue._events import (
    MessageDeadLettered,
    MessageDeduplicated,
    MessageRedelivered,
    StaleReceiptRejected,
)
from seawall.messaging.queue._model import (
    DeadLetter,
    Envelope,
    Message,
    OutgoingMessage,
    QueuedMessage,
    QueueStats,
    Receipt,
    StoredMessage,
)
from seawall.messaging.queue._open import list_queues, open_queue
from seawall.messaging.queue._queue import DeadLetters, Queue
from seawall.messaging.queue._store import AsyncQueueStore, NackOutcome, QueueStore
from seawall.messaging.queue._worker import (
    HandlerFailed,
    HeartbeatSent,
    MessageHandled,
    MessageReleased,
    StoreCallFailed,
    Worker,
    WorkerStarted,
    WorkerStats,
    WorkerStopped,
    current_message,
    current_transaction,
)

__all__ = [
    "AsyncQueueStore",
    "DeadLetter",
    "DeadLetters",
    "Envelope",
    "HandlerFailed",
    "HeartbeatSent",
    "Message",
    "MessageDeadLettered",
    "MessageDeduplicated",
    "MessageHandled",
    "MessageRedelivered",
    "MessageReleased",
    "MessageTooLargeError",
    "NackOutcome",
    "OutgoingMessage",
    "Queue",
    "QueueError",
    "QueueStats",
    "QueueStore",
    "QueuedMessage",
    "Receipt",
    "StaleReceiptError",
    "StaleReceiptRejected",
    "StoreCallFailed",
    "StoredMessage",
    "UnknownQueueError",
    "Worker",
    "WorkerStarted",
    "WorkerStats",
    "WorkerStopped",
    "current_message",
    "current_transaction",
    "list_queues",
    "open_queue",
]
