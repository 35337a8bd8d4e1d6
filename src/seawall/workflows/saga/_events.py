"""The events an orchestrator emits: one for every transition of a saga and of its steps.

``source`` is the orchestrator's name. Durations are seconds on the orchestrator's clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = [
    "SagaCancelRequested",
    "SagaCompensated",
    "SagaCompensating",
    "SagaCompleted",
    "SagaEvent",
    "SagaLeaseLost",
    "SagaResolved",
    "SagaResumed",
    "SagaRetried",
    "SagaStarted",
    "SagaStepCompensated",
    "SagaStepCompensationFailed",
    "SagaStepCompleted",
    "SagaStepFailed",
    "SagaStepStarted",
    "SagaStuck",
]


@dataclass(frozen=True, slots=True)
class SagaEvent(Event):
    """Base of the saga events: which saga (definition name and instance id)."""

    saga: str
    saga_id: str


@dataclass(frozen=True, slots=True)
class SagaStarted(SagaEvent):
    """A new saga was recorded and starts running."""


@dataclass(frozen=True, slots=True)
class SagaResumed(SagaEvent):
    """An unfinished saga was taken from the log to be continued."""

    status: str


@dataclass(frozen=True, slots=True)
class SagaStepStarted(SagaEvent):
    """A step's action starts (its start is already in the log)."""

    step: str


@dataclass(frozen=True, slots=True)
class SagaStepCompleted(SagaEvent):
    """A step's action succeeded."""

    step: str
    duration: float


@dataclass(frozen=True, slots=True)
class SagaStepFailed(SagaEvent):
    """A step's action failed after its retry policy gave up."""

    step: str
    error: str
    duration: float


@dataclass(frozen=True, slots=True)
class SagaCompensating(SagaEvent):
    """The saga turned back and starts compensating, for ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class SagaStepCompensated(SagaEvent):
    """A step's compensation succeeded."""

    step: str
    duration: float


@dataclass(frozen=True, slots=True)
class SagaStepCompensationFailed(SagaEvent):
    """A step's compensation failed past its retry policy; the saga is now stuck."""

    step: str
    error: str


@dataclass(frozen=True, slots=True)
class SagaStuck(SagaEvent):
    """The saga needs an operator: ``step`` kept failing with ``error``."""

    step: str | None
    error: str


@dataclass(frozen=True, slots=True)
class SagaCompleted(SagaEvent):
    """Every step succeeded."""

    duration: float
    """Seconds this orchestrator spent on the saga (this run or resume only)."""


@dataclass(frozen=True, slots=True)
class SagaCompensated(SagaEvent):
    """Every completed step was compensated."""

    reason: str


@dataclass(frozen=True, slots=True)
class SagaCancelRequested(SagaEvent):
    """Someone asked for the saga to be cancelled; it turns back at its next step boundary."""


@dataclass(frozen=True, slots=True)
class SagaRetried(SagaEvent):
    """An operator asked for a stuck saga to be tried again."""

    note: str


@dataclass(frozen=True, slots=True)
class SagaResolved(SagaEvent):
    """An operator settled a stuck saga by hand."""

    note: str


@dataclass(frozen=True, slots=True)
class SagaLeaseLost(SagaEvent):
    """Another orchestrator took the saga over; this one stopped running it."""
