"""The in-memory store: idle-key sweeping, the max_keys cap, the state guard and
thread safety (real threads, no sleeps: the clock is manual)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError, EngineError
from seawall.resilience.ratelimit import (
    GCRA,
    FixedWindow,
    MemoryRateLimitStore,
    RateLimiter,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from seawall.resilience.ratelimit import memory as memory_module
from seawall.resilience.ratelimit.memory import MIN_SWEEP_SIZE, MemoryLimit, StateGuard


def _limit(limiter: RateLimiter) -> MemoryLimit:
    bound = limiter._bound
    assert isinstance(bound, MemoryLimit)
    return bound


def test_idle_keys_are_swept_when_the_dict_doubles(clock: ManualClock) -> None:
    limiter = RateLimiter(GCRA(rate=1, per=1.0, burst=1), clock=clock)
    limit = _limit(limiter)
    for index in range(MIN_SWEEP_SIZE):
        limiter.try_acquire(f"old-{index}")
    assert len(limit) == MIN_SWEEP_SIZE
    clock.advance(1.0)  # every old key is full again
    limiter.try_acquire("new-0")  # one past the sweep size: sweeps
    assert len(limit) == 1
    limiter.try_acquire("new-1")
    assert len(limit) == 2


def test_keys_still_limited_survive_a_sweep(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(limit=1, window=10.0), clock=clock)
    for index in range(MIN_SWEEP_SIZE + 1):
        limiter.try_acquire(f"k-{index}")
    assert len(_limit(limiter)) == MIN_SWEEP_SIZE + 1  # none idle: none dropped
    assert not limiter.try_acquire("k-0")


def test_cleanup_drops_idle_keys_now(clock: ManualClock) -> None:
    store = MemoryRateLimitStore()
    first = RateLimiter(SlidingWindowLog(2, 1.0), store, name="a", clock=clock)
    second = RateLimiter(SlidingWindowCounter(2, 1.0), store, name="b", clock=clock)
    first.try_acquire("x")
    second.try_acquire("y")
    clock.advance(0.5)
    first.try_acquire("z")
    assert store.cleanup() == 0
    clock.advance(0.5)  # x's log is empty; y's counter still weighs in the next window
    assert first.cleanup() == 1
    clock.advance(1.0)
    assert store.cleanup() == 2
    assert len(_limit(first)) == len(_limit(second)) == 0


def test_max_keys_evicts_the_keys_nearest_full_first(clock: ManualClock) -> None:
    store = MemoryRateLimitStore(max_keys=8)
    limiter = RateLimiter(TokenBucket(rate=1, per=1.0, burst=10), store, clock=clock)
    for index in range(8):
        limiter.try_acquire(f"k-{index}", cost=index + 1)  # k-0 is nearest to full
    limit = _limit(limiter)
    assert len(limit) == 8
    limiter.try_acquire("new")
    assert len(limit) <= 8
    assert "new" in limit._states
    assert "k-7" in limit._states  # the deepest in debt is kept
    assert "k-0" not in limit._states  # it forgot the least by going


def test_max_keys_of_one_keeps_the_current_key(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 60.0), MemoryRateLimitStore(max_keys=1), clock=clock)
    assert limiter.try_acquire("a")
    assert limiter.try_acquire("b")
    assert not limiter.try_acquire("b")
    assert list(_limit(limiter)._states) == ["b"]


def test_no_cap_still_sweeps_idle_keys(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(1, 1.0), MemoryRateLimitStore(max_keys=None), clock=clock)
    for index in range(3 * MIN_SWEEP_SIZE):
        limiter.try_acquire(f"k-{index}")
        clock.advance(0.01)
    assert len(_limit(limiter)) < 2 * MIN_SWEEP_SIZE


@pytest.mark.parametrize("max_keys", [0, -1, 2.5, True, "10"])
def test_max_keys_must_be_a_positive_integer(max_keys: object) -> None:
    with pytest.raises(ConfigurationError, match="max_keys must be an integer >= 1 or None"):
        MemoryRateLimitStore(max_keys=max_keys)  # type: ignore[arg-type]


def test_a_name_bound_with_another_clock_is_refused(clock: ManualClock) -> None:
    store = MemoryRateLimitStore()
    RateLimiter(GCRA(5), store, name="api", clock=clock)
    with pytest.raises(ConfigurationError, match="already bound"):
        RateLimiter(GCRA(5), store, name="api", clock=ManualClock())
    assert "api" in repr(store)
    assert "GCRA 5/1s burst 5" in repr(_limit(RateLimiter(GCRA(5), store, name="api", clock=clock)))


# --------------------------------------------------------------------------- the guard


def test_a_held_guard_makes_a_kernel_wait_for_it(clock: ManualClock) -> None:
    limiter = RateLimiter(FixedWindow(2, 60.0), clock=clock)
    guard = _limit(limiter)._guard
    guard.take()  # another thread is mid-update
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(limiter.try_acquire("k")))
    worker.start()
    worker.join(timeout=0.05)
    assert worker.is_alive()  # blocked on the guard
    assert results == []
    guard.give(True)
    worker.join(timeout=5)
    assert results == [True]


def test_a_guard_held_forever_is_reported_not_hung(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_module, "STUCK_AFTER", 0.01)
    guard = StateGuard()
    guard.take()
    with pytest.raises(EngineError, match="stayed locked"):
        guard.wait()


def test_the_guard_is_a_context_manager() -> None:
    guard = StateGuard()
    with guard, pytest.raises(IndexError):
        guard.take()
    guard.take()
    guard.give(True)


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.mark.usefixtures("frequent_thread_switches")
@pytest.mark.parametrize(
    "algorithm",
    [
        TokenBucket(rate=1, per=3600.0, burst=1500),
        GCRA(rate=1, per=3600.0, burst=1500),
        FixedWindow(1500, 3600.0),
        SlidingWindowLog(1500, 3600.0),
        SlidingWindowCounter(1500, 3600.0),
    ],
    ids=lambda algorithm: algorithm.kind,
)
def test_threads_racing_never_exceed_the_limit(clock: ManualClock, algorithm: object) -> None:
    limiter = RateLimiter(algorithm, clock=clock)  # type: ignore[arg-type]
    granted = [0] * 6
    start = threading.Barrier(6)

    def hammer(slot: int) -> None:
        start.wait()
        for _ in range(1000):
            if limiter.try_acquire("shared"):
                granted[slot] += 1

    threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 1500
