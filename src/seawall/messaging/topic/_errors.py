"""The errors topics raise, each carrying the data a caller needs.

::

    SeawallError
    └── TopicError
        ├── StaleTopicReceiptError         ack/nack with a receipt that no longer holds
        ├── UnknownTopicError              create=False and the topic was never declared
        │   (also ConfigurationError)
        └── UnknownGroupError              create=False and the group was never declared
            (also ConfigurationError)

Bodies that cannot be encoded raise :class:`seawall.codec.EncodeError` at publish;
invalid arguments raise :class:`seawall.errors.ConfigurationError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from seawall.errors import ConfigurationError, SeawallError

__all__ = ["StaleTopicReceiptError", "TopicError", "UnknownGroupError", "UnknownTopicError"]


def _listed(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in sorted(names)[:20]) or "none"


class TopicError(SeawallError):
    """A topic or consumer group refused an operation."""


class StaleTopicReceiptError(TopicError):
    """The receipt no longer holds the message in its group, so the ack/nack did nothing.

    It was acknowledged already, dead-lettered, dropped by a seek or by retention,
    or its visibility timeout expired and another consumer of the group received it.
    """

    def __init__(self, topic: str, group: str, operation: str, offset: int) -> None:
        super().__init__(
            f"{operation} of offset {offset} in group {group!r} of topic {topic!r} had a stale "
            "receipt: acknowledged already, dead-lettered, dropped by seek or retention, or "
            "redelivered to another consumer after the visibility timeout expired; raise "
            "visibility_timeout and keep handlers idempotent"
        )
        self.topic = topic
        self.group = group
        self.operation = operation
        self.offset = offset


class UnknownTopicError(TopicError, ConfigurationError):
    """The topic was opened with ``create=False`` but was never declared on this engine."""

    def __init__(self, topic: str, known: Sequence[str]) -> None:
        super().__init__(
            f"topic {topic!r} does not exist on this engine (known topics: {_listed(known)}); "
            "check the name, or open it with create=True to declare it"
        )
        self.topic = topic
        self.known = tuple(known)


class UnknownGroupError(TopicError, ConfigurationError):
    """The group was opened with ``create=False`` but was never declared on the topic."""

    def __init__(self, topic: str, group: str, known: Sequence[str]) -> None:
        super().__init__(
            f"consumer group {group!r} does not exist on topic {topic!r} (known groups: "
            f"{_listed(known)}); check the name, or open it with create=True to declare it"
        )
        self.topic = topic
        self.group = group
        self.known = tuple(known)
