"""Property: whatever fails and wherever the orchestrator dies, a saga ends completed or fully
compensated (or stuck with the error, until an operator retries it), no effect is applied twice,
and compensations run in reverse order of the steps' completion.

Participants are idempotent (effects keyed by the idempotency key). The log is the memory
log wrapped so that the process "dies" (a ``BaseException``, no clean-up) just before or just
after a chosen write; a fresh orchestrator then resumes once the lease has expired.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.clock import ManualClock
from seawall.engines._base import Engine
from seawall.resilience import Retry
from seawall.workflows import (
    EntryKind,
    MemorySagaLog,
    NewEntry,
    Parallel,
    Saga,
    SagaFailedError,
    SagaOrchestrator,
    SagaRecord,
    SagaStatus,
    Signals,
    Step,
    StepContext,
    retry_saga,
)

LEASE = 30.0
ALWAYS = 99


class Crash(BaseException):
    """The orchestrator's process died."""


class DyingLog:
    """A memory log whose process dies before or after chosen writes (0 is the creating one)."""

    kind: ClassVar[str] = "memory"
    supports_transactions: ClassVar[bool] = False
    blocking: ClassVar[bool] = False

    def __init__(
        self, inner: MemorySagaLog, crashes: dict[int, str], cancel_at: int | None = None
    ) -> None:
        self.inner = inner
        self.crashes = dict(crashes)
        self.cancel_at = cancel_at
        self.writes = 0
        self.dead = False

    @property
    def engine(self) -> Engine | None:
        return None

    def _write(self, do: Callable[[], Any]) -> Any:
        index = self.writes
        self.writes += 1
        if index == self.cancel_at:  # someone cancels the saga from elsewhere
            self.inner.request_cancel("s")
        when = self.crashes.pop(index, None)
        if when == "before":
            self.dead = True
            raise Crash
        result = do()
        if when == "after":
            self.dead = True
            raise Crash
        return result

    def create(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self._write(lambda: self.inner.create(*args, **kwargs)))

    def append(self, *args: Any, **kwargs: Any) -> Signals | None:
        result: Signals | None = self._write(lambda: self.inner.append(*args, **kwargs))
        return result

    def claim(self, *args: Any, **kwargs: Any) -> SagaRecord | None:
        self.dead = False
        return self.inner.claim(*args, **kwargs)

    def release(self, saga_id: str, owner: str) -> None:
        if not self.dead:  # a killed process cleans nothing up
            self.inner.release(saga_id, owner)

    def load(self, saga_id: str) -> SagaRecord | None:
        return self.inner.load(saga_id)

    def list(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        return self.inner.list(status=status, name=name, limit=limit)

    def request_cancel(self, saga_id: str) -> SagaStatus | None:
        return self.inner.request_cancel(saga_id)

    def transition(
        self,
        saga_id: str,
        *,
        expected: SagaStatus,
        status: SagaStatus,
        reason: str | None,
        entries: Sequence[NewEntry],
    ) -> bool:
        return self.inner.transition(
            saga_id, expected=expected, status=status, reason=reason, entries=entries
        )

    def close(self) -> None:
        self.inner.close()


class Participants:
    """Idempotent participants: one effect per idempotency key, and the order things happened."""

    def __init__(self, failures: dict[str, int], undo_failures: dict[str, int]) -> None:
        self.failures = dict(failures)
        self.undo_failures = dict(undo_failures)
        self.present: set[str] = set()
        self.history: list[tuple[str, str]] = []
        self.calls: dict[str, int] = {}
        self.keys: set[str] = set()
        self.lock = threading.Lock()

    def action(self, name: str) -> Callable[[StepContext], str]:
        def act(context: StepContext) -> str:
            with self.lock:
                self.keys.add(context.idempotency_key)
                self.calls[name] = self.calls.get(name, 0) + 1
                if self.failures.get(name, 0) > 0:
                    self.failures[name] -= 1
                    raise RuntimeError(f"{name} failed")
                if name not in self.present:
                    assert ("apply", name) not in self.history, f"{name} applied twice"
                    self.present.add(name)
                    self.history.append(("apply", name))
            return name

        return act

    def undo(self, name: str) -> Callable[[StepContext], None]:
        def compensate(context: StepContext) -> None:
            with self.lock:
                if self.undo_failures.get(name, 0) > 0:
                    self.undo_failures[name] -= 1
                    raise RuntimeError(f"undo {name} failed")
                if name in self.present:
                    self.present.discard(name)
                    self.history.append(("undo", name))

        return compensate


failure = st.sampled_from([0, 0, 0, 1, ALWAYS])
shapes = st.lists(st.integers(1, 3), min_size=1, max_size=4)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(shapes)
    names = [f"s{index}_{member}" for index, size in enumerate(groups) for member in range(size)]
    pivot_last = groups[-1] == 1 and draw(st.booleans())
    return {
        "groups": groups,
        "pivot_last": pivot_last,
        "failures": {name: draw(failure) for name in names},
        "undo_failures": {name: draw(failure) for name in names},
        "cancel_at": draw(st.none() | st.integers(1, 8)),
        "crashes": draw(
            st.dictionaries(st.integers(0, 14), st.sampled_from(["before", "after"]), max_size=3)
        ),
    }


def build(scenario: dict[str, Any], participants: Participants, clock: ManualClock) -> Saga:
    items: list[Step | Parallel] = []
    groups = scenario["groups"]
    for index, size in enumerate(groups):
        steps = []
        for member in range(size):
            name = f"s{index}_{member}"
            last = index == len(groups) - 1
            steps.append(
                Step(
                    name,
                    participants.action(name),
                    None if last and scenario["pivot_last"] else participants.undo(name),
                    policy=Retry(2, wait=0.0, clock=clock),
                )
            )
        items.append(steps[0] if size == 1 else Parallel(*steps))
    return Saga("prop", items)


def run_until_settled(log: DyingLog, saga: Saga, clock: ManualClock, generation: list[int]) -> None:
    """Run, and after every crash start a new orchestrator that resumes, until nothing is left."""

    def orchestrator() -> SagaOrchestrator:
        generation[0] += 1
        return SagaOrchestrator(
            log,
            [saga],
            clock=clock,
            lease=LEASE,
            owner=f"o{generation[0]}",
            compensation_policy=Retry(3, wait=0.0, clock=clock),
            max_workers=3,
        )

    with orchestrator() as first:
        try:
            first.run(saga, saga_id="s")
            return
        except SagaFailedError:
            return
        except Crash:
            pass
    while True:
        clock.advance(LEASE + 1)
        with orchestrator() as again:
            try:
                again.resume()
            except Crash:
                continue
            return


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_a_saga_always_settles_without_double_effects_or_lost_compensations(
    scenario: dict[str, Any],
) -> None:
    clock = ManualClock(1000.0)
    participants = Participants(scenario["failures"], scenario["undo_failures"])
    saga = build(scenario, participants, clock)
    log = DyingLog(MemorySagaLog(clock=clock), scenario["crashes"], scenario["cancel_at"])
    generation = [0]
    run_until_settled(log, saga, clock, generation)
    record = log.inner.load("s")
    if record is None:  # died before the saga was recorded: nothing may have happened
        assert participants.history == []
        assert participants.calls == {}
        return

    if record.status is SagaStatus.STUCK:
        # the failing compensation is visible with its error, and its effect is still there
        stuck = record.entries[-1]
        assert stuck.kind is EntryKind.STUCK
        assert stuck.step is not None
        assert f"compensation of step {stuck.step!r} failed" in (record.reason or "")
        assert stuck.step in participants.present
        participants.undo_failures = {}  # an operator fixes the participant, then retries
        retry_saga(log.inner, "s", "fixed")
        run_until_settled(log, saga, clock, generation)
        record = log.inner.load("s")
        assert record is not None

    assert record.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
    assert participants.keys <= {f"s:{name}" for name in saga.steps}
    completed = [e.step for e in record.entries if e.kind is EntryKind.COMPLETED]
    applied = [name for kind, name in participants.history if kind == "apply"]
    undone = [name for kind, name in participants.history if kind == "undo"]
    assert sorted(applied) == sorted(set(applied))  # no effect applied twice
    assert set(completed) == set(applied)
    if record.status is SagaStatus.COMPLETED:
        assert set(completed) == set(saga.steps)
        assert undone == []
        assert participants.present == set(saga.steps)
    else:
        compensable = [name for name in completed if saga.steps[name].compensation is not None]
        assert participants.present == set(completed) - set(compensable)
        assert undone == list(reversed(compensable))  # newest completion first
        failed = [e.step for e in record.entries if e.kind is EntryKind.FAILED]
        assert failed or record.reason == "cancelled"
