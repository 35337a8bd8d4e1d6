from __future__ import annotations

import asyncio

import pytest

from seawall.clock import SYSTEM_CLOCK, Clock, ManualClock, MonotonicClock


def test_system_clock_is_monotonic_and_satisfies_protocol() -> None:
    assert isinstance(SYSTEM_CLOCK, Clock)
    first = SYSTEM_CLOCK.now()
    assert SYSTEM_CLOCK.now() >= first
    assert repr(MonotonicClock()) == "MonotonicClock()"


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(5.0)
    assert isinstance(clock, Clock)
    assert clock.now() == 5.0
    clock.advance(1.5)
    assert clock.now() == 6.5
    clock.sleep(2.0)
    assert clock.now() == 8.5
    assert clock.sleeps == [2.0]


def test_manual_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="never goes back"):
        ManualClock().advance(-1)


async def test_autojump_asleep_advances_time() -> None:
    clock = ManualClock()
    await clock.asleep(3.0)
    assert clock.now() == 3.0
    assert clock.sleeps == [3.0]


async def test_asleep_without_autojump_waits_for_advance() -> None:
    clock = ManualClock(autojump=False)
    order: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.asleep(seconds)
        order.append(name)

    tasks = [asyncio.create_task(sleeper("late", 2.0)), asyncio.create_task(sleeper("early", 1.0))]
    await asyncio.sleep(0)
    assert clock.pending_sleepers == 2
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert order == []
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert order == ["early"]
    clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert order == ["early", "late"]
    assert clock.pending_sleepers == 0
