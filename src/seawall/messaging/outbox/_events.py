"""Typed events the outbox relay emits to its ``events`` hub (only when someone listens)."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = [
    "OutboxBatchRelayed",
    "OutboxMessageDead",
    "OutboxMessagePublished",
    "OutboxPublishFailed",
    "OutboxPurged",
]


@dataclass(frozen=True, slots=True)
class OutboxMessagePublished(Event):
    """The relay published a message; ``attempts`` counts its claims so far (1 = first)."""

    message_id: str
    topic: str
    key: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxPublishFailed(Event):
    """Publishing failed (after the relay's retry policy); tried again in ``retry_in`` seconds.

    Later messages with the same ``key`` wait behind it; other keys go on.
    """

    message_id: str
    topic: str
    key: str | None
    attempts: int
    error: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class OutboxMessageDead(Event):
    """A message failed ``max_attempts`` times (or could not be decoded) and was set aside."""

    message_id: str
    topic: str
    key: str | None
    attempts: int
    error: str


@dataclass(frozen=True, slots=True)
class OutboxBatchRelayed(Event):
    """One claim-publish-mark cycle finished."""

    claimed: int
    published: int
    failed: int
    duration: float


@dataclass(frozen=True, slots=True)
class OutboxPurged(Event):
    """Retention cleanup deleted ``deleted`` sent messages."""

    deleted: int
