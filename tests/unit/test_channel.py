"""Channel: backpressure policies, close semantics, timeouts and sync/async cross talk.

No test sleeps: a thread is known to be blocked once it enters a channel wait (the
``parked`` fixture counts those), tasks are driven with ``asyncio.sleep(0)``, and
timed waits run on a ManualClock or a clock that jumps. Every thread join is
bounded, so a bug fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

import pytest

import seawall.messaging
import seawall.messaging.channel
from seawall.clock import ManualClock
from seawall.errors import ConfigurationError, RejectedError, SeawallError, TimeoutExceededError
from seawall.events import Event
from seawall.messaging.channel import (
    BlockingInEventLoopError,
    Channel,
    ChannelClosedError,
    ChannelFailedError,
    ChannelFullError,
    ItemDropped,
    _waiters,
)

JOIN = 5.0  # seconds a test waits for a thread before failing: never reached when all is well


def take_all(items: Iterable[Any], into: list[Any]) -> None:
    """Append every item to ``into`` (what was received before an error stays there)."""
    for item in items:
        into.append(item)


async def atake_all(items: AsyncIterable[Any], into: list[Any]) -> None:
    """Async twin of :func:`take_all`."""
    async for item in items:
        into.append(item)


class Background:
    """Run ``fn`` in a thread; ``join()`` returns its result or raises its error."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self.result = fn(*args)
        except BaseException as error:
            self.error = error

    def join(self) -> Any:
        self.thread.join(JOIN)
        assert not self.thread.is_alive(), "the thread is still blocked: it should have finished"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def parked(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``parked(n)`` returns once ``n`` threads in total have started a channel wait."""
    entered = 0
    condition = threading.Condition()
    original = _waiters.wait_thread

    def wait_thread(waiter: Any, timeout: float | None) -> bool:
        nonlocal entered
        with condition:
            entered += 1
            condition.notify_all()
        return original(waiter, timeout)

    monkeypatch.setattr(_waiters, "wait_thread", wait_thread)

    def until(count: int) -> None:
        with condition:
            assert condition.wait_for(lambda: entered >= count, timeout=JOIN), (
                f"only {entered} thread(s) ever blocked, expected {count}"
            )

    return until


class JumpingClock:
    """A clock that moves ``step`` seconds every time it is read: deadlines pass at once."""

    def __init__(self, step: float) -> None:
        self.time = 0.0
        self.step = step

    def now(self) -> float:
        self.time += self.step
        return self.time

    def sleep(self, seconds: float) -> None:
        raise AssertionError("a channel never sleeps on its clock")

    async def asleep(self, seconds: float) -> None:
        raise AssertionError("a channel never sleeps on its clock when a deadline has passed")


async def settle(rounds: int = 5) -> None:
    """Let every ready task run until it blocks."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True, "3", None])
def test_capacity_must_be_a_positive_int(capacity: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"capacity=.*must be an int >= 1"):
        Channel(capacity)


def test_unknown_overflow_names_the_valid_policies() -> None:
    with pytest.raises(ValueError, match="'block', 'drop_oldest', 'drop_newest', 'raise'"):
        Channel(3, overflow="drop_random")  # type: ignore[arg-type]


@pytest.mark.parametrize("max_wait", [-0.1, float("nan"), "1", True])
def test_max_wait_must_be_seconds(max_wait: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_wait"):
        Channel(3, max_wait=max_wait)


def test_max_wait_only_fits_the_block_policy() -> None:
    with pytest.raises(ConfigurationError, match="only applies to overflow='block'"):
        Channel(3, overflow="drop_oldest", max_wait=1.0)


def test_negative_receive_timeout_is_refused() -> None:
    channel: Channel[int] = Channel(1)
    with pytest.raises(ConfigurationError, match="timeout=-1"):
        channel.receive(timeout=-1)


def test_public_names_are_exactly_the_exported_set() -> None:
    public = {name for name in dir(seawall.messaging.channel) if not name.startswith("_")}
    public -= {"annotations"}
    assert set(seawall.messaging.channel.__all__) == public
    assert seawall.messaging.channel.__all__ == sorted(
        seawall.messaging.channel.__all__, key=lambda name: (name[0].islower(), name)
    )
    for name in seawall.messaging.channel.__all__:
        assert getattr(seawall.messaging, name) is getattr(seawall.messaging.channel, name)


def test_errors_sit_in_the_seawall_tree() -> None:
    assert issubclass(ChannelFullError, RejectedError)
    assert issubclass(ChannelClosedError, SeawallError)
    assert issubclass(ChannelFailedError, SeawallError)
    assert not issubclass(ChannelFailedError, ChannelClosedError), "iteration must not hide it"
    assert issubclass(BlockingInEventLoopError, RuntimeError)


# -- basics ---------------------------------------------------------------------------------


def test_items_come_out_in_the_order_they_went_in() -> None:
    channel: Channel[int] = Channel(4, name="orders")
    for item in (1, 2, 3):
        channel.send(item)
    assert len(channel) == 3
    assert channel.capacity == 4
    assert [channel.receive(), channel.receive(), channel.receive()] == [1, 2, 3]
    assert "orders" in repr(channel)


async def test_async_items_come_out_in_order() -> None:
    channel: Channel[str] = Channel(4)
    for item in "abc":
        await channel.asend(item)
    assert [await channel.areceive() for _ in range(3)] == ["a", "b", "c"]


def test_default_names_are_unique() -> None:
    assert Channel[int](1).name != Channel[int](1).name


# -- backpressure policies ------------------------------------------------------------------


def test_drop_oldest_keeps_the_newest_items() -> None:
    channel: Channel[int] = Channel(3, overflow="drop_oldest")
    for item in range(5):
        channel.send(item)
    channel.close()
    assert list(channel) == [2, 3, 4]
    stats = channel.stats()
    assert (stats.received, stats.delivered, stats.dropped, stats.rejected) == (5, 3, 2, 0)


async def test_drop_newest_keeps_the_oldest_items() -> None:
    channel: Channel[int] = Channel(3, overflow="drop_newest")
    for item in range(5):
        await channel.asend(item)
    channel.close()
    assert [item async for item in channel] == [0, 1, 2]
    stats = channel.stats()
    assert (stats.received, stats.delivered, stats.dropped) == (5, 3, 2)


def test_raise_refuses_at_once_and_keeps_the_buffer() -> None:
    channel: Channel[int] = Channel(2, overflow="raise", name="jobs")
    channel.send(1)
    channel.send(2)
    with pytest.raises(ChannelFullError) as caught:
        channel.send(3)
    assert caught.value.channel == "jobs"
    assert caught.value.capacity == 2
    assert caught.value.overflow == "raise"
    assert "jobs" in str(caught.value)
    assert "full" in str(caught.value)
    assert [channel.receive(), channel.receive()] == [1, 2]
    assert channel.stats().rejected == 1
    assert channel.stats().received == 2


async def test_raise_refuses_async_senders_too() -> None:
    channel: Channel[int] = Channel(1, overflow="raise")
    await channel.asend(1)
    with pytest.raises(ChannelFullError):
        await channel.asend(2)


def test_block_holds_a_thread_producer_until_there_is_room(
    parked: Callable[[int], None],
) -> None:
    channel: Channel[int] = Channel(2)

    def produce() -> None:
        for item in range(4):
            channel.send(item)

    producer = Background(produce)
    parked(1)
    assert len(channel) == 2, "the producer must wait while the channel is full"
    assert channel.stats().producer_blocked == 1
    received = [channel.receive() for _ in range(4)]
    producer.join()
    assert received == [0, 1, 2, 3]


async def test_block_suspends_a_task_producer_until_there_is_room() -> None:
    channel: Channel[int] = Channel(1)
    await channel.asend(1)
    sending = asyncio.create_task(channel.asend(2))
    await settle()
    assert not sending.done()
    assert channel.stats().producer_blocked == 1
    assert await channel.areceive() == 1
    await asyncio.wait_for(sending, JOIN)
    assert await channel.areceive() == 2


def test_block_with_zero_max_wait_refuses_without_waiting() -> None:
    channel: Channel[int] = Channel(1, max_wait=0)
    channel.send(1)
    with pytest.raises(ChannelFullError) as caught:
        channel.send(2)
    assert caught.value.overflow == "block"
    stats = channel.stats()
    assert (stats.rejected, stats.producer_blocked, stats.size) == (1, 0, 1)


def test_block_gives_up_after_max_wait_on_the_channel_clock() -> None:
    channel: Channel[int] = Channel(1, max_wait=5.0, clock=JumpingClock(step=10.0))
    channel.send(1)
    with pytest.raises(ChannelFullError) as caught:
        channel.send(2)
    assert caught.value.max_wait == 5.0
    assert "5.000s" in str(caught.value)


async def test_async_block_gives_up_after_max_wait_of_manual_time() -> None:
    clock = ManualClock(autojump=False)
    channel: Channel[int] = Channel(1, max_wait=2.0, clock=clock)
    await channel.asend(1)
    sending = asyncio.create_task(channel.asend(2))
    await settle()
    clock.advance(1.5)
    await settle()
    assert not sending.done(), "1.5s of 2s passed: still waiting"
    clock.advance(0.5)
    await settle()
    with pytest.raises(ChannelFullError):
        await sending
    assert channel.stats().rejected == 1
    assert channel.stats().size == 1


async def test_async_block_with_max_wait_succeeds_when_room_comes_first(
    clock: ManualClock,
) -> None:
    manual = ManualClock(autojump=False)
    for timer_clock in (manual, None):  # a manual clock, then the real one (no time passes)
        channel: Channel[int] = (
            Channel(1, max_wait=30.0, clock=timer_clock)
            if timer_clock
            else Channel(1, max_wait=30.0)
        )
        await channel.asend(1)
        sending = asyncio.create_task(channel.asend(2))
        await settle()
        assert await channel.areceive() == 1
        await asyncio.wait_for(sending, JOIN)
        assert await channel.areceive() == 2
    assert manual.pending_sleepers == 0, "the timer of a satisfied wait is cancelled"


def test_block_with_max_wait_succeeds_when_room_comes_first(
    parked: Callable[[int], None],
) -> None:
    channel: Channel[int] = Channel(1, max_wait=30.0)
    channel.send(1)
    producer = Background(channel.send, 2)
    parked(1)
    assert channel.receive() == 1
    producer.join()
    assert channel.receive() == 2
    assert channel.stats().rejected == 0


# -- events ---------------------------------------------------------------------------------


def test_drops_are_reported_as_events_only_to_listeners() -> None:
    oldest: Channel[str] = Channel(1, overflow="drop_oldest", name="ticks")
    newest: Channel[str] = Channel(1, overflow="drop_newest")
    seen: list[Event] = []
    assert not oldest.events.active
    oldest.send("a")
    oldest.send("b")  # unobserved: no event
    oldest.events.subscribe(seen.append)
    newest.events.subscribe(seen.append)
    oldest.send("c")
    newest.send("x")
    newest.send("y")
    assert seen == [
        ItemDropped("ticks", "b", "drop_oldest"),
        ItemDropped(newest.name, "y", "drop_newest"),
    ]


def test_a_listener_may_use_the_channel_it_listens_to() -> None:
    channel: Channel[int] = Channel(1, overflow="drop_oldest")
    stats: list[int] = []
    channel.events.subscribe(lambda event: stats.append(channel.stats().dropped))
    channel.send(1)
    channel.send(2)
    assert stats == [1], "events are emitted outside the lock"


# -- close semantics ------------------------------------------------------------------------


def test_close_drains_then_ends_the_stream() -> None:
    channel: Channel[int] = Channel(5)
    for item in range(3):
        channel.send(item)
    channel.close()
    assert channel.closed
    with pytest.raises(ChannelClosedError) as sending:
        channel.send(9)
    assert sending.value.sending
    assert "closed" in str(sending.value)
    assert list(channel) == [0, 1, 2]
    with pytest.raises(ChannelClosedError) as receiving:
        channel.receive()
    assert not receiving.value.sending
    assert list(channel) == [], "iteration after the end ends at once"


async def test_close_drains_then_ends_the_async_stream() -> None:
    channel: Channel[int] = Channel(5)
    for item in range(3):
        await channel.asend(item)
    channel.close()
    with pytest.raises(ChannelClosedError):
        await channel.asend(9)
    assert [item async for item in channel] == [0, 1, 2]
    with pytest.raises(ChannelClosedError):
        await channel.areceive()


def test_close_wakes_a_blocked_thread_receiver(parked: Callable[[int], None]) -> None:
    channel: Channel[int] = Channel(1)
    consumer = Background(lambda: list(channel))
    parked(1)
    channel.close()
    assert consumer.join() == []


async def test_close_wakes_a_blocked_task_receiver() -> None:
    channel: Channel[int] = Channel(1)
    receiving = asyncio.create_task(channel.areceive())
    await settle()
    channel.close()
    with pytest.raises(ChannelClosedError):
        await asyncio.wait_for(receiving, JOIN)


def test_close_fails_a_blocked_sender(parked: Callable[[int], None]) -> None:
    channel: Channel[int] = Channel(1)
    channel.send(1)
    producer = Background(channel.send, 2)
    parked(1)
    channel.close()
    with pytest.raises(ChannelClosedError):
        producer.join()
    assert list(channel) == [1], "the refused item never entered the channel"


async def test_close_fails_a_blocked_task_sender() -> None:
    channel: Channel[int] = Channel(1)
    await channel.asend(1)
    sending = asyncio.create_task(channel.asend(2))
    await settle()
    channel.close()
    with pytest.raises(ChannelClosedError):
        await sending


def test_close_with_an_error_fails_receivers_after_the_last_item() -> None:
    channel: Channel[int] = Channel(5, name="feed")
    channel.send(1)
    boom = ValueError("upstream broke")
    channel.close(boom)
    assert channel.receive() == 1
    with pytest.raises(ChannelFailedError) as caught:
        channel.receive()
    assert caught.value.error is boom
    assert caught.value.__cause__ is boom
    assert caught.value.channel == "feed"
    assert "upstream broke" in str(caught.value)
    with pytest.raises(ChannelFailedError):
        list(channel)


async def test_close_with_an_error_fails_async_iteration() -> None:
    channel: Channel[int] = Channel(5)
    await channel.asend(1)
    channel.close(KeyError("k"))
    got: list[int] = []
    with pytest.raises(ChannelFailedError):
        await atake_all(channel, got)
    assert got == [1]


def test_the_first_close_decides() -> None:
    channel: Channel[int] = Channel(1)
    channel.close()
    channel.close(ValueError("late"))
    with pytest.raises(ChannelClosedError):
        channel.receive()


def test_relaying_a_failure_keeps_its_origin() -> None:
    first: Channel[int] = Channel(1, name="first")
    second: Channel[int] = Channel(1, name="second")
    first.close(OSError("disk"))
    with pytest.raises(ChannelFailedError) as caught:
        first.receive()
    second.close(caught.value)
    with pytest.raises(ChannelFailedError) as relayed:
        second.receive()
    assert relayed.value.channel == "first"
    assert isinstance(relayed.value.error, OSError)


def test_a_with_block_closes_the_channel_and_reports_its_error() -> None:
    channel: Channel[int] = Channel(5)
    with channel as producing:
        producing.send(1)
    assert channel.closed
    assert list(channel) == [1]
    failing: Channel[int] = Channel(5)

    def produce_then_crash() -> None:
        with failing:
            failing.send(1)
            raise RuntimeError("producer crashed")

    with pytest.raises(RuntimeError):
        produce_then_crash()
    assert failing.receive() == 1
    with pytest.raises(ChannelFailedError, match="producer crashed"):
        failing.receive()


async def test_an_async_with_block_closes_the_channel() -> None:
    channel: Channel[int] = Channel(5)
    async with channel as producing:
        await producing.asend(1)
    assert [item async for item in channel] == [1]


# -- receive timeouts -----------------------------------------------------------------------


def test_receive_with_zero_timeout_never_waits() -> None:
    channel: Channel[int] = Channel(2, name="inbox")
    with pytest.raises(TimeoutExceededError, match="receive from channel 'inbox'"):
        channel.receive(timeout=0)
    channel.send(7)
    assert channel.receive(timeout=0) == 7


def test_receive_timeout_runs_on_the_channel_clock() -> None:
    channel: Channel[int] = Channel(2, clock=JumpingClock(step=10.0))
    with pytest.raises(TimeoutExceededError) as caught:
        channel.receive(timeout=5.0)
    assert caught.value.timeout == 5.0


async def test_async_receive_timeout_runs_on_manual_time() -> None:
    clock = ManualClock(autojump=False)
    channel: Channel[int] = Channel(2, clock=clock)
    receiving = asyncio.create_task(channel.areceive(timeout=3.0))
    await settle()
    clock.advance(2.9)
    await settle()
    assert not receiving.done()
    clock.advance(0.1)
    await settle()
    with pytest.raises(TimeoutExceededError):
        await receiving
    channel.send(1)
    assert await channel.areceive(timeout=0) == 1, "the timed-out receiver left no trace"


async def test_async_receive_timeout_with_an_autojumping_clock(clock: ManualClock) -> None:
    channel: Channel[int] = Channel(2, clock=clock)
    started = clock.now()
    with pytest.raises(TimeoutExceededError):
        await channel.areceive(timeout=4.0)
    assert clock.now() - started == pytest.approx(4.0)


async def test_async_receive_with_a_timeout_gets_an_item_that_comes_in_time() -> None:
    channel: Channel[int] = Channel(2)
    receiving = asyncio.create_task(channel.areceive(timeout=30.0))
    await settle()
    await channel.asend(5)
    assert await asyncio.wait_for(receiving, JOIN) == 5


def test_receive_with_a_timeout_gets_an_item_that_comes_in_time(
    parked: Callable[[int], None],
) -> None:
    channel: Channel[int] = Channel(2)
    consumer = Background(channel.receive, 30.0)
    parked(1)
    channel.send(5)
    assert consumer.join() == 5


# -- threads and tasks on one channel -------------------------------------------------------


async def test_a_thread_producer_feeds_a_task_consumer() -> None:
    channel: Channel[int] = Channel(2)

    def produce() -> None:
        with channel:
            for item in range(200):
                channel.send(item)

    producer = Background(produce)
    received = [item async for item in channel]
    producer.join()
    assert received == list(range(200))
    assert channel.stats().delivered == 200


async def test_a_task_producer_feeds_a_thread_consumer() -> None:
    channel: Channel[int] = Channel(2)

    async def produce() -> None:
        async with channel:
            for item in range(200):
                await channel.asend(item)

    consumer = asyncio.create_task(asyncio.to_thread(lambda: list(channel)))
    await produce()
    assert await asyncio.wait_for(consumer, JOIN) == list(range(200))


async def test_threads_and_tasks_share_one_channel_without_losing_an_item() -> None:
    channel: Channel[tuple[str, int]] = Channel(3)
    per_producer = 300
    thread_names = [f"thread-{n}" for n in range(3)]
    task_names = [f"task-{n}" for n in range(2)]
    done = threading.Barrier(len(thread_names) + 1, timeout=JOIN)

    def thread_producer(name: str) -> None:
        for item in range(per_producer):
            channel.send((name, item))
        done.wait()

    async def task_producer(name: str) -> None:
        for item in range(per_producer):
            await channel.asend((name, item))

    thread_got: list[tuple[str, int]] = []
    task_got: list[tuple[str, int]] = []

    def thread_consumer() -> None:
        for item in channel:
            thread_got.append(item)

    async def task_consumer() -> None:
        async for item in channel:
            task_got.append(item)

    producers = [Background(thread_producer, name) for name in thread_names]
    consumers = [Background(thread_consumer) for _ in range(2)]
    consuming = [asyncio.create_task(task_consumer()) for _ in range(2)]
    await asyncio.gather(*(task_producer(name) for name in task_names))
    await asyncio.to_thread(done.wait)
    channel.close()
    await asyncio.wait_for(asyncio.gather(*consuming), JOIN)
    for background in (*producers, *consumers):
        await asyncio.to_thread(background.join)
    everything = thread_got + task_got
    expected = [(name, item) for name in thread_names + task_names for item in range(per_producer)]
    assert Counter(everything) == Counter(expected), "every item exactly once"
    for name in thread_names + task_names:
        own = [item for who, item in thread_got if who == name]
        assert own == sorted(own), "one consumer sees one producer's items in order"
    stats = channel.stats()
    assert stats.received == stats.delivered == len(expected)


async def test_blocking_calls_inside_the_event_loop_fail_instead_of_freezing_it() -> None:
    channel: Channel[int] = Channel(1, name="loop")
    with pytest.raises(BlockingInEventLoopError, match="areceive"):
        channel.receive()
    channel.send(1)  # room: a sync send never blocks, so it is allowed
    with pytest.raises(BlockingInEventLoopError, match="asend"):
        channel.send(2)
    assert channel.receive() == 1  # an item is there: no wait needed
    assert channel.stats().producer_blocked == 0


async def test_a_sync_send_in_the_loop_wakes_a_waiting_task() -> None:
    channel: Channel[int] = Channel(1)
    receiving = asyncio.create_task(channel.areceive())
    await settle()
    channel.send(3)
    assert await asyncio.wait_for(receiving, JOIN) == 3


# -- cancellation: no lost wake-ups ---------------------------------------------------------


async def test_a_cancelled_receiver_leaves_the_queue_of_waiters() -> None:
    channel: Channel[int] = Channel(2)
    receiving = asyncio.create_task(channel.areceive())
    await settle()
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    await channel.asend(1)
    assert len(channel) == 1, "the item waits for a live receiver"
    assert await channel.areceive() == 1


async def test_a_woken_then_cancelled_receiver_passes_the_item_on() -> None:
    channel: Channel[int] = Channel(2)
    first = asyncio.create_task(channel.areceive())
    await settle()
    second = asyncio.create_task(channel.areceive())
    await settle()
    channel.send(1)  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, JOIN) == 1


async def test_a_woken_then_cancelled_sender_passes_the_room_on() -> None:
    channel: Channel[int] = Channel(1)
    await channel.asend(0)
    first = asyncio.create_task(channel.asend(1))
    await settle()
    second = asyncio.create_task(channel.asend(2))
    await settle()
    assert channel.receive() == 0  # wakes `first`...
    first.cancel()  # ...which gives up
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, JOIN)
    assert channel.receive() == 2


def test_a_task_whose_loop_closed_is_skipped_by_the_waker(
    parked: Callable[[int], None],
) -> None:
    channel: Channel[int] = Channel(1)
    dead_loop = asyncio.new_event_loop()
    stranded = dead_loop.create_task(channel.areceive())
    dead_loop.run_until_complete(asyncio.sleep(0))  # the task now waits in the channel
    dead_loop.close()  # ...and will never run again
    consumer = Background(channel.receive)
    parked(1)
    channel.send(4)  # the stranded task is first in line; the wake must reach the thread
    assert consumer.join() == 4
    stranded._log_destroy_pending = False  # type: ignore[attr-defined]  # expected here
    stranded.get_coro().close()


# -- stats ----------------------------------------------------------------------------------


def test_stats_are_a_consistent_snapshot() -> None:
    channel: Channel[int] = Channel(4, overflow="drop_oldest")
    for item in range(6):
        channel.send(item)
    channel.receive()
    stats = channel.stats()
    assert stats.size == 3
    assert stats.capacity == 4
    assert stats.fill_ratio == 0.75
    assert stats.received == stats.delivered + stats.dropped + stats.size


# -- the edges of waiting -------------------------------------------------------------------


def test_a_thread_wait_that_times_out_leaves_no_waiter_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()
    channel: Channel[int] = Channel(1, max_wait=5.0, clock=clock)
    channel.send(1)

    def lock_wait_expires(waiter: Any, timeout: float | None) -> bool:
        assert timeout == 5.0
        clock.advance(timeout)  # as if the timed lock wait ran out
        return False

    monkeypatch.setattr(_waiters, "wait_thread", lock_wait_expires)
    with pytest.raises(ChannelFullError, match=r"after waiting 5\.000s"):
        channel.send(2)
    assert not channel._senders, "the expired waiter withdrew"
    assert channel.stats().producer_blocked == 1
    assert channel.stats().rejected == 1


def test_an_interrupted_thread_wait_withdraws_and_reraises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel: Channel[int] = Channel(1)

    def interrupted(waiter: Any, timeout: float | None) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(_waiters, "wait_thread", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Background(channel.receive).join()
    assert not channel._receivers
    channel.send(1)
    assert channel.receive(timeout=0) == 1


async def test_a_cancelled_timed_receiver_leaves_no_waiter_behind() -> None:
    channel: Channel[int] = Channel(1, clock=ManualClock(autojump=False))
    receiving = asyncio.create_task(channel.areceive(timeout=10.0))
    await settle()
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    assert not channel._receivers


async def test_a_timed_sender_woken_and_cancelled_passes_the_room_on() -> None:
    channel: Channel[int] = Channel(1, max_wait=30.0)
    await channel.asend(0)
    first = asyncio.create_task(channel.asend(1))
    await settle()
    second = asyncio.create_task(channel.asend(2))
    await settle()
    assert channel.receive() == 0
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, JOIN)
    assert channel.receive() == 2


async def test_a_cancelled_waiter_popped_by_a_waker_is_skipped() -> None:
    channel: Channel[int] = Channel(2)
    receiving = asyncio.create_task(channel.areceive())
    await settle()
    receiving.cancel()  # its future is cancelled now; the task has not run yet
    channel.send(1)  # the waker meets the cancelled future first and skips it
    with pytest.raises(asyncio.CancelledError):
        await receiving
    assert len(channel) == 1
    assert await channel.areceive() == 1


async def test_several_blocked_producers_all_get_through() -> None:
    channel: Channel[int] = Channel(2)
    sending = [asyncio.create_task(channel.asend(item)) for item in range(6)]
    await settle()
    assert len(channel) == 2
    received = [await channel.areceive() for _ in range(6)]
    await asyncio.wait_for(asyncio.gather(*sending), JOIN)
    assert sorted(received) == list(range(6))


def test_several_blocked_thread_producers_all_get_through(
    parked: Callable[[int], None],
) -> None:
    channel: Channel[int] = Channel(1)
    channel.send(-1)
    producers = [Background(channel.send, item) for item in range(3)]
    parked(3)
    received = [channel.receive() for _ in range(4)]
    for producer in producers:
        producer.join()
    assert sorted(received) == [-1, 0, 1, 2]


def test_several_blocked_thread_consumers_each_get_one(parked: Callable[[int], None]) -> None:
    channel: Channel[int] = Channel(3)
    consumers = [Background(channel.receive) for _ in range(3)]
    parked(3)
    for item in range(3):
        channel.send(item)
    assert sorted(consumer.join() for consumer in consumers) == [0, 1, 2]
