"""The records a saga log keeps: sagas, their history entries, and what a commit tells back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "EntryKind",
    "NewEntry",
    "SagaEntry",
    "SagaRecord",
    "SagaResult",
    "SagaStatus",
    "Signals",
    "UNFINISHED",
]


class SagaStatus(StrEnum):
    """Where a saga is: running forward, compensating backward, finished, or waiting for a person."""

    RUNNING = "running"
    """Steps are running forward."""
    COMPENSATING = "compensating"
    """A step failed (or the saga was cancelled, or its deadline passed): undoing completed steps."""
    COMPLETED = "completed"
    """Every step succeeded."""
    COMPENSATED = "compensated"
    """Every completed step was undone; ``reason`` says why the saga went back."""
    STUCK = "stuck"
    """A compensation (or a step after the pivot) kept failing past its retry policy.

    Nothing more happens until an operator retries or resolves the saga.
    """
    RESOLVED = "resolved"
    """An operator settled a stuck saga by hand."""


UNFINISHED: Final = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)
"""The statuses ``resume`` continues."""


class EntryKind(StrEnum):
    """What one history entry records."""

    STARTED = "started"
    """The step is about to run (recorded before it runs)."""
    COMPLETED = "completed"
    """The step succeeded; ``data`` is its result as JSON."""
    FAILED = "failed"
    """The step failed; ``data`` is ``{"error": ..., "compensate": bool}``."""
    REVERTING = "reverting"
    """The saga turned back; ``data`` is ``{"reason": ..., "not_run": [steps]}``."""
    COMPENSATED = "compensated"
    """The step's compensation succeeded."""
    STUCK = "stuck"
    """``data`` is ``{"phase": "forward"|"backward", "error": ...}``: an operator must act."""
    RETRIED = "retried"
    """An operator asked for a stuck saga to be tried again; ``data`` is ``{"note": ...}``."""
    RESOLVED = "resolved"
    """An operator settled a stuck saga by hand; ``data`` is ``{"note": ...}``."""
    FINISHED = "finished"
    """The saga ended; ``data`` is ``{"status": "completed"|"compensated"}``."""


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A history entry about to be written; the log stamps it with the engine's time."""

    seq: int
    """Position in the saga's history, 0 first (unique per saga: a second writer conflicts)."""
    kind: EntryKind
    step: str | None = None
    data: str | None = None
    """JSON text, or ``None``."""


@dataclass(frozen=True, slots=True)
class SagaEntry:
    """One stored history entry: what happened to which step, and when (engine time)."""

    seq: int
    kind: EntryKind
    step: str | None
    data: str | None
    """JSON text (a step's result, an error, a reason), or ``None``."""
    at: float
    """Unix time on the engine's clock when the entry was committed."""

    def value(self) -> Any:
        """``data`` decoded from JSON (``None`` when there is none)."""
        return None if self.data is None else json.loads(self.data)


@dataclass(frozen=True, slots=True)
class Signals:
    """What the log tells the orchestrator on each commit, judged on the engine's clock."""

    cancel_requested: bool = False
    deadline_passed: bool = False


NO_SIGNALS: Final = Signals()


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A saga as stored: its summary row and (when loaded) its history."""

    id: str
    name: str
    status: SagaStatus
    plan: tuple[tuple[str, ...], ...]
    """Step names in groups, as defined when the saga started (checked on resume)."""
    input: str
    """The saga's input as JSON text."""
    reason: str | None
    """Why the saga went back or got stuck."""
    created_at: float
    updated_at: float
    deadline_at: float | None
    owner: str | None
    """The orchestrator holding the saga's lease, if any."""
    lease_until: float | None
    cancel_requested: bool
    entries: tuple[SagaEntry, ...] = ()
    deadline_passed: bool = False
    """Whether the deadline had passed when this record was read (engine clock)."""

    @property
    def signals(self) -> Signals:
        """The cancel and deadline flags as :class:`Signals`."""
        return Signals(self.cancel_requested, self.deadline_passed)

    def results(self) -> dict[str, Any]:
        """The result of every completed step (from the history), by step name."""
        results: dict[str, Any] = {}
        for entry in self.entries:
            if entry.kind is EntryKind.COMPLETED and entry.step is not None:
                results[entry.step] = entry.value()
        return results

    def timings(self) -> dict[str, float]:
        """Seconds from each step's start to its outcome (engine clock), by step name."""
        started: dict[str, float] = {}
        timings: dict[str, float] = {}
        for entry in self.entries:
            if entry.step is None:
                continue
            if entry.kind is EntryKind.STARTED:
                started[entry.step] = entry.at
            elif entry.kind in (EntryKind.COMPLETED, EntryKind.FAILED) and entry.step in started:
                timings[entry.step] = entry.at - started[entry.step]
        return timings

    @property
    def finished(self) -> bool:
        """True once the saga can change only by an operator (or not at all)."""
        return self.status not in UNFINISHED


@dataclass(frozen=True, slots=True)
class SagaResult:
    """How one saga run ended: its status, every completed step's result, and why it went back."""

    saga_id: str
    saga: str
    status: SagaStatus
    results: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    """Why the saga went back or got stuck (``None`` when it completed)."""
    failed_step: str | None = None
    """The step whose failure turned the saga back, if a step failed."""

    @property
    def completed(self) -> bool:
        """True when every step succeeded."""
        return self.status is SagaStatus.COMPLETED
