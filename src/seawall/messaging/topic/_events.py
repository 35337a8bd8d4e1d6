"""Typed events a topic emits to its ``events`` hub (only when someone listens)."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = ["TopicMessageDeadLettered", "TopicMessageRedelivered"]


@dataclass(frozen=True, slots=True)
class TopicMessageDeadLettered(Event):
    """A group gave up on a message; ``source`` is the topic name."""

    group: str
    offset: int
    reason: str
    delivery_count: int


@dataclass(frozen=True, slots=True)
class TopicMessageRedelivered(Event):
    """A group received a message again (``delivery_count`` > 1): an earlier delivery failed."""

    group: str
    offset: int
    delivery_count: int
