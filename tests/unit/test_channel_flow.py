"""fan_in, fan_out and Stages: pumps that move items, stop cleanly and never hide an error."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError
from seawall.messaging.channel import (
    BlockingInEventLoopError,
    Channel,
    ChannelClosedError,
    ChannelFailedError,
    Stages,
    fan_in,
    fan_out,
)

JOIN = 5.0


def take_all(items: Iterable[Any], into: list[Any]) -> None:
    """Append every item to ``into`` (what was received before an error stays there)."""
    for item in items:
        into.append(item)


async def atake_all(items: AsyncIterable[Any], into: list[Any]) -> None:
    """Async twin of :func:`take_all`."""
    async for item in items:
        into.append(item)


class Watched:
    """A generator source that records whether it was closed early or finished."""

    def __init__(self, items: Any, fail_at: int | None = None) -> None:
        self.items = list(items)
        self.fail_at = fail_at
        self.closed = threading.Event()
        self.yielded = 0

    def __iter__(self) -> Iterator[Any]:
        return self._run()

    def _run(self) -> Iterator[Any]:
        try:
            for index, item in enumerate(self.items):
                if index == self.fail_at:
                    raise ValueError(f"bad record {index}")
                self.yielded += 1
                yield item
        finally:
            self.closed.set()


def async_wait(event: threading.Event) -> Any:
    return asyncio.to_thread(event.wait, JOIN)


async def agen(items: list[int]) -> AsyncIterator[int]:
    for item in items:
        await asyncio.sleep(0)
        yield item


async def collect(channel: Channel[int]) -> list[int]:
    return [item async for item in channel]


# -- fan in ---------------------------------------------------------------------------------


def test_fan_in_merges_every_source_keeping_each_ones_order() -> None:
    letters: Channel[str] = Channel(2)
    merged = fan_in(["a1", "a2", "a3"], letters, (f"c{n}" for n in range(3)), capacity=2)

    def feed() -> None:
        with letters:
            for n in range(3):
                letters.send(f"b{n}")

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    got = list(merged)
    feeder.join(JOIN)
    assert Counter(got) == Counter(["a1", "a2", "a3", "b0", "b1", "b2", "c0", "c1", "c2"])
    for prefix in "abc":
        own = [item for item in got if item[0] == prefix]
        assert own == sorted(own)


async def test_fan_in_runs_as_tasks_in_async_code() -> None:
    first: Channel[int] = Channel(1)
    merged = fan_in(first, agen([10, 11]), [20])

    async def feed() -> None:
        async with first:
            for item in range(3):
                await first.asend(item)

    feeding = asyncio.create_task(feed())
    got = [item async for item in merged]
    await feeding
    assert sorted(got) == [0, 1, 2, 10, 11, 20]
    assert not [t for t in threading.enumerate() if t.name.startswith(merged.name)]


def test_fan_in_passes_a_source_failure_to_its_receivers() -> None:
    broken = Channel[int](3, name="broken")
    broken.send(1)
    broken.close(OSError("socket reset"))
    merged = fan_in(broken, [])
    got: list[Any] = []
    with pytest.raises(ChannelFailedError) as caught:
        take_all(merged, got)
    assert got == [1]
    assert caught.value.channel == "broken", "the failure names where it started"
    assert isinstance(caught.value.error, OSError)


def test_closing_the_fan_in_output_stops_its_pumps() -> None:
    endless = Watched(range(10_000))
    merged = fan_in(endless, capacity=1)
    assert merged.receive() == 0
    merged.close()
    assert endless.closed.wait(JOIN), "the pump stopped and closed its source"
    assert endless.yielded < 10_000


async def test_fan_in_source_failure_in_async_code() -> None:
    merged = fan_in(Watched([1, 2, 3], fail_at=2))
    got: list[Any] = []
    with pytest.raises(ChannelFailedError, match="bad record 2"):
        await atake_all(merged, got)
    assert got == [1, 2]


def test_fan_in_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="at least one source"):
        fan_in()
    with pytest.raises(ConfigurationError, match="async-iterable"):
        fan_in(agen([1]))
    with pytest.raises(ConfigurationError, match="capacity"):
        fan_in([1], capacity=0)


# -- fan out --------------------------------------------------------------------------------


def test_fan_out_copy_gives_every_target_every_item() -> None:
    targets = [Channel[int](10) for _ in range(3)]
    pumps = fan_out(range(5), *targets)
    assert pumps.join(JOIN)
    assert pumps.done
    assert [list(target) for target in targets] == [[0, 1, 2, 3, 4]] * 3
    assert "threads=1" in repr(pumps)


def test_fan_out_round_robin_deals_items_in_turn() -> None:
    targets = [Channel[int](10) for _ in range(3)]
    assert fan_out(range(7), *targets, mode="round_robin").join(JOIN)
    assert [list(target) for target in targets] == [[0, 3, 6], [1, 4], [2, 5]]


def test_fan_out_skips_a_target_whose_consumer_closed_it() -> None:
    keep, gone = Channel[int](10), Channel[int](10)
    gone.close()
    assert fan_out(range(3), keep, gone, mode="round_robin").join(JOIN)
    assert list(keep) == [0, 1, 2]
    copy_keep, copy_gone = Channel[int](10), Channel[int](10)
    copy_gone.close()
    assert fan_out(range(3), copy_keep, copy_gone).join(JOIN)
    assert list(copy_keep) == [0, 1, 2]


def test_fan_out_stops_reading_when_every_target_is_closed() -> None:
    endless = Watched(range(10_000))
    target = Channel[int](1)
    pumps = fan_out(endless, target)
    assert target.receive() == 0
    target.close()
    assert pumps.join(JOIN)
    assert endless.closed.is_set()


def test_fan_out_passes_a_source_failure_to_every_target() -> None:
    targets = [Channel[int](10) for _ in range(2)]
    assert fan_out(Watched([1, 2], fail_at=1), *targets).join(JOIN)
    for target in targets:
        assert target.receive() == 1
        with pytest.raises(ChannelFailedError, match="bad record 1"):
            target.receive()


def test_fan_out_can_leave_targets_open() -> None:
    target = Channel[int](10)
    assert fan_out([1], target, close_targets=False).join(JOIN)
    assert not target.closed
    target.send(2)
    assert [target.receive(), target.receive()] == [1, 2]


async def test_fan_out_runs_as_a_task_in_async_code() -> None:
    targets = [Channel[int](1) for _ in range(2)]
    pumps = fan_out(agen([1, 2, 3]), *targets, mode="round_robin")
    with pytest.raises(BlockingInEventLoopError, match="wait"):
        pumps.join()
    got = await asyncio.gather(*(collect(target) for target in targets))
    await asyncio.wait_for(pumps.wait(), JOIN)
    assert got == [[1, 3], [2]]


async def test_task_pumps_can_be_joined_from_another_thread() -> None:
    target = Channel[int](1)
    pumps = fan_out(agen([1, 2]), target)
    assert not await asyncio.to_thread(pumps.join, 0), "the target is full: not done yet"
    joining = asyncio.create_task(asyncio.to_thread(pumps.join, JOIN))
    assert await collect(target) == [1, 2]
    assert await joining
    assert "tasks=1" in repr(pumps)


async def test_async_fan_out_reports_a_source_failure() -> None:
    target = Channel[int](5)
    pumps = fan_out(Watched([1, 2], fail_at=1), target)
    await asyncio.wait_for(pumps.wait(), JOIN)
    assert await target.areceive() == 1
    with pytest.raises(ChannelFailedError):
        await target.areceive()


def test_fan_out_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="at least one target"):
        fan_out([1])
    with pytest.raises(ConfigurationError, match="'copy', 'round_robin'"):
        fan_out([1], Channel[int](1), mode="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a Channel"):
        fan_out([1], [])  # type: ignore[arg-type]


# -- stages: results ------------------------------------------------------------------------


def double(item: int) -> int:
    return item * 2


def is_even_tenth(item: int) -> bool:
    return item % 10 == 0


def test_stages_map_filter_batch_in_threads() -> None:
    stages = (
        Stages(range(20), capacity=3, name="numbers").map(double).filter(is_even_tenth).batch(2)
    )
    assert list(stages) == [[0, 10], [20, 30]]
    assert list(stages) == [[0, 10], [20, 30]], "the builder is reusable"
    assert repr(stages) == "Stages(name='numbers': map(double) | filter(is_even_tenth) | batch(2))"


async def test_stages_mix_async_and_plain_functions_in_tasks() -> None:
    async def fetch(item: int) -> str:
        await asyncio.sleep(0)
        return f"#{item}"

    async def keep(text: str) -> bool:
        return text != "#3"

    stages = Stages(agen(list(range(6)))).map(fetch).filter(keep).map(str.upper)
    assert [item async for item in stages] == ["#0", "#1", "#2", "#4", "#5"]


def test_flat_map_spreads_each_result() -> None:
    assert list(Stages(["a b", "c"]).flat_map(str.split)) == ["a", "b", "c"]


async def test_flat_map_async() -> None:
    async def letters(word: str) -> list[str]:
        return list(word)

    assert [item async for item in Stages(["ab", "c"]).flat_map(letters)] == ["a", "b", "c"]


def test_workers_process_every_item_once_in_threads() -> None:
    results = list(Stages(range(200), capacity=4).map(double, workers=4))
    assert Counter(results) == Counter(item * 2 for item in range(200))


async def test_async_workers_run_concurrently() -> None:
    in_flight = 0
    both_running = asyncio.Event()

    async def slow_double(item: int) -> int:
        nonlocal in_flight
        in_flight += 1
        if in_flight == 2:
            both_running.set()
        await asyncio.wait_for(both_running.wait(), JOIN)  # only two concurrent workers pass
        return item * 2

    results = [item async for item in Stages([1, 2, 3, 4]).map(slow_double, workers=2)]
    assert sorted(results) == [2, 4, 6, 8]


def test_a_stage_can_read_a_callers_channel_without_closing_it_on_stop() -> None:
    source: Channel[int] = Channel(5)
    for item in range(5):
        source.send(item)
    iterating = iter(Stages(source).map(double))
    assert next(iterating) == 0
    iterating.close()  # type: ignore[attr-defined]  # the consumer leaves early
    assert not source.closed, "a caller's channel belongs to the caller"


def test_stages_without_a_stage_copy_the_source() -> None:
    assert list(Stages([3, 1, 2])) == [3, 1, 2]
    source: Channel[int] = Channel(3)
    source.send(1)
    source.close()
    assert list(Stages(source)) == [1]


# -- stages: errors -------------------------------------------------------------------------


def explode_on_three(item: int) -> int:
    if item == 3:
        raise ValueError("three is not allowed")
    return item


def test_a_failing_stage_fails_the_consumer_after_the_earlier_results() -> None:
    source = Watched(range(1000))
    got: list[int] = []
    with pytest.raises(ChannelFailedError) as caught:
        take_all(Stages(source, capacity=2, name="checks").map(explode_on_three).map(double), got)
    assert got == [0, 2, 4]
    assert caught.value.channel == "checks.1:map(explode_on_three)"
    error = caught.value.error
    assert isinstance(error, ValueError)
    assert any("map(explode_on_three)" in note and "item 3" in note for note in error.__notes__)
    assert source.closed.wait(JOIN), "the stages before the failure stop"
    assert source.yielded < 1000


async def test_a_failing_async_stage_fails_the_consumer() -> None:
    async def check(item: int) -> int:
        if item == 2:
            raise KeyError(item)
        return item

    got: list[Any] = []
    with pytest.raises(ChannelFailedError) as caught:
        await atake_all(Stages(range(10), capacity=1).map(check).filter(bool), got)
    assert got == [1]
    assert isinstance(caught.value.error, KeyError)


def test_a_failing_source_is_reported_with_a_note() -> None:
    with pytest.raises(ChannelFailedError) as caught:
        list(Stages(Watched([1, 2, 3], fail_at=1)).map(double))
    assert any("source" in note for note in caught.value.error.__notes__)


async def test_a_failing_async_source_is_reported() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("stream cut")

    got: list[Any] = []
    with pytest.raises(ChannelFailedError, match="stream cut"):
        await atake_all(Stages(broken()).map(double), got)
    assert got == [2]


def test_a_batch_in_progress_is_flushed_before_an_upstream_error() -> None:
    got: list[Any] = []
    with pytest.raises(ChannelFailedError):
        take_all(Stages(range(10)).map(explode_on_three).batch(5), got)
    assert got == [[0, 1, 2]]


async def test_an_async_batch_in_progress_is_flushed_before_an_upstream_error() -> None:
    got: list[Any] = []
    with pytest.raises(ChannelFailedError):
        await atake_all(Stages(range(10)).map(explode_on_three).batch(5), got)
    assert got == [[0, 1, 2]]


def test_coroutine_functions_need_async_iteration() -> None:
    async def fetch(item: int) -> int:
        return item

    with pytest.raises(ConfigurationError, match="async for"):
        list(Stages([1]).map(fetch))
    with pytest.raises(ConfigurationError, match="async-iterable"):
        list(Stages(agen([1])).map(double))


def test_bad_stage_arguments_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="workers"):
        Stages([1]).map(double, workers=0)
    with pytest.raises(ConfigurationError, match="size"):
        Stages([1]).batch(0)
    with pytest.raises(ConfigurationError, match="max_wait"):
        Stages([1]).batch(2, max_wait=-1)
    with pytest.raises(ConfigurationError, match="callable"):
        Stages([1]).map(42)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="capacity"):
        Stages([1], capacity=0)


# -- stages: stopping -----------------------------------------------------------------------


def test_leaving_a_sync_loop_early_stops_every_stage() -> None:
    source = Watched(range(100_000))
    stages = Stages(source, capacity=2, name="early").map(double, workers=3).batch(2)
    for batch in stages:
        assert batch in ([0, 2], [2, 0])
        break
    assert source.closed.wait(JOIN)
    for thread in threading.enumerate():
        if thread.name.startswith("early:"):
            thread.join(JOIN)
            assert not thread.is_alive(), f"{thread.name} kept running"


async def test_leaving_an_async_loop_early_stops_every_stage() -> None:
    source = Watched(range(100_000))
    stages = Stages(source, capacity=2).map(double).filter(bool)
    iterating = aiter(stages)
    assert await anext(iterating) == 2
    await iterating.aclose()  # type: ignore[attr-defined]
    assert source.closed.is_set(), "aclose waits until every stage has stopped"
    assert source.yielded < 100_000


def test_start_returns_the_output_and_closing_it_stops_the_stages() -> None:
    source = Watched(range(100_000))
    output = Stages(source, capacity=1).map(double).start()
    assert output.receive() == 0
    output.close()
    assert source.closed.wait(JOIN)


async def test_astart_runs_the_stages_as_tasks() -> None:
    output = Stages(range(5)).map(double).astart()
    assert [item async for item in output] == [0, 2, 4, 6, 8]
    with pytest.raises(ChannelClosedError):
        output.send(1)


def test_astart_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        Stages([1]).astart()


# -- stages: batching by time ---------------------------------------------------------------


async def test_a_partial_batch_goes_out_after_max_wait_of_manual_time() -> None:
    clock = ManualClock(autojump=False)
    source: Channel[int] = Channel(10)
    output = Stages(source, clock=clock).batch(3, max_wait=2.0).astart()
    await source.asend(1)
    await source.asend(2)
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(output) == 0, "two of three, and no time has passed"
    clock.advance(2.0)
    assert await asyncio.wait_for(output.areceive(), JOIN) == [1, 2]
    for item in (3, 4, 5, 6):
        await source.asend(item)
    source.close()
    assert [batch async for batch in output] == [[3, 4, 5], [6]]


class JumpingClock:
    """Every reading is ``step`` seconds after the last: a batch's max_wait passes at once."""

    def __init__(self, step: float) -> None:
        self.time = 0.0
        self.step = step

    def now(self) -> float:
        self.time += self.step
        return self.time

    def sleep(self, seconds: float) -> None:
        raise AssertionError("not used")

    async def asleep(self, seconds: float) -> None:
        raise AssertionError("not used")


def test_a_partial_batch_goes_out_after_max_wait_in_threads() -> None:
    source: Channel[int] = Channel(10)
    output = Stages(source, clock=JumpingClock(10.0)).batch(3, max_wait=5.0).start()
    source.send(1)
    assert output.receive(timeout=JOIN) == [1]
    source.send(2)
    source.close()
    assert list(output) == [[2]]


# -- pumps in async code: early stops and cancellation --------------------------------------


async def test_closing_an_async_fan_in_output_stops_its_task_pumps() -> None:
    endless = Watched(range(10_000))
    merged = fan_in(endless, capacity=1)
    assert await merged.areceive() == 0
    merged.close()
    for _ in range(5):
        await asyncio.sleep(0)
    assert endless.closed.is_set()


async def test_async_fan_out_skips_closed_targets() -> None:
    for mode in ("copy", "round_robin"):
        keep, gone = Channel[int](10), Channel[int](10)
        gone.close()
        pumps = fan_out(agen([1, 2, 3]), keep, gone, mode=mode)
        await asyncio.wait_for(pumps.wait(), JOIN)
        assert await collect(keep) == [1, 2, 3]


async def test_async_fan_out_stops_when_every_target_is_closed() -> None:
    endless = Watched(range(10_000))
    target = Channel[int](1)
    pumps = fan_out(endless, target)
    assert await target.areceive() == 0
    target.close()
    await asyncio.wait_for(pumps.wait(), JOIN)
    assert endless.closed.is_set()


async def test_cancelling_task_pumps_fails_their_targets() -> None:
    target = Channel[int](1)
    pumps = fan_out(Watched(range(10_000)), target)
    await asyncio.sleep(0)
    pumps.cancel()
    await asyncio.wait_for(pumps.wait(), JOIN)
    assert pumps.done
    with pytest.raises(ChannelFailedError) as caught:
        await atake_all(target, [])
    assert isinstance(caught.value.error, asyncio.CancelledError)


async def test_thread_pumps_can_be_awaited() -> None:
    target = Channel[int](10)
    pumps = await asyncio.to_thread(fan_out, [1, 2], target)
    await asyncio.wait_for(pumps.wait(), JOIN)
    assert await collect(target) == [1, 2]


async def test_closing_an_async_stage_output_stops_the_stages() -> None:
    source = Watched(range(100_000))
    output = Stages(source, capacity=1).map(double).astart()
    assert await output.areceive() == 0
    output.close()
    for _ in range(10):
        await asyncio.sleep(0)
    assert source.closed.is_set()


async def test_closing_an_async_batch_output_stops_the_stages() -> None:
    source = Watched(range(100_000))
    output = Stages(source, capacity=1).batch(2).astart()
    assert await output.areceive() == [0, 1]
    output.close()
    for _ in range(10):
        await asyncio.sleep(0)
    assert source.closed.is_set()


def test_closing_a_batch_output_stops_the_stages_in_threads() -> None:
    source = Watched(range(100_000))
    output = Stages(source, capacity=1).batch(2).start()
    assert output.receive() == [0, 1]
    output.close()
    assert source.closed.wait(JOIN)


def test_stage_capacities_can_differ_per_stage() -> None:
    stages = Stages(range(10), capacity=1).map(double, capacity=5).batch(4, capacity=2)
    assert list(stages) == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
