"""The events the tracker and the participants emit on their hubs.

Tracker events (``source`` is the tracker's name) report each transition of a business
transaction's derived status; participant events (``source`` is the participant's
consumer group) report each event handled, skipped or failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = [
    "FlowCompensated",
    "FlowCompensating",
    "FlowCompleted",
    "FlowFailed",
    "FlowResumed",
    "FlowStarted",
    "FlowStuck",
    "FlowTransition",
    "ReactionDuplicateSkipped",
    "ReactionFailed",
    "ReactionHandled",
]


@dataclass(frozen=True, slots=True)
class FlowTransition(Event):
    """Base of the tracker's events: which business transaction of which flow."""

    flow: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class FlowStarted(FlowTransition):
    """The first event of a business transaction was recorded."""

    event_type: str


@dataclass(frozen=True, slots=True)
class FlowCompleted(FlowTransition):
    """A terminal success event arrived; ``duration`` from first to last event, in seconds."""

    event_type: str
    duration: float


@dataclass(frozen=True, slots=True)
class FlowCompensating(FlowTransition):
    """A failure turned the transaction back; the ``owed`` steps' compensations are awaited."""

    reason: str
    owed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlowCompensated(FlowTransition):
    """Every owed compensation arrived."""

    reason: str
    duration: float


@dataclass(frozen=True, slots=True)
class FlowFailed(FlowTransition):
    """A compensation could not undo its step: an operator must act."""

    reason: str


@dataclass(frozen=True, slots=True)
class FlowStuck(FlowTransition):
    """No event arrived for ``idle`` seconds while the transaction was ``status``."""

    status: str
    idle: float


@dataclass(frozen=True, slots=True)
class FlowResumed(FlowTransition):
    """An event arrived for a stuck transaction; it is ``status`` again."""

    status: str
    event_type: str


@dataclass(frozen=True, slots=True)
class ReactionHandled(Event):
    """A participant's handler ran on an event and its emitted events were published."""

    reaction: str
    event_type: str
    correlation_id: str
    emitted: tuple[str, ...]
    duration: float


@dataclass(frozen=True, slots=True)
class ReactionFailed(Event):
    """A handler raised; the event comes back after the group's redelivery (nothing emitted)."""

    reaction: str
    event_type: str
    correlation_id: str
    error: str
    delivery_count: int


@dataclass(frozen=True, slots=True)
class ReactionDuplicateSkipped(Event):
    """An event this participant had already handled arrived again; the inbox skipped it."""

    event_type: str
    correlation_id: str
    event_id: str
