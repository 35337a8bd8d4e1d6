"""The events a circuit breaker emits (only while someone listens: ``events.active``)."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event
from seawall.resilience.breaker._core import CircuitState

__all__ = [
    "CircuitCallFailed",
    "CircuitCallIgnored",
    "CircuitCallRejected",
    "CircuitCallSucceeded",
    "CircuitReset",
    "CircuitStateChanged",
    "CircuitStoreRecovered",
    "CircuitStoreUnavailable",
]


@dataclass(frozen=True, slots=True)
class CircuitStateChanged(Event):
    """The circuit moved from ``previous`` to ``current`` (shared breakers: seen here)."""

    previous: CircuitState
    current: CircuitState
    reason: str
    open_for: float | None = None
    """Seconds it stays open, when ``current`` is OPEN."""


@dataclass(frozen=True, slots=True)
class CircuitCallRejected(Event):
    """A call was refused without running."""

    state: CircuitState
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class CircuitCallSucceeded(Event):
    """A permitted call returned (or raised an exception that is not recorded)."""

    duration: float
    slow: bool


@dataclass(frozen=True, slots=True)
class CircuitCallFailed(Event):
    """A permitted call raised a recorded exception or returned a recorded result."""

    duration: float
    error: BaseException | None
    """The exception, or None when ``record_result`` judged the result a failure."""


@dataclass(frozen=True, slots=True)
class CircuitCallIgnored(Event):
    """A call raised an exception the breaker ignores: it counts neither way."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class CircuitReset(Event):
    """``reset()`` put the breaker back to closed with an empty window."""


@dataclass(frozen=True, slots=True)
class CircuitStoreUnavailable(Event):
    """The shared store failed; the breaker now follows ``on_store_error``."""

    error: str
    fallback: str
    """``"fail_open"`` (deciding locally) or ``"fail_closed"`` (rejecting)."""


@dataclass(frozen=True, slots=True)
class CircuitStoreRecovered(Event):
    """The shared store answers again; the breaker follows the shared state."""
