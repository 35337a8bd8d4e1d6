from __future__ import annotations

import pytest

from seawall.clock import ManualClock
from seawall.errors import BulkheadFullError, ConfigurationError, RetryError
from seawall.events import Event
from seawall.resilience import (
    Bulkhead,
    Fallback,
    FallbackUsed,
    Pipeline,
    Retry,
    RetryScheduled,
    Timeout,
    constant,
)


class Flaky:
    """Fails ``failures`` times, then returns ``"ok"``; counts calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, value: str = "ok") -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"failure {self.calls}")
        return value

    async def call_async(self, value: str = "ok") -> str:
        return self(value)


def test_stages_apply_outermost_first(clock: ManualClock) -> None:
    flaky = Flaky(failures=2)
    pipeline = Pipeline(
        Fallback(value="fallback"),
        Retry(attempts=3, wait=constant(0.5), on=ConnectionError, clock=clock),
    )
    assert pipeline.call(flaky, "fresh") == "fresh"
    assert flaky.calls == 3
    assert clock.sleeps == [0.5, 0.5]

    always_down = Flaky(failures=100)
    assert pipeline.call(always_down) == "fallback", (
        "the outer fallback catches the retry's give-up"
    )
    assert always_down.calls == 3


async def test_the_same_pipeline_serves_async_callers(clock: ManualClock) -> None:
    flaky = Flaky(failures=1)
    pipeline = Pipeline(Retry(attempts=2, wait=constant(1.0), on=ConnectionError, clock=clock))
    assert await pipeline.acall(flaky.call_async, "async") == "async"
    assert flaky.calls == 2


def test_as_decorator_on_sync_and_async_functions(clock: ManualClock) -> None:
    pipeline = Pipeline(Retry(attempts=2, wait=constant(0.1), on=ConnectionError, clock=clock))
    flaky = Flaky(failures=1)

    @pipeline
    def fetch(value: str) -> str:
        return flaky(value)

    assert fetch("x") == "x"
    assert fetch.__name__ == "fetch"


async def test_decorated_coroutine_function_stays_a_coroutine_function(clock: ManualClock) -> None:
    import inspect

    pipeline = Pipeline(Retry(attempts=2, wait=constant(0.1), on=ConnectionError, clock=clock))
    flaky = Flaky(failures=1)

    @pipeline
    async def fetch(value: str) -> str:
        return flaky(value)

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch("y") == "y"


def test_rejection_from_an_inner_stage_reaches_the_retry(clock: ManualClock) -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_wait=0.0)
    pipeline = Pipeline(
        Retry(attempts=2, wait=constant(0.1), on=BulkheadFullError, clock=clock), bulkhead
    )
    seen: list[str] = []

    def occupy() -> str:
        # while this call holds the only slot, a nested call through the pipeline is rejected
        with pytest.raises(RetryError) as caught:
            pipeline.call(lambda: "never runs")
        seen.append(type(caught.value.__cause__).__name__)
        return "outer"

    assert bulkhead.call(occupy) == "outer"
    assert seen == ["BulkheadFullError"]


def test_events_of_every_stage_reach_one_subscriber(clock: ManualClock) -> None:
    pipeline = Pipeline(
        Fallback(value="fallback"),
        Retry(attempts=2, wait=constant(0.1), on=ConnectionError, clock=clock),
    )
    seen: list[Event] = []
    unsubscribe = pipeline.subscribe(seen.append)
    pipeline.call(Flaky(failures=5))
    assert [type(event) for event in seen if isinstance(event, RetryScheduled | FallbackUsed)] == [
        RetryScheduled,
        FallbackUsed,
    ]
    unsubscribe()
    seen.clear()
    pipeline.call(Flaky(failures=5))
    assert seen == []


def test_nested_pipelines_flatten_for_events_and_checks(clock: ManualClock) -> None:
    inner = Pipeline(Retry(attempts=2, on=ConnectionError, clock=clock))
    with pytest.raises(ConfigurationError, match="Retry inside a Retry"):
        Pipeline(Retry(attempts=2, clock=clock), inner)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Pipeline(), "at least one policy"),
        (lambda: Pipeline(object()), "not a seawall policy"),  # type: ignore[arg-type]
        (lambda: Pipeline(Retry(), Retry()), "Retry inside a Retry"),
        (lambda: Pipeline(Timeout(1.0), Retry(), Timeout(1.0)), "can never fire"),
        (lambda: Pipeline(Timeout(1.0), Retry(), Timeout(2.0)), "can never fire"),
    ],
)
def test_impossible_orders_are_refused_at_construction(build: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        build()  # type: ignore[operator]
    assert isinstance(caught.value, ValueError)


def test_the_same_instance_twice_is_refused() -> None:
    timeout = Timeout(1.0)
    with pytest.raises(ConfigurationError, match="twice"):
        Pipeline(timeout, timeout)


def test_a_shorter_per_attempt_timeout_is_accepted() -> None:
    pipeline = Pipeline(Timeout(2.0), Retry(), Timeout(0.5))
    assert "Retry" in repr(pipeline)
