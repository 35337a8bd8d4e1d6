"""Hedge: extra attempts after a delay or the observed p95; first success wins, losers cancelled.

Every timing test uses ``ManualClock(autojump=False)``: an attempt "takes" time by
awaiting ``clock.asleep``, and the test moves time to the exact instant it wants.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError
from seawall.events import Event
from seawall.resilience._hedge import (
    Hedge,
    HedgeNeedsAsyncError,
    HedgeStarted,
    HedgeWon,
    LatencyWindow,
)


async def settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


@dataclass
class Plan:
    """Scripted attempts: attempt n sleeps ``durations[n-1]`` then returns or raises."""

    clock: ManualClock
    durations: list[float]
    errors: dict[int, BaseException] = field(default_factory=dict)
    started: list[tuple[int, float]] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)

    async def __call__(self, prefix: str = "attempt") -> str:
        number = len(self.started) + 1
        self.started.append((number, self.clock.now()))
        try:
            await self.clock.asleep(self.durations[number - 1])
        except asyncio.CancelledError:
            self.cancelled.append(number)
            raise
        self.finished.append(number)
        if number in self.errors:
            raise self.errors[number]
        return f"{prefix} {number}"


def recorder(hedge: Hedge) -> list[Event]:
    seen: list[Event] = []
    hedge.events.subscribe(seen.append)
    return seen


@pytest.fixture
def manual() -> ManualClock:
    return ManualClock(0.0, autojump=False)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay": -0.1}, r"Hedge\(delay=-0.1\)"),
        ({"delay": float("nan")}, r"Hedge\(delay=nan\)"),
        ({"delay": "p0"}, r"Hedge\(delay='p0'\)"),
        ({"delay": "p100"}, r"Hedge\(delay='p100'\)"),
        ({"delay": "fast"}, r"Hedge\(delay='fast'\)"),
        ({"delay": True}, r"Hedge\(delay=True\)"),
        ({"max_hedges": 0}, r"Hedge\(max_hedges=0\)"),
        ({"max_hedges": 101}, r"Hedge\(max_hedges=101\)"),
        ({"initial_delay": -1}, r"Hedge\(initial_delay=-1\)"),
        ({"window": 0}, r"Hedge\(window=0\)"),
        ({"min_samples": 0}, r"Hedge\(min_samples=0\)"),
        ({"min_samples": 200, "window": 100}, r"Hedge\(min_samples=200\).*window=100"),
        ({"on": ()}, r"Hedge\(on=\(\)\)"),
        ({"on": "ValueError"}, r"Hedge\(on='ValueError'\)"),
        ({"name": ""}, r"Hedge\(name=''\)"),
        ({"clock": 1.0}, r"Hedge\(clock=1.0\)"),
    ],
)
def test_invalid_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Hedge(**kwargs)


def test_sync_call_says_hedging_needs_async() -> None:
    hedge = Hedge(0.05, name="search")
    ran: list[int] = []
    with pytest.raises(HedgeNeedsAsyncError, match="needs asyncio") as caught:
        hedge.call(ran.append, 1)
    assert isinstance(caught.value, ConfigurationError)
    assert ran == []


def test_decorating_a_sync_function_fails_at_once() -> None:
    with pytest.raises(HedgeNeedsAsyncError):

        @Hedge(0.05)
        def lookup() -> int:
            return 1


def test_percentile_delays_parse() -> None:
    assert Hedge("p95").percentile == 0.95
    assert Hedge("p99.9").percentile == pytest.approx(0.999)
    assert Hedge(0.2).percentile is None


# ------------------------------------------------------------------ fixed delay


async def test_a_fast_first_attempt_needs_no_hedge(manual: ManualClock) -> None:
    hedge = Hedge(0.05, clock=manual)
    seen = recorder(hedge)
    plan = Plan(manual, [0.01])
    task = asyncio.create_task(hedge.acall(plan, "result"))
    await settle()
    manual.advance(0.01)
    assert await task == "result 1"
    assert plan.started == [(1, 0.0)]
    assert seen == []
    await settle()
    assert manual.pending_sleepers == 0  # the hedge timer was cancelled


async def test_the_hedge_starts_at_the_delay_and_wins(manual: ManualClock) -> None:
    hedge = Hedge(0.05, clock=manual, name="search")
    seen = recorder(hedge)
    plan = Plan(manual, [1.0, 0.02])
    task = asyncio.create_task(hedge.acall(plan))
    await settle()
    manual.advance(0.04)
    await settle()
    assert len(plan.started) == 1  # not yet
    manual.advance(0.01)
    await settle()
    assert plan.started == [(1, 0.0), (2, 0.05)]
    manual.advance(0.02)
    assert await task == "attempt 2"
    assert plan.cancelled == [1]  # the loser is cancelled before acall returns
    assert seen == [
        HedgeStarted("search", 2, 0.05, after_failure=False),
        HedgeWon("search", 2, 2, pytest.approx(0.02)),
    ]


async def test_the_first_attempt_can_still_win_and_the_hedge_is_cancelled(
    manual: ManualClock,
) -> None:
    hedge = Hedge(0.05, clock=manual)
    seen = recorder(hedge)
    plan = Plan(manual, [0.06, 1.0])
    task = asyncio.create_task(hedge.acall(plan))
    await settle()
    manual.advance(0.05)
    await settle()
    manual.advance(0.01)
    assert await task == "attempt 1"
    assert plan.cancelled == [2]
    assert [type(event) for event in seen] == [HedgeStarted]  # no HedgeWon: the primary won


async def test_at_most_max_hedges_extra_attempts_each_a_delay_apart(manual: ManualClock) -> None:
    hedge = Hedge(0.05, max_hedges=2, clock=manual)
    plan = Plan(manual, [1.0, 5.0, 5.0, 5.0])
    task = asyncio.create_task(hedge.acall(plan))
    for _ in range(6):
        await settle()
        manual.advance(0.05)
    await settle()
    assert plan.started == [(1, 0.0), (2, 0.05), (3, 0.1)]
    manual.advance(0.9)  # attempt 1 finishes (at 1.0), the hedges would take till 5.05+
    assert await task == "attempt 1"
    assert sorted(plan.cancelled) == [2, 3]


async def test_a_failure_starts_the_next_attempt_at_once(manual: ManualClock) -> None:
    hedge = Hedge(0.05, clock=manual)
    seen = recorder(hedge)
    plan = Plan(manual, [0.01, 0.02], errors={1: ConnectionError("reset")})
    task = asyncio.create_task(hedge.acall(plan))
    await settle()
    manual.advance(0.01)
    await settle()
    assert plan.started == [(1, 0.0), (2, 0.01)]  # did not wait for the 0.05 delay
    manual.advance(0.02)
    assert await task == "attempt 2"
    assert seen[0] == HedgeStarted("hedge", 2, 0.05, after_failure=True)


async def test_when_every_attempt_fails_the_last_error_is_raised(manual: ManualClock) -> None:
    hedge = Hedge(0.05, max_hedges=1, clock=manual)
    first, last = ConnectionError("first"), ConnectionError("last")
    plan = Plan(manual, [0.1, 0.1], errors={1: first, 2: last})
    task = asyncio.create_task(hedge.acall(plan))
    await settle()
    manual.advance(0.05)  # hedge starts; attempt 1 fails at 0.1, attempt 2 at 0.15
    await settle()
    manual.advance(0.05)
    await settle()
    assert not task.done()  # attempt 2 is still running
    manual.advance(0.05)
    await settle()
    with pytest.raises(ConnectionError) as caught:
        task.result()
    assert caught.value is last
    assert plan.finished == [1, 2]


async def test_an_exception_outside_on_ends_the_call_and_cancels_the_rest(
    manual: ManualClock,
) -> None:
    hedge = Hedge(0.05, on=ConnectionError, clock=manual)
    plan = Plan(manual, [1.0, 0.01], errors={2: KeyError("bug")})
    task = asyncio.create_task(hedge.acall(plan))
    await settle()
    manual.advance(0.05)
    await settle()
    manual.advance(0.01)
    await settle()
    with pytest.raises(KeyError):
        task.result()
    assert plan.cancelled == [1]


async def test_an_attempt_cancelled_from_inside_counts_as_a_failure(manual: ManualClock) -> None:
    hedge = Hedge(0.05, max_hedges=1, clock=manual)
    plan = Plan(manual, [0.01, 0.01], errors={1: asyncio.CancelledError()})
    task = asyncio.create_task(hedge.acall(plan))
    await settle()
    manual.advance(0.01)
    await settle()
    assert len(plan.started) == 2
    manual.advance(0.01)
    assert await task == "attempt 2"


async def test_when_every_attempt_is_cancelled_from_inside_the_call_is_cancelled(
    manual: ManualClock,
) -> None:
    hedge = Hedge(0.05, max_hedges=1, clock=manual)
    plan = Plan(
        manual, [0.01, 0.01], errors={1: asyncio.CancelledError(), 2: asyncio.CancelledError()}
    )
    task = asyncio.create_task(hedge.acall(plan))
    await settle()
    manual.advance(0.01)
    await settle()
    manual.advance(0.01)
    await settle()
    with pytest.raises(asyncio.CancelledError):
        task.result()


async def test_cancelling_the_call_cancels_every_attempt(manual: ManualClock) -> None:
    hedge = Hedge(0.05, clock=manual)
    plan = Plan(manual, [1.0, 1.0, 1.0])
    task = asyncio.create_task(hedge.acall(plan))
    await settle()
    manual.advance(0.05)
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(plan.cancelled) == [1, 2]
    await settle()
    assert manual.pending_sleepers == 0


async def test_zero_delay_starts_every_attempt_at_once(manual: ManualClock) -> None:
    hedge = Hedge(0.0, max_hedges=2, clock=manual)
    plan = Plan(manual, [0.3, 0.1, 0.2])
    task = asyncio.create_task(hedge.acall(plan))
    await settle(30)
    assert [when for _, when in plan.started] == [0.0, 0.0, 0.0]
    manual.advance(0.1)
    assert await task == "attempt 2"


async def test_decorator_hedges_an_async_function(manual: ManualClock) -> None:
    hedge = Hedge(0.05, clock=manual)
    plan = Plan(manual, [0.01])

    @hedge
    async def fetch() -> str:
        return await plan()

    task = asyncio.create_task(fetch())
    await settle()
    manual.advance(0.01)
    assert await task == "attempt 1"


# ---------------------------------------------------------------------- p95 delay


def test_latency_window_percentiles_and_bounded_memory() -> None:
    window = LatencyWindow(size=100)
    assert window.percentile(0.95) is None
    for value in range(1, 101):
        window.add(value / 1000)
    assert window.percentile(0.95) == 0.095
    assert window.percentile(0.5) == 0.050
    assert window.percentile(1.0) == 0.100
    for _ in range(100):  # the old samples roll out
        window.add(0.5)
    assert len(window) == 100
    assert window.percentile(0.05) == 0.5
    with pytest.raises(ConfigurationError):
        LatencyWindow(size=0)


async def test_p95_uses_the_initial_delay_until_enough_samples(manual: ManualClock) -> None:
    hedge = Hedge("p95", initial_delay=0.2, min_samples=20, window=100, clock=manual)
    assert hedge.current_delay() == 0.2
    for latency in [0.010] * 19 + [0.050]:
        plan = Plan(manual, [latency])
        task = asyncio.create_task(hedge.acall(plan))
        await settle()
        manual.advance(latency)
        await task
    assert len(hedge.latencies) == 20
    assert hedge.current_delay() == pytest.approx(0.010)  # the 19th of 20 sorted samples
    hedge.latencies.add(0.050)
    assert hedge.current_delay() == pytest.approx(0.050)


async def test_p95_delay_decides_when_the_hedge_starts(manual: ManualClock) -> None:
    hedge = Hedge("p95", min_samples=5, window=5, clock=manual)
    for latency in (0.01, 0.02, 0.03, 0.04, 0.08):
        hedge.latencies.add(latency)
    assert hedge.current_delay() == pytest.approx(0.08)
    plan = Plan(manual, [1.0, 0.01])
    task = asyncio.create_task(hedge.acall(plan))
    await settle()
    manual.advance(0.07)
    await settle()
    assert len(plan.started) == 1
    manual.advance(0.01)
    await settle()
    assert len(plan.started) == 2
    manual.advance(0.01)
    assert await task == "attempt 2"
    assert hedge.latencies.percentile(1.0) == pytest.approx(0.08)


def test_repr() -> None:
    assert repr(Hedge("p95", name="x")) == "Hedge(delay='p95', max_hedges=2, name='x')"
