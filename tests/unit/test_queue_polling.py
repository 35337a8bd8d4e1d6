"""Long-poll machinery: the pause schedule, the doorbell, and the two poll loops.

The doorbell tests use real threads and real time, but never sleep: each waits on
a condition with a generous timeout and asserts it was woken long before it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from seawall.clock import ManualClock
from seawall.messaging.queue._polling import (
    FIRST_PAUSE,
    MAX_PAUSE,
    Doorbell,
    PollSchedule,
    apoll,
    poll,
)


def test_pauses_double_from_1ms_up_to_50ms_and_never_pass_the_deadline() -> None:
    schedule = PollSchedule()
    pauses = [schedule.pause(10.0) for _ in range(9)]
    assert pauses == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05, 0.05])
    assert schedule.pause(0.01) == 0.01
    schedule.reset()
    assert schedule.pause(10.0) == FIRST_PAUSE
    assert (FIRST_PAUSE, MAX_PAUSE) == (0.001, 0.05)


def test_a_ring_before_the_wait_is_not_missed() -> None:
    doorbell = Doorbell()
    seen = doorbell.generation
    doorbell.ring()
    started = time.monotonic()
    assert doorbell.wait(seen, 30.0) is True
    assert time.monotonic() - started < 1.0


def test_a_wait_without_a_ring_times_out_false() -> None:
    doorbell = Doorbell()
    assert doorbell.wait(doorbell.generation, 0.0) is False


def test_a_ring_wakes_a_waiting_thread() -> None:
    doorbell = Doorbell()
    seen = doorbell.generation
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(doorbell.wait(seen, 30.0)))
    waiter.start()
    while doorbell._sleepers == 0:  # until the waiter is inside wait()
        os.sched_yield()  # let the waiter run; no pause
    started = time.monotonic()
    doorbell.ring()
    waiter.join(timeout=30)
    assert woke == [True]
    assert time.monotonic() - started < 5.0


async def test_a_ring_from_another_thread_wakes_a_task() -> None:
    doorbell = Doorbell()
    seen = doorbell.generation
    task = asyncio.create_task(doorbell.await_ring(seen, 30.0))
    await asyncio.sleep(0)  # one step: the task runs until it waits on the doorbell
    assert doorbell._sleepers == 1
    ringer = threading.Thread(target=doorbell.ring)
    ringer.start()
    assert await asyncio.wait_for(task, timeout=10) is True
    ringer.join()
    assert doorbell._sleepers == 0


async def test_await_ring_returns_at_once_when_already_rung_and_times_out_otherwise() -> None:
    doorbell = Doorbell()
    seen = doorbell.generation
    doorbell.ring()
    assert await doorbell.await_ring(seen, 30.0) is True
    assert await doorbell.await_ring(doorbell.generation, 0.001) is False


def test_poll_with_a_manual_clock_sleeps_through_its_schedule() -> None:
    clock = ManualClock()
    doorbell = Doorbell()
    calls: list[float] = []

    def attempt() -> list[int]:
        calls.append(clock.now())
        return [1] if clock.now() >= 0.02 else []

    assert poll(attempt, 5.0, doorbell, clock) == [1]
    assert clock.sleeps == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016])
    assert len(calls) == 6


def test_poll_gives_up_exactly_at_the_deadline() -> None:
    clock = ManualClock()
    assert poll(lambda: [], 0.1, Doorbell(), clock) == []
    assert sum(clock.sleeps) == pytest.approx(0.1)


def test_poll_without_wait_looks_once() -> None:
    clock = ManualClock()
    calls: list[int] = []

    def attempt() -> list[int]:
        calls.append(1)
        return []

    assert poll(attempt, 0.0, Doorbell(), clock) == []
    assert calls == [1]
    assert clock.sleeps == []


def test_real_time_poll_is_woken_by_a_ring() -> None:
    doorbell = Doorbell()
    ready: list[int] = []
    result: list[list[int]] = []
    waiter = threading.Thread(target=lambda: result.append(poll(ready.copy, 30.0, doorbell, None)))
    waiter.start()
    while doorbell._sleepers == 0:
        os.sched_yield()
    started = time.monotonic()
    ready.append(7)
    doorbell.ring()
    waiter.join(timeout=30)
    assert result == [[7]]
    assert time.monotonic() - started < 5.0


async def test_apoll_with_a_manual_clock() -> None:
    clock = ManualClock()

    async def attempt() -> list[str]:
        return ["done"] if clock.now() >= 0.004 else []

    assert await apoll(attempt, 1.0, Doorbell(), clock) == ["done"]
    assert clock.sleeps == pytest.approx([0.001, 0.002, 0.004])
    assert await apoll(attempt, 0.0, Doorbell(), clock) == ["done"]


async def test_real_time_apoll_is_woken_by_a_ring() -> None:
    doorbell = Doorbell()
    ready: list[int] = []

    async def attempt() -> list[int]:
        return ready.copy()

    task = asyncio.create_task(apoll(attempt, 30.0, doorbell, None))
    await asyncio.sleep(0)  # one step: the task runs until it waits on the doorbell
    assert doorbell._sleepers == 1
    ready.append(1)
    doorbell.ring()
    assert await asyncio.wait_for(task, timeout=10) == [1]
