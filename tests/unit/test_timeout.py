"""Timeout: async cancellation, sync worker threads, the clock seam, remaining time."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from seawall.clock import SYSTEM_CLOCK, ManualClock
from seawall.errors import ConfigurationError, TimeoutExceededError
from seawall.events import Event
from seawall.resilience._timeout import (
    TimedOut,
    Timeout,
    TimeoutMetrics,
    remaining_time,
    wait_signalled,
)

WAIT = 5.0  # real seconds a test waits for another thread before failing (never reached)


async def settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def eventually(predicate: Callable[[], bool]) -> None:
    """Wait (up to WAIT real seconds) for another thread to make ``predicate`` true."""
    pause = threading.Event()
    for _ in range(int(WAIT / 0.001)):
        if predicate():
            return
        pause.wait(0.001)
    raise AssertionError("condition never became true")


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        yield pool


class Gate:
    """A sync function that signals it started, then blocks until opened."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()
        self.finished = threading.Event()

    def __call__(self, value: Any = None) -> Any:
        self.started.set()
        try:
            if not self.opened.wait(WAIT):
                raise AssertionError("gate never opened")
            return value
        finally:
            self.finished.set()


class ManualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` moves only when the test says: drives the real-clock path."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0
        self.timers_armed = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        self.timers_armed += 1
        return super().call_at(when, callback, *args, **kwargs)


def run_on_manual_loop(body: Callable[[ManualTimeLoop], Coroutine[Any, Any, None]]) -> None:
    loop = ManualTimeLoop()
    try:
        loop.run_until_complete(body(loop))
    finally:
        loop.close()


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"seconds": 0}, "seconds"),
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": float("nan")}, "seconds"),
        ({"seconds": float("inf")}, "seconds"),
        ({"seconds": True}, "seconds"),
        ({"seconds": "2"}, "seconds"),
        ({"seconds": 1.0, "workers": 0}, "workers"),
        ({"seconds": 1.0, "workers": 2.5}, "workers"),
        ({"seconds": 1.0, "name": ""}, "name"),
        ({"seconds": 1.0, "clock": "monotonic"}, "clock"),
    ],
)
def test_invalid_configuration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"Timeout\({field}="):
        Timeout(**kwargs)


def test_options_are_kept() -> None:
    timeout = Timeout(2, name="db")
    assert timeout.seconds == 2.0
    assert isinstance(timeout.seconds, float)
    assert timeout.clock is SYSTEM_CLOCK
    assert repr(timeout) == "Timeout(2.0, name='db')"


# ------------------------------------------------------------- async, manual clock


async def test_acall_returns_the_result_and_leaves_no_timer() -> None:
    clock = ManualClock(0.0, autojump=False)
    timeout = Timeout(2.0, clock=clock)

    async def work(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert await timeout.acall(work, 1, b=2) == 3
    await settle()
    assert clock.pending_sleepers == 0
    assert timeout.metrics() == TimeoutMetrics(0, 0, 0)


async def test_acall_cancels_the_work_at_the_deadline() -> None:
    clock = ManualClock(0.0, autojump=False)
    timeout = Timeout(2.0, clock=clock, name="payments")
    seen: list[Event] = []
    timeout.events.subscribe(seen.append)
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await clock.asleep(10.0)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    task = asyncio.create_task(timeout.acall(slow))
    await settle()
    clock.advance(1.5)
    await settle()
    assert not task.done()
    clock.advance(0.5)
    await settle()
    assert task.done()
    assert cancelled.is_set()
    with pytest.raises(TimeoutExceededError) as caught:
        task.result()
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.timeout == 2.0
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert timeout.metrics() == TimeoutMetrics(1, 0, 0)
    assert seen == [TimedOut("payments", 2.0, abandoned=False)]


async def test_work_finishing_in_time_is_not_cancelled() -> None:
    clock = ManualClock(0.0, autojump=False)
    timeout = Timeout(2.0, clock=clock)

    async def work() -> str:
        await clock.asleep(1.0)
        return "on time"

    task = asyncio.create_task(timeout.acall(work))
    await settle()
    clock.advance(1.0)
    assert await task == "on time"
    clock.advance(5.0)
    await settle()
    assert timeout.metrics().timed_out == 0


async def test_the_works_own_timeout_error_passes_through_unchanged() -> None:
    timeout = Timeout(2.0, clock=ManualClock(0.0, autojump=False))
    own = TimeoutError("the driver's own timeout")

    async def work() -> None:
        raise own

    with pytest.raises(TimeoutError) as caught:
        await timeout.acall(work)
    assert caught.value is own
    assert timeout.metrics().timed_out == 0


async def test_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    clock = ManualClock(0.0, autojump=False)
    timeout = Timeout(2.0, clock=clock)

    async def slow() -> None:
        await clock.asleep(10.0)

    task = asyncio.create_task(timeout.acall(slow))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert timeout.metrics().timed_out == 0
    await settle()
    assert clock.pending_sleepers == 0


async def test_outer_timeout_fires_through_an_inner_one() -> None:
    clock = ManualClock(0.0, autojump=False)
    overall = Timeout(1.0, clock=clock, name="overall")
    per_attempt = Timeout(5.0, clock=clock, name="attempt")

    async def slow() -> None:
        await clock.asleep(10.0)

    task = asyncio.create_task(overall.acall(per_attempt.acall, slow))
    await settle()
    clock.advance(1.0)
    await settle()
    with pytest.raises(TimeoutExceededError) as caught:
        task.result()
    assert caught.value.timeout == 1.0
    assert overall.metrics().timed_out == 1
    assert per_attempt.metrics().timed_out == 0


async def test_inner_timeout_fires_first_and_the_outer_carries_on() -> None:
    clock = ManualClock(0.0, autojump=False)
    overall = Timeout(5.0, clock=clock)
    per_attempt = Timeout(1.0, clock=clock)

    async def slow() -> None:
        await clock.asleep(10.0)

    async def attempt_then_recover() -> str:
        try:
            await per_attempt.acall(slow)
        except TimeoutExceededError:
            return "recovered"
        return "unexpected"

    task = asyncio.create_task(overall.acall(attempt_then_recover))
    await settle()
    clock.advance(1.0)
    assert await task == "recovered"
    assert (per_attempt.metrics().timed_out, overall.metrics().timed_out) == (1, 0)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_work_that_swallows_the_cancellation_keeps_its_result() -> None:
    clock = ManualClock(0.0, autojump=False)
    timeout = Timeout(1.0, clock=clock)

    async def stubborn() -> str:
        try:
            await clock.asleep(10.0)
        except asyncio.CancelledError:
            return "swallowed"
        return "finished"

    async def run() -> tuple[str, int]:
        result = await timeout.acall(stubborn)
        return result, asyncio.current_task().cancelling()  # type: ignore[union-attr]

    task = asyncio.create_task(run())
    await settle()
    clock.advance(1.0)
    assert await task == ("swallowed", 0)


# --------------------------------------------- async, real clock (manual-time loop)


def test_real_clock_path_fires_each_call_at_its_own_deadline() -> None:
    timeout = Timeout(2.0)
    outcomes: dict[str, str] = {}

    async def body(loop: ManualTimeLoop) -> None:
        hang = asyncio.Event()

        async def call(label: str, finish: asyncio.Event) -> None:
            try:
                await timeout.acall(finish.wait)
                outcomes[label] = "finished"
            except TimeoutExceededError:
                outcomes[label] = f"timed out at {loop.now}"

        quick = asyncio.Event()
        tasks = [asyncio.create_task(call("a", hang))]
        await settle()
        loop.now += 0.5
        tasks.append(asyncio.create_task(call("b", quick)))
        tasks.append(asyncio.create_task(call("c", hang)))
        await settle()
        quick.set()
        await settle()
        assert outcomes == {"b": "finished"}
        loop.now += 1.5  # a's deadline (102.0)
        await settle()
        assert outcomes["a"] == "timed out at 102.0"
        assert "c" not in outcomes
        loop.now += 0.5  # c's deadline (102.5)
        await settle()
        assert outcomes["c"] == "timed out at 102.5"
        await asyncio.gather(*tasks)
        queue = timeout._last_queue
        assert queue is not None
        assert not queue.entries
        assert queue.timer is None  # nothing left to watch: no timer armed

    run_on_manual_loop(body)
    assert timeout.metrics().timed_out == 2


def test_real_clock_path_reuses_one_timer_for_many_calls() -> None:
    timeout = Timeout(1.0)

    async def body(loop: ManualTimeLoop) -> None:
        async def quick() -> int:
            return 1

        armed_before = loop.timers_armed
        for _ in range(100):
            assert await timeout.acall(quick) == 1
        assert loop.timers_armed - armed_before == 1
        loop.now += 1.0
        await settle()
        queue = timeout._last_queue
        assert queue is not None
        assert not queue.entries
        assert queue.timer is None

    run_on_manual_loop(body)
    assert timeout.metrics().timed_out == 0


def test_one_timeout_serves_two_loops() -> None:
    timeout = Timeout(1.0)

    async def body(loop: ManualTimeLoop) -> None:
        task = asyncio.create_task(timeout.acall(asyncio.Event().wait))
        await settle()
        loop.now += 1.0
        with pytest.raises(TimeoutExceededError):
            await task

    run_on_manual_loop(body)
    run_on_manual_loop(body)
    assert timeout.metrics().timed_out == 2


# ------------------------------------------------------------------ remaining time


async def test_remaining_time_is_visible_inside_and_takes_the_tightest() -> None:
    clock = ManualClock(0.0, autojump=False)
    outer = Timeout(3.0, clock=clock)
    inner = Timeout(10.0, clock=clock)
    readings: list[float | None] = []

    async def read() -> None:
        readings.append(remaining_time())
        await clock.asleep(0.5)
        readings.append(remaining_time())

    assert remaining_time() is None
    task = asyncio.create_task(outer.acall(inner.acall, read))
    await settle()
    clock.advance(0.5)
    await task
    assert readings == [3.0, 2.5]
    assert remaining_time() is None


def test_remaining_time_in_a_sync_call(clock: ManualClock) -> None:
    timeout = Timeout(2.0, clock=clock)
    assert timeout.call(remaining_time) == 2.0

    def read_after_sleeping() -> float | None:
        clock.sleep(0.5)
        return remaining_time()

    assert Timeout(4.0, clock=clock).call(read_after_sleeping) == 3.5


# ----------------------------------------------------------------------- sync path


def test_call_runs_on_a_pool_thread_with_the_callers_context(clock: ManualClock) -> None:
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    variable.set("r-42")
    timeout = Timeout(2.0, clock=clock)

    def where(suffix: str) -> tuple[str, str]:
        return threading.current_thread().name, variable.get() + suffix

    thread_name, value = timeout.call(where, suffix="!")
    assert thread_name.startswith("seawall-timeout")
    assert thread_name != threading.current_thread().name
    assert value == "r-42!"


def test_call_propagates_the_exception(clock: ManualClock) -> None:
    timeout = Timeout(2.0, clock=clock)
    with pytest.raises(ZeroDivisionError):
        timeout.call(lambda: 1 / 0)
    assert timeout.metrics() == TimeoutMetrics(0, 0, 0)


def test_work_that_takes_too_long_on_the_clock_times_out(clock: ManualClock) -> None:
    timeout = Timeout(2.0, clock=clock)
    seen: list[Event] = []
    timeout.events.subscribe(seen.append)
    with pytest.raises(TimeoutExceededError):
        timeout.call(clock.sleep, 3.0)
    assert timeout.call(clock.sleep, 2.0) is None  # exactly at the deadline is in time
    assert timeout.metrics() == TimeoutMetrics(1, 0, 0)  # finished (late): not abandoned
    assert seen == [TimedOut("timeout", 2.0, abandoned=False)]


def test_a_stuck_call_is_abandoned_and_counted(
    clock: ManualClock, executor: concurrent.futures.ThreadPoolExecutor
) -> None:
    timeout = Timeout(2.0, clock=clock, name="legacy")
    seen: list[Event] = []
    timeout.events.subscribe(seen.append)
    gate = Gate()
    caller = executor.submit(timeout.call, gate, "ignored")
    assert gate.started.wait(WAIT)
    clock.advance(2.0)
    with pytest.raises(TimeoutExceededError):
        caller.result(WAIT)
    assert timeout.metrics() == TimeoutMetrics(1, 1, 1)
    assert seen == [TimedOut("legacy", 2.0, abandoned=True)]
    assert not gate.finished.is_set()  # the thread could not be stopped
    gate.opened.set()
    eventually(lambda: timeout.metrics().abandoned_running == 0)
    assert timeout.metrics() == TimeoutMetrics(1, 1, 0)


def test_a_call_queued_behind_stuck_workers_times_out_and_never_runs(
    clock: ManualClock, executor: concurrent.futures.ThreadPoolExecutor
) -> None:
    timeout = Timeout(2.0, clock=clock, workers=1)
    gate = Gate()
    ran: list[str] = []
    first = executor.submit(timeout.call, gate)
    assert gate.started.wait(WAIT)
    second = executor.submit(timeout.call, ran.append, "second")
    while not second.done():  # the second caller may start after a first advance
        clock.advance(2.0)
        concurrent.futures.wait([second], timeout=0.01)
    for caller in (first, second):
        with pytest.raises(TimeoutExceededError):
            caller.result(WAIT)
    assert timeout.metrics() == TimeoutMetrics(2, 1, 1)  # only the first was running
    gate.opened.set()
    assert timeout.call(ran.append, "third") is None
    assert ran == ["third"]


def test_the_pool_is_bounded(clock: ManualClock) -> None:
    timeout = Timeout(2.0, clock=clock, workers=2)
    names = {timeout.call(lambda: threading.current_thread().name) for _ in range(20)}
    assert 1 <= len(names) <= 2


def test_decorator_on_sync_and_async_functions(clock: ManualClock) -> None:
    timeout = Timeout(2.0, clock=clock)

    @timeout
    def sync_double(x: int) -> int:
        return 2 * x

    @timeout
    async def async_double(x: int) -> int:
        return 2 * x

    assert sync_double(3) == 6
    assert asyncio.run(async_double(4)) == 8


# --------------------------------------------------------------- the clock seam


def test_wait_signalled_with_the_system_clock_waits_for_real() -> None:
    event = threading.Event()
    assert not wait_signalled(event.wait, SYSTEM_CLOCK.now(), SYSTEM_CLOCK)
    event.set()
    assert wait_signalled(event.wait, SYSTEM_CLOCK.now() + 10.0, SYSTEM_CLOCK)


def test_wait_signalled_with_a_manual_clock_ends_when_time_is_advanced(
    clock: ManualClock, executor: concurrent.futures.ThreadPoolExecutor
) -> None:
    event = threading.Event()
    polls = threading.Semaphore(0)

    def counting_wait(seconds: float) -> bool:
        polls.release()
        return event.wait(seconds)

    waiter = executor.submit(wait_signalled, counting_wait, clock.now() + 30.0, clock)
    assert polls.acquire(timeout=WAIT)
    clock.advance(29.0)
    assert polls.acquire(timeout=WAIT)
    assert polls.acquire(timeout=WAIT)  # still polling after seeing the advanced time
    assert not waiter.done()
    clock.advance(1.0)
    assert waiter.result(WAIT) is False

    event.set()
    assert wait_signalled(event.wait, clock.now() + 30.0, clock) is True


def test_wait_signalled_counts_time_advanced_before_the_wait(clock: ManualClock) -> None:
    deadline = clock.now() + 1.0
    clock.advance(1.0)
    assert wait_signalled(threading.Event().wait, deadline, clock) is False
