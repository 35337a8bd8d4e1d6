"""Broadcast: every subscriber gets every message; slow subscribers get the declared policy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError
from seawall.events import Event
from seawall.messaging.channel import (
    BlockingInEventLoopError,
    Broadcast,
    ChannelClosedError,
    ChannelFailedError,
    ChannelFullError,
    ItemDropped,
    SubscriberDisconnected,
    SubscriberDisconnectedError,
    _waiters,
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
        assert not self.thread.is_alive(), "the thread is still blocked"
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


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def drain(subscription: Any) -> list[Any]:
    items = []
    while len(subscription):
        items.append(subscription.receive(timeout=0))
    return items


# -- configuration --------------------------------------------------------------------------


def test_bad_configuration_is_refused_with_the_field_named() -> None:
    with pytest.raises(ConfigurationError, match="capacity_per_subscriber"):
        Broadcast(0)
    with pytest.raises(
        ConfigurationError, match="'block', 'drop_oldest', 'drop_newest', 'disconnect'"
    ):
        Broadcast(2, slow_subscriber="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_wait only applies"):
        Broadcast(2, slow_subscriber="disconnect", max_wait=1.0)


# -- delivery -------------------------------------------------------------------------------


def test_every_subscriber_gets_every_message_published_after_it_joined() -> None:
    news: Broadcast[str] = Broadcast(4, name="news")
    early = news.subscribe()
    assert news.publish("first") == 1
    late = news.subscribe("late")
    assert news.publish("second") == 2
    assert drain(early) == ["first", "second"]
    assert drain(late) == ["second"]
    assert late.name == "late"
    assert early.name.startswith("news/")


def test_publishing_with_nobody_listening_reaches_nobody() -> None:
    news: Broadcast[int] = Broadcast(1)
    assert news.publish(1) == 0
    assert news.stats().received == 1


async def test_async_subscribers_receive_with_async_for() -> None:
    news: Broadcast[int] = Broadcast(2)
    subscriptions = [news.subscribe() for _ in range(3)]

    async def consume(subscription: Any) -> list[int]:
        return [item async for item in subscription]

    consuming = [asyncio.create_task(consume(s)) for s in subscriptions]
    for item in range(10):
        await news.apublish(item)
    news.close()
    results = await asyncio.wait_for(asyncio.gather(*consuming), JOIN)
    assert results == [list(range(10))] * 3


def test_thread_publisher_and_thread_subscribers() -> None:
    news: Broadcast[int] = Broadcast(2)
    subscriptions = [news.subscribe() for _ in range(3)]
    consumers = [Background(lambda s=s: list(s)) for s in subscriptions]

    def publish_all() -> None:
        with news:
            for item in range(100):
                news.publish(item)

    Background(publish_all).join()
    assert [consumer.join() for consumer in consumers] == [list(range(100))] * 3


# -- slow subscriber: block -----------------------------------------------------------------


def test_block_holds_the_publisher_until_the_slowest_subscriber_has_room(
    parked: Callable[[int], None],
) -> None:
    news: Broadcast[int] = Broadcast(1)
    fast = news.subscribe()
    slow = news.subscribe()
    news.publish(1)
    assert fast.receive() == 1
    publisher = Background(news.publish, 2)
    parked(1)
    assert len(fast) == 0, "all or nothing: the fast subscriber does not get it early"
    assert news.stats().producer_blocked == 1
    assert news.stats().fill_ratio == 1.0
    assert slow.receive() == 1
    assert publisher.join() == 2
    assert (fast.receive(), slow.receive()) == (2, 2)


async def test_block_suspends_an_async_publisher() -> None:
    news: Broadcast[int] = Broadcast(1)
    only = news.subscribe()
    await news.apublish(1)
    publishing = asyncio.create_task(news.apublish(2))
    await settle()
    assert not publishing.done()
    assert await only.areceive() == 1
    assert await asyncio.wait_for(publishing, JOIN) == 1
    assert await only.areceive() == 2


async def test_block_gives_up_after_max_wait_naming_the_slow_subscriber() -> None:
    clock = ManualClock(autojump=False)
    news: Broadcast[int] = Broadcast(1, max_wait=1.0, clock=clock, name="news")
    news.subscribe("fast")
    news.subscribe("slow")
    news.publish(1)
    news.subscribers[0].receive()
    publishing = asyncio.create_task(news.apublish(2))
    await settle()
    clock.advance(1.0)
    await settle()
    with pytest.raises(ChannelFullError, match="slow") as caught:
        await publishing
    assert "fast" not in caught.value.channel
    assert news.stats().rejected == 1
    assert len(news.subscribers[0]) == 0, "a refused message reaches no one"


async def test_a_sync_publish_that_would_block_the_loop_is_refused() -> None:
    news: Broadcast[int] = Broadcast(1)
    news.subscribe()
    news.publish(1)
    with pytest.raises(BlockingInEventLoopError, match="apublish"):
        news.publish(2)


def test_unsubscribing_releases_a_blocked_publisher(parked: Callable[[int], None]) -> None:
    news: Broadcast[int] = Broadcast(1)
    stuck = news.subscribe()
    news.publish(1)
    publisher = Background(news.publish, 2)
    parked(1)
    stuck.close()
    assert publisher.join() == 0
    assert list(stuck) == [1], "an unsubscribed subscriber still drains what it had"


# -- slow subscriber: drop ------------------------------------------------------------------


def test_drop_oldest_makes_only_the_slow_subscriber_lose_old_messages() -> None:
    ticks: Broadcast[int] = Broadcast(2, slow_subscriber="drop_oldest", name="ticks")
    fast = ticks.subscribe()
    slow = ticks.subscribe("slow")
    seen: list[Event] = []
    ticks.events.subscribe(seen.append)
    fast_got = []
    for item in range(5):
        assert ticks.publish(item) == 2
        fast_got.append(fast.receive())
    assert fast_got == [0, 1, 2, 3, 4]
    assert drain(slow) == [3, 4]
    assert slow.stats().dropped == 3
    assert ticks.stats().dropped == 3
    assert seen == [ItemDropped("ticks", item, "drop_oldest", "slow") for item in (0, 1, 2)]


def test_drop_newest_makes_the_slow_subscriber_miss_new_messages() -> None:
    ticks: Broadcast[int] = Broadcast(2, slow_subscriber="drop_newest")
    slow = ticks.subscribe()
    heard: list[Event] = []
    slow.events.subscribe(heard.append)
    assert [ticks.publish(item) for item in range(4)] == [1, 1, 0, 0]
    assert drain(slow) == [0, 1]
    assert [event.item for event in heard if isinstance(event, ItemDropped)] == [2, 3]


# -- slow subscriber: disconnect ------------------------------------------------------------


def test_disconnect_cuts_the_slow_subscriber_off_with_a_clear_error() -> None:
    news: Broadcast[int] = Broadcast(2, slow_subscriber="disconnect", name="news")
    fast = news.subscribe("fast")
    slow = news.subscribe("slow")
    seen: list[Event] = []
    news.events.subscribe(seen.append)
    for item in range(4):
        news.publish(item)
        assert fast.receive() == item
    assert slow.disconnected
    assert news.subscribers == (fast,)
    assert slow.receive() == 0, "it keeps what it had buffered"
    assert slow.receive() == 1
    with pytest.raises(SubscriberDisconnectedError) as caught:
        slow.receive()
    assert caught.value.subscriber == "slow"
    assert caught.value.broadcast == "news"
    assert caught.value.policy == "disconnect"
    assert "disconnect" in str(caught.value)
    assert "slow" in str(caught.value)
    assert seen == [SubscriberDisconnected("news", "slow", 2)]
    assert news.stats().disconnected == 1
    with pytest.raises(SubscriberDisconnectedError):
        list(slow)


async def test_a_disconnected_async_subscriber_gets_the_error_from_async_for() -> None:
    news: Broadcast[int] = Broadcast(1, slow_subscriber="disconnect")
    slow = news.subscribe()
    news.publish(1)
    news.publish(2)
    got: list[Any] = []
    with pytest.raises(SubscriberDisconnectedError):
        await atake_all(slow, got)
    assert got == [1]


# -- close ----------------------------------------------------------------------------------


def test_close_ends_every_subscription_after_it_drains() -> None:
    news: Broadcast[int] = Broadcast(3)
    subscriptions = [news.subscribe() for _ in range(2)]
    news.publish(1)
    news.close()
    news.close()
    assert news.closed
    assert [list(s) for s in subscriptions] == [[1], [1]]
    with pytest.raises(ChannelClosedError):
        news.publish(2)
    late = news.subscribe()
    assert late.closed
    assert list(late) == []


def test_close_with_an_error_fails_every_subscriber() -> None:
    news: Broadcast[int] = Broadcast(3)
    subscription = news.subscribe()
    news.close(RuntimeError("feed lost"))
    with pytest.raises(ChannelFailedError, match="feed lost"):
        subscription.receive()


def test_close_wakes_a_waiting_subscriber(parked: Callable[[int], None]) -> None:
    news: Broadcast[int] = Broadcast(3)
    subscription = news.subscribe()
    consumer = Background(lambda: list(subscription))
    parked(1)
    news.close()
    assert consumer.join() == []


def test_close_fails_a_blocked_publisher(parked: Callable[[int], None]) -> None:
    news: Broadcast[int] = Broadcast(1)
    news.subscribe()
    news.publish(1)
    publisher = Background(news.publish, 2)
    parked(1)
    news.close()
    with pytest.raises(ChannelClosedError):
        publisher.join()


def test_repr_and_stats_describe_the_broadcast() -> None:
    news: Broadcast[int] = Broadcast(4, name="news")
    subscription = news.subscribe()
    news.publish(1)
    assert "news" in repr(news)
    assert "subscribers=1" in repr(news)
    assert "news/1" in repr(subscription)
    stats = news.stats()
    assert (stats.received, stats.subscribers, stats.capacity, stats.fill_ratio) == (1, 1, 4, 0.25)
    assert subscription.stats().received == 1


async def test_async_with_closes_the_broadcast_and_drops_reach_listeners() -> None:
    seen: list[Event] = []
    async with Broadcast[int](1, slow_subscriber="drop_newest") as news:
        subscription = news.subscribe()
        subscription.events.subscribe(seen.append)
        await news.apublish(1)
        await news.apublish(2)
    assert news.closed
    assert [item async for item in subscription] == [1]
    assert [event.item for event in seen if isinstance(event, ItemDropped)] == [2]


def test_many_blocked_publishers_all_get_through(parked: Callable[[int], None]) -> None:
    news: Broadcast[int] = Broadcast(1)
    subscription = news.subscribe()
    news.publish(-1)
    publishers = [Background(news.publish, item) for item in range(3)]
    parked(3)
    received = [subscription.receive() for _ in range(4)]
    for publisher in publishers:
        assert publisher.join() == 1
    assert sorted(received) == [-1, 0, 1, 2]


async def test_a_waiting_subscriber_is_woken_under_every_policy() -> None:
    for policy in ("block", "drop_oldest", "drop_newest", "disconnect"):
        news: Broadcast[str] = Broadcast(1, slow_subscriber=policy)
        subscription = news.subscribe()
        receiving = asyncio.create_task(subscription.areceive())
        await settle()
        assert news.publish(policy) == 1
        assert await asyncio.wait_for(receiving, JOIN) == policy
