"""The shared breaker's sans-I/O mirror, and the runner over a scripted fake store."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest

from seawall.clock import Clock, ManualClock
from seawall.errors import EngineUnavailableError, UnsupportedEngineError
from seawall.events import Event
from seawall.resilience.breaker import (
    BreakerConfig,
    CallNotPermittedError,
    CircuitBreaker,
    CircuitState,
    CircuitStateChanged,
    CircuitStoreRecovered,
    CircuitStoreUnavailable,
    CircuitStoreUnavailableError,
    CountWindow,
    SharedBreakerCore,
    SlowCall,
)
from seawall.resilience.breaker._core import REJECTED
from seawall.resilience.breaker._shared import ASK_STORE, STORE_DOWN, Report, SharedState

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def reply(
    state: CircuitState, epoch: int, remaining: float = 0.0, *, granted: bool = False
) -> SharedState:
    return SharedState(state, epoch, remaining, 0.0, 0.0, 0.0, 0, granted, "test")


def config(**options: object) -> BreakerConfig:
    values: dict[str, object] = {"window": CountWindow(10), "minimum_calls": 4, "open_for": 10.0}
    values.update(options)
    return BreakerConfig(**values)  # type: ignore[arg-type]


# -- the mirror ---------------------------------------------------------------------------


def test_closed_mirror_counts_outcomes_for_the_next_report() -> None:
    core = SharedBreakerCore(config(), now=0.0)
    core.apply_reply(0.0, reply(CLOSED, 7))
    ticket = core.fast_ticket
    assert ticket
    for _ in range(5):
        core.add_success()
    core.on_error(0.0, 0.0, ticket)
    core.on_error(0.0, 0.0, ticket)
    assert core.take_report(0.01) == Report(7, 7, 2, 0, 0)
    assert core.take_report(0.02) is None  # nothing new, no sync due
    assert core.take_report(1.5) == Report(7, 0, 0, 0, 0)  # a periodic sync


def test_slow_calls_are_counted_with_a_slow_call_rule() -> None:
    core = SharedBreakerCore(config(slow_call=SlowCall(over=1.0)), now=0.0)
    core.apply_reply(0.0, reply(CLOSED, 3))
    assert core.fast_ticket == 0  # timing needed: no fast path
    ticket = core.try_acquire(0.0)
    core.on_success(2.0, 2.0, ticket)
    core.on_success(2.0, 0.1, ticket)
    core.on_error(2.0, 1.5, ticket)
    assert core.take_report(2.0) == Report(3, 3, 1, 2, 0)


def test_failures_wake_the_flusher() -> None:
    core = SharedBreakerCore(config(), now=0.0)
    wakes: list[int] = []
    core.on_pending = lambda: wakes.append(1)
    core.apply_reply(0.0, reply(CLOSED, 1))
    core.add_success()
    assert wakes == []
    core.on_error(0.0, 0.0, core.fast_ticket)
    assert wakes == [1]


def test_open_mirror_rejects_locally_then_asks_the_store() -> None:
    core = SharedBreakerCore(config(), now=100.0)
    core.apply_reply(100.0, reply(OPEN, 9, remaining=5.0))
    assert core.fast_ticket == 0
    assert core.reject_until == 105.0
    assert core.try_acquire(104.9) == REJECTED
    assert core.retry_after(103.0) == 2.0
    assert core.poll(105.0) is HALF_OPEN
    assert core.try_acquire(105.0) == ASK_STORE
    ticket = core.apply_acquire(105.0, reply(HALF_OPEN, 10, granted=True))
    assert ticket == core.period
    assert core.state is HALF_OPEN
    denied = core.apply_acquire(105.0, reply(HALF_OPEN, 10, granted=False))
    assert denied == REJECTED
    assert core.try_acquire(105.05) == REJECTED  # no re-ask for a moment
    assert core.try_acquire(105.2) == ASK_STORE
    core.on_success(105.3, 0.3, ticket)
    assert core.take_report(105.3) == Report(10, 1, 0, 0, 0)


def test_a_still_open_answer_moves_the_local_deadline() -> None:
    core = SharedBreakerCore(config(), now=100.0)
    core.apply_reply(100.0, reply(OPEN, 9, remaining=5.0))
    assert core.try_acquire(105.0) == ASK_STORE
    assert core.apply_acquire(105.0, reply(OPEN, 9, remaining=0.5)) == REJECTED
    assert core.reject_until == 105.5
    assert core.try_acquire(105.2) == REJECTED  # decided locally again


def test_ignored_trial_hands_the_permit_back_to_the_store() -> None:
    core = SharedBreakerCore(config(), now=0.0)
    core.apply_reply(0.0, reply(HALF_OPEN, 4))
    ticket = core.apply_acquire(0.0, reply(HALF_OPEN, 4, granted=True))
    core.on_ignored(ticket)
    assert core.take_report(0.0) == Report(4, 0, 0, 0, 1)


def test_stale_replies_and_messages_are_ignored() -> None:
    core = SharedBreakerCore(config(), now=0.0)
    core.apply_reply(0.0, reply(OPEN, 20, remaining=10.0))
    core.apply_reply(0.0, reply(CLOSED, 19))
    core.apply_change(0.0, CLOSED, 18, 0.0, 1)
    assert core.state is OPEN
    core.apply_change(1.0, CLOSED, 21, 0.0, 1)
    assert core.state is CLOSED
    assert core.epoch == 21


def test_outcomes_of_an_old_period_are_dropped() -> None:
    core = SharedBreakerCore(config(), now=0.0)
    core.apply_reply(0.0, reply(CLOSED, 1))
    old_ticket = core.fast_ticket
    core.apply_change(0.0, OPEN, 2, 10.0, 1)
    core.apply_change(10.0, CLOSED, 4, 0.0, 1)
    core.on_error(10.0, 0.0, old_ticket)
    assert core.take_report(10.0) == Report(4, 0, 0, 0, 0)


def test_transitions_are_announced() -> None:
    core = SharedBreakerCore(config(), now=0.0)
    seen: list[tuple[CircuitState, CircuitState]] = []
    core.on_transition = lambda t: seen.append((t.previous, t.current))
    core.apply_reply(0.0, reply(CLOSED, 1))
    core.apply_change(0.0, OPEN, 2, 10.0, 1)
    core.apply_reply(10.0, reply(HALF_OPEN, 3))
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_fail_open_decides_locally_from_the_last_shared_state() -> None:
    core = SharedBreakerCore(config(), on_store_error="fail_open", now=0.0)
    core.apply_reply(0.0, reply(OPEN, 5, remaining=10.0))
    assert core.store_failed(1.0, EngineUnavailableError("gone"))
    assert not core.store_failed(1.5, EngineUnavailableError("gone"))  # not news
    assert core.degraded
    assert core.fast_ticket == 0
    assert core.try_acquire(5.0) == REJECTED  # still open locally until 10.0
    assert core.poll(10.0) is HALF_OPEN
    ticket = core.try_acquire(10.0)
    assert ticket > 0
    core.on_success(10.0, 0.0, ticket)
    assert core.local.metrics(10.0).calls == 1
    # The store answers again: the shared state wins.
    core.apply_reply(11.0, reply(CLOSED, 9))
    assert not core.degraded
    assert core.state is CLOSED
    assert core.fast_ticket


def test_fail_closed_rejects_every_call() -> None:
    core = SharedBreakerCore(config(), on_store_error="fail_closed", now=0.0)
    core.apply_reply(0.0, reply(CLOSED, 5))
    core.store_failed(1.0, EngineUnavailableError("gone"))
    assert core.try_acquire(1.0) == STORE_DOWN
    assert core.reject_until == -math.inf  # the runner must reach try_acquire


def test_degraded_core_probes_the_store() -> None:
    core = SharedBreakerCore(config(), now=0.0)
    core.apply_reply(0.0, reply(CLOSED, 5))
    core.store_failed(0.0, EngineUnavailableError("gone"))
    assert core.take_report(0.1) is None
    assert core.take_report(0.1, force=True) is not None


# -- the runner over a fake store -----------------------------------------------------------


class FakeStore:
    """A scripted store: answers from ``state`` or raises ``error``."""

    def __init__(self, state: SharedState, error: Exception | None = None) -> None:
        self.state = state
        self.error = error
        self.acquires = 0
        self.commands: list[str] = []
        self.cores: list[SharedBreakerCore] = []
        self.on_change: Callable[[BaseException | None], None] | None = None

    def attach(
        self,
        name: str,
        core: SharedBreakerCore,
        clock: Clock,
        on_store_change: Callable[[BaseException | None], None],
    ) -> None:
        self.cores.append(core)
        self.on_change = on_store_change
        if self.error is not None:
            if core.store_failed(clock.now(), self.error):
                on_store_change(self.error)
            return
        core.apply_reply(clock.now(), self.state)

    def detach(self, core: SharedBreakerCore) -> None:
        self.cores.remove(core)

    def acquire(self, core: SharedBreakerCore) -> SharedState:
        self.acquires += 1
        if self.error is not None:
            raise self.error
        return self.state

    def command(self, core: SharedBreakerCore, operation: str) -> SharedState:
        if self.error is not None:
            raise self.error
        self.commands.append(operation)
        return self.state

    def describe(self) -> str:
        return "fake store"


def shared(clock: ManualClock, store: FakeStore, **options: object) -> CircuitBreaker:
    return CircuitBreaker(
        "shared",
        clock=clock,
        store=store,
        minimum_calls=2,
        open_for=10.0,
        **options,  # type: ignore[arg-type]
    )


def test_runner_follows_the_store_state(clock: ManualClock) -> None:
    store = FakeStore(reply(OPEN, 2, remaining=3.0))
    breaker = shared(clock, store)
    with pytest.raises(CallNotPermittedError) as caught:
        breaker.call(lambda: 1)
    assert caught.value.retry_after == 3.0
    assert store.acquires == 0  # decided from the mirror
    clock.advance(3.0)
    store.state = reply(HALF_OPEN, 3, granted=True)
    assert breaker.call(lambda: "trial") == "trial"
    assert store.acquires == 1
    store.state = reply(HALF_OPEN, 3, granted=False)
    with pytest.raises(CallNotPermittedError):
        breaker.call(lambda: 1)
    breaker.close()
    assert store.cores == []


async def test_async_runner_asks_for_permits_off_the_event_loop(clock: ManualClock) -> None:
    store = FakeStore(reply(HALF_OPEN, 3, granted=True))
    breaker = shared(clock, store)

    async def trial() -> str:
        return "trial"

    assert await breaker.acall(trial) == "trial"
    assert store.acquires == 1


def test_fail_closed_raises_a_clear_error(clock: ManualClock) -> None:
    store = FakeStore(reply(CLOSED, 1), error=EngineUnavailableError("Redis is gone"))
    breaker = shared(clock, store, on_store_error="fail_closed")
    with pytest.raises(CircuitStoreUnavailableError) as caught:
        breaker.call(lambda: 1)
    message = str(caught.value)
    assert "fake store" in message
    assert "fail_closed" in message
    assert "Redis is gone" in message
    assert isinstance(caught.value.__cause__, EngineUnavailableError)


def test_fail_open_keeps_protecting_locally(clock: ManualClock) -> None:
    store = FakeStore(reply(CLOSED, 1), error=EngineUnavailableError("Redis is gone"))
    seen: list[Event] = []
    breaker = shared(clock, store, on_store_error="fail_open")
    breaker.events.subscribe(seen.append)
    assert breaker.call(lambda: 1) == 1

    def boom() -> None:
        raise RuntimeError

    with pytest.raises(RuntimeError):
        breaker.call(boom)
    assert breaker.state is OPEN  # 1 of 2 failed: tripped by the local fallback core
    with pytest.raises(CallNotPermittedError) as caught:
        breaker.call(lambda: 1)
    assert caught.value.state == "open"
    assert any(isinstance(event, CircuitStateChanged) for event in seen)


def test_store_events_are_emitted(clock: ManualClock) -> None:
    store = FakeStore(reply(CLOSED, 1))
    breaker = shared(clock, store)
    seen: list[Event] = []
    breaker.events.subscribe(seen.append)
    assert store.on_change is not None
    core = breaker._core
    assert isinstance(core, SharedBreakerCore)
    error = EngineUnavailableError("gone")
    core.store_failed(clock.now(), error)
    store.on_change(error)
    core.apply_reply(clock.now(), reply(CLOSED, 5))
    store.on_change(None)
    kinds = [type(event) for event in seen]
    assert CircuitStoreUnavailable in kinds
    assert CircuitStoreRecovered in kinds


def test_manual_controls_go_to_the_store(clock: ManualClock) -> None:
    store = FakeStore(reply(CLOSED, 1))
    breaker = shared(clock, store)
    store.state = reply(CircuitState.FORCED_OPEN, 2)
    breaker.force_open()
    assert breaker.state is CircuitState.FORCED_OPEN
    store.state = reply(CLOSED, 3)
    breaker.reset()
    assert breaker.state is CLOSED
    assert store.commands == ["force_open", "reset"]
    store.error = EngineUnavailableError("gone")
    with pytest.raises(EngineUnavailableError):
        breaker.disable()


def test_store_argument_is_checked(clock: ManualClock) -> None:
    with pytest.raises(UnsupportedEngineError):
        CircuitBreaker("x", store="memory://")
    with pytest.raises(ValueError, match="breaker store"):
        CircuitBreaker("x", store=object())  # type: ignore[arg-type]


def test_async_fail_closed(clock: ManualClock) -> None:
    store = FakeStore(reply(CLOSED, 1), error=EngineUnavailableError("gone"))
    breaker = shared(clock, store, on_store_error="fail_closed")

    async def work() -> int:
        return 1

    with pytest.raises(CircuitStoreUnavailableError):
        asyncio.run(breaker.acall(work))
