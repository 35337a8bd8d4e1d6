"""The CircuitBreaker policy: behaviour through its public API, on a manual clock."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.errors import CircuitOpenError, ConfigurationError, RejectedError
from seawall.events import Event
from seawall.resilience.breaker import (
    BreakerMetrics,
    CallNotPermittedError,
    CircuitBreaker,
    CircuitCallFailed,
    CircuitCallIgnored,
    CircuitCallRejected,
    CircuitCallSucceeded,
    CircuitReset,
    CircuitState,
    CircuitStateChanged,
    CountWindow,
    SlowCall,
    TimeWindow,
)


class BoomError(Exception):
    """The downstream failed."""


def ok() -> str:
    return "ok"


def boom() -> str:
    raise BoomError("down")


def fail(breaker: CircuitBreaker, times: int, error: BaseException | None = None) -> None:
    exc = error if error is not None else BoomError("down")

    def raising() -> None:
        raise exc

    for _ in range(times):
        with pytest.raises(type(exc)):
            breaker.call(raising)


def succeed(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.call(ok) == "ok"


def make(clock: ManualClock, **options: Any) -> CircuitBreaker:
    defaults: dict[str, Any] = {
        "window": CountWindow(10),
        "minimum_calls": 4,
        "failure_rate": 0.5,
        "open_for": 10.0,
        "half_open_calls": 2,
    }
    defaults.update(options)
    return CircuitBreaker("payments", clock=clock, **defaults)


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field", "valid"),
    [
        ({"failure_rate": 0}, "failure_rate", "(0, 1]"),
        ({"failure_rate": -0.1}, "failure_rate", "(0, 1]"),
        ({"failure_rate": 1.5}, "failure_rate", "(0, 1]"),
        ({"failure_rate": "half"}, "failure_rate", "(0, 1]"),
        ({"minimum_calls": 0}, "minimum_calls", ">= 1"),
        ({"minimum_calls": 2.5}, "minimum_calls", ">= 1"),
        ({"open_for": 0}, "open_for", "> 0"),
        ({"open_for": -1.0}, "open_for", "> 0"),
        ({"open_for": float("inf")}, "open_for", "> 0"),
        ({"open_backoff": 0.5}, "open_backoff", ">= 1"),
        ({"max_open_for": 5.0, "open_for": 10.0}, "max_open_for", ">= open_for"),
        ({"half_open_calls": 0}, "half_open_calls", ">= 1"),
        ({"window": 50}, "window", "CountWindow"),
        ({"slow_call": 1.0}, "slow_call", "SlowCall"),
        ({"record": 42}, "record", "exception class"),
        ({"ignore": (ValueError, 3)}, "ignore", "exception classes"),
        ({"record_result": 3}, "record_result", "predicate"),
        ({"on_store_error": "explode"}, "on_store_error", "fail_open"),
        ({"name": ""}, "name", "non-empty"),
    ],
)
def test_invalid_configuration_names_field_and_range(
    clock: ManualClock, options: dict[str, Any], field: str, valid: str
) -> None:
    name = options.pop("name", "payments")
    with pytest.raises(ConfigurationError) as caught:
        CircuitBreaker(name, clock=clock, **options)
    message = str(caught.value)
    assert field in message
    assert valid in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: CountWindow(0), "CountWindow.size"),
        (lambda: CountWindow(-5), "CountWindow.size"),
        (lambda: TimeWindow(0), "TimeWindow.seconds"),
        (lambda: TimeWindow(-1.0), "TimeWindow.seconds"),
        (lambda: TimeWindow(10, buckets=0), "TimeWindow.buckets"),
        (lambda: SlowCall(over=0), "SlowCall.over"),
        (lambda: SlowCall(over=1.0, rate=0), "SlowCall.rate"),
        (lambda: SlowCall(over=1.0, rate=2), "SlowCall.rate"),
    ],
)
def test_invalid_option_objects(build: Any, field: str) -> None:
    with pytest.raises(ConfigurationError, match=field.replace(".", r"\.")):
        build()


def test_time_window_buckets_default_to_one_per_second() -> None:
    assert TimeWindow(60).bucket_count == 60
    assert TimeWindow(60).bucket_width == 1.0
    assert TimeWindow(0.5).bucket_count == 1
    assert TimeWindow(10, buckets=4).bucket_width == 2.5


# -- closed -> open -------------------------------------------------------------------


def test_trips_when_failure_rate_reached_after_minimum_calls(clock: ManualClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)  # 3 calls: below minimum_calls=4, not judged
    assert breaker.state is CircuitState.CLOSED
    succeed(breaker, 1)  # 4 calls, 3 failed: 75% >= 50%
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CallNotPermittedError) as caught:
        breaker.call(ok)
    error = caught.value
    assert isinstance(error, CircuitOpenError)
    assert isinstance(error, RejectedError)
    assert error.breaker == "payments"
    assert error.state == "open"
    assert error.retry_after == pytest.approx(10.0)
    assert "payments" in str(error)
    assert "10.000s" in str(error)


def test_stays_closed_under_the_threshold(clock: ManualClock) -> None:
    breaker = make(clock, window=CountWindow(10), minimum_calls=10)
    for _ in range(5):
        succeed(breaker, 1)
        fail(breaker, 1)
        succeed(breaker, 1)
    metrics = breaker.metrics()
    assert metrics.state is CircuitState.CLOSED
    assert metrics.calls == 10
    assert metrics.failed == 3
    assert metrics.failure_rate == pytest.approx(0.3)


def test_count_window_forgets_old_failures(clock: ManualClock) -> None:
    breaker = make(clock, window=CountWindow(5), minimum_calls=5, failure_rate=0.6)
    fail(breaker, 2)
    succeed(breaker, 3)  # window: F F S S S -> 40%
    succeed(breaker, 2)  # window: S S S S S
    assert breaker.metrics().failed == 0
    fail(breaker, 2)  # window: S S S F F -> 40%
    assert breaker.state is CircuitState.CLOSED
    fail(breaker, 1)  # S S F F F -> 60%
    assert breaker.state is CircuitState.OPEN


def test_time_window_forgets_calls_older_than_the_window(clock: ManualClock) -> None:
    breaker = make(clock, window=TimeWindow(10), minimum_calls=3, failure_rate=0.6)
    fail(breaker, 2)
    clock.advance(10.0)  # those failures leave the window
    assert breaker.metrics().calls == 0
    succeed(breaker, 2)
    fail(breaker, 1)  # 1 of 3
    assert breaker.state is CircuitState.CLOSED
    clock.advance(5.0)
    fail(breaker, 2)  # 3 of 5
    assert breaker.state is CircuitState.OPEN


def test_time_window_judges_when_old_successes_expire(clock: ManualClock) -> None:
    breaker = make(clock, window=TimeWindow(4), minimum_calls=2, failure_rate=0.5)
    succeed(breaker, 6)
    clock.advance(2.0)
    fail(breaker, 2)  # 2 of 8
    assert breaker.state is CircuitState.CLOSED
    clock.advance(2.5)  # the successes expire: the window holds only the 2 failures
    succeed(breaker, 1)  # 2 of 3 failed
    assert breaker.state is CircuitState.OPEN


def test_slow_calls_trip_the_breaker(clock: ManualClock) -> None:
    breaker = make(clock, slow_call=SlowCall(over=1.0, rate=0.5), minimum_calls=4)

    def slow() -> str:
        clock.advance(1.5)
        return "late"

    succeed(breaker, 2)
    assert breaker.call(slow) == "late"
    assert breaker.state is CircuitState.CLOSED
    breaker.call(slow)  # 2 of 4 slow
    assert breaker.state is CircuitState.OPEN
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.slow, metrics.failed) == (4, 2, 0)
    assert metrics.slow_call_rate == 0.5


def test_a_slow_failure_counts_as_failed_and_slow(clock: ManualClock) -> None:
    breaker = make(clock, slow_call=SlowCall(over=1.0, rate=1.0), minimum_calls=10)

    def slow_boom() -> None:
        clock.advance(2.0)
        raise BoomError

    with pytest.raises(BoomError):
        breaker.call(slow_boom)
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed, metrics.slow) == (1, 1, 1)


# -- what counts as a failure -----------------------------------------------------------


def test_record_types_decide_failures_others_count_as_success(clock: ManualClock) -> None:
    breaker = make(clock, record=(BoomError,), minimum_calls=2)
    fail(breaker, 3, KeyError("not recorded"))
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed) == (3, 0)
    fail(breaker, 3)
    assert breaker.state is CircuitState.OPEN


def test_record_predicate(clock: ManualClock) -> None:
    breaker = make(clock, record=lambda error: "fatal" in str(error), minimum_calls=2)
    fail(breaker, 2, BoomError("minor"))
    assert breaker.metrics().failed == 0
    fail(breaker, 2, BoomError("fatal"))
    assert breaker.metrics().failed == 2


def test_ignored_errors_count_neither_way(clock: ManualClock) -> None:
    breaker = make(clock, ignore=(KeyError,), minimum_calls=2)
    fail(breaker, 5, KeyError("ignored"))
    assert breaker.metrics().calls == 0
    breaker2 = make(clock, ignore=lambda error: isinstance(error, LookupError))
    fail(breaker2, 2, IndexError())
    assert breaker2.metrics().calls == 0


def test_base_exceptions_are_ignored(clock: ManualClock) -> None:
    breaker = make(clock, minimum_calls=1)
    fail(breaker, 3, KeyboardInterrupt())
    assert breaker.metrics().calls == 0
    assert breaker.state is CircuitState.CLOSED


def test_record_result_marks_results_as_failures(clock: ManualClock) -> None:
    breaker = make(clock, record_result=lambda result: result is None, minimum_calls=2)
    assert breaker.call(lambda: None) is None
    assert breaker.call(lambda: None) is None
    assert breaker.state is CircuitState.OPEN


# -- open -> half-open -> closed / open ---------------------------------------------------


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    assert breaker.state is CircuitState.OPEN


def test_half_open_after_open_for_then_closes_when_trials_pass(clock: ManualClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(9.9)
    with pytest.raises(CallNotPermittedError) as caught:
        breaker.call(ok)
    assert caught.value.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN
    succeed(breaker, 1)
    assert breaker.state is CircuitState.HALF_OPEN
    succeed(breaker, 1)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics().calls == 0  # a fresh window


def test_half_open_reopens_when_trials_fail(clock: ManualClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(10.0)
    succeed(breaker, 1)
    fail(breaker, 1)  # 1 of 2 trials failed: 50% >= 50%
    assert breaker.state is CircuitState.OPEN


def test_half_open_limits_trial_calls(clock: ManualClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(10.0)
    release = asyncio.Event()
    started = 0

    async def trial() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "ok"

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(breaker.acall(trial)) for _ in range(5)]
        await asyncio.sleep(0)
        assert started == 2
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert results.count("ok") == 2
    assert sum(isinstance(result, CallNotPermittedError) for result in results) == 3
    rejected = next(result for result in results if isinstance(result, CallNotPermittedError))
    assert rejected.state == "half_open"
    assert rejected.retry_after is None
    assert breaker.state is CircuitState.CLOSED


def test_ignored_trial_gives_its_permit_back(clock: ManualClock) -> None:
    breaker = make(clock, ignore=(KeyError,))
    trip(breaker)
    clock.advance(10.0)
    fail(breaker, 5, KeyError())  # every permit returns
    succeed(breaker, 2)
    assert breaker.state is CircuitState.CLOSED


def test_cancelled_trial_gives_its_permit_back(clock: ManualClock) -> None:
    breaker = make(clock, half_open_calls=1)
    trip(breaker)
    clock.advance(10.0)

    async def scenario() -> None:
        task = asyncio.ensure_future(breaker.acall(asyncio.sleep, 3600))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await breaker.acall(asyncio.sleep, 0, "ok") == "ok"

    asyncio.run(scenario())
    assert breaker.state is CircuitState.CLOSED


def test_open_period_grows_exponentially_and_is_capped(clock: ManualClock) -> None:
    breaker = make(clock, open_for=1.0, open_backoff=2.0, max_open_for=5.0, half_open_calls=1)
    waits = []
    trip(breaker)
    for _ in range(4):
        with pytest.raises(CallNotPermittedError) as caught:
            breaker.call(ok)
        assert caught.value.retry_after is not None
        waits.append(caught.value.retry_after)
        clock.advance(caught.value.retry_after)
        fail(breaker, 1)  # the single trial fails: reopen, longer
    assert waits == [1.0, 2.0, 4.0, 5.0]
    clock.advance(5.0)
    succeed(breaker, 1)  # closes: the streak ends
    trip(breaker)
    with pytest.raises(CallNotPermittedError) as caught:
        breaker.call(ok)
    assert caught.value.retry_after == 1.0


def test_fixed_open_period_by_default(clock: ManualClock) -> None:
    breaker = make(clock, half_open_calls=1)
    for _ in range(3):
        trip(breaker) if breaker.state is CircuitState.CLOSED else None
        with pytest.raises(CallNotPermittedError) as caught:
            breaker.call(ok)
        assert caught.value.retry_after == 10.0
        clock.advance(10.0)
        fail(breaker, 1)


# -- manual control ----------------------------------------------------------------------


def test_force_open_rejects_until_force_closed(clock: ManualClock) -> None:
    breaker = make(clock)
    breaker.force_open()
    assert breaker.state is CircuitState.FORCED_OPEN
    clock.advance(1e6)
    with pytest.raises(CallNotPermittedError) as caught:
        breaker.call(ok)
    assert caught.value.state == "forced_open"
    assert caught.value.retry_after is None
    breaker.force_closed()
    assert breaker.state is CircuitState.CLOSED
    succeed(breaker, 1)


def test_disable_runs_everything_and_records_nothing(clock: ManualClock) -> None:
    breaker = make(clock)
    breaker.disable()
    fail(breaker, 20)
    assert breaker.state is CircuitState.DISABLED
    assert breaker.metrics().calls == 0
    breaker.force_closed()
    fail(breaker, 4)
    assert breaker.state is CircuitState.OPEN


def test_reset_starts_over(clock: ManualClock) -> None:
    breaker = make(clock)
    trip(breaker)
    with pytest.raises(CallNotPermittedError):
        breaker.call(ok)
    assert breaker.metrics().not_permitted == 1
    assert breaker.metrics().trips == 1
    breaker.reset()
    assert breaker.metrics() == BreakerMetrics(CircuitState.CLOSED, 0.0, 0.0, 0, 0, 0, 0, 0)


# -- metrics -------------------------------------------------------------------------------


def test_metrics_snapshot(clock: ManualClock) -> None:
    breaker = make(clock, minimum_calls=10)
    succeed(breaker, 3)
    fail(breaker, 1)
    metrics = breaker.metrics()
    assert metrics == BreakerMetrics(CircuitState.CLOSED, 0.25, 0.0, 4, 1, 0, 0, 0)
    fail(breaker, 6)  # 7 of 10
    with pytest.raises(CallNotPermittedError):
        breaker.call(ok)
    metrics = breaker.metrics()
    assert metrics.state is CircuitState.OPEN
    assert (metrics.calls, metrics.failed, metrics.not_permitted, metrics.trips) == (10, 7, 1, 1)


# -- sync, async, decorator -----------------------------------------------------------------


def test_decorator_keeps_the_function_identity(clock: ManualClock) -> None:
    breaker = make(clock)

    @breaker
    def add(a: int, b: int = 0) -> int:
        """Add two numbers."""
        return a + b

    assert add(1, b=2) == 3
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."


def test_decorated_function_trips_and_rejects(clock: ManualClock) -> None:
    breaker = make(clock)
    calls = 0

    @breaker
    def flaky() -> None:
        nonlocal calls
        calls += 1
        raise BoomError

    for _ in range(4):
        with pytest.raises(BoomError):
            flaky()
    with pytest.raises(CallNotPermittedError):
        flaky()
    assert calls == 4


async def test_async_call_and_decorator(clock: ManualClock) -> None:
    breaker = make(clock)

    @breaker
    async def fetch(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    @breaker
    async def broken() -> None:
        raise BoomError

    assert await fetch(21) == 42
    assert await breaker.acall(fetch.__wrapped__, 2) == 4  # type: ignore[attr-defined]
    for _ in range(2):  # 2 of 4 failed
        with pytest.raises(BoomError):
            await broken()
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CallNotPermittedError):
        await fetch(1)
    with pytest.raises(CallNotPermittedError):
        await breaker.acall(fetch, 1)


async def test_async_slow_calls_use_the_clock(clock: ManualClock) -> None:
    breaker = make(clock, slow_call=SlowCall(over=0.5), minimum_calls=2)

    async def slow() -> None:
        await clock.asleep(0.75)

    await breaker.acall(slow)
    await breaker.acall(slow)
    assert breaker.state is CircuitState.OPEN


def test_wrapping_with_functools_partial(clock: ManualClock) -> None:
    breaker = make(clock)
    assert breaker.call(functools.partial(pow, 2), 10) == 1024


# -- events -----------------------------------------------------------------------------------


def test_events_cover_the_lifecycle(clock: ManualClock) -> None:
    breaker = make(clock, ignore=(KeyError,))
    seen: list[Event] = []
    unsubscribe = breaker.events.subscribe(seen.append)
    succeed(breaker, 1)
    fail(breaker, 1, KeyError())
    fail(breaker, 3)
    with pytest.raises(CallNotPermittedError):
        breaker.call(ok)
    breaker.reset()
    unsubscribe()
    kinds = [type(event) for event in seen]
    assert kinds == [
        CircuitCallSucceeded,
        CircuitCallIgnored,
        CircuitCallFailed,
        CircuitCallFailed,
        CircuitCallFailed,  # 3 failed of 4: trips
        CircuitStateChanged,
        CircuitCallRejected,
        CircuitStateChanged,
        CircuitReset,
    ]
    assert all(event.source == "payments" for event in seen)
    change = seen[5]
    assert isinstance(change, CircuitStateChanged)
    assert (change.previous, change.current) == (CircuitState.CLOSED, CircuitState.OPEN)
    assert change.open_for == 10.0
    assert "failure rate" in change.reason
    rejected = seen[6]
    assert isinstance(rejected, CircuitCallRejected)
    assert rejected.retry_after == 10.0
    # Unobserved again: no events, fast paths back.
    succeed(breaker, 1)
    assert len(seen) == 9


def test_events_only_built_when_someone_listens(clock: ManualClock) -> None:
    breaker = make(clock)
    core = breaker._core
    assert core.fast_ticket
    unsubscribe = breaker.events.subscribe(lambda event: None)
    assert not core.fast_ticket
    unsubscribe()
    assert core.fast_ticket


def test_global_hub_listener_sees_breaker_events(clock: ManualClock) -> None:
    from seawall import events

    breaker = make(clock)
    seen: list[Event] = []
    unsubscribe = events.hub.subscribe(seen.append, types=(CircuitStateChanged,))
    try:
        trip(breaker)
    finally:
        unsubscribe()
    assert [type(event) for event in seen] == [CircuitStateChanged]


def test_a_listener_may_call_back_into_the_breaker(clock: ManualClock) -> None:
    breaker = make(clock)
    states: list[CircuitState] = []
    breaker.events.subscribe(
        lambda event: states.append(breaker.metrics().state), types=(CircuitStateChanged,)
    )
    trip(breaker)
    assert states == [CircuitState.OPEN]


# -- threads ---------------------------------------------------------------------------------


def test_closed_fast_path_loses_no_count_under_threads(clock: ManualClock) -> None:
    breaker = make(clock, window=CountWindow(100_000), minimum_calls=100_000)
    wrapped = breaker(ok)
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for _ in range(5000):
            wrapped()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert breaker.metrics().calls == 20_000


def test_half_open_permits_hold_under_threads(clock: ManualClock) -> None:
    breaker = make(clock, half_open_calls=3)
    trip(breaker)
    clock.advance(10.0)
    release = threading.Event()
    lock = threading.Condition()
    entered = rejected = 0

    def trial() -> str:
        nonlocal entered
        with lock:
            entered += 1
            lock.notify_all()
        release.wait(timeout=10)
        return "ok"

    def worker() -> None:
        nonlocal rejected
        try:
            breaker.call(trial)
        except CallNotPermittedError:
            with lock:
                rejected += 1
                lock.notify_all()

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    with lock:
        assert lock.wait_for(lambda: entered + rejected == 12, timeout=10)
    assert (entered, rejected) == (3, 9)
    release.set()
    for thread in threads:
        thread.join()
    assert breaker.state is CircuitState.CLOSED


def test_repr_names_the_state(clock: ManualClock) -> None:
    breaker = make(clock)
    assert repr(breaker) == "CircuitBreaker('payments', state=closed)"
    assert repr(CallNotPermittedError("payments", "open", 1.5)) == (
        "CallNotPermittedError('payments', 'open', retry_after=1.5)"
    )


def test_public_names_are_exactly_exported() -> None:
    import seawall.resilience.breaker as package

    public = {
        "BreakerConfig",
        "BreakerCore",
        "BreakerMetrics",
        "BreakerStore",
        "CallNotPermittedError",
        "CircuitBreaker",
        "CircuitCallFailed",
        "CircuitCallIgnored",
        "CircuitCallRejected",
        "CircuitCallSucceeded",
        "CircuitReset",
        "CircuitState",
        "CircuitStateChanged",
        "CircuitStoreRecovered",
        "CircuitStoreUnavailable",
        "CircuitStoreUnavailableError",
        "CountWindow",
        "ErrorFilter",
        "RedisBreakerStore",
        "Rejection",
        "SharedBreakerCore",
        "SlowCall",
        "TimeWindow",
        "Transition",
    }
    assert set(package.__all__) == public
    assert package.__all__ == sorted(package.__all__)
    for name in public:
        assert getattr(package, name) is not None


def test_decorated_function_with_a_slow_call_rule(clock: ManualClock) -> None:
    breaker = make(clock, slow_call=SlowCall(over=1.0, rate=0.5), minimum_calls=4)

    @breaker
    def work(seconds: float) -> float:
        clock.advance(seconds)
        return seconds

    assert work(0.1) == 0.1
    assert work(0.1) == 0.1
    work(2.0)
    assert breaker.state is CircuitState.CLOSED
    work(1.0)  # 2 of 4 slow
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CallNotPermittedError):
        work(0.1)


async def test_decorated_coroutine_with_a_time_window(clock: ManualClock) -> None:
    breaker = make(clock, window=TimeWindow(5), minimum_calls=2, failure_rate=0.5)

    @breaker
    async def work(fail: bool) -> str:
        if fail:
            raise BoomError
        return "ok"

    assert await work(False) == "ok"
    clock.advance(5.0)  # the success leaves the window
    with pytest.raises(BoomError):
        await work(True)
    assert breaker.state is CircuitState.CLOSED  # 1 call: below minimum_calls
    assert await work(False) == "ok"  # 1 of 2 failed
    assert breaker.state is CircuitState.OPEN


def test_decorated_function_with_record_result(clock: ManualClock) -> None:
    breaker = make(clock, record_result=lambda status: status >= 500, minimum_calls=2)
    respond = breaker(lambda status: status)
    assert respond(200) == 200
    assert respond(503) == 503  # returned, but counted as a failure: 1 of 2
    assert breaker.state is CircuitState.OPEN


def test_rejection_error_fields_pickle_and_read_time(clock: ManualClock) -> None:
    import pickle

    breaker = make(clock)
    trip(breaker)
    with pytest.raises(CallNotPermittedError) as caught:
        breaker(ok)()
    error = caught.value
    assert (error.breaker, error.state, error.retry_after) == ("payments", "open", 10.0)
    clock.advance(4.0)
    assert error.retry_after == 6.0  # measured when read
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is CallNotPermittedError
    assert (copy.breaker, copy.state, copy.retry_after) == ("payments", "open", 6.0)
    assert "6.000s" in str(copy)
    error.retry_after = 1.0
    assert error.retry_after == 1.0
