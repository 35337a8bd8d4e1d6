"""The outbox and its relay on the memory engine (and SQLite where transactions matter).

Time is a ManualClock passed both to the store (leases, delays, retention) and to the
relay (its own pauses), so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.codec import EncodeError
from seawall.errors import ConfigurationError, RetryError, UnsupportedEngineError
from seawall.events import Event
from seawall.messaging.outbox import (
    MESSAGE_ID_HEADER,
    Outbox,
    OutboxBatchRelayed,
    OutboxMessage,
    OutboxMessageDead,
    OutboxMessagePublished,
    OutboxPublishFailed,
    OutboxPurged,
    OutboxRelay,
    OutboxStats,
    QueuePublisher,
    RelayAlreadyRunningError,
    TopicPublisher,
)
from seawall.resilience import Retry, constant


class Flaky:
    """A publisher that fails for the listed message bodies (``times`` each), recording the rest."""

    def __init__(self, failing: dict[str, int] | None = None) -> None:
        self.failing = dict(failing or {})
        self.published: list[OutboxMessage] = []
        self.calls = 0

    def __call__(self, message: OutboxMessage) -> None:
        self.calls += 1
        left = self.failing.get(str(message.body), 0)
        if left:
            self.failing[str(message.body)] = left - 1
            raise ConnectionError(f"broker down for {message.body}")
        self.published.append(message)

    @property
    def bodies(self) -> list[Any]:
        return [m.body for m in self.published]


@pytest.fixture
def outbox(clock: ManualClock) -> Iterator[Outbox]:
    opened = Outbox(seawall.connect("memory://"), clock=clock)
    yield opened
    opened.close()


def relay_for(outbox: Outbox, publisher: Any, clock: ManualClock, **options: Any) -> OutboxRelay:
    options.setdefault("retry", None)
    options.setdefault("backoff", constant(10.0))
    return OutboxRelay(outbox, publisher, clock=clock, **options)


# -- writing -----------------------------------------------------------------------------------


def test_add_returns_unique_ids_and_the_relay_publishes_everything(
    outbox: Outbox, clock: ManualClock
) -> None:
    first = outbox.add("orders", {"n": 1}, key="o1", headers={"trace": "t1"})
    more = outbox.add_many("orders", [{"n": 2}, {"n": 3}], key="o2")
    assert len({first, *more}) == 3
    publisher = Flaky()
    assert relay_for(outbox, publisher, clock).drain() == 3
    assert publisher.bodies == [{"n": 1}, {"n": 2}, {"n": 3}]
    published = publisher.published[0]
    assert (published.id, published.topic, published.key) == (first, "orders", "o1")
    assert dict(published.headers) == {"trace": "t1"}
    assert published.attempts == 1
    assert published.created_at == clock.now()
    assert outbox.stats() == OutboxStats(0, 0, 0, 3, 0, None)


def test_bad_input_is_refused_at_add_and_nothing_is_written(outbox: Outbox) -> None:
    with pytest.raises(EncodeError, match="set"):
        outbox.add("orders", {"items": {1, 2}})
    with pytest.raises(ConfigurationError, match="topic"):
        outbox.add("", {})
    with pytest.raises(ConfigurationError, match="key"):
        outbox.add("orders", {}, key="")
    with pytest.raises(ConfigurationError, match="headers"):
        outbox.add("orders", {}, headers={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="delay"):
        outbox.add("orders", {}, delay=-1)
    with pytest.raises(EncodeError):
        outbox.add_many("orders", [{"ok": 1}, {"bad": object()}])
    assert outbox.stats().pending == 0
    assert outbox.add_many("orders", []) == []


def test_memory_refuses_a_transaction_and_unknown_engines_are_named() -> None:
    sqlite_engine = seawall.connect("sqlite://:memory:")
    outbox = Outbox(seawall.connect("memory://"))
    with sqlite_engine.transaction() as tx, pytest.raises(ConfigurationError, match="memory"):
        outbox.add("orders", {}, transaction=tx)
    with pytest.raises(UnsupportedEngineError, match="outbox"):
        Outbox(seawall.connect("redis://127.0.0.1:6379/0"))


def test_a_delayed_message_waits(outbox: Outbox, clock: ManualClock) -> None:
    outbox.add("orders", "later", delay=5.0)
    publisher = Flaky()
    relay = relay_for(outbox, publisher, clock)
    assert relay.drain() == 0
    assert outbox.stats().delayed == 1
    clock.advance(5.0)
    assert relay.drain() == 1


# -- order and failures ------------------------------------------------------------------------


def test_a_failing_message_blocks_its_key_only_and_is_retried_after_the_backoff(
    outbox: Outbox, clock: ManualClock
) -> None:
    for body, key in (("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b"), ("n1", None)):
        outbox.add("t", body, key=key)
    publisher = Flaky({"a1": 1})
    relay = relay_for(outbox, publisher, clock, backoff=constant(10.0))
    assert relay.run_once() == 3
    assert publisher.bodies == ["b1", "b2", "n1"]
    stats = outbox.stats()
    assert (stats.delayed, stats.ready) == (1, 1)  # a1 waits its backoff; a2 is held back
    assert relay.run_once() == 0  # a2 must not overtake a1
    clock.advance(10.0)
    assert relay.drain() == 2
    assert publisher.bodies == ["b1", "b2", "n1", "a1", "a2"]
    assert publisher.published[3].attempts == 2
    assert publisher.published[4].attempts == 1  # held back, not counted as an attempt


def test_the_retry_policy_retries_in_place_before_giving_up(
    outbox: Outbox, clock: ManualClock
) -> None:
    outbox.add("t", "x", key="k")
    publisher = Flaky({"x": 2})
    relay = relay_for(outbox, publisher, clock, retry=Retry(3, wait=0.5, clock=clock))
    assert relay.run_once() == 1
    assert publisher.calls == 3
    assert clock.sleeps == [0.5, 0.5]


def test_a_message_failing_max_attempts_times_is_set_aside_and_can_be_redriven(
    outbox: Outbox, clock: ManualClock
) -> None:
    outbox.add("t", "poison", key="k")
    outbox.add("t", "next", key="k")
    publisher = Flaky({"poison": 2})
    relay = relay_for(outbox, publisher, clock, max_attempts=2, backoff=constant(1.0))
    events: list[Event] = []
    relay.events.subscribe(events.append)
    assert relay.run_once() == 0
    clock.advance(1.0)
    assert relay.run_once() == 1  # poison is dead now: it no longer blocks its key
    assert publisher.bodies == ["next"]
    (dead,) = outbox.dead()
    assert (dead.body, dead.key, dead.attempts) == ("poison", "k", 2)
    assert dead.last_error == "ConnectionError: broker down for poison"
    assert dead.dead_at == clock.now()
    assert [type(e) for e in events if not isinstance(e, OutboxBatchRelayed)] == [
        OutboxPublishFailed,
        OutboxMessageDead,
        OutboxMessagePublished,
    ]
    assert outbox.redrive() == 1
    assert relay.drain() == 1
    assert publisher.bodies == ["next", "poison"]
    assert outbox.dead() == []


def test_retry_error_text_is_kept_as_the_last_error(outbox: Outbox, clock: ManualClock) -> None:
    outbox.add("t", "x")
    relay = relay_for(
        outbox, Flaky({"x": 5}), clock, retry=Retry(2, wait=0.0, clock=clock), max_attempts=1
    )
    relay.run_once()
    (dead,) = outbox.dead()
    assert dead.last_error is not None
    assert dead.last_error.startswith(RetryError.__name__)


def test_an_undecodable_row_is_set_aside_without_blocking_others(
    outbox: Outbox, clock: ManualClock
) -> None:
    outbox.add("t", "good")
    table = outbox.store._table  # type: ignore[attr-defined]
    broken = outbox.add("t", "x", key="k")
    for row in table.rows.values():
        if row.id == broken:
            row.body = b"\xff not json"
    publisher = Flaky()
    assert relay_for(outbox, publisher, clock).drain() == 1
    (dead,) = outbox.dead()
    assert dead.id == broken
    assert dead.body == b"\xff not json"  # shown as stored
    assert dead.last_error is not None
    assert "cannot decode" in dead.last_error


# -- leases and several relays -----------------------------------------------------------------


def test_a_crashed_relay_s_messages_are_claimed_again_after_the_lease(
    outbox: Outbox, clock: ManualClock
) -> None:
    outbox.add_many("t", ["a", "b"], key="k")
    crashed = outbox.store.claim("dead-relay", 10, 30.0)
    assert len(crashed) == 2
    publisher = Flaky()
    relay = relay_for(outbox, publisher, clock)
    assert relay.run_once() == 0
    assert outbox.stats().in_flight == 2
    clock.advance(30.0)
    assert relay.drain() == 2
    assert publisher.bodies == ["a", "b"]
    assert [m.attempts for m in publisher.published] == [2, 2]


def test_two_relays_never_publish_the_same_message_or_break_key_order(
    outbox: Outbox, clock: ManualClock
) -> None:
    for n in range(30):
        outbox.add("t", n, key=f"k{n % 3}")
    log: list[tuple[str, int]] = []
    first = relay_for(outbox, lambda m: log.append(("first", m.body)), clock, batch_size=4)
    second = relay_for(outbox, lambda m: log.append(("second", m.body)), clock, batch_size=4)
    # Interleave claims: the first claims, the second claims before the first settles.
    stored_first = outbox.store.claim(first.owner, 4, 30.0)
    stored_second = outbox.store.claim(second.owner, 4, 30.0)
    keys_first = {row.key for row in stored_first}
    keys_second = {row.key for row in stored_second}
    assert not keys_first & keys_second  # a key held by one relay is not taken by the other
    outbox.store.unclaim(first.owner, [row.position for row in stored_first])
    outbox.store.unclaim(second.owner, [row.position for row in stored_second])
    while first.run_once() + second.run_once():
        pass
    bodies = [body for _, body in log]
    assert sorted(bodies) == list(range(30))
    for key in range(3):
        assert [b for b in bodies if b % 3 == key] == list(range(key, 30, 3))


def test_long_batches_renew_their_leases(outbox: Outbox, clock: ManualClock) -> None:
    outbox.add_many("t", ["a", "b", "c"])
    lease_ends: list[float] = []

    def slow(message: OutboxMessage) -> None:
        clock.advance(12.0)
        rows = outbox.store._table.rows  # type: ignore[attr-defined]
        lease_ends.append(max(row.lease_until or 0.0 for row in rows.values()))

    relay = relay_for(outbox, slow, clock, lease=20.0)
    start = clock.now()
    assert relay.run_once() == 3
    # Renewed before the 2nd message (12 s >= 10 s) and before the 3rd.
    assert lease_ends == [start + 20.0, start + 12.0 + 20.0, start + 24.0 + 20.0]


# -- retention and cleanup ---------------------------------------------------------------------


def test_sent_messages_are_kept_for_the_retention_then_purged(
    outbox: Outbox, clock: ManualClock
) -> None:
    outbox.add_many("t", [1, 2])
    relay = relay_for(outbox, Flaky(), clock, retention=100.0, cleanup_interval=50.0)
    events: list[Event] = []
    relay.events.subscribe(events.append, types=(OutboxPurged,))
    relay.drain()
    assert outbox.stats().sent == 2
    clock.advance(60.0)
    relay.run_once()  # cleanup due, but the messages are only 60 s old
    assert outbox.stats().sent == 2
    clock.advance(60.0)
    relay.run_once()
    assert outbox.stats().sent == 0
    assert events == [OutboxPurged(relay.name, 2)]


def test_retention_zero_deletes_at_once(outbox: Outbox, clock: ManualClock) -> None:
    outbox.add("t", 1)
    relay_for(outbox, Flaky(), clock, retention=0).drain()
    assert outbox.stats() == OutboxStats(0, 0, 0, 0, 0, None)


def test_purge_sent_by_hand(outbox: Outbox, clock: ManualClock) -> None:
    outbox.add("t", 1)
    relay_for(outbox, Flaky(), clock).drain()
    assert outbox.purge_sent(10.0) == 0
    clock.advance(10.0)
    assert outbox.purge_sent(10.0) == 1


# -- publishers --------------------------------------------------------------------------------


def test_queue_publisher_sends_with_the_outbox_id_as_dedup_id_and_header(
    outbox: Outbox, clock: ManualClock
) -> None:
    engine = seawall.connect("memory://")
    ids = outbox.add_many("orders", [{"n": 1}, {"n": 2}], key="o1")
    extra = outbox.add("emails", "hi", headers={"h": "v"})
    publisher = QueuePublisher(engine.queue)
    assert relay_for(outbox, publisher, clock).drain() == 3
    orders = engine.queue("orders").receive(10)
    assert [m.body for m in orders] == [{"n": 1}, {"n": 2}]
    assert [m.headers[MESSAGE_ID_HEADER] for m in orders] == ids
    assert orders[0].headers["seawall-key"] == "o1"
    (email,) = engine.queue("emails").receive(10)
    assert dict(email.headers) == {
        "h": "v",
        MESSAGE_ID_HEADER: extra,
        "seawall-topic": "emails",
    }
    # A re-publish (a relay crashed before marking sent) is dropped by the queue's dedup.
    publisher(
        OutboxMessage(ids[0], "orders", "o1", {"n": 1}, {}, 1, 0.0, 2),
    )
    assert engine.queue("orders").stats().total == 2


def test_queue_publisher_single_queue_and_bad_target() -> None:
    engine = seawall.connect("memory://")
    queue = engine.queue("all")
    publisher = QueuePublisher(queue)
    publisher(OutboxMessage("id1", "x", None, 1, {}, 1, 0.0, 1))
    publisher(OutboxMessage("id2", "y", None, 2, {}, 2, 0.0, 1))
    assert [m.body for m in queue.receive(10)] == [1, 2]
    with pytest.raises(ConfigurationError, match="QueuePublisher"):
        QueuePublisher("not a queue")  # type: ignore[arg-type]


def test_topic_publisher_keeps_the_outbox_key_and_id(outbox: Outbox, clock: ManualClock) -> None:
    from seawall.messaging.topic import open_topic

    engine = seawall.connect("memory://")
    topics = {name: open_topic(engine, name) for name in ("orders", "emails")}
    billing = topics["orders"].group("billing")
    ids = outbox.add_many("orders", [{"n": 1}, {"n": 2}], key="o1")
    outbox.add("orders", {"n": 3}, key="o2")
    outbox.add("emails", "hi")
    assert relay_for(outbox, TopicPublisher(topics.__getitem__), clock).drain() == 4
    first = billing.receive(max_messages=10)
    # per-key order in the group: o1's second message waits for the first one's ack
    assert [(m.key, m.body) for m in first] == [("o1", {"n": 1}), ("o2", {"n": 3})]
    assert first[0].headers[MESSAGE_ID_HEADER] == ids[0]
    assert first[0].headers["seawall-topic"] == "orders"
    billing.ack(first[0])
    assert [m.body for m in billing.receive(max_messages=10)] == [{"n": 2}]
    assert [m.body for m in topics["emails"].group("mail").receive(max_messages=10)] == ["hi"]


async def test_topic_publisher_single_topic_async_and_bad_target() -> None:
    from seawall.messaging.topic import open_topic

    topic = open_topic("memory://", "all")
    group = topic.group("audit")
    publisher = TopicPublisher(topic)
    await publisher.apublish(OutboxMessage("id1", "x", None, 1, {}, 1, 0.0, 1))
    await publisher.apublish_many([OutboxMessage("id2", "y", "k", 2, {}, 2, 0.0, 1)])
    assert [m.body for m in await group.areceive(max_messages=10)] == [1, 2]
    with pytest.raises(ConfigurationError, match="TopicPublisher"):
        TopicPublisher("not a topic")  # type: ignore[arg-type]


def test_a_failing_batch_publish_falls_back_to_one_at_a_time(
    outbox: Outbox, clock: ManualClock
) -> None:
    class Batching(Flaky):
        def __init__(self) -> None:
            super().__init__({"b": 1})
            self.batches = 0

        def publish_many(self, messages: list[OutboxMessage]) -> None:
            self.batches += 1
            if self.batches == 1:
                raise ConnectionError("batch refused")
            self.published.extend(messages)

    outbox.add_many("t", ["a", "b", "c"], key="k")
    publisher = Batching()
    relay = relay_for(outbox, publisher, clock)
    assert relay.run_once() == 1  # a goes alone; b fails; c is held back behind it
    assert publisher.bodies == ["a"]
    clock.advance(10.0)
    assert relay.run_once() == 2  # the second batch call takes both
    assert publisher.bodies == ["a", "b", "c"]


def test_an_async_publisher_needs_arun(outbox: Outbox, clock: ManualClock) -> None:
    async def publish(message: OutboxMessage) -> None:
        return None

    outbox.add("t", 1)
    relay = relay_for(outbox, publish, clock)
    with pytest.raises(ConfigurationError, match="arun"):
        relay.run_once()
    assert outbox.stats().ready == 1


def test_a_plain_function_returning_an_awaitable_is_refused(
    outbox: Outbox, clock: ManualClock
) -> None:
    async def publish(message: OutboxMessage) -> None:
        return None

    outbox.add("t", 1)
    relay = relay_for(outbox, lambda m: publish(m), clock)
    with pytest.raises(ConfigurationError, match="awaitable"):
        relay.run_once()
    assert outbox.stats().ready == 1  # given back untried


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("batch_size", 0, "batch_size"),
        ("lease", 0, "lease"),
        ("poll_interval", -1, "poll_interval"),
        ("max_attempts", 0, "max_attempts"),
        ("retention", -1, "retention"),
        ("backoff", 3, "backoff"),
        ("retry", 3, "retry"),
        ("name", "", "name"),
        ("cleanup_interval", 0, "cleanup_interval"),
    ],
)
def test_relay_options_are_checked(outbox: Outbox, option: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        OutboxRelay(outbox, print, **{option: value})


def test_a_publisher_must_be_callable(outbox: Outbox) -> None:
    with pytest.raises(ConfigurationError, match="callable"):
        outbox.relay("nope")  # type: ignore[arg-type]


# -- the loops ---------------------------------------------------------------------------------


def test_run_loop_publishes_until_stopped(outbox: Outbox, clock: ManualClock) -> None:
    outbox.add_many("t", [1, 2, 3])
    relay: OutboxRelay

    def publish(message: OutboxMessage) -> None:
        if message.body == 3:
            relay.stop()

    relay = relay_for(outbox, publish, clock)
    relay.run()  # returns once stopped; with a manual clock no pause blocks
    assert outbox.stats().sent == 3
    relay._running = True  # as if another thread ran it
    with pytest.raises(RelayAlreadyRunningError):
        relay.run()


def test_run_loop_idles_with_growing_pauses_then_stops(outbox: Outbox, clock: ManualClock) -> None:
    relay = relay_for(outbox, Flaky(), clock, poll_interval=0.04)
    start = clock.now()

    def stop_later() -> None:
        relay.stop()

    calls = 0
    original = relay.run_once

    def counting() -> int:
        nonlocal calls
        calls += 1
        if calls == 6:
            stop_later()
        return original()

    relay.run_once = counting  # type: ignore[method-assign]
    relay.run()
    assert clock.sleeps == [0.005, 0.01, 0.02, 0.04, 0.04]
    assert clock.now() == pytest.approx(start + 0.115)


def test_run_loop_survives_store_errors(outbox: Outbox, clock: ManualClock) -> None:
    relay = relay_for(outbox, Flaky(), clock)
    failures = 0
    original = relay.store.claim

    def failing_claim(owner: str, limit: int, lease: float) -> Any:
        nonlocal failures
        failures += 1
        if failures <= 2:
            raise seawall.errors.EngineUnavailableError("down")
        relay.stop()
        return original(owner, limit, lease)

    relay.store.claim = failing_claim  # type: ignore[method-assign]
    relay.run()
    assert failures == 3
    assert len(clock.sleeps) == 2  # an error pause after each failure


def test_start_and_stop_in_a_thread_with_the_real_clock(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'relay.db'}")
    outbox = Outbox(engine)
    done = threading.Event()
    seen: list[Any] = []

    def publish(message: OutboxMessage) -> None:
        seen.append(message.body)
        if len(seen) == 2:
            done.set()

    with outbox.relay(publish, poll_interval=30.0):
        with engine.transaction() as tx:
            outbox.add("t", 1, transaction=tx)
            outbox.add("t", 2, transaction=tx)
        # The commit rings the doorbell: the idle relay (30 s poll) wakes at once.
        assert done.wait(10.0)
    assert seen == [1, 2]
    engine.close()


def test_a_rolled_back_transaction_writes_nothing_and_rings_nothing(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'outbox.db'}")
    outbox = Outbox(engine)
    generation = outbox.doorbell.generation

    def rolled_back() -> None:
        with engine.transaction() as tx:
            outbox.add("t", 1, transaction=tx)
            raise RuntimeError("business rule failed")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert outbox.doorbell.generation == generation
    assert outbox.stats().pending == 0
    with engine.transaction() as tx:
        outbox.add("t", 1, transaction=tx)
        outbox.add("t", 2, transaction=tx)
        assert outbox.doorbell.generation == generation  # not before the commit
    assert outbox.doorbell.generation == generation + 1  # once per transaction
    engine.close()


async def test_arun_once_with_an_async_publisher(outbox: Outbox, clock: ManualClock) -> None:
    outbox.add_many("t", ["a", "b"], key="k")
    outbox.add("t", "c", key="j")
    seen: list[Any] = []

    async def publish(message: OutboxMessage) -> None:
        if message.body == "a" and not seen:
            seen.append("failed a")
            raise ConnectionError("once")
        seen.append(message.body)

    relay = relay_for(outbox, publish, clock)
    assert await relay.arun_once() == 1
    assert seen == ["failed a", "c"]
    clock.advance(10.0)
    assert await relay.adrain() == 2
    assert seen == ["failed a", "c", "a", "b"]


async def test_arun_with_queue_publisher_until_stopped(outbox: Outbox, clock: ManualClock) -> None:
    engine = seawall.connect("memory://")
    queue = engine.queue("orders")
    outbox.add_many("orders", [1, 2, 3])
    inner = QueuePublisher(queue)

    class StopAfterThree:
        def __init__(self) -> None:
            self.sent = 0

        def __call__(self, message: OutboxMessage) -> None:
            raise AssertionError("arun uses apublish")

        async def apublish(self, message: OutboxMessage) -> None:
            await inner.apublish(message)
            self.sent += 1
            if self.sent == 3:
                relay.stop()

    relay = relay_for(outbox, StopAfterThree(), clock)
    await asyncio.wait_for(relay.arun(), 10.0)
    assert [m.body for m in queue.receive(10)] == [1, 2, 3]


async def test_aadd_on_memory(outbox: Outbox, clock: ManualClock) -> None:
    first = await outbox.aadd("t", 1, key="k")
    more = await outbox.aadd_many("t", [2, 3], key="k")
    assert await outbox.aadd_many("t", []) == []
    publisher = Flaky()
    relay_for(outbox, publisher, clock).drain()
    assert [m.id for m in publisher.published] == [first, *more]


def test_a_stop_right_after_start_is_not_lost() -> None:
    outbox = Outbox(seawall.connect("memory://"))
    relay = outbox.relay(Flaky(), poll_interval=60.0)
    for _ in range(20):
        relay.start()
        thread = relay._thread
        relay.stop(timeout=10.0)
        assert thread is not None
        assert not thread.is_alive()
