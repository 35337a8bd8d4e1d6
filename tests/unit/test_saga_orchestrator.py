"""The sync orchestrator over the memory log, on a manual clock: no test sleeps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.codec import EncodeError
from seawall.errors import ConfigurationError, RetryError
from seawall.events import Event
from seawall.resilience import Retry
from seawall.workflows import (
    EntryKind,
    MemorySagaLog,
    Parallel,
    Saga,
    SagaBusyError,
    SagaCompensated,
    SagaCompensating,
    SagaCompleted,
    SagaFailedError,
    SagaLeaseLostError,
    SagaNotFoundError,
    SagaOrchestrator,
    SagaResumed,
    SagaStarted,
    SagaStateError,
    SagaStatus,
    SagaStepCompensated,
    SagaStepCompensationFailed,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
    SagaStuck,
    Step,
    StepContext,
)


class Crash(BaseException):
    """Stands for the orchestrator's process dying mid-saga."""


class Ledger:
    """Idempotent participants: effects keyed by idempotency key, and the calls seen."""

    def __init__(self) -> None:
        self.applied: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.compensations: list[str] = []
        self.fail: dict[str, int] = {}
        """step -> failures left (a large number: always fails)"""
        self.fail_undo: dict[str, int] = {}
        self.crash_in: set[str] = set()
        self.lock = threading.Lock()

    def action(self, name: str, value: Any = None) -> Callable[[StepContext], Any]:
        def act(context: StepContext) -> Any:
            with self.lock:
                self.calls.append(("do", context.idempotency_key))
                if self.fail.get(name, 0) > 0:
                    self.fail[name] -= 1
                    raise RuntimeError(f"{name} refused")
                self.applied.setdefault(
                    context.idempotency_key, value if value is not None else name
                )
            if name in self.crash_in:
                self.crash_in.discard(name)
                raise Crash
            return self.applied[context.idempotency_key]

        return act

    def undo(self, name: str) -> Callable[[StepContext], None]:
        def compensate(context: StepContext) -> None:
            with self.lock:
                self.calls.append(("undo", context.idempotency_key))
                if self.fail_undo.get(name, 0) > 0:
                    self.fail_undo[name] -= 1
                    raise RuntimeError(f"undo {name} refused")
                if self.applied.pop(context.idempotency_key, None) is not None:
                    self.compensations.append(name)

        return compensate


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def log(clock: ManualClock) -> MemorySagaLog:
    return MemorySagaLog(clock=clock)


def make(ledger: Ledger, *names: str, last_compensated: bool = False) -> Saga:
    steps = [Step(name, ledger.action(name), ledger.undo(name)) for name in names[:-1]]
    last = names[-1]
    steps.append(Step(last, ledger.action(last), ledger.undo(last) if last_compensated else None))
    return Saga("order", steps)


def orchestrator(
    log: MemorySagaLog, clock: ManualClock, *sagas: Saga, **options: Any
) -> SagaOrchestrator:
    options.setdefault("compensation_policy", Retry(3, wait=1.0, clock=clock))
    return SagaOrchestrator(log, sagas, clock=clock, **options)


# ------------------------------------------------------------------------------ forward


def test_a_saga_runs_every_step_in_order_and_records_it(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    saga = make(ledger, "reserve", "charge", "ship")
    seen: list[dict[str, Any]] = []
    saga.steps["ship"].action = lambda context: seen.append(dict(context.results)) or "shipped"
    sagas = orchestrator(log, clock, saga)
    result = sagas.run(saga, {"order": 7}, saga_id="o-7")
    assert result.completed
    assert result.status is SagaStatus.COMPLETED
    assert dict(result.results) == {"reserve": "reserve", "charge": "charge", "ship": "shipped"}
    assert seen == [{"reserve": "reserve", "charge": "charge"}]
    assert ledger.calls == [("do", "o-7:reserve"), ("do", "o-7:charge")]
    record = sagas.status("o-7")
    assert record.status is SagaStatus.COMPLETED
    assert record.owner is None
    assert [(entry.kind.value, entry.step) for entry in record.entries] == [
        ("started", "reserve"),
        ("completed", "reserve"),
        ("started", "charge"),
        ("completed", "charge"),
        ("started", "ship"),
        ("completed", "ship"),
        ("finished", None),
    ]
    assert record.results() == dict(result.results)
    assert set(record.timings()) == {"reserve", "charge", "ship"}


def test_steps_see_the_input_as_json(log: MemorySagaLog, clock: ManualClock) -> None:
    seen = []
    saga = Saga("s", Step("only", lambda context: seen.append(context.input)))
    orchestrator(log, clock, saga).run(saga, {"items": (1, 2)})
    assert seen == [{"items": [1, 2]}]  # as it will look after a crash too


def test_an_unserialisable_input_is_refused_before_anything_is_stored(
    log: MemorySagaLog, clock: ManualClock
) -> None:
    saga = Saga("s", Step("only", lambda context: None))
    with pytest.raises(EncodeError, match="'object'"):
        orchestrator(log, clock, saga).run(saga, {"x": object()})
    assert log.list() == []


def test_a_step_policy_retries_transient_failures(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    ledger.fail["charge"] = 2
    saga = Saga(
        "s",
        [
            Step("reserve", ledger.action("reserve"), ledger.undo("reserve")),
            Step(
                "charge",
                ledger.action("charge"),
                policy=Retry(3, wait=0.5, clock=clock),
            ),
        ],
    )
    result = orchestrator(log, clock, saga).run(saga, saga_id="s1")
    assert result.completed
    assert ledger.calls.count(("do", "s1:charge")) == 3
    assert clock.sleeps == [0.5, 0.5]


def test_parallel_steps_all_run_and_later_steps_see_their_results(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    saga = Saga(
        "p",
        [
            Parallel(
                Step("a", ledger.action("a", 1), ledger.undo("a")),
                Step("b", ledger.action("b", 2), ledger.undo("b")),
                Step("c", ledger.action("c", 3), ledger.undo("c")),
            ),
            Step("sum", lambda context: sum(context.results.values())),
        ],
    )
    with orchestrator(log, clock, saga) as sagas:
        result = sagas.run(saga)
    assert result.results["sum"] == 6
    kinds = [entry.kind for entry in log.load(result.saga_id).entries]  # type: ignore[union-attr]
    # one commit starts the whole group, one records all three outcomes with the next start
    assert kinds[:3] == [EntryKind.STARTED] * 3


# ----------------------------------------------------------------------------- backward


def test_a_failure_compensates_completed_steps_newest_first(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    ledger.fail["ship"] = 99
    saga = make(ledger, "reserve", "charge", "ship")
    with pytest.raises(SagaFailedError) as caught:
        orchestrator(log, clock, saga).run(saga, saga_id="o-1")
    error = caught.value
    assert error.status is SagaStatus.COMPENSATED
    assert error.failed_step == "ship"
    assert error.reason == "step 'ship' failed: RuntimeError: ship refused"
    assert error.result.results == {"reserve": "reserve", "charge": "charge"}
    assert ledger.compensations == ["charge", "reserve"]
    assert ledger.applied == {}
    record = log.load("o-1")
    assert record is not None
    assert record.status is SagaStatus.COMPENSATED
    assert record.reason == error.reason


def test_the_failed_step_itself_is_compensated_only_on_request(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    ledger.fail["charge"] = 1

    def charge(context: StepContext) -> None:
        ledger.applied[context.idempotency_key] = "charged anyway"
        raise TimeoutError("no answer")

    saga = Saga(
        "s",
        [
            Step("reserve", ledger.action("reserve"), ledger.undo("reserve")),
            Step("charge", charge, ledger.undo("charge"), compensate_failed=True),
            Step("ship", ledger.action("ship")),
        ],
    )
    with pytest.raises(SagaFailedError):
        orchestrator(log, clock, saga).run(saga)
    assert ledger.compensations == ["charge", "reserve"]


def test_a_step_timeout_fails_the_step_and_compensation_runs(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    saga = Saga(
        "s",
        [
            Step("reserve", ledger.action("reserve"), ledger.undo("reserve")),
            Step("slow", lambda context: clock.sleep(5.0), timeout=2.0),
        ],
    )
    with pytest.raises(SagaFailedError, match="TimeoutExceededError") as caught:
        orchestrator(log, clock, saga).run(saga)
    assert caught.value.failed_step == "slow"
    assert ledger.compensations == ["reserve"]


def test_an_unserialisable_result_fails_the_step_and_compensates_it(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    undone: list[Any] = []
    saga = Saga(
        "s",
        [
            Step("reserve", ledger.action("reserve"), ledger.undo("reserve")),
            Step("odd", lambda context: {"when": object()}, lambda c: undone.append(c.result)),
            Step("ship", ledger.action("ship")),
        ],
    )
    with pytest.raises(SagaFailedError) as caught:
        orchestrator(log, clock, saga).run(saga)
    reason = caught.value.reason or ""
    assert "step 'odd' returned a value the saga log cannot store" in reason
    assert "'object'" in reason
    assert "$['when']" in reason
    # the step ran (its effect may exist) so it is compensated too, before the earlier one
    assert undone == [None]
    assert ledger.compensations == ["reserve"]
    assert ("do", f"{caught.value.saga_id}:ship") not in ledger.calls


def test_a_compensation_that_keeps_failing_leaves_the_saga_stuck_then_retry_finishes_it(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    ledger.fail["ship"] = 99
    ledger.fail_undo["reserve"] = 99
    saga = make(ledger, "reserve", "charge", "ship")
    sagas = orchestrator(log, clock, saga)
    with pytest.raises(SagaFailedError) as caught:
        sagas.run(saga, saga_id="o-2")
    error = caught.value
    assert error.status is SagaStatus.STUCK
    assert "compensation of step 'reserve' failed" in (error.reason or "")
    assert ledger.compensations == ["charge"]
    assert ledger.calls.count(("undo", "o-2:reserve")) == 3  # its policy's 3 attempts
    record = log.load("o-2")
    assert record is not None
    assert record.status is SagaStatus.STUCK
    assert record.owner is None
    assert sagas.resume() == []  # stuck sagas wait for an operator
    again = sagas.retry("o-2")  # still failing: stuck again, the compensation is not dropped
    assert again is not None
    assert again.status is SagaStatus.STUCK
    assert ledger.calls.count(("undo", "o-2:reserve")) == 6
    assert ledger.compensations == ["charge"]

    ledger.fail_undo["reserve"] = 0
    result = sagas.retry("o-2", note="refund service back")
    assert result is not None
    assert result.status is SagaStatus.COMPENSATED
    assert ledger.compensations == ["charge", "reserve"]
    assert ledger.applied == {}
    kinds = [entry.kind for entry in log.load("o-2").entries]  # type: ignore[union-attr]
    assert EntryKind.RETRIED in kinds
    assert kinds[-1] is EntryKind.FINISHED


def test_a_stuck_saga_can_be_resolved_by_hand(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    ledger.fail["ship"] = 99
    ledger.fail_undo["charge"] = 99
    saga = make(ledger, "reserve", "charge", "ship")
    sagas = orchestrator(log, clock, saga)
    with pytest.raises(SagaFailedError):
        sagas.run(saga, saga_id="o-3")
    record = sagas.resolve("o-3", "refunded by phone")
    assert record.status is SagaStatus.RESOLVED
    assert record.entries[-1].value() == {"note": "refunded by phone"}
    with pytest.raises(SagaStateError, match="it is resolved"):
        sagas.retry("o-3")
    with pytest.raises(SagaNotFoundError):
        sagas.resolve("nope")


def test_a_step_after_the_pivot_that_keeps_failing_is_stuck_forward(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    ledger.fail["email"] = 1
    saga = Saga(
        "s",
        [
            Step("reserve", ledger.action("reserve"), ledger.undo("reserve")),
            Step("charge", ledger.action("charge"), pivot=True),
            Step("email", ledger.action("email")),
        ],
    )
    sagas = orchestrator(log, clock, saga)
    with pytest.raises(SagaFailedError) as caught:
        sagas.run(saga, saga_id="s-9")
    assert caught.value.status is SagaStatus.STUCK
    assert ledger.compensations == []  # the pivot succeeded: never undone
    result = sagas.retry("s-9")
    assert result is not None
    assert result.completed
    assert ledger.calls.count(("do", "s-9:email")) == 2


# ------------------------------------------------------------------- cancel and deadline


def test_cancel_turns_a_running_saga_back_at_its_next_boundary(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    sagas_holder: list[SagaOrchestrator] = []

    def reserve(context: StepContext) -> str:
        assert sagas_holder[0].cancel(context.saga_id) is True
        return "reserved"

    saga = Saga(
        "s",
        [
            Step("reserve", reserve, ledger.undo("reserve")),
            Step("charge", ledger.action("charge"), ledger.undo("charge")),
            Step("ship", ledger.action("ship")),
        ],
    )
    sagas = orchestrator(log, clock, saga)
    sagas_holder.append(sagas)
    ledger.applied["c-1:reserve"] = "reserved"
    with pytest.raises(SagaFailedError) as caught:
        sagas.run(saga, saga_id="c-1")
    assert caught.value.reason == "cancelled"
    assert ("do", "c-1:charge") not in ledger.calls
    assert ledger.compensations == ["reserve"]
    record = log.load("c-1")
    assert record is not None
    assert record.cancel_requested
    assert sagas.cancel("c-1") is False  # already settled
    with pytest.raises(SagaNotFoundError):
        sagas.cancel("nope")


def test_a_passed_deadline_turns_the_saga_back(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    def slow(context: StepContext) -> str:
        clock.advance(11.0)
        return ledger.action("reserve")(context)

    saga = Saga(
        "s",
        [Step("reserve", slow, ledger.undo("reserve")), Step("ship", ledger.action("ship"))],
        deadline=10.0,
    )
    with pytest.raises(SagaFailedError, match="deadline exceeded"):
        orchestrator(log, clock, saga).run(saga)
    assert ledger.compensations == ["reserve"]
    assert not any(call[0] == "do" and call[1].endswith(":ship") for call in ledger.calls)


# ----------------------------------------------------------------- crashes and resume


def test_resume_after_a_crash_runs_the_step_in_doubt_again_with_the_same_key(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    saga = make(ledger, "reserve", "charge", "ship")
    ledger.crash_in.add("charge")  # applied, then the process dies before recording it
    first = orchestrator(log, clock, saga, owner="first")
    with pytest.raises(Crash):
        first.run(saga, saga_id="r-1")
    record = log.load("r-1")
    assert record is not None
    assert record.status is SagaStatus.RUNNING
    second = orchestrator(log, clock, saga, owner="second")
    (result,) = second.resume()
    assert result.completed
    assert ledger.calls.count(("do", "r-1:charge")) == 2  # at least once...
    assert ledger.applied["r-1:charge"] == "charge"  # ...exactly one effect
    assert second.resume() == []


def test_resume_leaves_sagas_leased_by_a_live_orchestrator(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    saga = make(ledger, "reserve", "ship")
    sagas = orchestrator(log, clock, saga, owner="first", lease=30.0)
    sagas.start(saga, saga_id="s-1")
    claimed = log.claim("first", 30.0, saga_id="s-1")  # as if "first" were running it now
    assert claimed is not None
    other = orchestrator(log, clock, saga, owner="other")
    assert other.resume() == []
    with pytest.raises(SagaBusyError) as caught:
        other.run(saga, saga_id="s-1")
    assert caught.value.owner == "first"
    clock.advance(30.0)  # the lease expires on the log's clock
    (result,) = other.resume()
    assert result.completed


def test_ignore_leases_takes_over_at_once(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    saga = make(ledger, "reserve", "ship")
    sagas = orchestrator(log, clock, saga)
    sagas.start(saga, saga_id="s-1")
    assert log.claim("dead", 30.0) is not None
    (result,) = orchestrator(log, clock, saga).resume(ignore_leases=True)
    assert result.completed


def test_an_orchestrator_that_lost_its_lease_stops(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    def slow(context: StepContext) -> str:
        clock.advance(31.0)
        assert log.claim("thief", 30.0, saga_id=context.saga_id) is not None
        return "reserved"

    saga = Saga(
        "s", [Step("reserve", slow, ledger.undo("reserve")), Step("ship", ledger.action("ship"))]
    )
    with pytest.raises(SagaLeaseLostError, match="lost the lease"):
        orchestrator(log, clock, saga, lease=30.0).run(saga, saga_id="l-1")
    record = log.load("l-1")
    assert record is not None
    assert record.owner == "thief"
    assert [entry.kind for entry in record.entries] == [EntryKind.STARTED]


def test_run_with_a_settled_id_returns_its_outcome_without_running(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    saga = make(ledger, "reserve", "ship")
    sagas = orchestrator(log, clock, saga)
    first = sagas.run(saga, saga_id="same")
    calls = len(ledger.calls)
    again = sagas.run(saga, saga_id="same")
    assert again.completed
    assert dict(again.results) == dict(first.results)
    assert len(ledger.calls) == calls


def test_run_with_an_unclaimed_id_continues_it(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    saga = make(ledger, "reserve", "ship")
    sagas = orchestrator(log, clock, saga)
    assert sagas.start(saga, {"n": 1}, saga_id="x") == "x"
    with pytest.raises(SagaStateError):
        sagas.start(saga, saga_id="x")
    assert sagas.run(saga, saga_id="x").completed


def test_a_changed_definition_makes_a_resumed_saga_stuck(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    orchestrator(log, clock, make(ledger, "reserve", "ship")).start("order", saga_id="v1")
    changed = make(ledger, "reserve", "pack", "ship")
    (result,) = orchestrator(log, clock, changed).resume()
    assert result.status is SagaStatus.STUCK
    assert "now defined with" in (result.reason or "")


# ------------------------------------------------------------------------ events & api


def test_every_transition_emits_an_event(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    ledger.fail["ship"] = 99
    ledger.fail_undo["reserve"] = 99
    saga = make(ledger, "reserve", "charge", "ship")
    sagas = orchestrator(log, clock, saga, name="shop")
    events: list[Event] = []
    sagas.events.subscribe(events.append)
    with pytest.raises(SagaFailedError):
        sagas.run(saga, saga_id="e-1")
    kinds = [type(event) for event in events]
    assert kinds == [
        SagaStarted,
        SagaStepStarted,
        SagaStepCompleted,
        SagaStepStarted,
        SagaStepCompleted,
        SagaStepStarted,
        SagaStepFailed,
        SagaCompensating,
        SagaStepCompensated,
        SagaStepCompensationFailed,
        SagaStuck,
    ]
    assert all(event.source == "shop" for event in events)
    ledger.fail_undo["reserve"] = 0
    events.clear()
    sagas.retry("e-1")
    assert [type(event) for event in events][-2:] == [SagaStepCompensated, SagaCompensated]
    assert SagaResumed in [type(event) for event in events]
    events.clear()
    ok = make(ledger, "a", "b")
    sagas.register(Saga("ok", list(ok.steps.values())))
    sagas.run("ok")
    assert isinstance(events[-1], SagaCompleted)


def test_registration_rules(log: MemorySagaLog, clock: ManualClock) -> None:
    async def coroutine(context: StepContext) -> None:
        return None

    sagas = orchestrator(log, clock)
    with pytest.raises(ConfigurationError, match="AsyncSagaOrchestrator"):
        sagas.register(Saga("a", Step("x", coroutine)))
    with pytest.raises(ConfigurationError, match="cannot share a transaction"):
        sagas.register(Saga("l", Step("x", lambda c: None, local=True)))
    sagas.register(Saga("dup", Step("x", lambda c: None)))
    with pytest.raises(ConfigurationError, match="already registered"):
        sagas.register(Saga("dup", Step("x", lambda c: None)))
    with pytest.raises(ConfigurationError, match="no saga named 'nope'"):
        sagas.run("nope")
    for bad in ({"lease": 0}, {"max_workers": 0}, {"owner": ""}, {"name": ""}):
        with pytest.raises(ConfigurationError):
            SagaOrchestrator(log, clock=clock, **bad)  # type: ignore[arg-type]


def test_list_filters_by_status_and_name(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    ok = make(ledger, "a", "b")
    sagas = orchestrator(log, clock, ok)
    sagas.run(ok, saga_id="1")
    clock.advance(1)
    sagas.start(ok, saga_id="2")
    assert [record.id for record in sagas.list()] == ["2", "1"]
    assert [record.id for record in sagas.list(status=SagaStatus.RUNNING)] == ["2"]
    assert sagas.list(name="other") == []
    assert sagas.list(limit=1)[0].id == "2"
    with pytest.raises(SagaNotFoundError):
        sagas.status("3")


def test_a_retry_error_from_a_step_policy_names_the_last_error(
    ledger: Ledger, log: MemorySagaLog, clock: ManualClock
) -> None:
    ledger.fail["b"] = 99
    saga = Saga(
        "s",
        [
            Step("a", ledger.action("a"), ledger.undo("a")),
            Step("b", ledger.action("b"), policy=Retry(2, wait=0, clock=clock)),
        ],
    )
    with pytest.raises(SagaFailedError) as caught:
        orchestrator(log, clock, saga).run(saga)
    assert RetryError.__name__ in (caught.value.reason or "")
    assert "RuntimeError: b refused" in (caught.value.reason or "")
