"""Typed events an inbox emits to its ``events`` hub (only when someone listens)."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = ["InboxDuplicateIgnored", "InboxPurged"]


@dataclass(frozen=True, slots=True)
class InboxDuplicateIgnored(Event):
    """A message id the consumer had already processed arrived again and was skipped."""

    consumer: str
    message_id: str


@dataclass(frozen=True, slots=True)
class InboxPurged(Event):
    """Retention cleanup forgot ``deleted`` processed message ids."""

    deleted: int
