"""RateLimiter: try_acquire / acquire / decide in sync and async, waits on a manual
clock, cost checks, events, the store-failure fallbacks and the choice of store."""

from __future__ import annotations

import math
from typing import Any

import pytest

import seawall.resilience.ratelimit as ratelimit
from seawall.clock import ManualClock
from seawall.engines import connect
from seawall.errors import (
    ConfigurationError,
    EngineUnavailableError,
    RateLimitedError,
    RejectedError,
    UnsupportedEngineError,
)
from seawall.events import Event
from seawall.resilience.ratelimit import (
    GCRA,
    FixedWindow,
    MemoryRateLimitStore,
    RateLimitAcquired,
    RateLimitDecision,
    RateLimiter,
    RateLimitRejected,
    RateLimitStoreFailed,
    SlidingWindowLog,
    TokenBucket,
)


def test_public_names_are_exactly_the_documented_set() -> None:
    assert sorted(ratelimit.__all__) == sorted(
        [
            "DEFAULT_KEY",
            "GCRA",
            "RateLimitAlgorithm",
            "BoundRateLimit",
            "RateLimitDecision",
            "FixedWindow",
            "MemoryRateLimitStore",
            "RateLimitAcquired",
            "RateLimitRejected",
            "RateLimitStore",
            "RateLimitStoreFailed",
            "RateLimiter",
            "SlidingWindowCounter",
            "SlidingWindowLog",
            "TokenBucket",
        ]
    )
    for name in ratelimit.__all__:
        assert getattr(ratelimit, name) is not None


# --------------------------------------------------------------------------- sync


def test_try_acquire_grants_up_to_the_limit_per_key(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=2, window=1.0), clock=clock)
    assert [limiter.try_acquire("alice") for _ in range(3)] == [True, True, False]
    assert limiter.try_acquire("bob")
    assert limiter.try_acquire()  # the default key is a key of its own
    clock.advance(1.0)
    assert limiter.try_acquire("alice")


def test_acquire_waits_on_the_clock_for_permits(clock: ManualClock) -> None:
    limiter = RateLimiter(GCRA(rate=10, per=1.0, burst=1), clock=clock, max_wait=1.0)
    limiter.acquire("k")
    limiter.acquire("k")
    assert clock.sleeps == [pytest.approx(0.1)]
    assert clock.now() == pytest.approx(1000.1)


def test_acquire_raises_at_once_when_the_wait_exceeds_max_wait(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=1, window=50.0), name="api", clock=clock)
    limiter.acquire("k", max_wait=5.0)
    with pytest.raises(RateLimitedError) as caught:
        limiter.acquire("k", max_wait=5.0)
    assert clock.sleeps == []  # no point waiting 5 s for a permit 50 s away
    error = caught.value
    assert isinstance(error, RejectedError)
    assert error.retry_after == pytest.approx(50.0)
    assert (error.limiter, error.key) == ("api", "k")
    assert "rate limit 'api' exceeded for key 'k'" in str(error)


def test_acquire_uses_the_limiters_max_wait_by_default(clock: ManualClock) -> None:
    refusing = RateLimiter(TokenBucket(rate=1, burst=1), clock=clock)
    refusing.acquire()
    with pytest.raises(RateLimitedError):
        refusing.acquire()
    patient = RateLimiter(TokenBucket(rate=1, burst=1), clock=clock, max_wait=2.0)
    patient.acquire()
    patient.acquire()
    assert clock.sleeps == [pytest.approx(1.0)]


class RacingClock(ManualClock):
    """A manual clock where another caller grabs the permit during every sleep."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.rival: RateLimiter | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.rival is not None:
            self.rival.try_acquire("k")


def test_acquire_keeps_waiting_while_others_take_the_permits() -> None:
    clock = RacingClock(1000.0)
    limiter = RateLimiter(FixedWindow(limit=1, window=1.0), clock=clock, max_wait=2.5)
    limiter.acquire("k")
    clock.rival = limiter
    with pytest.raises(RateLimitedError) as caught:
        limiter.acquire("k")
    assert clock.sleeps == [1.0, 1.0]  # waited twice, the third wait would pass 2.5 s
    assert caught.value.retry_after == pytest.approx(1.0)


def test_infinite_max_wait_waits_as_long_as_needed(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=1, window=500.0), clock=clock, max_wait=math.inf)
    limiter.acquire()
    limiter.acquire()
    assert clock.sleeps == [500.0]


def test_decide_reports_remaining_and_reset(clock: ManualClock) -> None:
    limiter = RateLimiter(TokenBucket(rate=1, per=2.0, burst=3), clock=clock)
    first = limiter.decide("k", cost=2)
    assert first == RateLimitDecision(
        allowed=True, remaining=1, retry_after=0.0, reset_after=4.0, limit=3
    )
    denied = limiter.decide("k", cost=2)
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(2.0)
    assert denied.remaining == 1
    peek = limiter.decide("k", cost=0)
    assert peek.allowed
    assert peek.remaining == 1


def test_cost_is_checked_against_the_capacity(clock: ManualClock) -> None:
    limiter = RateLimiter(SlidingWindowLog(limit=5, window=1.0), name="uploads", clock=clock)
    assert limiter.try_acquire(cost=5)
    for bad in (6, -1, 1.5, "2", None):
        with pytest.raises(ConfigurationError, match=r"cost must be an integer from 0 to 5") as e:
            limiter.try_acquire(cost=bad)  # type: ignore[arg-type]
        assert "'uploads'" in str(e.value)
    with pytest.raises(ConfigurationError):
        limiter.acquire(cost=6)
    with pytest.raises(ConfigurationError):
        limiter.decide(cost=6)


def test_reset_gives_the_key_its_allowance_back(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=1, window=60.0), clock=clock)
    assert limiter.try_acquire("k")
    assert not limiter.try_acquire("k")
    limiter.reset("k")
    assert limiter.try_acquire("k")


def test_call_and_decorator_acquire_the_default_key(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=2, window=60.0), clock=clock)

    @limiter
    def double(value: int) -> int:
        return value * 2

    assert limiter.call(double.__wrapped__, 1) == 2  # type: ignore[attr-defined]
    assert double(2) == 4
    with pytest.raises(RateLimitedError):
        double(3)
    assert not limiter.try_acquire()


# --------------------------------------------------------------------------- async


async def test_async_methods_mirror_the_sync_ones(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=2, window=1.0), clock=clock, max_wait=1.0)
    assert await limiter.atry_acquire("k")
    await limiter.aacquire("k")
    assert not await limiter.atry_acquire("k")
    await limiter.aacquire("k")  # waits for the next window
    assert clock.sleeps == [1.0]
    decision = await limiter.adecide("k", cost=0)
    assert decision.remaining == 1
    await limiter.areset("k")
    assert (await limiter.adecide("k", cost=0)).remaining == 2
    with pytest.raises(ConfigurationError):
        await limiter.aacquire("k", cost=3)
    with pytest.raises(ConfigurationError):
        await limiter.atry_acquire("k", cost=3)
    with pytest.raises(ConfigurationError):
        await limiter.adecide("k", cost=3)


async def test_aacquire_raises_when_the_wait_is_too_long(clock: ManualClock) -> None:
    limiter = RateLimiter(GCRA(rate=1, per=10.0, burst=1), clock=clock, max_wait=1.0)
    await limiter.aacquire()
    with pytest.raises(RateLimitedError) as caught:
        await limiter.aacquire()
    assert caught.value.retry_after == pytest.approx(10.0)
    await limiter.aacquire(max_wait=10.0)
    assert clock.sleeps == [pytest.approx(10.0)]


async def test_acall_and_async_decorator(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=2, window=60.0), clock=clock)

    @limiter
    async def echo(value: str) -> str:
        return value

    async def shout(value: str) -> str:
        return value.upper()

    assert await echo("a") == "a"
    assert await limiter.acall(shout, "b") == "B"
    with pytest.raises(RateLimitedError):
        await echo("c")


# --------------------------------------------------------------------------- events


def test_events_report_grants_waits_and_rejections(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=1, window=1.0), name="api", clock=clock)
    seen: list[Event] = []
    limiter.events.subscribe(seen.append)
    limiter.try_acquire("k")
    limiter.try_acquire("k")
    limiter.acquire("k", max_wait=1.0)
    with pytest.raises(RateLimitedError):
        limiter.acquire("k")
    limiter.decide("other", cost=0)  # a peek is no acquisition
    limiter.decide("other", cost=1)
    assert seen == [
        RateLimitAcquired("api", "k", 1, 0.0),
        RateLimitRejected("api", "k", 1, 1.0),
        RateLimitAcquired("api", "k", 1, 1.0),
        RateLimitRejected("api", "k", 1, 1.0),
        RateLimitAcquired("api", "other", 1, 0.0),
    ]


async def test_async_events(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=1, window=1.0), name="api", clock=clock)
    seen: list[Event] = []
    limiter.events.subscribe(seen.append)
    await limiter.aacquire("k")
    assert not await limiter.atry_acquire("k")
    await limiter.aacquire("k", max_wait=1.0)
    await limiter.adecide("k")
    assert [type(event) for event in seen] == [
        RateLimitAcquired,
        RateLimitRejected,
        RateLimitAcquired,
        RateLimitRejected,
    ]
    assert seen[2] == RateLimitAcquired("api", "k", 1, 1.0)


def test_no_event_is_built_without_a_listener(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=1, window=1.0), clock=clock)
    assert not limiter.events.active
    limiter.try_acquire()
    seen: list[Event] = []
    unsubscribe = limiter.events.subscribe(seen.append)
    limiter.try_acquire()
    unsubscribe()
    limiter.try_acquire()
    assert len(seen) == 1


# --------------------------------------------------------------------------- store failures


class BrokenLimit:
    """A bound limit whose engine is down."""

    local = False

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self) -> Any:
        self.calls += 1
        raise EngineUnavailableError("Redis at redis://x is unreachable", url="redis://x")

    def take(self, key: str, cost: int) -> float:
        return float(self._fail())

    async def atake(self, key: str, cost: int) -> float:
        return float(self._fail())

    def decide(self, key: str, cost: int) -> RateLimitDecision:
        return self._fail()  # type: ignore[no-any-return]

    async def adecide(self, key: str, cost: int) -> RateLimitDecision:
        return self._fail()  # type: ignore[no-any-return]

    def reset(self, key: str) -> None:
        self._fail()

    async def areset(self, key: str) -> None:
        self._fail()


class BrokenStore:
    def __init__(self) -> None:
        self.limit = BrokenLimit()
        self.closed = False

    def bind(self, algorithm: Any, name: str, clock: Any) -> BrokenLimit:
        return self.limit

    def cleanup(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


async def test_a_failing_store_raises_by_default(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 1.0), BrokenStore(), clock=clock)
    with pytest.raises(EngineUnavailableError):
        limiter.try_acquire()
    with pytest.raises(EngineUnavailableError):
        limiter.acquire()
    with pytest.raises(EngineUnavailableError):
        limiter.decide()
    with pytest.raises(EngineUnavailableError):
        await limiter.atry_acquire()
    with pytest.raises(EngineUnavailableError):
        await limiter.aacquire()
    with pytest.raises(EngineUnavailableError):
        await limiter.adecide()


async def test_fail_open_allows_and_reports(clock: ManualClock) -> None:
    store = BrokenStore()
    limiter = RateLimiter(FixedWindow(1, 1.0), store, clock=clock, on_store_error="fail_open")
    seen: list[Event] = []
    limiter.events.subscribe(seen.append, types=(RateLimitStoreFailed,))
    assert limiter.try_acquire("k")
    limiter.acquire("k")
    assert limiter.decide("k") == RateLimitDecision(True, 1, 0.0, 0.0, 1)
    assert await limiter.atry_acquire("k")
    await limiter.aacquire("k")
    assert (await limiter.adecide("k")).allowed
    assert len(seen) == 6
    assert isinstance(seen[0], RateLimitStoreFailed)
    assert seen[0].fallback == "fail_open"
    assert isinstance(seen[0].error, EngineUnavailableError)


async def test_fail_closed_denies_with_unknown_retry_after(clock: ManualClock) -> None:
    store = BrokenStore()
    limiter = RateLimiter(
        FixedWindow(1, 1.0), store, clock=clock, on_store_error="fail_closed", max_wait=math.inf
    )
    assert not limiter.try_acquire("k")
    with pytest.raises(RateLimitedError) as caught:
        limiter.acquire("k")  # never sleeps forever on an unknown wait
    assert caught.value.retry_after is None
    assert limiter.decide("k") == RateLimitDecision(False, 0, None, 0.0, 1)
    assert not await limiter.atry_acquire("k")
    with pytest.raises(RateLimitedError):
        await limiter.aacquire("k")
    assert not (await limiter.adecide("k")).allowed
    assert clock.sleeps == []


def test_a_store_failing_during_a_wait_ends_the_wait(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 1.0), clock=clock, max_wait=5.0)
    answers = iter([1.0])

    def take_then_die(key: str, cost: int) -> float:
        for wait in answers:
            return wait
        raise EngineUnavailableError("the store died while we slept")

    limiter._take = take_then_die
    with pytest.raises(EngineUnavailableError):
        limiter.acquire()
    assert clock.sleeps == [1.0]


# --------------------------------------------------------------------------- configuration


def test_constructor_validates_its_arguments(clock: ManualClock) -> None:
    with pytest.raises(ConfigurationError, match="algorithm must be TokenBucket, GCRA"):
        RateLimiter("100/s")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="name must be a non-empty string"):
        RateLimiter(GCRA(1), name="")
    with pytest.raises(ConfigurationError, match=r"max_wait must be a number of seconds >= 0"):
        RateLimiter(GCRA(1), max_wait=-1)
    with pytest.raises(ConfigurationError, match=r"max_wait"):
        RateLimiter(GCRA(1), max_wait=math.nan)
    with pytest.raises(ConfigurationError, match=r"on_store_error must be one of"):
        RateLimiter(GCRA(1), on_store_error="ignore")  # type: ignore[arg-type]
    limiter = RateLimiter(GCRA(1), clock=clock)
    with pytest.raises(ConfigurationError, match=r"max_wait"):
        limiter.acquire(max_wait=-0.5)


def test_store_choice(clock: ManualClock) -> None:
    private = RateLimiter(FixedWindow(1, 60.0), clock=clock)
    assert isinstance(private.store, MemoryRateLimitStore)
    from_url = RateLimiter(FixedWindow(1, 60.0), "memory://", clock=clock)
    assert isinstance(from_url.store, MemoryRateLimitStore)
    assert from_url.store is not private.store
    with pytest.raises(UnsupportedEngineError, match="rate limiting has no store for the 'sqlite'"):
        RateLimiter(FixedWindow(1, 60.0), "sqlite://:memory:")
    with pytest.raises(UnsupportedEngineError, match="store must be None, an engine URL"):
        RateLimiter(FixedWindow(1, 60.0), 42)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedEngineError):
        RateLimiter(FixedWindow(1, 60.0), "nope://x")


def test_limiters_on_one_memory_engine_share_a_named_limit(clock: ManualClock) -> None:
    engine = connect("memory://")
    first = RateLimiter(FixedWindow(2, 60.0), engine, name="api", clock=clock)
    second = RateLimiter(FixedWindow(2, 60.0), engine, name="api", clock=clock)
    other = RateLimiter(FixedWindow(2, 60.0), engine, name="other", clock=clock)
    assert first.try_acquire("k")
    assert second.try_acquire("k")
    assert not first.try_acquire("k")
    assert other.try_acquire("k")
    with pytest.raises(ConfigurationError, match="already bound in this store"):
        RateLimiter(FixedWindow(3, 60.0), engine, name="api", clock=clock)


def test_close_releases_the_store(clock: ManualClock) -> None:
    store = BrokenStore()
    limiter = RateLimiter(FixedWindow(1, 1.0), store, clock=clock)
    assert limiter.cleanup() == 0
    limiter.close()
    assert store.closed


async def test_aclose_falls_back_to_close(clock: ManualClock) -> None:
    store = BrokenStore()
    limiter = RateLimiter(FixedWindow(1, 1.0), store, clock=clock)
    await limiter.aclose()
    assert store.closed
    owned = RateLimiter(FixedWindow(1, 1.0), "memory://", clock=clock)
    await owned.aclose()
    owned.close()


def test_repr_names_the_algorithm(clock: ManualClock) -> None:
    limiter = RateLimiter(TokenBucket(100, 1.0, 200), name="api", clock=clock)
    assert repr(limiter) == (
        "RateLimiter(token bucket 100/1s burst 200, name='api', "
        "store=MemoryRateLimitStore, max_wait=0.0)"
    )
