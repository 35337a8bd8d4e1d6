"""Typed events a queue emits to its ``events`` hub (only when someone listens)."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = [
    "MessageDeadLettered",
    "MessageDeduplicated",
    "MessageRedelivered",
    "StaleReceiptRejected",
]


@dataclass(frozen=True, slots=True)
class MessageDeadLettered(Event):
    """A message moved to the dead letters; ``source`` is the queue name."""

    message_id: str
    reason: str
    delivery_count: int


@dataclass(frozen=True, slots=True)
class MessageRedelivered(Event):
    """A message was received again (``delivery_count`` > 1): an earlier delivery failed."""

    message_id: str
    delivery_count: int


@dataclass(frozen=True, slots=True)
class MessageDeduplicated(Event):
    """A send was dropped because ``dedup_id`` was seen within the deduplication window."""

    message_id: str
    dedup_id: str


@dataclass(frozen=True, slots=True)
class StaleReceiptRejected(Event):
    """An ack, nack or extend came with a receipt that no longer holds the message."""

    message_id: str
    operation: str
