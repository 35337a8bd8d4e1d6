"""The two-phase coordinator over memory participants: outcomes, crashes, recovery, events."""

from __future__ import annotations

from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError, EngineError
from seawall.resilience import constant
from seawall.workflows.two_phase import (
    AsyncTwoPhaseCoordinator,
    Decision,
    MemoryDecisionLog,
    MemoryParticipant,
    ParticipantState,
    TransactionAbortedError,
    TwoPhaseAcknowledged,
    TwoPhaseCompleted,
    TwoPhaseCoordinator,
    TwoPhaseDecided,
    TwoPhaseDeliveryFailed,
    TwoPhaseEvent,
    TwoPhaseRecovered,
    TwoPhaseStarted,
    TwoPhaseVoted,
    Vote,
    resolve_in_doubt,
)


class Crash(BaseException):
    """Stands for kill -9 of the coordinator at that point."""


class Faulty(MemoryParticipant):
    """A memory participant whose calls can fail or crash the coordinator on demand."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.fail_commit = 0
        self.crash_on: str | None = None
        self.calls: list[tuple[str, str]] = []

    def prepare(self, txid: str, work: Any = None) -> Vote:
        self.calls.append(("prepare", txid))
        vote = super().prepare(txid, work)
        if self.crash_on == "prepared":
            raise Crash
        return vote

    def commit(self, txid: str) -> None:
        self.calls.append(("commit", txid))
        if self.crash_on == "commit":
            raise Crash
        if self.fail_commit:
            self.fail_commit -= 1
            raise ConnectionError("participant unreachable")
        super().commit(txid)


def _coordinator(
    clock: ManualClock, log: MemoryDecisionLog, *participants: MemoryParticipant
) -> TwoPhaseCoordinator:
    return TwoPhaseCoordinator(
        log, participants, name="shop", clock=clock, retry_wait=constant(1.0), delivery_timeout=5
    )


def test_all_yes_commits_everywhere_and_the_decision_is_logged(clock: ManualClock) -> None:
    log = MemoryDecisionLog()
    a, b = MemoryParticipant("a"), MemoryParticipant("b")
    result = _coordinator(clock, log, a, b).run({a: {"x": 1}, "b": {"y": 2}}, key="order-1")
    assert result.committed
    assert result.txid == "shop:order-1"
    assert dict(result.votes) == {"a": Vote.YES, "b": Vote.YES}
    assert a.data == {"x": 1}
    assert b.data == {"y": 2}
    record = log.load("shop:order-1")
    assert record is not None
    assert record.decision is Decision.COMMIT
    assert record.completed
    assert record.participants == ("a", "b")


def test_a_failed_prepare_aborts_everything_and_raises_with_the_cause(clock: ManualClock) -> None:
    log = MemoryDecisionLog()
    a, b = MemoryParticipant("a"), MemoryParticipant("b")

    def broken(data: Any) -> dict[str, int]:
        raise ValueError("out of stock")

    coordinator = _coordinator(clock, log, a, b)
    with pytest.raises(TransactionAbortedError) as caught:
        coordinator.run({a: {"x": 1}, b: broken})
    error = caught.value
    assert error.participant == "b"
    assert "out of stock" in error.reason
    assert isinstance(error.__cause__, ValueError)
    assert error.result is not None
    assert error.result.decision is Decision.ABORT
    assert a.data == {}
    assert a.in_doubt() == []
    assert log.load(error.txid) is None  # presumed abort: nothing logged


def test_a_no_vote_stops_phase_one_and_aborts(clock: ManualClock) -> None:
    a, b, c = MemoryParticipant("a"), MemoryParticipant("b"), Faulty("c")
    coordinator = _coordinator(clock, MemoryDecisionLog(), a, b, c)
    coordinator.run({a: {"k": 1}}, key="holder")
    b.prepare("other", {"k": 1})  # b's key k is locked by another transaction
    with pytest.raises(TransactionAbortedError) as caught:
        coordinator.run({a: {"z": 1}, b: {"k": 2}, c: {"w": 1}})
    assert caught.value.reason == "voted no"
    assert c.calls == []  # never asked
    assert a.in_doubt() == []
    assert a.data == {"k": 1}


def test_phase_two_is_retried_with_backoff_on_the_clock(clock: ManualClock) -> None:
    a, b = MemoryParticipant("a"), Faulty("b")
    b.fail_commit = 2
    events: list[TwoPhaseEvent] = []
    coordinator = _coordinator(clock, MemoryDecisionLog(), a, b)
    coordinator.events.subscribe(events.append)
    result = coordinator.run({a: {"x": 1}, b: {"y": 1}})
    assert result.committed
    assert result.unacknowledged == ()
    assert b.data == {"y": 1}
    assert clock.sleeps == [1.0, 1.0]
    failed = [event for event in events if isinstance(event, TwoPhaseDeliveryFailed)]
    assert [event.attempt for event in failed] == [1, 2]
    kinds = [type(event) for event in events]
    assert kinds[0] is TwoPhaseStarted
    assert kinds[-1] is TwoPhaseCompleted
    assert kinds.count(TwoPhaseVoted) == 2
    assert kinds.count(TwoPhaseDecided) == 1
    assert kinds.count(TwoPhaseAcknowledged) == 2


def test_an_unreachable_participant_is_left_to_recover(clock: ManualClock) -> None:
    log = MemoryDecisionLog()
    a, b = MemoryParticipant("a"), Faulty("b")
    b.fail_commit = 100
    coordinator = _coordinator(clock, log, a, b)
    result = coordinator.run({a: {"x": 1}, b: {"y": 1}}, key="t")
    assert result.committed
    assert result.unacknowledged == ("b",)
    assert b.status("shop:t") is ParticipantState.PREPARED
    assert [r.txid for r in log.pending("shop")] == ["shop:t"]
    b.fail_commit = 0
    recovered = coordinator.recover()
    assert [(r.txid, r.decision, r.unacknowledged) for r in recovered] == [
        ("shop:t", Decision.COMMIT, ())
    ]
    assert b.data == {"y": 1}
    assert log.pending("shop") == []


def test_a_crash_between_the_phases_is_finished_by_a_new_coordinator(clock: ManualClock) -> None:
    log = MemoryDecisionLog()
    a, b = Faulty("a"), MemoryParticipant("b")
    a.crash_on = "commit"
    with pytest.raises(Crash):
        _coordinator(clock, log, a, b).run({a: {"x": 1}, b: {"y": 1}}, key="t")
    assert log.decision("shop:t") is Decision.COMMIT
    assert a.in_doubt() == ["shop:t"]
    assert b.in_doubt() == ["shop:t"]
    a.crash_on = None
    events: list[TwoPhaseEvent] = []
    restarted = _coordinator(clock, log, a, b)
    restarted.events.subscribe(events.append)
    recovered = restarted.recover()
    assert [r.decision for r in recovered] == [Decision.COMMIT]
    assert a.data == {"x": 1}
    assert b.data == {"y": 1}
    assert any(isinstance(event, TwoPhaseRecovered) for event in events)
    # run() with the same key now returns the recorded outcome without redoing the work
    again = restarted.run({a: {"x": 2}, b: {"y": 2}}, key="t")
    assert again.committed
    assert a.data == {"x": 1}


def test_a_crash_before_the_decision_is_aborted_by_recovery(clock: ManualClock) -> None:
    log = MemoryDecisionLog()
    a, b = MemoryParticipant("a"), Faulty("b")
    b.crash_on = "prepared"
    with pytest.raises(Crash):
        _coordinator(clock, log, a, b).run({a: {"x": 1}, b: {"y": 1}}, key="t")
    assert a.in_doubt() == ["shop:t"]
    assert b.in_doubt() == ["shop:t"]
    b.crash_on = None
    recovered = _coordinator(clock, log, a, b).recover()
    assert [(r.txid, r.decision) for r in recovered] == [("shop:t", Decision.ABORT)]
    assert a.data == {}
    assert b.data == {}
    assert a.in_doubt() == b.in_doubt() == []
    # the abort is recorded first, so a coordinator still deciding cannot commit it
    assert log.decision("shop:t") is Decision.ABORT


def test_a_log_failure_while_deciding_leaves_the_outcome_to_recovery(clock: ManualClock) -> None:
    class BrokenLog(MemoryDecisionLog):
        def decide(self, txid: str, decision: Decision, **options: Any) -> Decision:
            raise EngineError("log unreachable")

    a, b = MemoryParticipant("a"), MemoryParticipant("b")
    with pytest.raises(EngineError):
        _coordinator(clock, BrokenLog(), a, b).run({a: {"x": 1}, b: {"y": 1}}, key="t")
    assert a.in_doubt() == ["shop:t"]  # not aborted: the commit may have been written
    recovered = _coordinator(clock, MemoryDecisionLog(), a, b).recover()
    assert [r.decision for r in recovered] == [Decision.ABORT]
    assert a.data == {}


def test_recovery_leaves_other_coordinators_prepared_work_alone(clock: ManualClock) -> None:
    a = MemoryParticipant("a")
    a.prepare("other:t", {"x": 1})
    assert _coordinator(clock, MemoryDecisionLog(), a).recover() == []
    assert a.in_doubt() == ["other:t"]


def test_an_abort_recorded_first_wins_over_the_coordinators_commit(clock: ManualClock) -> None:
    log = MemoryDecisionLog()
    a = MemoryParticipant("a")
    log.decide("shop:t", Decision.ABORT, coordinator="shop", participants=["a"])
    with pytest.raises(TransactionAbortedError, match="abort is recorded in the decision log"):
        _coordinator(clock, log, a).run({a: {"x": 1}}, key="t")
    assert a.data == {}
    assert a.in_doubt() == []


def test_participants_settle_in_doubt_work_by_asking_the_log() -> None:
    log = MemoryDecisionLog()
    a = MemoryParticipant("a")
    a.prepare("shop:committed", {"x": 1})
    a.prepare("shop:undecided", {"y": 1})
    log.decide("shop:committed", Decision.COMMIT, coordinator="shop", participants=["a"])
    assert resolve_in_doubt(a, log) == {"shop:committed": Decision.COMMIT, "shop:undecided": None}
    assert a.data == {"x": 1}
    assert a.in_doubt() == ["shop:undecided"]
    assert resolve_in_doubt(a, log, force_abort=True) == {"shop:undecided": Decision.ABORT}
    assert a.in_doubt() == []
    assert log.decision("shop:undecided") is Decision.ABORT


def test_the_blocking_case_without_the_coordinator_nobody_may_decide(clock: ManualClock) -> None:
    log = MemoryDecisionLog()
    a, b = MemoryParticipant("a"), Faulty("b")
    b.crash_on = "prepared"
    with pytest.raises(Crash):  # the coordinator is gone for good after phase one
        _coordinator(clock, log, a, b).run({a: {"x": 1}, b: {"x": 1}}, key="t")
    # without its log, the participants can only wait: the key stays locked
    assert resolve_in_doubt(a, MemoryDecisionLog()) == {"shop:t": None}
    assert a.status("shop:t") is ParticipantState.PREPARED
    assert a.prepare("shop:next", {"x": 2}) is Vote.NO


def test_read_only_work_commits_without_a_log_record(clock: ManualClock) -> None:
    log = MemoryDecisionLog()
    a = MemoryParticipant("a")
    result = _coordinator(clock, log, a).run({a: {}}, key="ro")
    assert result.committed
    assert dict(result.votes) == {"a": Vote.READ_ONLY}
    assert log.load("shop:ro") is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"participants": []}, "at least one participant"),
        ({"name": "bad name"}, "name='bad name' is invalid"),
        ({"delivery_timeout": -1}, "delivery_timeout=-1 is invalid"),
        ({"retry_wait": 1.0}, "not a wait strategy"),
        ({"participants": [MemoryParticipant("a"), MemoryParticipant("a")]}, "two participants"),
        ({"participants": [object()]}, "is not a two-phase participant"),
    ],
)
def test_bad_configuration_is_refused_naming_the_fix(
    arguments: dict[str, Any], message: str
) -> None:
    options: dict[str, Any] = {"participants": [MemoryParticipant("a")], **arguments}
    with pytest.raises(ConfigurationError, match=message):
        TwoPhaseCoordinator(MemoryDecisionLog(), options.pop("participants"), **options)


def test_bad_run_arguments_are_refused(clock: ManualClock) -> None:
    a = MemoryParticipant("a")
    coordinator = _coordinator(clock, MemoryDecisionLog(), a)
    with pytest.raises(ConfigurationError, match="not a participant"):
        coordinator.run({"b": {}})
    with pytest.raises(ConfigurationError, match="not a participant"):
        coordinator.run({MemoryParticipant("a"): {}})  # same name, another object
    with pytest.raises(ConfigurationError, match="non-empty mapping"):
        coordinator.run({})
    with pytest.raises(ConfigurationError, match="key="):
        coordinator.run({a: {}}, key="no spaces")


def test_a_url_opens_the_log() -> None:
    coordinator = TwoPhaseCoordinator("memory://", [MemoryParticipant("a")])
    assert isinstance(coordinator.log, MemoryDecisionLog)
    assert coordinator.outcome("coordinator:none") is None


async def test_the_async_coordinator_commits_aborts_and_recovers(clock: ManualClock) -> None:
    log = MemoryDecisionLog()
    a, b = Faulty("a"), MemoryParticipant("b")
    coordinator = AsyncTwoPhaseCoordinator(
        log, [a, b], name="shop", clock=clock, retry_wait=constant(1.0), delivery_timeout=5
    )
    result = await coordinator.run({a: {"x": 1}, b: {"y": 1}}, key="one")
    assert result.committed
    assert a.data == {"x": 1}
    with pytest.raises(TransactionAbortedError):
        await coordinator.run({a: {"x": 2}, b: lambda data: 1 / 0})
    assert a.data == {"x": 1}
    assert a.in_doubt() == []
    a.fail_commit = 100
    left = await coordinator.run({a: {"x": 3}, b: {"y": 3}}, key="three")
    assert left.unacknowledged == ("a",)
    a.fail_commit = 0
    recovered = await coordinator.recover()
    assert [r.txid for r in recovered] == ["shop:three"]
    assert a.data == {"x": 3}
    again = await coordinator.run({a: {"x": 4}}, key="one")
    assert again.committed
    assert a.data == {"x": 3}
