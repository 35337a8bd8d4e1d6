"""The relay's sans-I/O decisions: idle pauses and the walk through a claimed batch."""

from __future__ import annotations

import importlib

import pytest

from seawall.messaging.outbox import BatchPlan, Failure, IdleSchedule, OutboxMessage
from seawall.messaging.outbox._model import NO_HEADERS
from seawall.resilience import constant, exponential


def message(position: int, key: str | None, attempts: int = 1) -> OutboxMessage:
    return OutboxMessage(f"m{position}", "t", key, position, NO_HEADERS, position, 0.0, attempts)


def test_idle_pauses_double_up_to_the_cap_and_reset() -> None:
    schedule = IdleSchedule(0.01, 0.05)
    assert [schedule.pause() for _ in range(5)] == [0.01, 0.02, 0.04, 0.05, 0.05]
    schedule.reset()
    assert schedule.pause() == 0.01


def test_idle_first_pause_never_exceeds_the_cap() -> None:
    assert IdleSchedule(2.0, 0.5).pause() == 0.5


def test_a_failed_key_holds_back_its_later_messages_only() -> None:
    batch = [message(1, "a"), message(2, "b"), message(3, "a"), message(4, None), message(5, "b")]
    plan = BatchPlan(batch, now=0.0, lease=30.0, backoff=constant(5.0), max_attempts=None)
    published = []
    for item in plan:
        if item.position == 1:
            assert plan.failed(item) == Failure(5.0, False)
        else:
            plan.published(item)
            published.append(item.position)
    assert published == [2, 4, 5]
    assert [m.position for m in plan.sent] == [2, 4, 5]
    assert [m.position for m in plan.held_back] == [3]
    assert plan.unsettled() == []


def test_unkeyed_failures_block_nothing() -> None:
    plan = BatchPlan(
        [message(1, None), message(2, None)],
        now=0.0,
        lease=30.0,
        backoff=constant(1.0),
        max_attempts=None,
    )
    walked = []
    for item in plan:
        walked.append(item.position)
        plan.failed(item)
    assert walked == [1, 2]
    assert plan.held_back == []


def test_backoff_grows_with_the_attempts_and_max_attempts_sets_aside() -> None:
    plan = BatchPlan(
        [message(1, "a", attempts=1), message(2, "b", attempts=3), message(3, "c", attempts=4)],
        now=0.0,
        lease=30.0,
        backoff=exponential(1.0),
        max_attempts=4,
    )
    failures = [plan.failed(item) for item in plan]
    assert failures == [Failure(1.0, False), Failure(4.0, False), Failure(0.0, True)]


def test_leases_are_renewed_after_half_of_them_passed() -> None:
    batch = [message(1, "a"), message(2, "b"), message(3, "c")]
    plan = BatchPlan(batch, now=100.0, lease=10.0, backoff=constant(1.0), max_attempts=None)
    assert not plan.renewal_due(104.9)
    assert plan.renewal_due(105.0)
    iterator = iter(plan)
    plan.published(next(iterator))
    assert plan.unsettled() == [2, 3]
    plan.renewed(105.0)
    assert not plan.renewal_due(109.0)
    assert plan.renewal_due(110.0)


def test_a_message_set_aside_does_not_hold_back_its_key() -> None:
    batch = [message(1, "a", attempts=3), message(2, "a")]
    plan = BatchPlan(batch, now=0.0, lease=30.0, backoff=constant(1.0), max_attempts=3)
    walked = []
    for item in plan:
        walked.append(item.position)
        if item.position == 1:
            assert plan.failed(item).dead
        else:
            plan.published(item)
    assert walked == [1, 2]


@pytest.mark.parametrize("module_name", ["seawall.messaging.outbox", "seawall.messaging.inbox"])
def test_the_public_surface_is_sorted_and_importable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__ == sorted(module.__all__, key=isort_order)
    for name in module.__all__:
        assert getattr(module, name) is not None
    public = {name for name in vars(module) if not name.startswith("_")}
    assert set(module.__all__) <= public


def isort_order(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions (how ``__all__`` is kept)."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)
