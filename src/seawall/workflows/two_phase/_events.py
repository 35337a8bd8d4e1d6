"""The events a two-phase coordinator emits, one per transition; ``source`` is its name."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = [
    "TwoPhaseAcknowledged",
    "TwoPhaseCompleted",
    "TwoPhaseDecided",
    "TwoPhaseDeliveryFailed",
    "TwoPhaseEvent",
    "TwoPhaseRecovered",
    "TwoPhaseStarted",
    "TwoPhaseVoted",
]


@dataclass(frozen=True, slots=True)
class TwoPhaseEvent(Event):
    """Base of the two-phase events: which transaction."""

    txid: str


@dataclass(frozen=True, slots=True)
class TwoPhaseStarted(TwoPhaseEvent):
    """Phase one begins: ``participants`` are asked to prepare."""

    participants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TwoPhaseVoted(TwoPhaseEvent):
    """A participant answered ``prepare`` (``vote`` is ``None`` when it failed: ``error``)."""

    participant: str
    vote: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TwoPhaseDecided(TwoPhaseEvent):
    """The decision is fixed (a commit is durable in the log before this is emitted)."""

    decision: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TwoPhaseAcknowledged(TwoPhaseEvent):
    """A participant applied the decision."""

    participant: str
    decision: str


@dataclass(frozen=True, slots=True)
class TwoPhaseDeliveryFailed(TwoPhaseEvent):
    """Delivering the decision to a participant failed; it is tried again."""

    participant: str
    decision: str
    error: str
    attempt: int


@dataclass(frozen=True, slots=True)
class TwoPhaseCompleted(TwoPhaseEvent):
    """Every participant applied the decision (``duration``: seconds on the coordinator's clock)."""

    decision: str
    duration: float


@dataclass(frozen=True, slots=True)
class TwoPhaseRecovered(TwoPhaseEvent):
    """``recover()`` settled an in-doubt transaction."""

    decision: str
    participants: tuple[str, ...]
