"""Bulkhead (semaphore, sync + async on the same slots) and ThreadPoolBulkhead."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from seawall.clock import ManualClock
from seawall.errors import BulkheadFullError, ConfigurationError, RejectedError
from seawall.events import Event
from seawall.resilience._bulkhead import (
    Bulkhead,
    BulkheadMetrics,
    BulkheadQueueFullError,
    BulkheadRejected,
    BulkheadWaiting,
    ThreadPoolBulkhead,
)

WAIT = 5.0  # real seconds a test waits for another thread before failing (never reached)


async def settle(rounds: int = 10) -> None:
    """Let every ready task run (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        yield pool


class Gate:
    """A sync function that signals it started, then blocks until opened."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()

    def __call__(self, value: Any = None) -> Any:
        self.started.set()
        if not self.opened.wait(WAIT):
            raise AssertionError("gate never opened")
        return value


def waiting_signal(bulkhead: Bulkhead) -> threading.Semaphore:
    """A semaphore released once per caller that starts waiting for a slot."""
    signal = threading.Semaphore(0)
    bulkhead.events.subscribe(lambda event: signal.release(), types=(BulkheadWaiting,))
    return signal


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": -3}, "max_concurrent"),
        ({"max_concurrent": 2.5}, "max_concurrent"),
        ({"max_concurrent": True}, "max_concurrent"),
        ({"max_wait": -0.1}, "max_wait"),
        ({"max_wait": float("nan")}, "max_wait"),
        ({"max_wait": float("inf")}, "max_wait"),
        ({"max_wait": "1"}, "max_wait"),
        ({"name": ""}, "name"),
        ({"clock": object()}, "clock"),
    ],
)
def test_invalid_configuration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"Bulkhead\({field}=") as caught:
        Bulkhead(**kwargs)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_workers": 0}, "max_workers"),
        ({"max_workers": "2"}, "max_workers"),
        ({"queue_size": -1}, "queue_size"),
        ({"queue_size": 1.5}, "queue_size"),
        ({"name": ""}, "name"),
    ],
)
def test_thread_pool_invalid_configuration(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"ThreadPoolBulkhead\({field}="):
        ThreadPoolBulkhead(**kwargs)


# ------------------------------------------------------------------ sync runner


def test_call_returns_the_result_and_counts_it() -> None:
    bulkhead = Bulkhead(max_concurrent=2, name="db")
    assert bulkhead.call(lambda a, b=0: a + b, 2, b=3) == 5
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 0, 1, 2)


def test_an_exception_propagates_and_frees_the_slot() -> None:
    bulkhead = Bulkhead(max_concurrent=1)

    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        bulkhead.call(boom)
    assert bulkhead.call(lambda: "again") == "again"
    assert bulkhead.metrics().active == 0
    assert bulkhead.metrics().completed == 2


def test_full_bulkhead_rejects_at_once_with_data_and_event() -> None:
    bulkhead = Bulkhead(max_concurrent=1, name="payments")
    seen: list[Event] = []
    bulkhead.events.subscribe(seen.append)
    calls: list[str] = []

    def inner() -> None:
        calls.append("inner")

    def outer() -> None:
        with pytest.raises(BulkheadFullError) as caught:
            bulkhead.call(inner)
        error = caught.value
        assert isinstance(error, RejectedError)
        assert (error.bulkhead, error.max_concurrent, error.max_wait) == ("payments", 1, 0.0)
        assert "payments" in str(error)
        assert bulkhead.metrics().active == 1

    bulkhead.call(outer)
    assert calls == []
    assert seen == [BulkheadRejected("payments", 1, 0.0)]
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 1, 1, 1)


def test_sync_waiter_gets_the_slot_when_it_frees(
    executor: concurrent.futures.ThreadPoolExecutor, clock: ManualClock
) -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_wait=1.0, clock=clock)
    waiting = waiting_signal(bulkhead)
    gate = Gate()
    holder = executor.submit(bulkhead.call, gate, "held")
    assert gate.started.wait(WAIT)
    waiter = executor.submit(bulkhead.call, lambda: "waited")
    assert waiting.acquire(timeout=WAIT)
    assert bulkhead.metrics().queued == 1
    gate.opened.set()
    assert holder.result(WAIT) == "held"
    assert waiter.result(WAIT) == "waited"
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 0, 2, 1)
    assert clock.now() == 1000.0  # nothing waited on the clock


def test_sync_waiter_is_rejected_when_max_wait_passes_on_the_clock(
    executor: concurrent.futures.ThreadPoolExecutor, clock: ManualClock
) -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_wait=0.5, clock=clock, name="io")
    waiting = waiting_signal(bulkhead)
    gate = Gate()
    holder = executor.submit(bulkhead.call, gate)
    assert gate.started.wait(WAIT)
    waiter = executor.submit(bulkhead.call, lambda: "never")
    assert waiting.acquire(timeout=WAIT)
    clock.advance(0.5)
    with pytest.raises(BulkheadFullError, match="'io' is full"):
        waiter.result(WAIT)
    assert bulkhead.metrics() == BulkheadMetrics(1, 0, 1, 0, 1)
    gate.opened.set()
    holder.result(WAIT)
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 1, 1, 1)


def test_sync_waiters_are_served_in_arrival_order(
    executor: concurrent.futures.ThreadPoolExecutor, clock: ManualClock
) -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_wait=10.0, clock=clock)
    waiting = waiting_signal(bulkhead)
    order: list[int] = []
    gate = Gate()
    holder = executor.submit(bulkhead.call, gate)
    assert gate.started.wait(WAIT)
    waiters = []
    for number in range(4):
        waiters.append(executor.submit(bulkhead.call, order.append, number))
        assert waiting.acquire(timeout=WAIT)  # the next one arrives after this one queued
    gate.opened.set()
    holder.result(WAIT)
    for waiter in waiters:
        waiter.result(WAIT)
    assert order == [0, 1, 2, 3]


def test_threads_never_exceed_max_concurrent() -> None:
    bulkhead = Bulkhead(max_concurrent=3, max_wait=10.0)
    lock = threading.Lock()
    inside = 0
    peak = 0

    def work() -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        for _ in range(200):  # give other threads a chance to pile in
            pass
        with lock:
            inside -= 1

    def worker() -> None:
        for _ in range(300):
            bulkhead.call(work)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 6)
    assert 1 <= peak <= 3
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 0, 2400, 3)


# ----------------------------------------------------------------- async runner


async def test_acall_returns_the_result() -> None:
    bulkhead = Bulkhead(max_concurrent=2)

    async def add(a: int, b: int) -> int:
        return a + b

    assert await bulkhead.acall(add, 1, b=2) == 3
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 0, 1, 2)


async def test_async_full_bulkhead_rejects_at_once() -> None:
    bulkhead = Bulkhead(max_concurrent=2)
    release = asyncio.Event()

    async def hold() -> str:
        await release.wait()
        return "done"

    holders = [asyncio.create_task(bulkhead.acall(hold)) for _ in range(2)]
    await settle()
    with pytest.raises(BulkheadFullError):
        await bulkhead.acall(hold)
    assert bulkhead.metrics() == BulkheadMetrics(2, 0, 1, 0, 2)
    release.set()
    assert await asyncio.gather(*holders) == ["done", "done"]
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 1, 2, 2)


async def test_async_waiter_times_out_on_the_manual_clock() -> None:
    clock = ManualClock(50.0, autojump=False)
    bulkhead = Bulkhead(max_concurrent=1, max_wait=0.25, clock=clock, name="api")
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    holder = asyncio.create_task(bulkhead.acall(hold))
    await settle()
    waiter = asyncio.create_task(bulkhead.acall(hold))
    await settle()
    assert bulkhead.metrics().queued == 1
    clock.advance(0.125)
    await settle()
    assert not waiter.done()
    clock.advance(0.125)
    await settle()
    assert waiter.done()
    with pytest.raises(BulkheadFullError) as caught:
        waiter.result()
    assert caught.value.max_wait == 0.25
    assert bulkhead.metrics() == BulkheadMetrics(1, 0, 1, 0, 1)
    release.set()
    await holder


async def test_async_waiters_get_slots_in_order_before_their_deadline() -> None:
    clock = ManualClock(0.0, autojump=False)
    bulkhead = Bulkhead(max_concurrent=1, max_wait=1.0, clock=clock)
    order: list[int] = []
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    async def record(number: int) -> int:
        order.append(number)
        return number

    holder = asyncio.create_task(bulkhead.acall(hold))
    await settle()
    waiters = []
    for number in range(3):
        waiters.append(asyncio.create_task(bulkhead.acall(record, number)))
        await settle()
    assert bulkhead.metrics().queued == 3
    release.set()
    assert await asyncio.gather(*waiters) == [0, 1, 2]
    await holder
    assert order == [0, 1, 2]
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 0, 4, 1)
    assert clock.pending_sleepers == 0  # the expiry timers were cancelled


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    clock = ManualClock(0.0, autojump=False)
    bulkhead = Bulkhead(max_concurrent=1, max_wait=5.0, clock=clock)
    release = asyncio.Event()

    async def hold() -> str:
        await release.wait()
        return "ok"

    holder = asyncio.create_task(bulkhead.acall(hold))
    await settle()
    cancelled = asyncio.create_task(bulkhead.acall(hold))
    later = asyncio.create_task(bulkhead.acall(hold))
    await settle()
    assert bulkhead.metrics().queued == 2
    cancelled.cancel()
    await settle()
    assert cancelled.cancelled()
    assert bulkhead.metrics().queued == 1
    release.set()
    assert await holder == "ok"
    assert await later == "ok"
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 0, 2, 1)


async def test_a_waiter_cancelled_as_its_grant_comes_passes_the_slot_on() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_wait=5.0)
    release = asyncio.Event()
    tasks: list[asyncio.Task[str]] = []

    async def hold_then_cancel_the_first_waiter() -> str:
        await release.wait()
        tasks[0].cancel()  # it is still queued; our exit below grants it the slot anyway
        return "held"

    async def work() -> str:
        return "ok"

    holder = asyncio.create_task(bulkhead.acall(hold_then_cancel_the_first_waiter))
    await settle()
    tasks.append(asyncio.create_task(bulkhead.acall(work)))
    tasks.append(asyncio.create_task(bulkhead.acall(work)))
    await settle()
    assert bulkhead.metrics().queued == 2
    release.set()
    assert await holder == "held"
    assert await tasks[1] == "ok"
    assert tasks[0].cancelled()
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 0, 2, 1)


async def test_a_thread_releasing_a_slot_wakes_an_async_waiter() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_wait=WAIT)
    gate = Gate()
    loop = asyncio.get_running_loop()
    holder = loop.run_in_executor(None, bulkhead.call, gate, "thread")
    await loop.run_in_executor(None, gate.started.wait, WAIT)

    async def mine() -> str:
        return "task"

    waiter = asyncio.create_task(bulkhead.acall(mine))
    await settle()
    assert bulkhead.metrics().queued == 1
    gate.opened.set()
    assert await waiter == "task"
    assert await holder == "thread"
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 0, 2, 1)


async def test_a_task_releasing_a_slot_wakes_a_thread_waiter() -> None:
    bulkhead = Bulkhead(max_concurrent=1, max_wait=WAIT)
    waiting = waiting_signal(bulkhead)
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def hold() -> None:
        await release.wait()

    holder = asyncio.create_task(bulkhead.acall(hold))
    await settle()
    thread_waiter = loop.run_in_executor(None, bulkhead.call, lambda: "thread")
    assert await loop.run_in_executor(None, waiting.acquire, True, WAIT)
    release.set()
    await holder
    assert await thread_waiter == "thread"


def test_one_bulkhead_serves_threads_and_two_event_loops_at_once() -> None:
    bulkhead = Bulkhead(max_concurrent=2, max_wait=WAIT * 6)
    peak = 0
    inside = 0
    lock = threading.Lock()

    def enter() -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)

    def leave() -> None:
        nonlocal inside
        with lock:
            inside -= 1

    async def async_work() -> None:
        enter()
        await asyncio.sleep(0)
        leave()

    def sync_work() -> None:
        enter()
        for _ in range(100):
            pass
        leave()

    async def many() -> None:
        await asyncio.gather(*(bulkhead.acall(async_work) for _ in range(500)))

    def sync_caller() -> None:
        for _ in range(500):
            bulkhead.call(sync_work)

    threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(2)]
    threads += [threading.Thread(target=sync_caller) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 6)
    assert peak <= 2
    assert bulkhead.metrics() == BulkheadMetrics(0, 0, 0, 2000, 2)


def test_decorator_wraps_sync_and_async_functions() -> None:
    bulkhead = Bulkhead(max_concurrent=1)

    @bulkhead
    def double(x: int) -> int:
        return 2 * x

    @bulkhead
    async def triple(x: int) -> int:
        return 3 * x

    assert double(4) == 8
    assert asyncio.run(triple(4)) == 12
    assert bulkhead.metrics().completed == 2


# -------------------------------------------- stateful: async bulkhead vs a model


class AsyncBulkheadModel(RuleBasedStateMachine):
    """Random arrivals, completions, cancellations and clock moves against a FIFO model."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(0.0, autojump=False)
        self.max_concurrent = 2
        self.max_wait = 1.0
        self.bulkhead = Bulkhead(2, max_wait=1.0, clock=self.clock)
        self.tasks: dict[int, asyncio.Task[int]] = {}
        self.releases: dict[int, asyncio.Event] = {}
        self.next_id = 0
        # the model
        self.running: list[int] = []
        self.waiting: list[tuple[int, float]] = []  # (id, deadline) in arrival order
        self.rejected = 0
        self.completed = 0

    def teardown(self) -> None:
        tasks = list(self.tasks.values())

        async def drain() -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.loop.run_until_complete(drain())
        finally:
            self.loop.close()

    def settle(self) -> None:
        self.loop.run_until_complete(settle(20))

    def model_grant(self) -> None:
        while self.waiting and len(self.running) < self.max_concurrent:
            call_id, _ = self.waiting.pop(0)
            self.running.append(call_id)

    @rule()
    def arrive(self) -> None:
        call_id = self.next_id
        self.next_id += 1
        release = asyncio.Event()
        self.releases[call_id] = release

        async def hold() -> int:
            await release.wait()
            return call_id

        self.tasks[call_id] = self.loop.create_task(self.bulkhead.acall(hold))
        if len(self.running) < self.max_concurrent and not self.waiting:
            self.running.append(call_id)
        else:
            self.waiting.append((call_id, self.clock.now() + self.max_wait))
        self.settle()

    @precondition(lambda self: self.running)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(self.running))
        self.releases[call_id].set()
        self.running.remove(call_id)
        self.completed += 1
        self.model_grant()
        self.settle()

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def cancel_waiter(self, data: st.DataObject) -> None:
        call_id, deadline = data.draw(st.sampled_from(self.waiting))
        self.tasks[call_id].cancel()
        self.waiting.remove((call_id, deadline))
        self.settle()

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        now = self.clock.now()
        expired = [entry for entry in self.waiting if entry[1] <= now]
        for entry in expired:
            self.waiting.remove(entry)
            self.rejected += 1
        self.settle()

    @invariant()
    def matches_the_model(self) -> None:
        metrics = self.bulkhead.metrics()
        assert metrics.active == len(self.running)
        assert metrics.queued == len(self.waiting)
        assert metrics.rejected == self.rejected
        assert metrics.completed == self.completed
        for call_id in self.running:
            assert not self.tasks[call_id].done()


TestAsyncBulkheadModel = AsyncBulkheadModel.TestCase
TestAsyncBulkheadModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


# ----------------------------------------------------------- thread-pool bulkhead


def test_thread_pool_runs_work_on_its_own_threads() -> None:
    with ThreadPoolBulkhead(max_workers=2, queue_size=2, name="render") as pool:
        future = pool.submit(threading.current_thread)
        assert future.result(WAIT).name.startswith("seawall-render")
        assert pool.call(lambda a, b: a * b, 6, b=7) == 42
        assert pool.metrics() == BulkheadMetrics(0, 0, 0, 2, 2)


def test_thread_pool_work_sees_the_callers_context_variables() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("r-7")
    with ThreadPoolBulkhead(max_workers=1, queue_size=0) as pool:
        assert pool.call(request_id.get) == "r-7"


def test_thread_pool_rejects_when_workers_and_queue_are_full() -> None:
    seen: list[Event] = []
    with ThreadPoolBulkhead(max_workers=1, queue_size=1, name="pdf") as pool:
        pool.events.subscribe(seen.append)
        gate = Gate()
        running = pool.submit(gate, "first")
        assert gate.started.wait(WAIT)
        queued = pool.submit(lambda: "second")
        assert pool.metrics() == BulkheadMetrics(1, 1, 0, 0, 1)
        with pytest.raises(BulkheadQueueFullError) as caught:
            pool.submit(lambda: "third")
        error = caught.value
        assert isinstance(error, BulkheadFullError)
        assert (error.bulkhead, error.max_concurrent, error.queue_size) == ("pdf", 1, 1)
        assert "1 workers busy, 1 calls queued" in str(error)
        assert seen == [BulkheadRejected("pdf", 1, 0.0)]
        gate.opened.set()
        assert running.result(WAIT) == "first"
        assert queued.result(WAIT) == "second"
    assert pool.metrics() == BulkheadMetrics(0, 0, 1, 2, 1)


def test_thread_pool_forgets_a_cancelled_queued_call() -> None:
    with ThreadPoolBulkhead(max_workers=1, queue_size=1) as pool:
        gate = Gate()
        running = pool.submit(gate)
        assert gate.started.wait(WAIT)
        queued = pool.submit(lambda: "never")
        assert queued.cancel()
        assert pool.metrics().queued == 0
        pool.submit(lambda: "fits again")
        gate.opened.set()
        running.result(WAIT)


def test_thread_pool_propagates_exceptions() -> None:
    with ThreadPoolBulkhead(max_workers=1, queue_size=0) as pool:
        with pytest.raises(ZeroDivisionError):
            pool.call(lambda: 1 / 0)
        assert pool.metrics().completed == 1


def test_thread_pool_refuses_coroutine_functions() -> None:
    async def coroutine_function() -> None:
        return None

    with ThreadPoolBulkhead(max_workers=1, queue_size=0) as pool:
        with pytest.raises(TypeError, match="use Bulkhead for async code"):
            pool.submit(coroutine_function)
        with pytest.raises(TypeError, match="got an awaitable"):
            pool.call(lambda: coroutine_function())


async def test_thread_pool_acall_does_not_block_the_loop() -> None:
    unblocked = threading.Event()

    def blocking() -> str:
        if not unblocked.wait(WAIT):
            raise AssertionError("the event loop was blocked")
        return "done"

    async def unblock_soon() -> None:
        await settle()
        unblocked.set()

    with ThreadPoolBulkhead(max_workers=1, queue_size=0) as pool:
        result, _ = await asyncio.gather(pool.acall(blocking), unblock_soon())
    assert result == "done"


async def test_thread_pool_acall_cancel_drops_queued_work() -> None:
    ran: list[str] = []
    with ThreadPoolBulkhead(max_workers=1, queue_size=1) as pool:
        gate = Gate()
        running = pool.submit(gate)
        await asyncio.get_running_loop().run_in_executor(None, gate.started.wait, WAIT)
        task = asyncio.create_task(pool.acall(ran.append, "queued"))
        await settle()
        assert pool.metrics().queued == 1
        task.cancel()
        await settle()
        assert pool.metrics().queued == 0
        gate.opened.set()
        await asyncio.wrap_future(running)
    assert ran == []


def test_thread_pool_shutdown_can_drop_pending_work() -> None:
    pool = ThreadPoolBulkhead(max_workers=1, queue_size=3)
    gate = Gate()
    running = pool.submit(gate)
    assert gate.started.wait(WAIT)
    pending = [pool.submit(lambda: None) for _ in range(3)]
    gate.opened.set()
    pool.shutdown(wait=True, cancel_pending=True)
    assert running.done()
    assert all(future.cancelled() or future.done() for future in pending)
    assert pool.metrics().queued == 0
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_repr_names_the_options() -> None:
    assert repr(Bulkhead(3, 0.5, name="x")) == "Bulkhead(max_concurrent=3, max_wait=0.5, name='x')"
    pool = ThreadPoolBulkhead(2, 4, name="y")
    assert "max_workers=2" in repr(pool)
    pool.shutdown()
