"""Retry: stop conditions, waits, retry_after hints, budget, events and the three ways to use it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.errors import (
    ConfigurationError,
    RateLimitedError,
    RetryError,
    SeawallError,
)
from seawall.events import Event, hub
from seawall.resilience._backoff import constant, decorrelated, exponential, linear
from seawall.resilience._budget import RetryBudget
from seawall.resilience._retry import (
    ATTEMPTS_EXHAUSTED,
    BUDGET_EXHAUSTED,
    DEADLINE_REACHED,
    RETRY_AFTER_BEYOND_DEADLINE,
    RETRY_AFTER_BEYOND_TIMEOUT,
    TIMEOUT_REACHED,
    Retry,
    RetryBudgetExhausted,
    RetryGaveUp,
    RetryScheduled,
    RetrySucceeded,
    parse_retry_after,
    retry_testing,
)


class Flaky:
    """A callable that raises the queued errors (or returns queued values), then returns ``done``.

    Each call takes ``duration`` seconds of manual time.
    """

    def __init__(self, clock: ManualClock, *outcomes: object, duration: float = 0.0) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.duration = duration
        self.calls = 0
        self.started: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.started.append(self.clock.now())
        self.clock.advance(self.duration)
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return ("done", args, kwargs)

    async def coroutine(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return self(*args, **kwargs)


class HintedError(Exception):
    """A user's HTTP error carrying a Retry-After hint."""

    def __init__(self, retry_after: object) -> None:
        super().__init__(f"429, retry after {retry_after!r}")
        self.retry_after = retry_after


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """Every event emitted anywhere while the test runs."""
    seen: list[Event] = []
    unsubscribe = hub.subscribe(seen.append)
    yield seen
    unsubscribe()


def policy(clock: ManualClock, **options: Any) -> Retry:
    options.setdefault("wait", constant(1.0))
    return Retry(clock=clock, name="payments", **options)


# --------------------------------------------------------------------------- success


def test_success_returns_at_once_without_waiting_or_events(
    clock: ManualClock, events: list[Event]
) -> None:
    work = Flaky(clock)
    assert policy(clock, attempts=3).call(work, 1, key="k") == ("done", (1,), {"key": "k"})
    assert work.calls == 1
    assert clock.sleeps == []
    assert events == []


def test_retries_until_success_waiting_the_schedule(
    clock: ManualClock, events: list[Event]
) -> None:
    work = Flaky(clock, ConnectionError("a"), ConnectionError("b"), duration=0.5)
    retry = policy(clock, attempts=4, wait=linear(1.0))
    assert retry.call(work)[0] == "done"
    assert work.calls == 3
    assert clock.sleeps == [1.0, 2.0]
    assert work.started == [1000.0, 1001.5, 1004.0]
    scheduled = [event for event in events if isinstance(event, RetryScheduled)]
    assert [(e.attempt, e.wait, str(e.exception)) for e in scheduled] == [
        (1, 1.0, "a"),
        (2, 2.0, "b"),
    ]
    assert all(event.source == "payments" for event in events)
    assert events[-1] == RetrySucceeded("payments", attempts=3)


# -------------------------------------------------------------------------- giving up


def test_gives_up_after_attempts_with_every_attempt_recorded(
    clock: ManualClock, events: list[Event]
) -> None:
    errors = [ConnectionError(f"down {n}") for n in range(3)]
    work = Flaky(clock, *errors, duration=0.25)
    with pytest.raises(RetryError) as info:
        policy(clock, attempts=3).call(work)
    error = info.value
    assert work.calls == 3
    assert error.reason == ATTEMPTS_EXHAUSTED
    assert error.policy == "payments"
    assert error.__cause__ is errors[-1]
    assert [attempt.number for attempt in error.attempts] == [1, 2, 3]
    assert [attempt.exception for attempt in error.attempts] == errors
    assert [attempt.started for attempt in error.attempts] == [1000.0, 1001.25, 1002.5]
    assert [attempt.duration for attempt in error.attempts] == [0.25, 0.25, 0.25]
    assert all(attempt.failed for attempt in error.attempts)
    assert clock.sleeps == [1.0, 1.0]  # no wait after the last attempt
    assert "gave up after 3 attempt(s) (attempts exhausted)" in str(error)
    assert "ConnectionError: down 2" in str(error)
    assert events[-1] == RetryGaveUp("payments", 3, ATTEMPTS_EXHAUSTED, errors[-1])


def test_reraise_raises_the_last_exception_itself(clock: ManualClock) -> None:
    last = TimeoutError("slow")
    work = Flaky(clock, ConnectionError("x"), last)
    with pytest.raises(TimeoutError) as info:
        policy(clock, attempts=2, reraise=True).call(work)
    assert info.value is last


def test_one_attempt_means_no_retry(clock: ManualClock) -> None:
    work = Flaky(clock, ConnectionError("x"))
    with pytest.raises(RetryError):
        policy(clock, attempts=1).call(work)
    assert work.calls == 1
    assert clock.sleeps == []


def test_unlimited_attempts_stop_at_the_timeout(clock: ManualClock) -> None:
    work = Flaky(clock, *[OSError()] * 1000)
    with pytest.raises(RetryError) as info:
        policy(clock, attempts=None, timeout=10.0).call(work)
    assert info.value.reason == TIMEOUT_REACHED
    assert work.calls == 10  # at 1000, 1001, ..., 1009; waiting to 1010 would reach the timeout


# ------------------------------------------------------------------- what is retried


def test_unmatched_exceptions_propagate_at_once(clock: ManualClock) -> None:
    work = Flaky(clock, ValueError("bug"))
    with pytest.raises(ValueError, match="bug"):
        policy(clock, on=(ConnectionError, TimeoutError)).call(work)
    assert work.calls == 1


def test_unmatched_exception_on_a_later_attempt_propagates_unwrapped(clock: ManualClock) -> None:
    work = Flaky(clock, ConnectionError(), KeyError("k"))
    with pytest.raises(KeyError) as info:
        policy(clock, on=ConnectionError).call(work)
    assert work.calls == 2
    assert info.value.__context__ is None  # not chained to the earlier, retried failure


def test_subclasses_of_listed_types_match(clock: ManualClock) -> None:
    work = Flaky(clock, ConnectionResetError())
    assert policy(clock, on=ConnectionError).call(work)[0] == "done"


def test_predicate_decides_what_is_retried(clock: ManualClock) -> None:
    def transient(exception: Exception) -> bool:
        return "transient" in str(exception)

    work = Flaky(clock, RuntimeError("transient glitch"), RuntimeError("fatal"))
    with pytest.raises(RuntimeError, match="fatal"):
        policy(clock, on=transient).call(work)
    assert work.calls == 2


@pytest.mark.parametrize("signal", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
def test_base_exceptions_are_never_retried(clock: ManualClock, signal: BaseException) -> None:
    work = Flaky(clock, signal)
    with pytest.raises(type(signal)):
        policy(clock, on=BaseException).call(work)
    assert work.calls == 1


def test_retry_on_results(clock: ManualClock, events: list[Event]) -> None:
    work = Flaky(clock, None, None, "value")
    assert policy(clock, on_result=lambda result: result is None).call(work) == "value"
    assert work.calls == 3
    scheduled = [event for event in events if isinstance(event, RetryScheduled)]
    assert [(event.exception, event.result) for event in scheduled] == [(None, None)] * 2


def test_retry_on_results_gives_up_with_the_last_result(clock: ManualClock) -> None:
    work = Flaky(clock, "busy", "busy", "still busy")
    with pytest.raises(RetryError) as info:
        policy(clock, attempts=3, on_result=lambda r: "busy" in r, reraise=True).call(work)
    error = info.value
    assert error.__cause__ is None
    assert error.last is not None
    assert error.last.result == "still busy"
    assert not error.last.failed
    assert "last result: 'still busy'" in str(error)


def test_mixed_exceptions_and_results(clock: ManualClock) -> None:
    work = Flaky(clock, OSError(), "retry-me", "ok")
    assert policy(clock, attempts=3, on_result=lambda r: r == "retry-me").call(work) == "ok"


# -------------------------------------------------------------------- time limits


def test_timeout_gives_up_instead_of_sleeping_past_it(clock: ManualClock) -> None:
    work = Flaky(clock, *[OSError()] * 10, duration=1.0)
    with pytest.raises(RetryError) as info:
        policy(clock, attempts=10, wait=constant(2.0), timeout=7.0).call(work)
    # attempts at 1000 (ends 1001), 1003 (ends 1004), 1006 (ends 1007, past the timeout)
    assert work.started == [1000.0, 1003.0, 1006.0]
    assert info.value.reason == TIMEOUT_REACHED
    assert clock.now() == 1007.0


def test_timeout_counts_from_the_first_attempt_of_each_call(clock: ManualClock) -> None:
    retry = policy(clock, attempts=10, wait=constant(2.0), timeout=5.0)
    clock.advance(100.0)
    work = Flaky(clock, OSError(), OSError(), OSError())
    with pytest.raises(RetryError):
        retry.call(work)
    assert work.calls == 3  # 1100, 1102, 1104; a wait to 1106 passes 1105


def test_deadline_is_an_absolute_clock_time(clock: ManualClock) -> None:
    work = Flaky(clock, *[OSError()] * 10)
    with pytest.raises(RetryError) as info:
        policy(clock, attempts=10, wait=constant(1.0), deadline=1002.5).call(work)
    assert work.started == [1000.0, 1001.0, 1002.0]
    assert info.value.reason == DEADLINE_REACHED


def test_replace_gives_a_per_request_deadline_sharing_budget_and_events(
    clock: ManualClock,
) -> None:
    budget = RetryBudget()
    retry = policy(clock, attempts=5, budget=budget)
    bounded = retry.replace(deadline=clock.now() + 1.5)
    assert bounded.deadline == 1001.5
    assert bounded.budget is budget
    assert bounded.events is retry.events
    assert bounded.attempts == 5
    assert retry.deadline is None
    with pytest.raises(ConfigurationError, match="unknown option"):
        retry.replace(tries=3)


# ---------------------------------------------------------------- retry_after hints


def test_retry_after_hint_lengthens_the_wait(clock: ManualClock) -> None:
    work = Flaky(clock, HintedError(5.0), HintedError(0.5))
    policy(clock, wait=constant(1.0)).call(work)
    assert clock.sleeps == [5.0, 1.0]  # at least the hint, never shorter than the schedule


def test_rejected_errors_carry_a_hint_that_is_honoured(clock: ManualClock) -> None:
    work = Flaky(clock, RateLimitedError("api", "user-1", retry_after=3.0))
    policy(clock, wait=constant(0.1), on=SeawallError).call(work)
    assert clock.sleeps == [3.0]


def test_hint_is_capped_by_max_retry_after(clock: ManualClock) -> None:
    work = Flaky(clock, HintedError(3600.0))
    policy(clock, max_retry_after=30.0).call(work)
    assert clock.sleeps == [30.0]


def test_hint_can_be_ignored(clock: ManualClock) -> None:
    work = Flaky(clock, HintedError(30.0))
    policy(clock, respect_retry_after=False).call(work)
    assert clock.sleeps == [1.0]


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("7", 7.0),
        (b"2", 2.0),
        (None, 1.0),
        ("soon", 1.0),
        (True, 1.0),
        (float("nan"), 1.0),
        (-3.0, 1.0),
        (object(), 1.0),
    ],
)
def test_hint_forms(clock: ManualClock, hint: object, expected: float) -> None:
    work = Flaky(clock, HintedError(hint))
    policy(clock).call(work)
    assert clock.sleeps == [expected]


def test_decorrelated_grows_from_its_own_previous_wait_not_the_hint(clock: ManualClock) -> None:
    expected = decorrelated(0.5, cap=60.0, random=9)
    previous, schedule = 0.0, []
    for retry in range(1, 4):
        previous = expected.next_wait(retry, previous)
        schedule.append(previous)
    work = Flaky(clock, OSError(), HintedError(30.0), OSError())
    policy(clock, attempts=4, wait=decorrelated(0.5, cap=60.0, random=9)).call(work)
    assert clock.sleeps == [schedule[0], 30.0, schedule[2]]


def test_hint_as_timedelta(clock: ManualClock) -> None:
    from datetime import timedelta

    policy(clock).call(Flaky(clock, HintedError(timedelta(seconds=4))))
    assert clock.sleeps == [4.0]


def test_hint_beyond_the_timeout_gives_up_at_once(clock: ManualClock) -> None:
    work = Flaky(clock, HintedError(20.0))
    with pytest.raises(RetryError) as info:
        policy(clock, timeout=10.0).call(work)
    assert info.value.reason == RETRY_AFTER_BEYOND_TIMEOUT
    assert clock.sleeps == []
    assert work.calls == 1


def test_hint_beyond_the_deadline_gives_up_at_once(clock: ManualClock) -> None:
    work = Flaky(clock, HintedError(20.0))
    with pytest.raises(RetryError) as info:
        policy(clock, deadline=1010.0).call(work)
    assert info.value.reason == RETRY_AFTER_BEYOND_DEADLINE
    assert clock.sleeps == []


def test_parse_retry_after_delta_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(b"30") == 30.0


def test_parse_retry_after_http_dates() -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now_wall=now) == 30.0
    assert parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now_wall=now) == 60.0
    assert parse_retry_after("Wed Oct 21 07:28:10 2015", now_wall=now) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now_wall=now) == 0.0


def test_parse_retry_after_uses_the_wall_clock_by_default() -> None:
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
    far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT")
    assert far is not None
    assert far > 1e9


@pytest.mark.parametrize("value", [None, "", "   ", "-5", "soon", "1e3", "٣", "Wed, 99 Foo"])
def test_parse_retry_after_rejects_malformed_values(value: str | None) -> None:
    assert parse_retry_after(value) is None


# --------------------------------------------------------------------------- budget


def test_empty_budget_stops_retries(clock: ManualClock, events: list[Event]) -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0)  # one retry in reserve
    retry = policy(clock, attempts=5, budget=budget)
    work = Flaky(clock, OSError(), OSError(), OSError())
    with pytest.raises(RetryError) as info:
        retry.call(work)
    assert info.value.reason == BUDGET_EXHAUSTED
    assert work.calls == 2
    assert RetryBudgetExhausted("payments", attempt=2, balance=0.0) in events


def test_budget_is_shared_by_every_caller_and_earned_by_first_attempts(
    clock: ManualClock,
) -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=60.0)
    first = policy(clock, attempts=5, budget=budget)
    second = policy(clock, attempts=3, budget=budget)
    for _ in range(4):  # four successful requests earn two retries
        first.call(Flaky(clock))
    assert budget.balance(clock.now()) == 2.0
    second.call(Flaky(clock, OSError()))  # deposits 0.5, spends 1
    assert budget.balance(clock.now()) == 1.5
    with pytest.raises(RetryError, match="retry budget exhausted"):
        first.call(Flaky(clock, *[OSError()] * 5))  # deposits 0.5: two retries, not three
    assert budget.balance(clock.now()) == 0.0


def test_unmatched_errors_do_not_spend_the_budget(clock: ManualClock) -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0)
    with pytest.raises(ValueError, match="no"):
        policy(clock, budget=budget, on=OSError).call(Flaky(clock, ValueError("no")))
    assert budget.balance(clock.now()) == 1.0


# ---------------------------------------------------------------------- testing mode


def test_retry_testing_removes_waits_and_caps_attempts(clock: ManualClock) -> None:
    retry = policy(clock, attempts=5, wait=constant(10.0))
    with retry_testing(attempts=2):
        work = Flaky(clock, OSError(), OSError(), OSError())
        with pytest.raises(RetryError):
            retry.call(work)
        assert work.calls == 2
        assert clock.sleeps == []
    work = Flaky(clock, OSError())
    retry.call(work)
    assert clock.sleeps == [10.0]  # restored on exit


def test_retry_testing_can_keep_the_policy_attempts(clock: ManualClock) -> None:
    with retry_testing(attempts=None):
        work = Flaky(clock, HintedError(30.0), OSError(), OSError())
        policy(clock, attempts=4).call(work)
    assert work.calls == 4
    assert clock.sleeps == []


def test_retry_testing_as_a_plain_switch(clock: ManualClock) -> None:
    retry_testing(attempts=1)
    try:
        with pytest.raises(RetryError):
            policy(clock, attempts=3).call(Flaky(clock, OSError()))
    finally:
        retry_testing(False)
    policy(clock, attempts=3).call(Flaky(clock, OSError()))
    assert clock.sleeps == [1.0]


def test_retry_testing_rejects_bad_attempts() -> None:
    with pytest.raises(ConfigurationError, match="attempts=0"):
        retry_testing(attempts=0)


# ------------------------------------------------------------------------ decorator


def test_decorator_sync(clock: ManualClock) -> None:
    work = Flaky(clock, OSError())
    retry = policy(clock)

    @retry
    def fetch(item: str) -> Any:
        """Fetch an item."""
        return work(item)

    assert fetch("x") == ("done", ("x",), {})
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch an item."
    assert work.calls == 2


def test_decorator_sync_on_results_and_budget(clock: ManualClock) -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0, window=10.0)
    budget.deposit(clock.now())
    work = Flaky(clock, 0, 0, 3)

    @policy(clock, budget=budget, on_result=lambda value: value == 0)
    def count() -> Any:
        return work()

    assert count() == 3
    assert budget.balance(clock.now()) == 0.0  # two deposits, two retries
    with pytest.raises(KeyError):
        policy(clock, on=OSError)(Flaky(clock, KeyError()))()


def test_decorated_failures_raise_retry_error(clock: ManualClock) -> None:
    failing = policy(clock, attempts=2)(Flaky(clock, OSError(), OSError()))
    with pytest.raises(RetryError) as info:
        failing()
    assert len(info.value.attempts) == 2


async def test_decorator_async(clock: ManualClock) -> None:
    work = Flaky(clock, OSError("a"), OSError("b"))
    retry = policy(clock, wait=exponential(1.0))

    @retry
    async def fetch(item: str) -> Any:
        return await work.coroutine(item)

    assert await fetch("y") == ("done", ("y",), {})
    assert fetch.__name__ == "fetch"
    assert clock.sleeps == [1.0, 2.0]


async def test_decorator_async_results_budget_and_unmatched(clock: ManualClock) -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0, window=10.0)
    work = Flaky(clock, None, "ok")

    @policy(clock, budget=budget, on_result=lambda value: value is None)
    async def fetch() -> Any:
        return await work.coroutine()

    assert await fetch() == "ok"
    assert budget.balance(clock.now()) == 0.0

    @policy(clock, on=OSError)
    async def broken() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        await broken()


async def test_decorated_async_gives_up(clock: ManualClock) -> None:
    work = Flaky(clock, OSError(), OSError())

    @policy(clock, attempts=2)
    async def fetch() -> Any:
        return await work.coroutine()

    with pytest.raises(RetryError) as info:
        await fetch()
    assert info.value.reason == ATTEMPTS_EXHAUSTED


async def test_acall(clock: ManualClock, events: list[Event]) -> None:
    work = Flaky(clock, ConnectionError(), duration=2.0)
    assert (await policy(clock).acall(work.coroutine, 5)) == ("done", (5,), {})
    assert work.started == [1000.0, 1003.0]
    assert [type(event) for event in events] == [RetryScheduled, RetrySucceeded]


async def test_acall_gives_up_and_honours_results(clock: ManualClock) -> None:
    work = Flaky(clock, OSError(), "bad", "bad")
    with pytest.raises(RetryError) as info:
        await policy(clock, attempts=3, on_result=lambda r: r == "bad").acall(work.coroutine)
    assert [a.failed for a in info.value.attempts] == [True, False, False]
    assert clock.sleeps == [1.0, 1.0]


async def test_acall_success_on_result_check(clock: ManualClock) -> None:
    work = Flaky(clock, "fine")
    assert await policy(clock, on_result=lambda r: r is None).acall(work.coroutine) == "fine"
    assert work.calls == 1


async def test_acall_unmatched_errors_propagate(clock: ManualClock) -> None:
    for outcomes in ((KeyError("first"),), (OSError(), KeyError("later"))):
        work = Flaky(clock, *outcomes)
        with pytest.raises(KeyError):
            await policy(clock, on=OSError).acall(work.coroutine)


async def test_cancellation_is_never_retried(clock: ManualClock) -> None:
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await policy(clock, on=BaseException).acall(cancelled)
    assert calls == 1


# ------------------------------------------------------------------------ iterators


def run_block(retry: Retry, work: Callable[[], object]) -> list[int]:
    numbers = []
    for attempt in retry:
        with attempt:
            numbers.append(attempt.number)
            work()
    return numbers


def test_iterator_retries_the_block(clock: ManualClock, events: list[Event]) -> None:
    work = Flaky(clock, OSError(), OSError())
    assert run_block(policy(clock, attempts=3), work) == [1, 2, 3]
    assert clock.sleeps == [1.0, 1.0]
    assert isinstance(events[-1], RetrySucceeded)


def test_iterator_stops_after_the_first_success(clock: ManualClock) -> None:
    assert run_block(policy(clock), Flaky(clock)) == [1]
    assert clock.sleeps == []


def test_iterator_gives_up_with_retry_error(clock: ManualClock) -> None:
    errors = [OSError("1"), OSError("2")]
    with pytest.raises(RetryError) as info:
        run_block(policy(clock, attempts=2), Flaky(clock, *errors))
    assert info.value.__cause__ is errors[1]
    assert [attempt.exception for attempt in info.value.attempts] == errors


def test_iterator_reraise(clock: ManualClock) -> None:
    last = OSError("last")
    with pytest.raises(OSError, match="last") as info:
        run_block(policy(clock, attempts=2, reraise=True), Flaky(clock, OSError(), last))
    assert info.value is last


def test_iterator_unmatched_and_base_exceptions_propagate(clock: ManualClock) -> None:
    work = Flaky(clock, ValueError("bug"))
    with pytest.raises(ValueError, match="bug"):
        run_block(policy(clock, on=OSError), work)
    with pytest.raises(KeyboardInterrupt):
        run_block(policy(clock, on=BaseException), Flaky(clock, KeyboardInterrupt()))


def test_iterator_deposits_into_the_budget_once(clock: ManualClock) -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0, window=10.0)
    budget.deposit(clock.now())
    run_block(policy(clock, budget=budget), Flaky(clock, OSError()))
    assert budget.balance(clock.now()) == 1.0  # +1 earlier, +1 first attempt, -1 retry


def test_iterator_ends_when_an_attempt_is_not_entered(clock: ManualClock) -> None:
    attempts = list(policy(clock))
    assert [attempt.number for attempt in attempts] == [1]


def test_a_stale_attempt_does_not_swallow_errors(clock: ManualClock) -> None:
    iterator = iter(policy(clock))
    first = next(iterator)
    with first:
        raise OSError("retried")  # swallowed: a retry follows
    second = next(iterator)
    assert second.number == 2
    with pytest.raises(OSError, match="stale"), first:
        raise OSError("stale")
    with second:
        pass
    assert list(iterator) == []


def test_iterator_attempt_timing_and_timeout(clock: ManualClock) -> None:
    work = Flaky(clock, *[OSError()] * 5, duration=1.0)
    with pytest.raises(RetryError) as info:
        run_block(policy(clock, attempts=None, timeout=4.0), work)
    assert info.value.reason == TIMEOUT_REACHED
    assert [a.started for a in info.value.attempts] == [1000.0, 1002.0]
    assert [a.duration for a in info.value.attempts] == [1.0, 1.0]


async def test_async_iterator(clock: ManualClock) -> None:
    work = Flaky(clock, OSError(), OSError())
    numbers = []
    async for attempt in policy(clock, attempts=3, wait=linear(1.0)):
        with attempt:
            numbers.append(attempt.number)
            await work.coroutine()
    assert numbers == [1, 2, 3]
    assert clock.sleeps == [1.0, 2.0]


async def test_async_iterator_gives_up(clock: ManualClock) -> None:
    work = Flaky(clock, OSError(), OSError())

    async def loop() -> None:
        async for attempt in policy(clock, attempts=2):
            with attempt:
                await work.coroutine()

    with pytest.raises(RetryError):
        await loop()
    assert work.calls == 2


# ----------------------------------------------------------------------------- misc


def test_events_are_not_built_when_nobody_listens(clock: ManualClock) -> None:
    retry = policy(clock)
    assert not retry.events.active
    retry.call(Flaky(clock, OSError()))  # would fail if emit were called on an inactive hub
    heard: list[Event] = []
    unsubscribe = retry.events.subscribe(heard.append, types=(RetryScheduled,))
    retry.call(Flaky(clock, OSError()))
    unsubscribe()
    assert [type(event) for event in heard] == [RetryScheduled]


def test_wait_accepts_plain_seconds(clock: ManualClock) -> None:
    Retry(wait=0.25, clock=clock).call(Flaky(clock, OSError()))
    assert clock.sleeps == [0.25]


def test_default_wait_is_jittered_exponential() -> None:
    assert repr(Retry()) == (
        "Retry(attempts=3, wait=exponential(0.1, factor=2.0, cap=10.0, jitter='full'), "
        "name='retry')"
    )


def test_repr_lists_the_limits(clock: ManualClock) -> None:
    text = repr(policy(clock, timeout=5.0, deadline=2000.0, budget=RetryBudget()))
    assert "timeout=5.0" in text
    assert "deadline=2000.0" in text
    assert "RetryBudget(" in text


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 2.5}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"wait": "fast"}, "wait"),
        ({"on": "OSError"}, "on"),
        ({"on": (OSError, "x")}, "on"),
        ({"on": ()}, "on"),
        ({"on": int}, "on"),
        ({"on_result": 5}, "on_result"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"max_retry_after": 0}, "max_retry_after"),
        ({"deadline": "tomorrow"}, "deadline"),
        ({"deadline": float("nan")}, "deadline"),
        ({"budget": 0.2}, "budget"),
        ({"clock": object()}, "clock"),
        ({"name": ""}, "name"),
    ],
)
def test_invalid_configuration_names_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"Retry\({field}=") as info:
        Retry(**options)
    assert isinstance(info.value, ValueError)
