"""The sans-I/O heart of saga orchestration: fold a saga's history, decide what happens next.

:class:`SagaState` is a saga's history folded into what matters for the next decision
(completed results, steps whose outcome is unknown, failures, compensations).
:func:`decide` turns a state into one decision: run a group of steps, compensate one
step, turn back, finish, get stuck, or stop. :class:`SagaDriver` wraps both into the
loop every runner follows: it answers "commit these entries", "run these steps",
"run this compensation" or "done", and is fed each outcome. The sync and async
orchestrators only carry out those answers; nothing here touches a clock, a thread
or a database.

**Write-ahead, one commit per boundary.** The driver buffers entries and asks for a
commit only before an effect (a step or a compensation) and at the end, so the
completion of one step and the start of the next share one commit. A saga of ``n``
sequential steps that all succeed costs ``n + 1`` commits (the first also creates
the saga). Recovery follows from what is durable: a step recorded as started without
an outcome is in doubt and runs again (same idempotency key); a saga that turned back
compensates every step that completed or may have applied, newest first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from seawall.workflows.saga._definition import Saga, StepContext
from seawall.workflows.saga._model import (
    EntryKind,
    NewEntry,
    SagaEntry,
    SagaResult,
    SagaStatus,
    Signals,
)

__all__ = [
    "CANCELLED",
    "DEADLINE_EXCEEDED",
    "Commit",
    "Compensate",
    "Done",
    "Finish",
    "Halt",
    "Revert",
    "RunCompensation",
    "RunGroup",
    "RunSteps",
    "SagaDriver",
    "SagaState",
    "StepOutcome",
    "Stuck",
    "decide",
    "operator_entries",
]

CANCELLED: Final = "cancelled"
DEADLINE_EXCEEDED: Final = "deadline exceeded"
FORWARD: Final = "forward"
BACKWARD: Final = "backward"

_TERMINAL = frozenset(
    {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.RESOLVED, SagaStatus.STUCK}
)


# ----------------------------------------------------------------------------- the fold


class SagaState:
    """A saga's history folded into what the next decision needs.

    ``results`` maps completed steps to their result as JSON text, in completion order;
    ``started`` holds every step recorded as started (those with no outcome are in
    doubt); ``applied`` orders every step that may have taken effect (completed, in
    doubt, or failed with ``compensate_failed``) by when it did, for compensation.
    """

    __slots__ = (
        "applied",
        "compensated",
        "failed",
        "failed_step",
        "next_seq",
        "reason",
        "results",
        "revert_reason",
        "started",
        "status",
        "stuck_phase",
        "stuck_step",
    )

    def __init__(self, status: SagaStatus = SagaStatus.RUNNING) -> None:
        self.status = status
        self.results: dict[str, str] = {}
        self.started: dict[str, int] = {}
        self.failed: dict[str, tuple[str, bool]] = {}
        self.compensated: set[str] = set()
        self.applied: dict[str, int] = {}
        self.reason: str | None = None
        self.revert_reason: str | None = None
        self.failed_step: str | None = None
        self.stuck_phase: str | None = None
        self.stuck_step: str | None = None
        self.next_seq = 0

    @classmethod
    def fold(cls, entries: Iterable[SagaEntry]) -> SagaState:
        """The state after every entry of a stored history, oldest first."""
        state = cls()
        for entry in entries:
            info = None
            if entry.kind is not EntryKind.COMPLETED and entry.data is not None:
                info = json.loads(entry.data)
            state.apply(entry.seq, entry.kind, entry.step, info, entry.data)
        return state

    def copy(self) -> SagaState:
        """An independent copy (for a tentative transition that may be rolled back)."""
        other = SagaState(self.status)
        other.results = dict(self.results)
        other.started = dict(self.started)
        other.failed = dict(self.failed)
        other.compensated = set(self.compensated)
        other.applied = dict(self.applied)
        other.reason = self.reason
        other.revert_reason = self.revert_reason
        other.failed_step = self.failed_step
        other.stuck_phase = self.stuck_phase
        other.stuck_step = self.stuck_step
        other.next_seq = self.next_seq
        return other

    def in_doubt(self, step: str) -> bool:
        """True when the step was started and no outcome was recorded."""
        return step in self.started and step not in self.results and step not in self.failed

    def apply(
        self,
        seq: int,
        kind: EntryKind,
        step: str | None,
        info: Any,
        text: str | None,
    ) -> None:
        """Fold one entry: ``info`` is its decoded data, ``text`` the raw JSON (a result)."""
        if seq >= self.next_seq:
            self.next_seq = seq + 1
        if kind is EntryKind.STARTED and step is not None:
            self.started[step] = seq
            self.applied[step] = seq
        elif kind is EntryKind.COMPLETED and step is not None:
            self.results[step] = text if text is not None else "null"
            self.applied[step] = seq
        elif kind is EntryKind.FAILED and step is not None:
            compensate = bool(info.get("compensate", False))
            self.failed[step] = (str(info.get("error", "")), compensate)
            if compensate:
                self.applied[step] = seq
            else:
                self.applied.pop(step, None)
            if self.failed_step is None:
                self.failed_step = step
        elif kind is EntryKind.REVERTING:
            self.status = SagaStatus.COMPENSATING
            self.reason = self.revert_reason = str(info.get("reason", ""))
            for name in info.get("not_run", ()):
                self.started.pop(name, None)
                self.applied.pop(name, None)
        elif kind is EntryKind.COMPENSATED and step is not None:
            self.compensated.add(step)
        elif kind is EntryKind.STUCK:
            self.status = SagaStatus.STUCK
            self.stuck_phase = str(info.get("phase", BACKWARD))
            self.stuck_step = step
            self.reason = str(info.get("error", ""))
        elif kind is EntryKind.RETRIED:
            if self.stuck_phase == FORWARD:
                self.status = SagaStatus.RUNNING
                if self.stuck_step is not None:  # run the failed step again
                    self.failed.pop(self.stuck_step, None)
                    self.started.pop(self.stuck_step, None)
                    self.applied.pop(self.stuck_step, None)
                if self.failed_step == self.stuck_step:
                    self.failed_step = None
                self.reason = None
            else:
                self.status = SagaStatus.COMPENSATING
                self.reason = self.revert_reason
            self.stuck_phase = self.stuck_step = None
        elif kind is EntryKind.RESOLVED:
            self.status = SagaStatus.RESOLVED
        elif kind is EntryKind.FINISHED:
            self.status = SagaStatus(info["status"])


# ---------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class RunGroup:
    """Run these steps of group ``group`` (all at once when more than one)."""

    group: int
    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Compensate:
    """Run the compensation of ``step``."""

    step: str


@dataclass(frozen=True, slots=True)
class Revert:
    """Turn the saga back for ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Stuck:
    """Stop and wait for an operator: ``step`` failed with ``error``, moving ``phase``-wards."""

    phase: str
    step: str | None
    error: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The saga is over: ``status`` is completed or compensated."""

    status: SagaStatus


@dataclass(frozen=True, slots=True)
class Halt:
    """Nothing to do: the saga is finished or stuck."""


_HALT: Final = Halt()

Decision = RunGroup | Compensate | Revert | Stuck | Finish | Halt


def decide(saga: Saga, state: SagaState, signals: Signals) -> Decision:
    """The next thing to do for a saga in ``state``, given the latest cancel/deadline signals.

    Forward: a step that failed before (or at) the pivot turns the saga back, one
    after the pivot makes it stuck; steps in doubt run again first; otherwise a
    cancellation or a passed deadline turns the saga back (unless the pivot has
    succeeded) and else the next group runs. Backward: compensate the newest step
    that may have taken effect, until none is left.
    """
    status = state.status
    if status in _TERMINAL:
        return _HALT
    if status is SagaStatus.RUNNING:
        if state.failed:
            step, (error, _) = next(iter(state.failed.items()))
            if saga.pivot is not None and saga.group_of[step] > saga.pivot:
                return Stuck(FORWARD, step, f"step {step!r} failed after the pivot: {error}")
            return Revert(f"step {step!r} failed: {error}")
        results = state.results
        index = next(
            (
                number
                for number, group in enumerate(saga.plan)
                if any(n not in results for n in group)
            ),
            -1,
        )
        if index < 0:
            return Finish(SagaStatus.COMPLETED)
        remaining = tuple(name for name in saga.plan[index] if name not in results)
        in_doubt = any(name in state.started for name in remaining)
        past_pivot = saga.pivot is not None and index > saga.pivot
        if not in_doubt and not past_pivot:
            if signals.cancel_requested:
                return Revert(CANCELLED)
            if signals.deadline_passed:
                return Revert(DEADLINE_EXCEEDED)
        return RunGroup(index, remaining)
    # compensating
    compensated = state.compensated
    steps = saga.steps
    newest: str | None = None
    newest_at = -1
    for name, at in state.applied.items():
        if name in compensated or at <= newest_at:
            continue
        definition = steps.get(name)
        if definition is None or definition.compensation is None:
            continue
        newest, newest_at = name, at
    if newest is None:
        return Finish(SagaStatus.COMPENSATED)
    return Compensate(newest)


def operator_entries(
    state: SagaState, operation: str, note: str
) -> tuple[list[NewEntry], SagaStatus]:
    """The entries and new status for an operator's ``retry`` or ``resolve`` of a stuck saga."""
    info = json.dumps({"note": note})
    if operation == "retry":
        kind = EntryKind.RETRIED
        status = SagaStatus.RUNNING if state.stuck_phase == FORWARD else SagaStatus.COMPENSATING
    else:
        kind = EntryKind.RESOLVED
        status = SagaStatus.RESOLVED
    return [NewEntry(state.next_seq, kind, None, info)], status


# ------------------------------------------------------------------------------ driver


@dataclass(frozen=True, slots=True)
class Commit:
    """Write ``entries`` and ``status`` to the log (``release``: give up the lease, the saga is settled)."""

    entries: tuple[NewEntry, ...]
    status: SagaStatus
    reason: str | None
    release: bool


@dataclass(frozen=True, slots=True)
class RunSteps:
    """Run these steps (of group ``group``) and report each outcome."""

    group: int
    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunCompensation:
    """Run ``step``'s compensation and report whether it succeeded."""

    step: str


@dataclass(frozen=True, slots=True)
class Done:
    """Nothing more to do in this run: ``result`` says how the saga stands."""

    result: SagaResult


Action = Commit | RunSteps | RunCompensation | Done


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """How one step's action ended: its result (JSON text and decoded value) or its error."""

    step: str
    text: str | None = None
    value: Any = None
    error: str | None = None
    compensate: bool = False
    """For a failure: whether the step may have taken effect and must be compensated."""

    @property
    def ok(self) -> bool:
        """True when the action succeeded."""
        return self.error is None


class SagaDriver:
    """One saga's decisions, as a loop of actions for a runner to carry out.

    Call :meth:`next_action` and do what it says; feed the outcome back with
    :meth:`committed`, :meth:`steps_finished` or :meth:`compensation_finished`; stop at
    :class:`Done`.
    """

    __slots__ = (
        "_buffer",
        "_fresh",
        "_pending",
        "input",
        "saga",
        "saga_id",
        "signals",
        "state",
        "values",
    )

    def __init__(
        self,
        saga: Saga,
        saga_id: str,
        input_value: Any,
        state: SagaState,
        signals: Signals,
        values: dict[str, Any] | None = None,
    ) -> None:
        self.saga = saga
        self.saga_id = saga_id
        self.input = input_value
        self.state = state
        self.signals = signals
        self.values: dict[str, Any] = (
            values
            if values is not None
            else {name: json.loads(text) for name, text in state.results.items()}
        )
        self._buffer: list[NewEntry] = []
        self._pending: Action | None = None
        self._fresh = False

    @classmethod
    def starting(
        cls, saga: Saga, saga_id: str, input_value: Any
    ) -> tuple[SagaDriver, list[NewEntry]]:
        """A driver for a new saga, and the entries its creating commit must hold."""
        driver = cls(saga, saga_id, input_value, SagaState(), Signals(), {})
        action = driver.next_action()
        if not isinstance(action, Commit):  # pragma: no cover - a new saga always starts a step
            raise AssertionError(action)
        return driver, list(action.entries)

    def copy(self) -> SagaDriver:
        """An independent copy, to try a transition that may be rolled back (local steps)."""
        other = SagaDriver(
            self.saga, self.saga_id, self.input, self.state.copy(), self.signals, dict(self.values)
        )
        other._buffer = list(self._buffer)
        other._pending = self._pending
        other._fresh = self._fresh
        return other

    # -------------------------------------------------------------------- the loop

    def next_action(self) -> Action:
        """What the runner must do now."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            return pending
        state = self.state
        while True:
            decision = decide(self.saga, state, self.signals)
            if isinstance(decision, RunGroup):
                fresh = True
                for name in decision.steps:
                    if name in state.started:
                        fresh = False
                    else:
                        self._record(EntryKind.STARTED, name, None)
                self._fresh = fresh
                return self._before_effect(RunSteps(decision.group, decision.steps))
            if isinstance(decision, Compensate):
                return self._before_effect(RunCompensation(decision.step))
            if isinstance(decision, Revert):
                self._record(EntryKind.REVERTING, None, {"reason": decision.reason, "not_run": []})
            elif isinstance(decision, Stuck):
                self._record(
                    EntryKind.STUCK,
                    decision.step,
                    {"phase": decision.phase, "error": decision.error},
                )
            elif isinstance(decision, Finish):
                self._record(EntryKind.FINISHED, None, {"status": decision.status.value})
            else:
                if self._buffer:
                    self._pending = Done(self.result())
                    return self._flush(release=True)
                return Done(self.result())

    def committed(self, signals: Signals) -> None:
        """The last :class:`Commit` is durable; ``signals`` are the log's latest flags.

        When the commit that recorded a group's start reports a cancellation or a passed
        deadline, the group is not run: the saga turns back, and the unrun steps are
        recorded as such so that they are not compensated.
        """
        self.signals = signals
        pending = self._pending
        if (
            isinstance(pending, RunSteps)
            and self._fresh
            and (signals.cancel_requested or signals.deadline_passed)
            and (self.saga.pivot is None or pending.group <= self.saga.pivot)
        ):
            self._pending = None
            reason = CANCELLED if signals.cancel_requested else DEADLINE_EXCEEDED
            self._record(
                EntryKind.REVERTING, None, {"reason": reason, "not_run": list(pending.steps)}
            )

    def steps_finished(self, outcomes: Iterable[StepOutcome]) -> None:
        """Record each step's outcome, in the order they finished."""
        for outcome in outcomes:
            if outcome.error is None:
                self.values[outcome.step] = outcome.value
                self._record(EntryKind.COMPLETED, outcome.step, None, outcome.text or "null")
            else:
                self._record(
                    EntryKind.FAILED,
                    outcome.step,
                    {"error": outcome.error, "compensate": outcome.compensate},
                )

    def compensation_finished(self, step: str, error: str | None) -> None:
        """Record a compensation's outcome; a failure (past its retry policy) makes the saga stuck."""
        if error is None:
            self._record(EntryKind.COMPENSATED, step, None)
        else:
            self._record(
                EntryKind.STUCK,
                step,
                {"phase": BACKWARD, "error": f"compensation of step {step!r} failed: {error}"},
            )

    def stuck(self, error: str) -> None:
        """Make the saga stuck for a reason found outside the history (e.g. a changed definition)."""
        phase = FORWARD if self.state.status is SagaStatus.RUNNING else BACKWARD
        self._record(EntryKind.STUCK, None, {"phase": phase, "error": error})

    # ----------------------------------------------------------------- contexts

    def context(self, step: str, *, compensating: bool = False) -> StepContext:
        """What the step's action (or compensation) receives."""
        return StepContext(
            self.saga_id,
            self.saga.name,
            step,
            self.input,
            MappingProxyType(dict(self.values)),
            self.values.get(step) if compensating else None,
            compensating,
        )

    def result(self) -> SagaResult:
        """How the saga stands now."""
        state = self.state
        return SagaResult(
            self.saga_id,
            self.saga.name,
            state.status,
            MappingProxyType(dict(self.values)),
            state.reason,
            state.failed_step,
        )

    # ---------------------------------------------------------------- internals

    def _record(
        self,
        kind: EntryKind,
        step: str | None,
        info: Mapping[str, Any] | None,
        text: str | None = None,
    ) -> None:
        state = self.state
        if text is None and info is not None:
            text = json.dumps(info)
        entry = NewEntry(state.next_seq, kind, step, text)
        state.apply(entry.seq, kind, step, info, text)
        self._buffer.append(entry)

    def _before_effect(self, action: Action) -> Action:
        if self._buffer:
            self._pending = action
            return self._flush(release=False)
        return action

    def _flush(self, *, release: bool) -> Commit:
        entries = tuple(self._buffer)
        self._buffer.clear()
        return Commit(entries, self.state.status, self.state.reason, release)
