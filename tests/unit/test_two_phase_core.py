"""The sans-I/O two-phase driver: which action follows which outcome, with explicit time."""

from __future__ import annotations

from seawall.resilience import constant
from seawall.workflows.two_phase import Decision, Vote
from seawall.workflows.two_phase._core import (
    Complete,
    Deliver,
    Finished,
    Pause,
    Prepare,
    Record,
    TwoPhaseDriver,
)


def _driver(timeout: float = 10.0) -> TwoPhaseDriver:
    return TwoPhaseDriver("c:1", ("a", "b"), retry_wait=constant(1.0), delivery_timeout=timeout)


def test_all_yes_records_the_commit_before_telling_anyone_then_completes() -> None:
    driver = _driver()
    assert driver.next_action(0.0) == Prepare(("a", "b"))
    driver.voted([("a", Vote.YES, None), ("b", Vote.YES, None)])
    assert driver.next_action(0.0) == Record(Decision.COMMIT, ("a", "b"))
    driver.recorded(Decision.COMMIT)
    assert driver.next_action(0.0) == Deliver(Decision.COMMIT, ("a", "b"), 1)
    driver.delivered([("a", None), ("b", None)])
    assert driver.next_action(0.0) == Complete()
    driver.completed()
    finished = driver.next_action(0.0)
    assert isinstance(finished, Finished)
    assert finished.result.committed
    assert finished.result.unacknowledged == ()


def test_a_no_vote_aborts_without_a_log_record_and_tells_only_who_may_be_prepared() -> None:
    driver = _driver()
    driver.next_action(0.0)
    driver.voted([("a", Vote.YES, None), ("b", Vote.NO, None)])
    assert driver.decision is Decision.ABORT
    assert driver.next_action(0.0) == Deliver(Decision.ABORT, ("a",), 1)
    driver.delivered([("a", None)])
    finished = driver.next_action(0.0)
    assert isinstance(finished, Finished)
    assert finished.result.decision is Decision.ABORT
    assert finished.result.reason == "voted no"


def test_a_failed_prepare_is_told_to_abort_since_it_may_have_prepared() -> None:
    driver = _driver()
    driver.next_action(0.0)
    driver.voted([("a", None, "boom")])  # b was never asked
    assert driver.next_action(0.0) == Deliver(Decision.ABORT, ("a",), 1)
    driver.delivered([("a", None)])
    finished = driver.next_action(0.0)
    assert isinstance(finished, Finished)
    assert finished.result.reason == "boom"
    assert dict(finished.result.votes) == {"a": None, "b": None}


def test_read_only_voters_are_left_out_of_the_second_phase() -> None:
    driver = _driver()
    driver.next_action(0.0)
    driver.voted([("a", Vote.READ_ONLY, None), ("b", Vote.YES, None)])
    assert driver.next_action(0.0) == Record(Decision.COMMIT, ("b",))
    driver.recorded(Decision.COMMIT)
    assert driver.next_action(0.0) == Deliver(Decision.COMMIT, ("b",), 1)


def test_all_read_only_commits_with_no_record_and_no_delivery() -> None:
    driver = _driver()
    driver.next_action(0.0)
    driver.voted([("a", Vote.READ_ONLY, None), ("b", Vote.READ_ONLY, None)])
    finished = driver.next_action(0.0)
    assert isinstance(finished, Finished)
    assert finished.result.committed


def test_the_log_wins_an_abort_recorded_first_is_obeyed() -> None:
    driver = _driver()
    driver.next_action(0.0)
    driver.voted([("a", Vote.YES, None), ("b", Vote.YES, None)])
    driver.next_action(0.0)
    driver.recorded(Decision.ABORT)
    assert driver.next_action(0.0) == Deliver(Decision.ABORT, ("a", "b"), 1)


def test_delivery_retries_with_backoff_until_the_deadline_then_leaves_the_rest() -> None:
    driver = _driver(timeout=2.5)
    driver.next_action(0.0)
    driver.voted([("a", Vote.YES, None), ("b", Vote.YES, None)])
    driver.next_action(0.0)
    driver.recorded(Decision.COMMIT)
    assert driver.next_action(0.0) == Deliver(Decision.COMMIT, ("a", "b"), 1)
    driver.delivered([("a", None), ("b", "down")])
    assert driver.next_action(0.0) == Pause(1.0)
    assert driver.next_action(1.0) == Deliver(Decision.COMMIT, ("b",), 2)
    driver.delivered([("b", "down")])
    assert driver.next_action(1.0) == Pause(1.0)
    assert driver.next_action(2.0) == Deliver(Decision.COMMIT, ("b",), 3)
    driver.delivered([("b", "down")])
    assert driver.next_action(2.0) == Pause(0.5)  # capped at the deadline
    assert driver.next_action(2.5) == Deliver(Decision.COMMIT, ("b",), 4)
    driver.delivered([("b", "down")])
    finished = driver.next_action(2.5)
    assert isinstance(finished, Finished)
    assert finished.result.committed
    assert finished.result.unacknowledged == ("b",)


def test_a_recovery_driver_only_delivers_and_completes() -> None:
    driver = TwoPhaseDriver.delivering(
        "c:2",
        Decision.COMMIT,
        ("a",),
        retry_wait=constant(1.0),
        delivery_timeout=1.0,
        recorded=True,
    )
    assert driver.next_action(0.0) == Deliver(Decision.COMMIT, ("a",), 1)
    driver.delivered([("a", None)])
    assert driver.next_action(0.0) == Complete()
