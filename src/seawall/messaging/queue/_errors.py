"""The errors durable queues raise, each carrying the data a caller needs.

::

    SeawallError
    └── QueueError
        ├── StaleReceiptError              ack/nack/extend with a receipt that no longer holds
        ├── MessageTooLargeError           the encoded body is over max_message_size
        │   (also ValueError)
        └── UnknownQueueError              create=False and the queue was never declared
            (also ConfigurationError)

Bodies that cannot be encoded raise :class:`seawall.codec.EncodeError` at send;
invalid arguments raise :class:`seawall.errors.ConfigurationError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from seawall.errors import ConfigurationError, SeawallError

__all__ = ["MessageTooLargeError", "QueueError", "StaleReceiptError", "UnknownQueueError"]


class QueueError(SeawallError):
    """A durable queue refused an operation."""


class StaleReceiptError(QueueError):
    """The receipt no longer holds the message, so the ack/nack/extend did nothing.

    The message was acknowledged already, dead-lettered or purged, or its visibility
    timeout expired and another consumer received it (at-least-once delivery: it
    will be, or was, processed again). ``message_ids`` lists every stale receipt of
    the call (one for ``ack``, several for ``ack_many``).
    """

    def __init__(self, queue: str, operation: str, message_ids: Sequence[str]) -> None:
        shown = ", ".join(message_ids[:5]) + (", ..." if len(message_ids) > 5 else "")
        super().__init__(
            f"{operation} on queue {queue!r} had a stale receipt for message(s) {shown}: "
            "acknowledged already, dead-lettered, purged, or redelivered to another consumer "
            "after the visibility timeout expired; raise visibility_timeout or call "
            "extend_visibility while working, and keep handlers idempotent"
        )
        self.queue = queue
        self.operation = operation
        self.message_ids = tuple(message_ids)


class MessageTooLargeError(QueueError, ValueError):
    """The encoded body is larger than the queue's ``max_message_size``; nothing was sent."""

    def __init__(self, queue: str, size: int, limit: int) -> None:
        super().__init__(
            f"message for queue {queue!r} is {size} bytes encoded, over max_message_size={limit}; "
            "store large payloads elsewhere and send a reference (claim check), "
            "or raise max_message_size"
        )
        self.queue = queue
        self.size = size
        self.limit = limit


class UnknownQueueError(QueueError, ConfigurationError):
    """The queue was opened with ``create=False`` but was never declared on this engine."""

    def __init__(self, queue: str, known: Sequence[str]) -> None:
        listed = ", ".join(repr(name) for name in sorted(known)[:20]) or "none"
        super().__init__(
            f"queue {queue!r} does not exist on this engine (known queues: {listed}); "
            "check the name, or open it with create=True to declare it"
        )
        self.queue = queue
        self.known = tuple(known)
