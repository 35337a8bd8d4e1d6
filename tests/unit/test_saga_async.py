"""The asyncio orchestrator: coroutine and plain steps, on the memory log and a manual clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.events import Event
from seawall.resilience import Retry
from seawall.workflows import (
    AsyncSagaOrchestrator,
    MemorySagaLog,
    Parallel,
    Saga,
    SagaCompleted,
    SagaFailedError,
    SagaNotFoundError,
    SagaStatus,
    SagaStepStarted,
    Step,
    StepContext,
)


class Crash(BaseException):
    """Stands for the process dying."""


@pytest.fixture
def log(clock: ManualClock) -> MemorySagaLog:
    return MemorySagaLog(clock=clock)


def orchestrator(log: MemorySagaLog, clock: ManualClock, *sagas: Saga) -> AsyncSagaOrchestrator:
    return AsyncSagaOrchestrator(
        log, sagas, clock=clock, compensation_policy=Retry(2, wait=1.0, clock=clock)
    )


async def test_async_and_sync_steps_run_in_order(log: MemorySagaLog, clock: ManualClock) -> None:
    calls: list[str] = []

    async def reserve(context: StepContext) -> dict[str, int]:
        await asyncio.sleep(0)
        calls.append(f"reserve {context.idempotency_key}")
        return {"units": 2}

    def charge(context: StepContext) -> int:  # plain: runs in a worker thread
        calls.append("charge")
        return int(context.results["reserve"]["units"]) * 10

    async def undo(context: StepContext) -> None:
        calls.append("undo")

    saga = Saga("order", [Step("reserve", reserve, undo), Step("charge", charge)])
    result = await orchestrator(log, clock, saga).run(saga, saga_id="a-1")
    assert result.completed
    assert dict(result.results) == {"reserve": {"units": 2}, "charge": 20}
    assert calls == ["reserve a-1:reserve", "charge"]


async def test_a_parallel_group_runs_concurrently(log: MemorySagaLog, clock: ManualClock) -> None:
    both_running = asyncio.Event()
    running = 0

    async def branch(context: StepContext) -> str:
        nonlocal running
        running += 1
        if running == 2:
            both_running.set()
        await asyncio.wait_for(both_running.wait(), 5)  # deadlocks unless both run at once
        return context.step

    async def undo(context: StepContext) -> None:
        return None

    saga = Saga(
        "p",
        [Parallel(Step("a", branch, undo), Step("b", branch, undo)), Step("done", branch)],
    )
    result = await orchestrator(log, clock, saga).run(saga)
    assert dict(result.results) == {"a": "a", "b": "b", "done": "done"}


async def test_failure_compensates_newest_first(log: MemorySagaLog, clock: ManualClock) -> None:
    undone: list[str] = []

    async def ok(context: StepContext) -> str:
        return context.step

    async def undo(context: StepContext) -> None:
        undone.append(context.step)

    def fail(context: StepContext) -> None:
        raise ValueError("card declined")

    saga = Saga(
        "s",
        [Step("a", ok, undo), Step("b", ok, lambda c: undone.append(c.step)), Step("c", fail)],
    )
    with pytest.raises(SagaFailedError, match="card declined") as caught:
        await orchestrator(log, clock, saga).run(saga)
    assert caught.value.status is SagaStatus.COMPENSATED
    assert undone == ["b", "a"]


async def test_a_failing_async_compensation_is_retried_then_stuck(
    log: MemorySagaLog, clock: ManualClock
) -> None:
    attempts = 0

    async def ok(context: StepContext) -> None:
        return None

    async def broken_undo(context: StepContext) -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    async def fail(context: StepContext) -> None:
        raise ValueError("no")

    saga = Saga("s", [Step("a", ok, broken_undo), Step("b", fail)])
    sagas = orchestrator(log, clock, saga)
    with pytest.raises(SagaFailedError) as caught:
        await sagas.run(saga, saga_id="x")
    assert caught.value.status is SagaStatus.STUCK
    assert attempts == 2
    assert clock.sleeps == [1.0]
    assert (await sagas.status("x")).status is SagaStatus.STUCK
    resolved = await sagas.resolve("x", "fixed by hand")
    assert resolved.status is SagaStatus.RESOLVED


async def test_resume_and_cancel(log: MemorySagaLog, clock: ManualClock) -> None:
    crash = True
    seen: list[str] = []

    async def step(context: StepContext) -> str:
        nonlocal crash
        seen.append(context.step)
        if context.step == "b" and crash:
            crash = False
            raise Crash
        return context.step

    async def undo(context: StepContext) -> None:
        seen.append(f"undo {context.step}")

    saga = Saga("s", [Step("a", step, undo), Step("b", step, undo), Step("c", step)])
    sagas = orchestrator(log, clock, saga)
    with pytest.raises(Crash):
        await sagas.run(saga, saga_id="r")
    (result,) = await orchestrator(log, clock, saga).resume()
    assert result.completed
    assert seen == ["a", "b", "b", "c"]

    await sagas.start(saga, saga_id="c")
    assert await sagas.cancel("c") is True
    (cancelled,) = await sagas.resume()
    assert cancelled.status is SagaStatus.COMPENSATED
    assert cancelled.reason == "cancelled"
    with pytest.raises(SagaNotFoundError):
        await sagas.cancel("nope")
    assert [record.id for record in await sagas.list(status=SagaStatus.COMPENSATED)] == ["c"]


async def test_async_timeout_and_events(log: MemorySagaLog) -> None:
    clock = ManualClock(0.0, autojump=False)

    async def slow(context: StepContext) -> None:
        await clock.asleep(10.0)

    async def undo(context: StepContext) -> None:
        return None

    saga = Saga("s", [Step("a", lambda c: 1, undo), Step("slow", slow, timeout=2.0)])
    sagas = AsyncSagaOrchestrator(MemorySagaLog(clock=clock), [saga], clock=clock)
    events: list[Event] = []
    sagas.events.subscribe(events.append)
    task = asyncio.ensure_future(sagas.run(saga))
    for _ in range(1000):  # let the step and its timeout's timer start waiting
        if clock.pending_sleepers >= 2:
            break
        await asyncio.sleep(0)
    clock.advance(2.0)
    with pytest.raises(SagaFailedError, match="TimeoutExceededError"):
        await task
    assert SagaStepStarted in [type(event) for event in events]

    ok = Saga("ok", Step("x", lambda c: None))
    sagas.register(ok)
    events.clear()
    await sagas.run("ok")
    assert isinstance(events[-1], SagaCompleted)


async def test_retry_runs_a_stuck_saga_here(log: MemorySagaLog, clock: ManualClock) -> None:
    broken = True

    async def ok(context: StepContext) -> Any:
        return None

    async def undo(context: StepContext) -> None:
        if broken:
            raise RuntimeError("down")

    async def fail(context: StepContext) -> None:
        raise ValueError("no")

    saga = Saga("s", [Step("a", ok, undo), Step("b", fail)])
    sagas = orchestrator(log, clock, saga)
    with pytest.raises(SagaFailedError):
        await sagas.run(saga, saga_id="y")
    broken = False
    result = await sagas.retry("y")
    assert result is not None
    assert result.status is SagaStatus.COMPENSATED
