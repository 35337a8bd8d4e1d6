"""Adaptive concurrency limit: the AIMD and Gradient algorithms, the limiter, and a simulated
server (a queueing model on a manual clock) that it must converge on."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.clock import ManualClock
from seawall.errors import ConcurrencyLimitError, ConfigurationError, RejectedError
from seawall.events import Event
from seawall.resilience._adaptive import (
    AIMD,
    AdaptiveLimiter,
    AdaptiveMetrics,
    CallShed,
    Gradient,
    LimitAlgorithm,
    LimitChanged,
    Permit,
)

# ----------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: AIMD(initial=0), r"AIMD\(initial=0\)"),
        (lambda: AIMD(min=5, max=4, initial=4), r"AIMD\(min=5, max=4\).*min must be <= max"),
        (lambda: AIMD(initial=300), r"AIMD\(initial=300\).*\[1, 200\]"),
        (lambda: AIMD(backoff=1.0), r"AIMD\(backoff=1.0\).*\(0, 1\)"),
        (lambda: AIMD(backoff=0), r"AIMD\(backoff=0\)"),
        (lambda: AIMD(timeout=0), r"AIMD\(timeout=0\)"),
        (lambda: AIMD(timeout=math.inf), r"AIMD\(timeout=inf\)"),
        (lambda: Gradient(min=0), r"Gradient\(min=0\)"),
        (lambda: Gradient(max=True), r"Gradient\(max=True\)"),
        (lambda: Gradient(smoothing=1.5), r"Gradient\(smoothing=1.5\)"),
        (lambda: Gradient(long_window=0), r"Gradient\(long_window=0\)"),
        (lambda: Gradient(tolerance=0.9), r"Gradient\(tolerance=0.9\)"),
        (lambda: Gradient(queue_size=-1), r"Gradient\(queue_size=-1\)"),
        (lambda: Gradient(queue_size="4"), r"Gradient\(queue_size='4'\)"),  # type: ignore[arg-type]
        (lambda: AdaptiveLimiter(algorithm=20), r"AdaptiveLimiter\(algorithm=20\)"),  # type: ignore[arg-type]
        (lambda: AdaptiveLimiter(drop_on=()), r"AdaptiveLimiter\(drop_on=\(\)\)"),
        (lambda: AdaptiveLimiter(drop_on=(ValueError, 3)), r"AdaptiveLimiter\(drop_on="),  # type: ignore[arg-type]
        (lambda: AdaptiveLimiter(name=""), r"AdaptiveLimiter\(name=''\)"),
        (lambda: AdaptiveLimiter(clock=None), r"AdaptiveLimiter\(clock=None\)"),  # type: ignore[arg-type]
    ],
)
def test_invalid_configuration_names_the_field(factory: Callable[[], Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        factory()


def test_algorithms_satisfy_the_protocol() -> None:
    assert isinstance(AIMD(), LimitAlgorithm)
    assert isinstance(Gradient(), LimitAlgorithm)
    assert isinstance(AdaptiveLimiter().algorithm, Gradient)


# -------------------------------------------------------------------------- AIMD


def test_aimd_adds_one_when_the_limit_is_in_use() -> None:
    aimd = AIMD(initial=10, max=12)
    assert aimd.update(0.0, 0.01, in_flight=5, dropped=False) == 11
    assert aimd.update(0.1, 0.01, in_flight=6, dropped=False) == 12
    assert aimd.update(0.2, 0.01, in_flight=12, dropped=False) == 12  # at max


def test_aimd_leaves_the_limit_alone_when_the_caller_uses_little_of_it() -> None:
    aimd = AIMD(initial=10)
    assert aimd.update(0.0, 0.01, in_flight=4, dropped=False) == 10


def test_aimd_backs_off_on_a_drop_or_a_slow_call() -> None:
    aimd = AIMD(initial=20, backoff=0.5, timeout=1.0, min=3)
    assert aimd.update(10.0, 0.2, in_flight=20, dropped=True) == 10
    assert aimd.update(20.0, 1.5, in_flight=10, dropped=False) == 5  # slower than timeout
    assert aimd.update(30.0, 0.1, in_flight=5, dropped=True) == 3  # not below min


def test_aimd_backs_off_once_per_round_trip() -> None:
    aimd = AIMD(initial=40, backoff=0.5)
    assert aimd.update(10.0, 0.5, in_flight=40, dropped=True) == 20
    # calls sent before that backoff (they started at 9.6, 9.9) fail too: no second cut
    assert aimd.update(10.1, 0.5, in_flight=40, dropped=True) == 20
    assert aimd.update(10.2, 0.3, in_flight=40, dropped=True) == 20
    # a call sent after it failing is news
    assert aimd.update(10.6, 0.5, in_flight=20, dropped=True) == 10


# ---------------------------------------------------------------------- Gradient


def test_gradient_grows_while_latency_stays_at_the_no_load_level() -> None:
    gradient = Gradient(initial=20, max=200)
    limits = [
        gradient.update(i * 0.01, 0.010, in_flight=gradient.limit, dropped=False)
        for i in range(200)
    ]
    assert limits[-1] > 60
    assert limits == sorted(limits)
    assert gradient.rtt_noload == 0.010


def test_gradient_shrinks_when_latency_rises_above_tolerance() -> None:
    gradient = Gradient(initial=50, tolerance=1.5)
    for i in range(10):
        gradient.update(i * 0.01, 0.010, in_flight=50, dropped=False)
    before = gradient.limit
    for i in range(30):
        gradient.update(1 + i * 0.03, 0.030, in_flight=gradient.limit, dropped=False)
    assert gradient.limit < before / 2


def test_gradient_tolerates_latency_within_tolerance() -> None:
    gradient = Gradient(initial=50, tolerance=2.0)
    gradient.update(0.0, 0.010, in_flight=50, dropped=False)
    before = gradient.limit
    for i in range(20):
        gradient.update(1 + i * 0.02, 0.019, in_flight=gradient.limit, dropped=False)
    assert gradient.limit >= before


def test_gradient_treats_a_drop_as_the_steepest_gradient() -> None:
    gradient = Gradient(initial=100, queue_size=0.0, smoothing=0.5)
    assert gradient.update(0.0, 0.010, in_flight=100, dropped=True) == 75  # 100 -> 50, halfway


def test_gradient_ignores_samples_while_the_caller_uses_under_half() -> None:
    gradient = Gradient(initial=40)
    assert gradient.update(0.0, 5.0, in_flight=19, dropped=False) == 40


def test_gradient_no_load_latency_forgets_after_the_long_window() -> None:
    gradient = Gradient(initial=10, long_window=5)
    gradient.update(0.0, 0.001, in_flight=10, dropped=False)
    for i in range(4):
        gradient.update(i + 1.0, 0.050, in_flight=10, dropped=False)
    assert gradient.rtt_noload == 0.001
    gradient.update(6.0, 0.050, in_flight=10, dropped=False)
    assert gradient.rtt_noload == 0.050


def test_gradient_accepts_a_fixed_or_custom_queue_size() -> None:
    fixed = Gradient(initial=10, queue_size=4, smoothing=0.5)
    assert fixed.update(0.0, 0.01, in_flight=10, dropped=False) == 12  # 10 + (14 - 10) / 2
    custom = Gradient(initial=10, queue_size=lambda limit: limit, smoothing=0.5)
    assert custom.update(0.0, 0.01, in_flight=10, dropped=False) == 15


@given(
    samples=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=10.0),
            st.integers(min_value=0, max_value=500),
            st.booleans(),
        ),
        max_size=200,
    ),
    which=st.sampled_from(["aimd", "gradient"]),
)
def test_the_limit_always_stays_within_min_and_max(
    samples: list[tuple[float, int, bool]], which: str
) -> None:
    algorithm: LimitAlgorithm = (
        AIMD(initial=10, min=2, max=50, timeout=1.0)
        if which == "aimd"
        else Gradient(initial=10, min=2, max=50)
    )
    for index, (rtt, in_flight, dropped) in enumerate(samples):
        limit = algorithm.update(float(index), rtt, in_flight, dropped)
        assert 2 <= limit <= 50
        assert limit == algorithm.limit


# ------------------------------------------------------------------- the limiter


def test_call_passes_through_and_feeds_the_algorithm(clock: ManualClock) -> None:
    limiter = AdaptiveLimiter(AIMD(initial=2, timeout=1.0), clock=clock, name="db")
    seen: list[Event] = []
    limiter.events.subscribe(seen.append)

    def work(a: int, b: int) -> int:
        clock.sleep(0.25)
        return a + b

    assert limiter.call(work, 1, b=2) == 3
    assert limiter.limit == 3  # 1 in flight of 2: in use, so +1
    assert seen == [LimitChanged("db", 2, 3, 0.25, False)]
    assert limiter.metrics() == AdaptiveMetrics(limit=3, in_flight=0, rejected=0, dropped=0)


def test_errors_count_as_drops_and_shrink_the_limit(clock: ManualClock) -> None:
    limiter = AdaptiveLimiter(AIMD(initial=20, backoff=0.5), clock=clock)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            limiter.call(_fail_with, ConnectionError("reset"))
        clock.advance(1.0)  # a new round trip each time
    assert limiter.limit == 2
    assert limiter.metrics().dropped == 3


def test_exceptions_outside_drop_on_release_without_a_sample(clock: ManualClock) -> None:
    limiter = AdaptiveLimiter(AIMD(initial=20, backoff=0.5), drop_on=TimeoutError, clock=clock)
    with pytest.raises(KeyError):
        limiter.call(_fail_with, KeyError("bug, not overload"))
    assert limiter.metrics() == AdaptiveMetrics(20, 0, 0, 0)
    with pytest.raises(TimeoutError):
        limiter.call(_fail_with, TimeoutError())
    assert limiter.metrics() == AdaptiveMetrics(10, 0, 0, 1)


def test_sheds_calls_beyond_the_limit(clock: ManualClock) -> None:
    limiter = AdaptiveLimiter(AIMD(initial=2, min=1, max=2), clock=clock, name="search")
    seen: list[Event] = []
    limiter.events.subscribe(seen.append, types=(CallShed,))
    held = [limiter.try_acquire(), limiter.try_acquire()]
    assert all(isinstance(permit, Permit) for permit in held)
    assert limiter.try_acquire() is None
    ran: list[int] = []
    with pytest.raises(ConcurrencyLimitError) as caught:
        limiter.call(ran.append, 1)
    assert ran == []
    error = caught.value
    assert isinstance(error, RejectedError)
    assert (error.limiter, error.limit, error.in_flight) == ("search", 2, 2)
    assert seen == [CallShed("search", 2, 2), CallShed("search", 2, 2)]
    assert limiter.metrics() == AdaptiveMetrics(2, 2, 2, 0)
    for permit in held:
        assert permit is not None
        permit.success()
    limiter.call(ran.append, 1)
    assert ran == [1]


def test_a_permit_is_released_exactly_once(clock: ManualClock) -> None:
    limiter = AdaptiveLimiter(AIMD(initial=5), clock=clock)
    permit = limiter.try_acquire()
    assert permit is not None
    assert permit.in_flight == 1
    permit.ignore()
    with pytest.raises(RuntimeError, match="already released"):
        permit.success()
    with pytest.raises(RuntimeError, match="already released"):
        permit.ignore()
    assert limiter.metrics().in_flight == 0


async def test_acall_sheds_and_counts_async_calls() -> None:
    clock = ManualClock(0.0, autojump=False)
    limiter = AdaptiveLimiter(AIMD(initial=2, max=2, timeout=1.0), clock=clock)

    async def slow() -> str:
        await clock.asleep(0.5)
        return "ok"

    first = asyncio.create_task(limiter.acall(slow))
    second = asyncio.create_task(limiter.acall(slow))
    await asyncio.sleep(0)
    with pytest.raises(ConcurrencyLimitError):
        await limiter.acall(slow)
    assert limiter.metrics() == AdaptiveMetrics(2, 2, 1, 0)
    clock.advance(0.5)
    assert await asyncio.gather(first, second) == ["ok", "ok"]
    assert limiter.metrics().in_flight == 0


async def test_cancellation_releases_the_slot_without_a_sample() -> None:
    clock = ManualClock(0.0, autojump=False)
    limiter = AdaptiveLimiter(AIMD(initial=4, backoff=0.5), clock=clock)
    task = asyncio.create_task(limiter.acall(clock.asleep, 10.0))
    await asyncio.sleep(0)
    assert limiter.metrics().in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.metrics() == AdaptiveMetrics(4, 0, 0, 0)


async def test_async_errors_are_drops() -> None:
    limiter = AdaptiveLimiter(AIMD(initial=10, backoff=0.5), clock=ManualClock(0.0))

    async def fail() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        await limiter.acall(fail)
    assert limiter.metrics() == AdaptiveMetrics(5, 0, 0, 1)


# ------------------------------------------------------------ a simulated server


@dataclass
class Simulation:
    """Open-loop arrivals at ``rate`` per second into a FIFO server with ``capacity`` workers.

    Service time is ``service(t)`` seconds (+-30% jitter). Everything runs on the manual
    clock, one event at a time: no threads, no sleeps.
    """

    limiter: AdaptiveLimiter
    clock: ManualClock
    capacity: int = 10
    rate: float = 2000.0
    service: Callable[[float], float] = lambda elapsed: 0.010
    seed: int = 7
    trace: list[tuple[float, int, float]] = field(default_factory=list)  # (t, limit, rtt)
    shed: int = 0

    def run(self, duration: float) -> None:
        rng = random.Random(self.seed)
        sequence = itertools.count()
        start = self.clock.now()
        workers = [start] * self.capacity
        events: list[tuple[float, int, Permit | None]] = [(start, next(sequence), None)]
        while events:
            when, _, permit = heapq.heappop(events)
            self.clock.advance(when - self.clock.now())
            if permit is not None:  # a call completes
                rtt = when - permit.started
                permit.success()
                self.trace.append((when - start, self.limiter.limit, rtt))
                continue
            if when - start < duration:
                heapq.heappush(events, (when + 1 / self.rate, next(sequence), None))
            permit = self.limiter.try_acquire()
            if permit is None:
                self.shed += 1
                continue
            begins = max(when, heapq.heappop(workers))
            ends = begins + self.service(begins - start) * rng.uniform(0.7, 1.3)
            heapq.heappush(workers, ends)
            heapq.heappush(events, (ends, next(sequence), permit))

    def window(self, start: float, end: float) -> tuple[list[int], list[float]]:
        rows = [(limit, rtt) for t, limit, rtt in self.trace if start <= t < end]
        return [limit for limit, _ in rows], sorted(rtt for _, rtt in rows)


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))]


def test_gradient_converges_near_the_servers_capacity_and_sheds_the_rest() -> None:
    clock = ManualClock(1000.0)
    simulation = Simulation(AdaptiveLimiter(Gradient(), clock=clock), clock)
    simulation.run(duration=9.0)
    limits, rtts = simulation.window(6.0, 9.0)
    assert min(limits) >= 8  # capacity is 10 calls
    assert max(limits) <= 35
    assert 10 <= sum(limits) / len(limits) <= 25
    assert _percentile(rtts, 0.5) < 0.020  # little queueing: service time is 10 ms
    assert len(rtts) / 3.0 > 0.9 * 1000  # the server stays busy (capacity: 1000 calls/s)
    assert simulation.shed > 0.4 * 2000 * 9.0  # about half of the offered load is shed


def test_aimd_converges_around_its_latency_timeout() -> None:
    clock = ManualClock(1000.0)
    limiter = AdaptiveLimiter(AIMD(initial=20, timeout=0.05), clock=clock)
    simulation = Simulation(limiter, clock)
    simulation.run(duration=9.0)
    limits, rtts = simulation.window(6.0, 9.0)
    assert min(limits) >= 25
    assert max(limits) <= 120
    assert _percentile(rtts, 0.99) < 0.1
    assert len(rtts) / 3.0 > 0.9 * 1000
    assert simulation.shed > 0.4 * 2000 * 9.0


def test_gradient_follows_a_downstream_that_slows_down_for_good() -> None:
    clock = ManualClock(1000.0)
    simulation = Simulation(
        AdaptiveLimiter(Gradient(long_window=300), clock=clock),
        clock,
        service=lambda elapsed: 0.010 if elapsed < 4.0 else 0.030,
    )
    simulation.run(duration=12.0)
    before, _ = simulation.window(2.0, 4.0)
    right_after, _ = simulation.window(4.2, 5.0)
    settled, rtts = simulation.window(9.0, 12.0)
    assert sum(right_after) / len(right_after) < 0.6 * sum(before) / len(before)  # backs off
    assert min(settled) >= 8  # then accepts the new normal
    assert max(settled) <= 35
    assert _percentile(rtts, 0.5) < 0.060  # 30 ms service: bounded queueing
    assert len(rtts) / 3.0 > 0.85 * 333  # and keeps the slower server busy


def test_limit_grows_under_healthy_latency_and_sheds_nothing() -> None:
    clock = ManualClock(1000.0)
    limiter = AdaptiveLimiter(Gradient(initial=5, max=100), clock=clock)
    simulation = Simulation(limiter, clock, capacity=1000, rate=2000.0)
    simulation.run(duration=2.0)
    limits, _ = simulation.window(0.0, 2.0)
    assert limits[0] <= 6
    assert max(limits) >= 20  # 2000/s x 10 ms = 20 in flight needed
    late, _ = simulation.window(1.0, 2.0)
    assert min(late) >= 20
    assert simulation.shed < 0.05 * 2000 * 2.0


def _fail_with(error: BaseException) -> None:
    raise error
