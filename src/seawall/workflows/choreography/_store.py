"""The storage contract of the tracker: every event of every business transaction, and its state.

A :class:`TrackerStore` keeps one row per business transaction (correlation id, flow,
status, derived state, first and last event times, event count) and its history, the
events in the order the tracker saw them. ``record`` is one transaction: it drops an
event already recorded (same correlation id and event id), otherwise appends it and
stores the state the ``advance`` function folds from the previous one. Times come from
the store's clock (the wall clock unless a test injects one). Each engine implements it
in its own module and passes one conformance suite
(``tests/conformance/test_choreography_trackers.py``).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from seawall.workflows.choreography._model import (
    FlowRecord,
    FlowState,
    FlowStatus,
    NewTrackedEvent,
)

if TYPE_CHECKING:
    from seawall.engines._base import Engine

__all__ = ["Advance", "Recorded", "TrackerStore"]

Advance = Callable[[FlowState | None], FlowState]
"""Folds the state so far (``None`` before the first event) with the event being recorded."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording a new event did: the status before (``None``: first event) and the row after."""

    previous: FlowStatus | None
    """The stored status before the event (``stuck`` included), ``None`` for the first event."""
    previous_state: FlowState | None
    """The derived state before the event (``None`` for the first event)."""
    record: FlowRecord
    """The transaction after the event, without its history."""


@runtime_checkable
class TrackerStore(Protocol):
    """Where a tracker records the events and derived state of business transactions."""

    kind: ClassVar[str]

    @property
    def engine(self) -> Engine | None:
        """The engine the store lives in (``None`` for a standalone memory store)."""
        ...

    def record(self, event: NewTrackedEvent, advance: Advance) -> Recorded | None:
        """Append ``event`` and store ``advance(previous state)``: one commit.

        Returns ``None`` (nothing written) when the event was recorded before.
        """
        ...

    def load(self, correlation_id: str) -> FlowRecord | None:
        """The business transaction with its whole history, or ``None``."""
        ...

    def list(
        self,
        *,
        status: Collection[FlowStatus] | None = None,
        flow: str | None = None,
        limit: int = 100,
    ) -> list[FlowRecord]:
        """Business transactions (without history), most recently updated first."""
        ...

    def mark_stuck(self, idle: float, limit: int = 1000) -> builtins.list[FlowRecord]:
        """Mark ``stuck`` every running or compensating transaction idle for ``idle`` s or more.

        Returns those newly marked (their ``state.status`` says what they were doing).
        """
        ...

    def create_tables(self) -> None:
        """Create the store's tables if missing (nothing for memory)."""
        ...

    def drop_tables(self) -> None:
        """Drop the store's tables and everything in them."""
        ...

    def close(self) -> None:
        """Release what the store holds (not the engine, which the caller owns)."""
        ...
