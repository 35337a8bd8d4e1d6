"""The topic contract (pub/sub with durable consumer groups), run against every engine.

Each test goes through the public :class:`~seawall.messaging.topic.Topic` and
:class:`~seawall.messaging.topic.ConsumerGroup` with a manual clock: no test sleeps.
PostgreSQL and Redis take every timestamp from the injected clock; an engine that
keeps time on the server only (``manual_time=False``) skips the tests that move
time. Real-time long-polls are in ``tests/integration/test_topic_long_poll.py``. To
add an engine, add a ``pytest.param``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.clock import ManualClock
from seawall.codec import BytesCodec, EncodeError
from seawall.engines import Engine
from seawall.messaging.topic import (
    ConsumerGroup,
    StaleTopicReceiptError,
    Topic,
    TopicMessage,
    TopicMessageDeadLettered,
    TopicRecord,
    UnknownGroupError,
    UnknownTopicError,
    list_topics,
    open_topic,
)


@dataclass(frozen=True)
class EngineUnderTest:
    """How to reach one engine, and which optional contracts it claims."""

    name: str
    connect: Callable[[Path], Engine]
    transactions: bool = False
    """Whether publish/ack can join a caller's ``engine.transaction()``."""
    manual_time: bool = True
    """Whether the store takes every timestamp and deadline from an injected clock."""
    per_key_order: bool = True
    """Whether a key's next message waits while an earlier one is unacknowledged."""
    stale_receipts: bool = True
    """Whether an ack with a settled (or superseded) receipt is refused."""
    forget: Callable[[Engine, str], None] | None = None
    """Removes everything a topic left on the engine (servers outlive the test)."""


_POSTGRES_SCHEMA = f"seawall_topic_test_{uuid.uuid4().hex[:10]}"
_postgres_schemas: list[str] = []


def _postgres_url() -> str:
    """The test server's URL with this module's schema first on the search_path."""
    base = require_engine("postgres")
    if not _postgres_schemas:
        import psycopg

        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_POSTGRES_SCHEMA}")
        _postgres_schemas.append(base)
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{_POSTGRES_SCHEMA}"


@pytest.fixture(scope="module", autouse=True)
def _drop_postgres_schema() -> Iterator[None]:
    yield
    if _postgres_schemas:
        import psycopg

        with psycopg.connect(_postgres_schemas[0], autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {_POSTGRES_SCHEMA} CASCADE")
        _postgres_schemas.clear()


def _forget_nats_topic(engine: Engine, name: str) -> None:
    from seawall.messaging.topic.nats import forget_topic

    forget_topic(engine, name)  # type: ignore[arg-type]


def _forget_redis_topic(engine: Engine, name: str) -> None:
    from seawall.messaging.topic.redis import forget_topic

    forget_topic(engine, name)  # type: ignore[arg-type]


ENGINES = [
    pytest.param(
        EngineUnderTest("memory", lambda tmp_path: seawall.connect("memory://")), id="memory"
    ),
    pytest.param(
        EngineUnderTest(
            "sqlite",
            lambda tmp_path: seawall.connect(f"sqlite:///{tmp_path / 'topics.db'}"),
            transactions=True,
        ),
        id="sqlite",
    ),
    pytest.param(
        EngineUnderTest(
            "postgres", lambda tmp_path: seawall.connect(_postgres_url()), transactions=True
        ),
        id="postgres",
        marks=pytest.mark.engine("postgres"),
    ),
    pytest.param(
        EngineUnderTest(
            "redis",
            lambda tmp_path: seawall.connect(require_engine("redis")),
            forget=_forget_redis_topic,
        ),
        id="redis",
        marks=pytest.mark.engine("redis"),
    ),
    pytest.param(
        EngineUnderTest(
            "nats",
            lambda tmp_path: seawall.connect(require_engine("nats")),
            manual_time=False,
            stale_receipts=False,
            forget=_forget_nats_topic,
        ),
        id="nats",
        marks=pytest.mark.engine("nats"),
    ),
]


@pytest.fixture(params=ENGINES)
def engine_under_test(request: pytest.FixtureRequest) -> EngineUnderTest:
    under_test: EngineUnderTest = request.param
    return under_test


@pytest.fixture
async def engine(engine_under_test: EngineUnderTest, tmp_path: Path) -> AsyncIterator[Engine]:
    # Async so that the asyncio side (psycopg's async pool, redis.asyncio) is closed on
    # the event loop that opened it.
    opened = engine_under_test.connect(tmp_path)
    yield opened
    await opened.aclose()


TopicFactory = Callable[..., Topic]


@pytest.fixture
def make_topic(
    engine: Engine, engine_under_test: EngineUnderTest, clock: ManualClock
) -> Iterator[TopicFactory]:
    """Open topics with unique names on the engine under test; clean them up after."""
    opened: list[Topic] = []

    def make(name: str | None = None, **options: Any) -> Topic:
        if engine_under_test.manual_time:
            options.setdefault("clock", clock)
        topic = open_topic(engine, name or f"t-{uuid.uuid4().hex[:12]}", **options)
        opened.append(topic)
        return topic

    yield make
    for topic in opened:
        topic.close()
    if engine_under_test.forget is not None:
        for name in {topic.name for topic in opened}:
            engine_under_test.forget(engine, name)


@pytest.fixture
def topic(make_topic: TopicFactory) -> Topic:
    return make_topic()


def _manual_time(engine_under_test: EngineUnderTest) -> None:
    if not engine_under_test.manual_time:
        pytest.skip(f"the {engine_under_test.name} engine keeps time on the server")


def _per_key_order(engine_under_test: EngineUnderTest) -> None:
    if not engine_under_test.per_key_order:
        pytest.skip(f"the {engine_under_test.name} engine does not claim per-key order")


def _stale_receipts(engine_under_test: EngineUnderTest) -> None:
    if not engine_under_test.stale_receipts:
        pytest.skip(f"the {engine_under_test.name} engine cannot refuse a settled receipt")


def _bodies(messages: list[TopicMessage]) -> list[Any]:
    return [message.body for message in messages]


def _drain(group: ConsumerGroup, limit: int = 1000) -> list[Any]:
    """Receive and ack everything ready for the group now."""
    seen: list[Any] = []
    while True:
        messages = group.receive(100)
        if not messages:
            return seen
        for message in messages:
            seen.append(message.body)
            group.ack(message)
        if len(seen) > limit:
            raise AssertionError("the group never ran dry")


# -- publish and fan-out ------------------------------------------------------------------


def test_offsets_strictly_increase(topic: Topic) -> None:
    first = topic.publish("a")
    second = topic.publish("b")
    batch = topic.publish_many(["c", "d", "e"])
    assert first >= 1
    assert [first, second, *batch] == list(range(first, first + 5))


def test_every_group_gets_every_message(topic: Topic, clock: ManualClock) -> None:
    billing = topic.group("billing")
    shipping = topic.group("shipping")
    offsets = [topic.publish({"n": n}) for n in range(5)]
    for group in (billing, shipping):
        messages = group.receive(10)
        assert [m.offset for m in messages] == offsets
        assert _bodies(messages) == [{"n": n} for n in range(5)]
        assert all(m.delivery_count == 1 and m.group == group.name for m in messages)
        assert all(m.topic == topic.name for m in messages)
        for message in messages:
            group.ack(message)
        assert group.receive(10) == []
        assert group.lag() == 0


def test_message_fields_round_trip(
    topic: Topic, clock: ManualClock, engine_under_test: EngineUnderTest
) -> None:
    group = topic.group("g")
    topic.publish({"a": [1, 2]}, key="k-1", headers={"trace": "abc"})
    topic.publish_many([TopicRecord("x", key="k-2", headers={"h": "v"}), "plain"])
    first, second, third = group.receive(10)
    assert (first.key, first.body, dict(first.headers)) == ("k-1", {"a": [1, 2]}, {"trace": "abc"})
    assert (second.key, second.body, dict(second.headers)) == ("k-2", "x", {"h": "v"})
    assert (third.key, third.body, dict(third.headers)) == (None, "plain", {})
    assert first.receipt == (first.group, first.offset, first.token)
    if engine_under_test.manual_time:
        assert first.published_at == clock.now()


def test_a_second_handle_shares_the_topic(engine: Engine, make_topic: TopicFactory) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    writer = make_topic(name)
    reader = make_topic(name, create=False)
    writer.publish("hello")
    assert _bodies(reader.group("g").receive(5)) == ["hello"]
    assert name in list_topics(engine)


def test_a_group_starting_at_latest_skips_earlier_messages(topic: Topic) -> None:
    topic.publish("old")
    late = topic.group("late", start="latest")
    topic.publish("new")
    assert _drain(late) == ["new"]


def test_a_group_can_start_at_an_offset(topic: Topic) -> None:
    offsets = topic.publish_many(["a", "b", "c"])
    assert _drain(topic.group("mid", start=offsets[1])) == ["b", "c"]


def test_reopening_a_group_keeps_its_position(topic: Topic) -> None:
    topic.publish_many(["a", "b"])
    assert _drain(topic.group("g")) == ["a", "b"]
    topic.publish("c")
    assert _drain(topic.group("g", start="earliest")) == ["c"]
    assert topic.groups() == ["g"]


# -- competing consumers ----------------------------------------------------------------


def test_consumers_of_a_group_compete(make_topic: TopicFactory) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    topic = make_topic(name)
    other = make_topic(name)  # a second process, as far as the store can tell
    first, second = topic.group("workers"), other.group("workers")
    topic.publish_many(list(range(20)))
    taken: list[int] = []
    while True:
        from_first, from_second = first.receive(3), second.receive(4)
        if not from_first and not from_second:
            break
        for group, messages in ((first, from_first), (second, from_second)):
            for message in messages:
                taken.append(message.body)
                group.ack(message.receipt)
    assert sorted(taken) == list(range(20))


def test_concurrent_consumers_never_hold_the_same_message(topic: Topic) -> None:
    topic.publish_many(list(range(60)))
    group = topic.group("workers")
    taken: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            while True:
                messages = group.receive(4)
                if not messages:
                    return
                with lock:
                    taken.extend(m.body for m in messages)
                for message in messages:
                    group.ack(message)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(taken) == list(range(60))


# -- per-key order ----------------------------------------------------------------------


def test_a_key_is_held_by_one_consumer_at_a_time(
    make_topic: TopicFactory, engine_under_test: EngineUnderTest
) -> None:
    _per_key_order(engine_under_test)
    name = f"t-{uuid.uuid4().hex[:12]}"
    topic, other = make_topic(name), make_topic(name)
    one, two = topic.group("g"), other.group("g")
    topic.publish("k1", key="k")
    topic.publish("k2", key="k")
    held = one.receive(1)
    assert _bodies(held) == ["k1"]
    # Published after k1 was taken, so engines that give no offset order across keys
    # between receives (NATS partitions) take the same path.
    topic.publish("j1", key="j")
    topic.publish("free")
    # k2 waits behind the unacknowledged k1 even for another consumer.
    assert _bodies(two.receive(10)) == ["j1", "free"]
    assert two.receive(10) == []
    one.ack(held[0])
    assert _bodies(two.receive(10)) == ["k2"]


def test_a_batch_holds_at_most_one_message_per_key(
    topic: Topic, engine_under_test: EngineUnderTest
) -> None:
    _per_key_order(engine_under_test)
    group = topic.group("g")
    topic.publish_many([TopicRecord(n, key="same") for n in range(5)])
    for expected in range(5):
        messages = group.receive(10)
        assert _bodies(messages) == [expected]
        group.ack(messages[0])
    assert group.receive(10) == []


def test_a_nacked_message_keeps_its_key_blocked(
    topic: Topic, engine_under_test: EngineUnderTest
) -> None:
    _per_key_order(engine_under_test)
    group = topic.group("g")
    topic.publish_many([TopicRecord("first", key="k"), TopicRecord("second", key="k")])
    (first,) = group.receive(10)
    group.nack(first)
    (again,) = group.receive(10)
    assert (again.body, again.delivery_count) == ("first", 2)
    group.ack(again)
    (second,) = group.receive(10)
    assert second.body == "second"


def test_keys_are_ordered_per_group(topic: Topic, engine_under_test: EngineUnderTest) -> None:
    _per_key_order(engine_under_test)
    one, two = topic.group("one"), topic.group("two")
    topic.publish_many([TopicRecord("a", key="k"), TopicRecord("b", key="k")])
    held = one.receive(10)
    assert _bodies(held) == ["a"]
    # The other group's key line is its own.
    assert _bodies(two.receive(10)) == ["a"]


def test_key_order_under_competition_with_threads(
    topic: Topic, engine_under_test: EngineUnderTest
) -> None:
    _per_key_order(engine_under_test)
    keys = [f"k{n}" for n in range(4)]
    topic.publish_many([TopicRecord((key, n), key=key) for n in range(8) for key in keys])
    group = topic.group("g")
    seen: dict[str, list[int]] = {key: [] for key in keys}
    holding: set[str] = set()
    lock = threading.Lock()
    errors: list[str] = []

    def consume() -> None:
        idle = 0
        while idle < 3:
            messages = group.receive(3)
            if not messages:
                idle += 1
                continue
            idle = 0
            for message in messages:
                key, n = message.body
                with lock:
                    if key in holding:
                        errors.append(f"{key} delivered twice at once")
                    holding.add(key)
                    seen[key].append(n)
                with lock:
                    holding.discard(key)
                group.ack(message)

    threads = [threading.Thread(target=consume) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert _drain(group) == []
    assert seen == {key: list(range(8)) for key in keys}


# -- redelivery and dead letters --------------------------------------------------------


def test_visibility_timeout_expiry_redelivers(
    make_topic: TopicFactory, clock: ManualClock, engine_under_test: EngineUnderTest
) -> None:
    _manual_time(engine_under_test)
    topic = make_topic()
    group = topic.group("g", visibility_timeout=10)
    topic.publish("job")
    (first,) = group.receive(1)
    clock.advance(5)
    assert group.receive(1) == []
    clock.advance(6)
    (second,) = group.receive(1)
    assert (second.body, second.delivery_count) == ("job", 2)
    with pytest.raises(StaleTopicReceiptError):
        group.ack(first)
    group.ack(second)
    assert group.lag() == 0


def test_a_late_ack_works_while_nobody_else_has_the_message(
    make_topic: TopicFactory, clock: ManualClock, engine_under_test: EngineUnderTest
) -> None:
    _manual_time(engine_under_test)
    topic = make_topic()
    group = topic.group("g", visibility_timeout=1)
    topic.publish("job")
    (message,) = group.receive(1)
    clock.advance(5)
    group.ack(message)
    assert group.receive(1) == []


def test_ack_twice_is_stale(topic: Topic, engine_under_test: EngineUnderTest) -> None:
    _stale_receipts(engine_under_test)
    group = topic.group("g")
    topic.publish("x")
    (message,) = group.receive(1)
    group.ack(message)
    with pytest.raises(StaleTopicReceiptError, match="stale"):
        group.ack(message)
    with pytest.raises(StaleTopicReceiptError):
        group.nack(message)


def test_nack_with_delay(
    make_topic: TopicFactory, clock: ManualClock, engine_under_test: EngineUnderTest
) -> None:
    _manual_time(engine_under_test)
    topic = make_topic()
    group = topic.group("g")
    topic.publish("x")
    (message,) = group.receive(1)
    group.nack(message, delay=30)
    assert group.receive(1) == []
    clock.advance(31)
    (again,) = group.receive(1)
    assert again.delivery_count == 2


def test_max_deliveries_dead_letters_in_the_group_only(topic: Topic) -> None:
    failing = topic.group("failing", max_deliveries=2)
    healthy = topic.group("healthy")
    dead_events: list[TopicMessageDeadLettered] = []
    topic.events.subscribe(dead_events.append, types=(TopicMessageDeadLettered,))
    topic.publish("poison", key="k")
    for attempt in (1, 2):
        (message,) = failing.receive(10)
        assert (message.body, message.delivery_count) == ("poison", attempt)
        failing.nack(message, error=ValueError(f"bad {attempt}"))
    # The dead message no longer blocks its key.
    topic.publish("next", key="k")
    (message,) = failing.receive(10)
    assert message.body == "next"
    failing.ack(message)
    (letter,) = failing.dead_letters()
    assert (letter.body, letter.key, letter.delivery_count) == ("poison", "k", 2)
    assert letter.last_error == "ValueError: bad 2"
    assert "max_deliveries=2" in letter.reason
    assert [event.offset for event in dead_events] == [letter.offset]
    assert _drain(healthy) == ["poison", "next"]
    assert healthy.dead_letters() == []
    assert failing.lag() == 0


def test_expiry_on_the_last_delivery_dead_letters(
    make_topic: TopicFactory, clock: ManualClock, engine_under_test: EngineUnderTest
) -> None:
    _manual_time(engine_under_test)
    topic = make_topic()
    group = topic.group("g", visibility_timeout=5, max_deliveries=1)
    topic.publish_many(["lost", "fine"])
    (_lost, fine) = group.receive(10)
    group.ack(fine)
    clock.advance(6)
    assert group.receive(10) == []
    (letter,) = group.dead_letters()
    assert letter.body == "lost"
    assert "visibility timeout" in letter.reason


def test_an_undecodable_message_goes_to_the_dead_letters(make_topic: TopicFactory) -> None:
    name = f"t-{uuid.uuid4().hex[:12]}"
    raw = make_topic(name, codec=BytesCodec())
    topic = make_topic(name)
    group = topic.group("g")
    raw.publish(b"\xff not json")
    topic.publish("fine")
    assert _bodies(group.receive(10)) == ["fine"]
    (letter,) = group.dead_letters()
    assert letter.body == b"\xff not json"
    assert "cannot be decoded" in letter.reason


# -- retention --------------------------------------------------------------------------


def test_retention_by_count(make_topic: TopicFactory) -> None:
    topic = make_topic(retention_count=3)
    group = topic.group("g")
    topic.publish_many([str(n) for n in range(5)])
    topic.publish("5")
    assert group.lag() == 3
    assert _drain(group) == ["3", "4", "5"]


def test_retention_by_age(
    make_topic: TopicFactory, clock: ManualClock, engine_under_test: EngineUnderTest
) -> None:
    _manual_time(engine_under_test)
    topic = make_topic(retention_age=60)
    group = topic.group("g")
    topic.publish("old")
    clock.advance(30)
    topic.publish("young")
    clock.advance(40)
    assert _drain(group) == ["young"]
    clock.advance(100)
    topic.publish("newest")
    assert group.lag() == 1


# -- replay -----------------------------------------------------------------------------


def test_seek_to_an_offset_replays(topic: Topic) -> None:
    group = topic.group("g")
    offsets = topic.publish_many(["a", "b", "c", "d"])
    assert _drain(group) == ["a", "b", "c", "d"]
    group.seek(offsets[1])
    assert _drain(group) == ["b", "c", "d"]
    group.seek(0)
    assert _drain(group) == ["a", "b", "c", "d"]
    group.seek(offsets[-1] + 1)
    topic.publish("e")
    assert _drain(group) == ["e"]


def test_seek_drops_held_messages(topic: Topic, engine_under_test: EngineUnderTest) -> None:
    _stale_receipts(engine_under_test)
    group = topic.group("g")
    offsets = topic.publish_many([TopicRecord("a", key="k"), TopicRecord("b", key="k")])
    (held,) = group.receive(1)
    group.seek(offsets[0])
    with pytest.raises(StaleTopicReceiptError):
        group.ack(held)
    assert _drain(group) == ["a", "b"]


def test_seek_time_replays_from_a_moment(
    make_topic: TopicFactory, clock: ManualClock, engine_under_test: EngineUnderTest
) -> None:
    _manual_time(engine_under_test)
    topic = make_topic()
    group = topic.group("g")
    topic.publish("morning")
    clock.advance(3600)
    noon = clock.now()
    offset = topic.publish("noon")
    clock.advance(3600)
    topic.publish("evening")
    assert _drain(group) == ["morning", "noon", "evening"]
    assert group.seek_time(noon) == offset
    assert _drain(group) == ["noon", "evening"]
    assert group.seek_time(noon - 1) == offset
    assert _drain(group) == ["noon", "evening"]
    group.seek_time(clock.now() + 10)
    assert _drain(group) == []


def test_lag_counts_fresh_and_unacknowledged(topic: Topic) -> None:
    group = topic.group("g")
    assert group.lag() == 0
    topic.publish_many(["a", "b", "c"])
    assert group.lag() == 3
    first, _second = group.receive(2)
    assert group.lag() == 3
    group.ack(first)
    assert group.lag() == 2


# -- long-poll --------------------------------------------------------------------------


def test_long_poll_gives_up_after_wait(
    make_topic: TopicFactory, clock: ManualClock, engine_under_test: EngineUnderTest
) -> None:
    _manual_time(engine_under_test)
    group = make_topic().group("g")
    start = clock.now()
    assert group.receive(1, wait=2.0) == []
    assert clock.now() - start >= 2.0


def test_long_poll_returns_when_a_nack_delay_ends(
    make_topic: TopicFactory, clock: ManualClock, engine_under_test: EngineUnderTest
) -> None:
    _manual_time(engine_under_test)
    topic = make_topic()
    group = topic.group("g")
    topic.publish("x")
    (message,) = group.receive(1)
    group.nack(message, delay=1.5)
    (again,) = group.receive(1, wait=5.0)
    assert again.delivery_count == 2


# -- transactions -----------------------------------------------------------------------


class _RollbackError(Exception):
    """Raised inside a transaction to roll it back."""


def _fail_inside(transaction_of: Callable[[], Any], write: Callable[[Any], object]) -> None:
    """Run ``write`` in a transaction that then rolls back."""
    with pytest.raises(_RollbackError):
        _roll_back(transaction_of, write)


def _roll_back(transaction_of: Callable[[], Any], write: Callable[[Any], object]) -> None:
    with transaction_of() as tx:
        write(tx)
        raise _RollbackError


def test_publish_and_ack_join_a_caller_transaction(
    engine: Engine, engine_under_test: EngineUnderTest, topic: Topic
) -> None:
    if not engine_under_test.transactions:
        pytest.skip(f"the {engine_under_test.name} engine has no transactions")
    group = topic.group("g")
    transaction_of: Any = engine.transaction

    def publish_twice(tx: Any) -> None:
        topic.publish("rolled back", transaction=tx)
        topic.publish_many(["also rolled back"], transaction=tx)

    _fail_inside(transaction_of, publish_twice)
    assert group.lag() == 0
    with transaction_of() as tx:
        offset = topic.publish("committed", transaction=tx)
    (message,) = group.receive(10)
    assert (message.body, message.offset) == ("committed", offset)
    _fail_inside(transaction_of, lambda tx: group.ack(message, transaction=tx))
    group.ack(message)
    assert group.lag() == 0
    # Offsets stay strictly increasing after a rollback.
    assert topic.publish("after") > offset


def test_engines_without_transactions_refuse_one(
    engine_under_test: EngineUnderTest, topic: Topic
) -> None:
    if engine_under_test.transactions:
        pytest.skip("this engine supports transactions")
    with pytest.raises(seawall.ConfigurationError, match="transaction"):
        topic.publish("x", transaction=object())  # type: ignore[arg-type]


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "with space", "dots.in.it", "-leading", "a" * 201, 7])
def test_invalid_topic_and_group_names_are_refused(engine: Engine, topic: Topic, name: Any) -> None:
    with pytest.raises(seawall.ConfigurationError, match="topic name"):
        open_topic(engine, name)
    with pytest.raises(seawall.ConfigurationError, match="group name"):
        topic.group(name)


def test_unknown_topics_and_groups_are_a_clear_error(
    engine: Engine, make_topic: TopicFactory
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(UnknownTopicError, match=missing):
        open_topic(engine, missing, create=False)
    topic = make_topic()
    topic.group("known")
    with pytest.raises(UnknownGroupError, match="'known'"):
        topic.group("other", create=False)


def test_an_unserialisable_body_names_its_type(topic: Topic) -> None:
    group = topic.group("g")
    with pytest.raises(EncodeError, match="set"):
        topic.publish({"items": {1, 2}})
    with pytest.raises(EncodeError, match="object"):
        topic.publish_many(["fine", object()])
    assert group.lag() == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.group("g", visibility_timeout=0), "visibility_timeout"),
        (lambda t: t.group("g", max_deliveries=0), "max_deliveries"),
        (lambda t: t.group("g", start="middle"), "start"),
        (lambda t: t.group("g", start=-1), "start"),
        (lambda t: t.publish("x", key=""), "key"),
        (lambda t: t.publish("x", key=5), "key"),
        (lambda t: t.publish("x", headers={"a": 1}), "headers"),
        (lambda t: t.group("g").receive(0), "max_messages"),
        (lambda t: t.group("g").receive(1, wait=-1), "wait"),
        (lambda t: t.group("g").seek(-1), "offset"),
        (lambda t: t.group("g").seek_time(float("nan")), "epoch_seconds"),
        (lambda t: t.group("g").dead_letters(0), "limit"),
    ],
)
def test_bad_options_are_refused(topic: Topic, call: Callable[[Topic], Any], match: str) -> None:
    with pytest.raises(seawall.ConfigurationError, match=match):
        call(topic)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"retention_count": 0}, "retention_count"),
        ({"retention_age": -5}, "retention_age"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_topic_options_are_refused(engine: Engine, options: dict[str, Any], match: str) -> None:
    with pytest.raises(seawall.ConfigurationError, match=match):
        open_topic(engine, "fine", **options)


def test_a_receipt_of_another_group_is_refused(topic: Topic) -> None:
    one, two = topic.group("one"), topic.group("two")
    topic.publish("x")
    (message,) = one.receive(1)
    with pytest.raises(seawall.ConfigurationError, match="belongs to group 'one'"):
        two.ack(message)


# -- asyncio ----------------------------------------------------------------------------


async def test_async_publish_receive_ack_seek(topic: Topic) -> None:
    group = await topic.agroup("g")
    offset = await topic.apublish({"n": 1}, key="k")
    await topic.apublish_many([TopicRecord({"n": 2}, key="j")])
    assert await group.alag() == 2
    first, second = await group.areceive(10)
    assert (first.offset, first.body) == (offset, {"n": 1})
    await group.aack(first)
    await group.anack(second)
    (again,) = await group.areceive(10)
    assert again.delivery_count == 2
    await group.aack(again)
    await group.aseek(offset)
    assert [m.body for m in await group.areceive(10)] == [{"n": 1}, {"n": 2}]
    assert await group.adead_letters() == []


async def test_async_long_poll_is_woken_by_a_publish(
    make_topic: TopicFactory, engine_under_test: EngineUnderTest
) -> None:
    _manual_time(engine_under_test)
    topic = make_topic()
    group = await topic.agroup("g")

    async def publish_soon() -> None:
        await asyncio.sleep(0)
        await topic.apublish("wake")

    task = asyncio.ensure_future(publish_soon())
    messages = await group.areceive(1, wait=30.0)
    await task
    assert _bodies(messages) == ["wake"]
