"""The sans-I/O core: folding a history and deciding the next action, without any I/O."""

from __future__ import annotations

import json
from typing import Any

from seawall.workflows import Parallel, Saga, SagaEntry, SagaStatus, Signals, Step, StepContext
from seawall.workflows.saga._core import (
    Commit,
    Compensate,
    Done,
    Finish,
    Halt,
    Revert,
    RunCompensation,
    RunGroup,
    RunSteps,
    SagaDriver,
    SagaState,
    StepOutcome,
    Stuck,
    decide,
    operator_entries,
)
from seawall.workflows.saga._model import EntryKind


def noop(context: StepContext) -> None:
    return None


ORDER = Saga(
    "order",
    [
        Step("reserve", noop, noop),
        Parallel(Step("charge", noop, noop), Step("invoice", noop, noop)),
        Step("ship", noop),
    ],
)


def history(*items: tuple[str, str | None, Any]) -> list[SagaEntry]:
    """Entries from (kind, step, data) triples; completed data is JSON already."""
    entries = []
    for seq, (kind, step, data) in enumerate(items):
        text = data if kind == "completed" else (None if data is None else json.dumps(data))
        entries.append(SagaEntry(seq, EntryKind(kind), step, text, 1000.0 + seq))
    return entries


def test_a_new_saga_runs_its_first_group() -> None:
    assert decide(ORDER, SagaState(), Signals()) == RunGroup(0, ("reserve",))


def test_after_a_group_completes_the_next_one_runs_whole() -> None:
    state = SagaState.fold(history(("started", "reserve", None), ("completed", "reserve", "1")))
    assert decide(ORDER, state, Signals()) == RunGroup(1, ("charge", "invoice"))


def test_all_groups_done_finishes_completed() -> None:
    state = SagaState.fold(
        history(*[("completed", name, "null") for name in ("reserve", "charge", "invoice", "ship")])
    )
    assert decide(ORDER, state, Signals()) == Finish(SagaStatus.COMPLETED)


def test_a_step_in_doubt_runs_again_even_when_cancelled() -> None:
    state = SagaState.fold(history(("started", "reserve", None)))
    assert state.in_doubt("reserve")
    assert decide(ORDER, state, Signals(cancel_requested=True)) == RunGroup(0, ("reserve",))


def test_cancel_or_deadline_turns_back_at_a_boundary() -> None:
    state = SagaState.fold(history(("started", "reserve", None), ("completed", "reserve", "1")))
    assert decide(ORDER, state, Signals(cancel_requested=True)) == Revert("cancelled")
    assert decide(ORDER, state, Signals(deadline_passed=True)) == Revert("deadline exceeded")


def test_past_the_pivot_cancel_is_ignored() -> None:
    saga = Saga("s", [Step("a", noop, noop), Step("b", noop, pivot=True), Step("c", noop)])
    state = SagaState.fold(history(("completed", "a", "1"), ("completed", "b", "2")))
    assert decide(saga, state, Signals(cancel_requested=True)) == RunGroup(2, ("c",))


def test_a_failure_before_the_pivot_turns_back() -> None:
    state = SagaState.fold(
        history(("completed", "reserve", "1"), ("failed", "charge", {"error": "E: no"}))
    )
    assert decide(ORDER, state, Signals()) == Revert("step 'charge' failed: E: no")


def test_a_failure_after_the_pivot_is_stuck_forward() -> None:
    saga = Saga("s", [Step("a", noop, noop), Step("b", noop, pivot=True), Step("c", noop)])
    state = SagaState.fold(
        history(("completed", "a", "1"), ("completed", "b", "2"), ("failed", "c", {"error": "X"}))
    )
    decision = decide(saga, state, Signals())
    assert isinstance(decision, Stuck)
    assert decision.phase == "forward"
    assert decision.step == "c"


def test_compensation_goes_newest_first_by_completion_order() -> None:
    state = SagaState.fold(
        history(
            ("completed", "reserve", "1"),
            ("completed", "invoice", "2"),  # finished before charge inside the group
            ("completed", "charge", "3"),
            ("failed", "ship", {"error": "E"}),
            ("reverting", None, {"reason": "r", "not_run": []}),
        )
    )
    order = []
    while True:
        decision = decide(ORDER, state, Signals())
        if not isinstance(decision, Compensate):
            break
        order.append(decision.step)
        state.compensated.add(decision.step)
    assert order == ["charge", "invoice", "reserve"]
    assert decision == Finish(SagaStatus.COMPENSATED)


def test_failed_steps_are_not_compensated_unless_they_may_have_applied() -> None:
    state = SagaState.fold(
        history(
            ("completed", "reserve", "1"),
            ("failed", "charge", {"error": "E", "compensate": True}),
            ("failed", "invoice", {"error": "E", "compensate": False}),
            ("reverting", None, {"reason": "r", "not_run": []}),
        )
    )
    assert decide(ORDER, state, Signals()) == Compensate("charge")
    state.compensated.add("charge")
    assert decide(ORDER, state, Signals()) == Compensate("reserve")


def test_steps_recorded_as_not_run_are_not_compensated() -> None:
    state = SagaState.fold(
        history(
            ("completed", "reserve", "1"),
            ("started", "charge", None),
            ("started", "invoice", None),
            ("reverting", None, {"reason": "cancelled", "not_run": ["charge", "invoice"]}),
        )
    )
    assert decide(ORDER, state, Signals()) == Compensate("reserve")


def test_stuck_and_settled_sagas_halt() -> None:
    for status in ("completed", "compensated"):
        state = SagaState.fold(history(("finished", None, {"status": status})))
        assert decide(ORDER, state, Signals()) == Halt()
    state = SagaState.fold(history(("stuck", "reserve", {"phase": "backward", "error": "E"})))
    assert state.status is SagaStatus.STUCK
    assert decide(ORDER, state, Signals()) == Halt()


def test_retry_of_a_backward_stuck_saga_compensates_again() -> None:
    state = SagaState.fold(
        history(
            ("completed", "reserve", "1"),
            ("failed", "charge", {"error": "E"}),
            ("reverting", None, {"reason": "step failed", "not_run": []}),
            ("stuck", "reserve", {"phase": "backward", "error": "refund down"}),
        )
    )
    entries, status = operator_entries(state, "retry", "fixed")
    assert status is SagaStatus.COMPENSATING
    assert entries[0].kind is EntryKind.RETRIED
    assert entries[0].seq == 4
    for entry in entries:
        state.apply(entry.seq, entry.kind, entry.step, json.loads(entry.data or "null"), entry.data)
    assert state.reason == "step failed"
    assert decide(ORDER, state, Signals()) == Compensate("reserve")


def test_retry_of_a_forward_stuck_saga_runs_the_failed_step_again() -> None:
    saga = Saga("s", [Step("a", noop, pivot=True), Step("b", noop)])
    state = SagaState.fold(
        history(
            ("completed", "a", "1"),
            ("started", "b", None),
            ("failed", "b", {"error": "E"}),
            ("stuck", "b", {"phase": "forward", "error": "E"}),
        )
    )
    entries, status = operator_entries(state, "retry", "")
    assert status is SagaStatus.RUNNING
    state.apply(entries[0].seq, entries[0].kind, None, {"note": ""}, entries[0].data)
    assert decide(saga, state, Signals()) == RunGroup(1, ("b",))
    assert state.failed_step is None


def test_resolve_settles() -> None:
    state = SagaState.fold(history(("stuck", "a", {"phase": "backward", "error": "E"})))
    entries, status = operator_entries(state, "resolve", "refunded by hand")
    assert status is SagaStatus.RESOLVED
    assert json.loads(entries[0].data or "") == {"note": "refunded by hand"}


# ------------------------------------------------------------------------------ driver


def drive_happy(driver: SagaDriver) -> list[Any]:
    """Carry out a driver's actions with succeeding steps; return the actions seen."""
    seen: list[Any] = []
    while True:
        action = driver.next_action()
        seen.append(action)
        if isinstance(action, Commit):
            driver.committed(Signals())
        elif isinstance(action, RunSteps):
            driver.steps_finished(StepOutcome(name, "1", 1) for name in action.steps)
        elif isinstance(action, RunCompensation):
            driver.compensation_finished(action.step, None)
        elif isinstance(action, Done):
            return seen


def test_a_saga_of_n_sequential_steps_costs_n_plus_one_commits() -> None:
    saga = Saga("s", [Step("a", noop, noop), Step("b", noop, noop), Step("c", noop)])
    driver, first = SagaDriver.starting(saga, "id", None)
    assert [(entry.kind, entry.step) for entry in first] == [(EntryKind.STARTED, "a")]
    driver.committed(Signals())
    seen = drive_happy(driver)
    commits = [action for action in seen if isinstance(action, Commit)]
    assert len(commits) + 1 == 4  # the creating commit plus one per later boundary
    # each boundary commit records the completion of one step and the start of the next
    assert [(entry.kind.value, entry.step) for entry in commits[0].entries] == [
        ("completed", "a"),
        ("started", "b"),
    ]
    last = commits[-1]
    assert last.release
    assert last.status is SagaStatus.COMPLETED
    assert [entry.kind for entry in last.entries] == [EntryKind.COMPLETED, EntryKind.FINISHED]
    result = seen[-1].result
    assert result.completed
    assert dict(result.results) == {"a": 1, "b": 1, "c": 1}
    seqs = [
        entry.seq
        for commit in [Commit(tuple(first), SagaStatus.RUNNING, None, False), *commits]
        for entry in commit.entries
    ]
    assert seqs == list(range(len(seqs)))


def test_a_cancel_seen_at_a_commit_skips_the_group_it_started() -> None:
    saga = Saga("s", [Step("a", noop, noop), Step("b", noop, noop), Step("c", noop)])
    driver, _ = SagaDriver.starting(saga, "id", None)
    driver.committed(Signals())
    action = driver.next_action()
    assert action == RunSteps(0, ("a",))
    driver.steps_finished([StepOutcome("a", "1", 1)])
    commit = driver.next_action()
    assert isinstance(commit, Commit)
    driver.committed(Signals(cancel_requested=True))
    commit = driver.next_action()  # b is not run: the saga turns back first
    assert isinstance(commit, Commit)
    reverting = commit.entries[0]
    assert reverting.kind is EntryKind.REVERTING
    assert json.loads(reverting.data or "") == {"reason": "cancelled", "not_run": ["b"]}
    driver.committed(Signals(cancel_requested=True))
    assert driver.next_action() == RunCompensation("a")


def test_the_driver_copy_is_independent() -> None:
    saga = Saga("s", [Step("a", noop, noop), Step("b", noop)])
    driver, _ = SagaDriver.starting(saga, "id", None)
    driver.committed(Signals())
    driver.next_action()
    trial = driver.copy()
    trial.steps_finished([StepOutcome("a", "1", 1)])
    assert "a" in trial.state.results
    assert "a" not in driver.state.results
    assert trial.values == {"a": 1}
    assert driver.values == {}


def test_contexts_carry_earlier_results_and_the_compensated_result() -> None:
    saga = Saga("s", [Step("a", noop, noop), Step("b", noop)])
    driver = SagaDriver(saga, "id-1", {"n": 1}, SagaState(), Signals(), {"a": {"x": 1}})
    context = driver.context("b")
    assert context.results == {"a": {"x": 1}}
    assert context.input == {"n": 1}
    assert context.result is None
    assert not context.compensating
    undo = driver.context("a", compensating=True)
    assert undo.result == {"x": 1}
    assert undo.compensating
    assert undo.idempotency_key == "id-1:a"
