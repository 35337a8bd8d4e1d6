"""The durable-queue contract, run against every engine that claims it.

Each test goes through the public :class:`~seawall.messaging.queue.Queue` (so the
facade and the engine's ``QueueStore`` are checked together) with a manual clock:
no test sleeps. To add an engine, add one ``pytest.param`` to ``ENGINES`` below.

PostgreSQL and Redis run the same tests on the real servers with the manual clock
injected (their stores then take every timestamp from ``clock.now()`` instead of
``clock_timestamp()`` / ``TIME``); the server-clock paths, LISTEN/NOTIFY and
``XREAD BLOCK`` wake-ups and reconnects are covered with short real waits in
``tests/integration/test_queue_postgres.py`` and ``test_queue_redis.py``. PostgreSQL
tables live in a schema of this module (``search_path`` in the URL), dropped at the
end; Redis keys of every queue are deleted after each test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
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
from seawall.engines import Engine
from seawall.messaging.queue import (
    Envelope,
    Queue,
    QueueStats,
    StaleReceiptError,
    UnknownQueueError,
    list_queues,
    open_queue,
)


@dataclass(frozen=True)
class EngineUnderTest:
    """How to reach one engine, and which optional contracts it claims."""

    name: str
    connect: Callable[[Path], Engine]
    url: Callable[[Path], str] | None = None
    """A URL other processes can open (engines shared across processes only)."""
    transactions: bool = False
    """Whether send/ack can join a caller's ``engine.transaction()``."""
    no_transactions: str = "it has no transactions"
    """Why ``transaction=`` is refused, for the skip reason."""
    forget: Callable[[Engine, str], None] | None = None
    """Removes everything a queue left on the engine (servers outlive the test)."""
    server_timers: str | None = None
    """Why visibility timeouts (and the dedup window) cannot follow the manual clock: a
    broker times them itself, in real time. Set: tests that advance the clock to expire
    a delivery are skipped (the integration tests cover them with short real waits)."""
    priorities: str | None = None
    """Why the engine cannot order by priority (None: it can)."""
    dedup: str | None = None
    """Why the engine refuses ``dedup_id`` (None: it deduplicates)."""
    peek: str | None = None
    """Why the engine cannot show ready messages without claiming them (None: it can)."""
    delays: str | None = None
    """Why send and nack delays cannot follow the manual clock (None: they do)."""


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


_POSTGRES_SCHEMA = f"seawall_queue_test_{uuid.uuid4().hex[:10]}"
_postgres_schemas: list[str] = []


def _postgres_url(tmp_path: Path) -> str:
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


def _redis_url(tmp_path: Path) -> str:
    return require_engine("redis")


def _forget_redis_queue(engine: Engine, name: str) -> None:
    from seawall.messaging.queue.redis import REGISTRY_KEY, queue_keys_pattern

    client: Any = engine.client  # type: ignore[attr-defined]
    keys = list(client.scan_iter(match=queue_keys_pattern(name), count=1000))
    if keys:
        client.delete(*keys)
    client.srem(REGISTRY_KEY, name)


_BROKER_TIMERS = (
    "the broker times deliveries itself ({what}, real seconds), so the manual clock "
    "cannot expire them; covered with short real waits in tests/integration/{file}"
)


def _broker_url(name: str) -> str:
    """The broker's URL, or a skip when its port does not answer."""
    return require_engine(name)


def _forget_nats_queue(engine: Engine, name: str) -> None:
    from seawall.messaging.queue.nats import forget_queue

    forget_queue(engine, name)  # type: ignore[arg-type]


def _forget_rabbitmq_queue(engine: Engine, name: str) -> None:
    from seawall.messaging.queue.rabbitmq import forget_queue

    forget_queue(engine, name)  # type: ignore[arg-type]


ENGINES = [
    pytest.param(
        EngineUnderTest("memory", lambda tmp_path: seawall.connect("memory://")), id="memory"
    ),
    pytest.param(
        EngineUnderTest(
            "sqlite",
            lambda tmp_path: seawall.connect(_sqlite_url(tmp_path)),
            url=_sqlite_url,
            transactions=True,
        ),
        id="sqlite",
    ),
    pytest.param(
        EngineUnderTest(
            "postgres",
            lambda tmp_path: seawall.connect(_postgres_url(tmp_path)),
            url=_postgres_url,
            transactions=True,
        ),
        id="postgres",
        marks=pytest.mark.engine("postgres"),
    ),
    pytest.param(
        EngineUnderTest(
            "redis",
            lambda tmp_path: seawall.connect(_redis_url(tmp_path)),
            url=_redis_url,
            no_transactions=(
                "Redis has no SQL transactions to join (each operation is one atomic Lua "
                "script); use the outbox on PostgreSQL or SQLite for transactional sends"
            ),
            forget=_forget_redis_queue,
        ),
        id="redis",
        marks=pytest.mark.engine("redis"),
    ),
    pytest.param(
        EngineUnderTest(
            "nats",
            lambda tmp_path: seawall.connect(_broker_url("nats")),
            url=lambda tmp_path: _broker_url("nats"),
            no_transactions="a broker has no SQL transaction to join",
            forget=_forget_nats_queue,
            server_timers=_BROKER_TIMERS.format(file="test_queue_nats.py", what="ack_wait"),
        ),
        id="nats",
        marks=pytest.mark.engine("nats"),
    ),
    pytest.param(
        EngineUnderTest(
            "rabbitmq",
            lambda tmp_path: seawall.connect(_broker_url("rabbitmq")),
            url=lambda tmp_path: _broker_url("rabbitmq"),
            no_transactions="a broker has no SQL transaction to join",
            forget=_forget_rabbitmq_queue,
            server_timers=_BROKER_TIMERS.format(
                file="test_queue_rabbitmq.py", what="visibility timers and TTL delay queues"
            ),
            priorities=(
                "RabbitMQ 3.x quorum queues have no priorities (the priority is carried, not "
                "honoured); see docs/messaging/brokers.md"
            ),
            dedup="RabbitMQ has no deduplication store: dedup_id is refused",
            peek=(
                "RabbitMQ cannot browse a quorum queue without a delivery (it would raise "
                "delivery counts): peek is refused"
            ),
            delays=(
                "delays are TTL queues timed by RabbitMQ in real time; covered in "
                "test_queue_rabbitmq.py"
            ),
        ),
        id="rabbitmq",
        marks=pytest.mark.engine("rabbitmq"),
    ),
]


# Tests that need an optional capability: the EngineUnderTest field that says why an
# engine lacks it (the test is skipped with that reason).
_NEEDS: dict[str, tuple[str, ...]] = {
    "test_visibility_timeout_expiry_redelivers_with_the_count_raised": ("server_timers",),
    "test_the_default_visibility_timeout_is_the_queues": ("server_timers",),
    "test_a_stale_receipt_cannot_settle_the_redelivered_message": ("server_timers",),
    "test_a_late_ack_still_works_while_nobody_else_has_the_message": ("server_timers",),
    "test_extend_visibility_keeps_the_message_hidden": ("server_timers",),
    "test_expiry_on_the_last_delivery_dead_letters_and_keeps_the_last_error": ("server_timers",),
    "test_spent_messages_do_not_block_the_ones_behind_them": ("server_timers",),
    "test_ack_many_acknowledges_the_valid_and_reports_the_stale": ("server_timers",),
    "test_stats_count_every_state": ("server_timers", "delays"),
    "test_deduplication_within_the_window": ("dedup", "server_timers"),
    "test_deduplication_outlives_the_message": ("dedup",),
    "test_deduplication_in_a_batch": ("dedup",),
    "test_higher_priority_first_and_fifo_within_a_priority": ("priorities",),
    "test_a_batch_is_ordered_by_priority": ("priorities",),
    "test_a_due_high_priority_message_overtakes_waiting_low_ones": ("priorities", "delays"),
    "test_batch_send_with_per_message_options": ("priorities", "delays"),
    "test_peek_shows_the_next_messages_without_claiming": ("peek", "delays"),
    "test_delays_that_end_together_join_the_line_in_the_order_they_ended": ("peek", "delays"),
    "test_async_batches_and_dead_letters": ("peek",),
    "test_nack_with_delay_hides_the_message_until_the_delay_passes": ("delays",),
    "test_delayed_delivery": ("delays",),
    "test_a_short_delay_is_honoured_between_quick_receives": ("delays",),
    "test_long_poll_returns_when_a_delayed_message_comes_due": ("delays",),
}


@pytest.fixture(params=ENGINES)
def engine_under_test(request: pytest.FixtureRequest) -> EngineUnderTest:
    under_test: EngineUnderTest = request.param
    test_name = getattr(request.node, "originalname", request.node.name)
    for capability in _NEEDS.get(test_name, ()):
        missing = getattr(under_test, capability)
        if missing is not None:
            pytest.skip(f"the {under_test.name} engine: {missing}")
    return under_test


@pytest.fixture
async def engine(engine_under_test: EngineUnderTest, tmp_path: Path) -> AsyncIterator[Engine]:
    # Async so that the asyncio side (psycopg's async pool, redis.asyncio) is closed on
    # the event loop that opened it.
    opened = engine_under_test.connect(tmp_path)
    yield opened
    await opened.aclose()


QueueFactory = Callable[..., Queue]


@pytest.fixture
def make_queue(
    engine: Engine, engine_under_test: EngineUnderTest, clock: ManualClock
) -> Iterator[QueueFactory]:
    """Open queues with unique names on the engine under test; clean them up after."""
    opened: list[Queue] = []

    def make(name: str | None = None, **options: Any) -> Queue:
        options.setdefault("clock", clock)
        queue = open_queue(engine, name or f"q-{uuid.uuid4().hex[:12]}", **options)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.purge()
        queue.dead_letters.purge()
        queue.close()
    if engine_under_test.forget is not None:
        for name in {queue.name for queue in opened}:
            engine_under_test.forget(engine, name)


@pytest.fixture
def queue(make_queue: QueueFactory) -> Queue:
    return make_queue()


def _bodies(queue: Queue, count: int = 100) -> list[Any]:
    return [message.body for message in queue.receive(count)]


# -- send, receive, ack -------------------------------------------------------------------


def test_send_receive_ack(queue: Queue, clock: ManualClock) -> None:
    message_id = queue.send({"to": "a@example.com"}, headers={"trace": "t-1"}, priority=3)
    (message,) = queue.receive()
    assert message.id == message_id
    assert message.body == {"to": "a@example.com"}
    assert dict(message.headers) == {"trace": "t-1"}
    assert message.priority == 3
    assert message.delivery_count == 1
    assert message.enqueued_at == clock.now()
    assert message.receipt.id == message_id
    message.ack()
    assert queue.receive() == []
    assert queue.stats() == QueueStats(ready=0, in_flight=0, delayed=0, dead=0)


def test_an_empty_queue_receives_nothing(queue: Queue) -> None:
    assert queue.receive(10) == []


def test_messages_without_headers_have_empty_headers(queue: Queue) -> None:
    queue.send([1, 2, 3])
    (message,) = queue.receive()
    assert dict(message.headers) == {}
    assert message.body == [1, 2, 3]


def test_a_received_message_is_invisible_to_others(queue: Queue) -> None:
    queue.send("only one")
    assert len(queue.receive()) == 1
    assert queue.receive() == []


def test_ids_are_unique_even_after_the_queue_drains(queue: Queue) -> None:
    seen = set()
    for round_number in range(3):
        message_id = queue.send(round_number)
        assert message_id not in seen
        seen.add(message_id)
        queue.receive()[0].ack()


def test_queues_on_one_engine_are_separate(make_queue: QueueFactory) -> None:
    first, second = make_queue(), make_queue()
    first.send("for first")
    assert second.receive() == []
    assert _bodies(first) == ["for first"]


def test_a_second_handle_on_the_same_queue_sees_its_messages(make_queue: QueueFactory) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    producer, consumer = make_queue(name), make_queue(name)
    producer.send("hello")
    assert _bodies(consumer) == ["hello"]


# -- visibility ---------------------------------------------------------------------------


def test_visibility_timeout_expiry_redelivers_with_the_count_raised(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send("work")
    (first,) = queue.receive(visibility_timeout=10)
    clock.advance(9.9)
    assert queue.receive() == []
    clock.advance(0.1)
    (second,) = queue.receive(visibility_timeout=10)
    assert second.id == first.id
    assert second.delivery_count == 2
    assert second.token != first.token


def test_the_default_visibility_timeout_is_the_queues(
    make_queue: QueueFactory, clock: ManualClock
) -> None:
    queue = make_queue(visibility_timeout=5)
    queue.send("work")
    queue.receive()
    clock.advance(4.9)
    assert queue.receive() == []
    clock.advance(0.1)
    assert queue.receive()[0].delivery_count == 2


def test_a_stale_receipt_cannot_settle_the_redelivered_message(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send("work")
    (first,) = queue.receive(visibility_timeout=10)
    clock.advance(10)
    (second,) = queue.receive(visibility_timeout=10)
    with pytest.raises(StaleReceiptError) as caught:
        first.ack()
    assert caught.value.message_ids == (first.id,)
    with pytest.raises(StaleReceiptError):
        first.nack()
    with pytest.raises(StaleReceiptError):
        first.extend_visibility(30)
    assert queue.stats().in_flight == 1
    second.ack()
    assert queue.stats().total == 0


def test_acking_twice_is_stale(queue: Queue) -> None:
    queue.send("once")
    (message,) = queue.receive()
    message.ack()
    with pytest.raises(StaleReceiptError):
        message.ack()


def test_a_late_ack_still_works_while_nobody_else_has_the_message(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send("slow work")
    (message,) = queue.receive(visibility_timeout=10)
    clock.advance(15)
    message.ack()
    assert queue.receive() == []
    assert queue.stats().total == 0


def test_extend_visibility_keeps_the_message_hidden(queue: Queue, clock: ManualClock) -> None:
    queue.send("long work")
    (message,) = queue.receive(visibility_timeout=10)
    clock.advance(8)
    message.extend_visibility(10)
    clock.advance(9.9)
    assert queue.receive() == []
    clock.advance(0.1)
    (again,) = queue.receive()
    assert again.delivery_count == 2


def test_a_receipt_settles_the_message_by_itself(queue: Queue) -> None:
    queue.send("elsewhere")
    receipt = queue.receive()[0].receipt
    queue.ack(receipt)
    assert queue.stats().total == 0


# -- nack and dead letters ----------------------------------------------------------------


def test_nack_without_delay_makes_the_message_ready_again(queue: Queue) -> None:
    queue.send("retry me")
    queue.receive()[0].nack(error="first try failed")
    (again,) = queue.receive()
    assert again.delivery_count == 2


def test_nack_with_delay_hides_the_message_until_the_delay_passes(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send("retry later")
    queue.receive()[0].nack(delay=5)
    assert queue.receive() == []
    assert queue.stats() == QueueStats(ready=0, in_flight=0, delayed=1, dead=0)
    clock.advance(5)
    assert queue.stats().ready == 1
    assert queue.receive()[0].delivery_count == 2


def test_max_deliveries_moves_the_message_to_the_dead_letters_with_the_last_error(
    make_queue: QueueFactory, clock: ManualClock
) -> None:
    queue = make_queue(max_deliveries=2)
    message_id = queue.send({"n": 1})
    queue.receive()[0].nack(error="first failure")
    queue.receive()[0].nack(error=ValueError("second failure"))
    assert queue.receive() == []
    assert queue.stats() == QueueStats(ready=0, in_flight=0, delayed=0, dead=1)
    (dead,) = queue.dead_letters.list()
    assert dead.id == message_id
    assert dead.body == {"n": 1}
    assert dead.delivery_count == 2
    assert dead.last_error == "ValueError: second failure"
    assert "max_deliveries=2" in dead.reason
    assert dead.dead_at == clock.now()


def test_expiry_on_the_last_delivery_dead_letters_and_keeps_the_last_error(
    make_queue: QueueFactory, clock: ManualClock
) -> None:
    queue = make_queue(max_deliveries=2, visibility_timeout=10)
    queue.send("crashy")
    queue.receive()[0].nack(error="boom")
    queue.receive()  # the consumer crashes: never settled
    clock.advance(10)
    assert queue.receive() == []
    (dead,) = queue.dead_letters.list()
    assert dead.delivery_count == 2
    assert "visibility timeout" in dead.reason
    assert dead.last_error == "boom"


def test_spent_messages_do_not_block_the_ones_behind_them(
    make_queue: QueueFactory, clock: ManualClock
) -> None:
    queue = make_queue(max_deliveries=1, visibility_timeout=10)
    queue.send_many(["spent-1", "spent-2"])
    assert len(queue.receive(2)) == 2
    clock.advance(10)
    queue.send("fresh")
    assert _bodies(queue, 3) == ["fresh"]
    assert queue.stats().dead == 2


def test_dead_letters_peek_redrive_and_purge(make_queue: QueueFactory) -> None:
    queue = make_queue(max_deliveries=1)
    ids = queue.send_many(["a", "b", "c"])
    for message in queue.receive(3):
        message.nack(error=f"bad {message.body}")
    assert [dead.id for dead in queue.dead_letters.list()] == ids
    assert queue.dead_letters.count() == 3
    assert [dead.id for dead in queue.dead_letters.list(limit=2)] == ids[:2]
    peeked = queue.dead_letters.peek(ids[1])
    assert peeked is not None
    assert peeked.body == "b"
    assert peeked.last_error == "bad b"
    assert queue.dead_letters.peek("999999999") is None
    assert queue.dead_letters.peek("not-an-id") is None

    assert queue.dead_letters.redrive(ids[0]) == 1
    (redriven,) = queue.receive(3)
    assert redriven.id == ids[0]
    assert redriven.delivery_count == 1  # the count starts again
    redriven.ack()

    assert queue.dead_letters.redrive() == 2
    assert sorted(_bodies(queue, 3)) == ["b", "c"]
    assert queue.dead_letters.count() == 0


def test_dead_letters_purge_deletes_them(make_queue: QueueFactory) -> None:
    queue = make_queue(max_deliveries=1)
    queue.send_many(["x", "y"])
    for message in queue.receive(2):
        message.nack()
    assert queue.dead_letters.purge() == 2
    assert queue.dead_letters.list() == []
    assert queue.dead_letters.redrive() == 0


def test_an_undecodable_message_goes_to_the_dead_letters_and_never_blocks(
    make_queue: QueueFactory,
) -> None:
    name = f"mixed-{uuid.uuid4().hex[:8]}"
    raw = make_queue(name, codec="bytes")
    queue = make_queue(name)
    raw.send(b"\xff not json")
    queue.send({"fine": True})
    assert _bodies(queue, 10) == [{"fine": True}]
    (dead,) = queue.dead_letters.list()
    assert "cannot be decoded" in dead.reason
    assert dead.body == b"\xff not json"  # shown raw, since it cannot be decoded


def test_a_receive_of_only_undecodable_messages_returns_empty(make_queue: QueueFactory) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    raw = make_queue(name, codec="bytes")
    queue = make_queue(name)
    raw.send_many([b"\x00", b"\x01"])
    assert queue.receive(1) == []
    assert queue.stats() == QueueStats(ready=0, in_flight=0, delayed=0, dead=2)


# -- ordering, delay, deduplication -------------------------------------------------------


def test_higher_priority_first_and_fifo_within_a_priority(queue: Queue) -> None:
    for body, priority in [("a", 0), ("b", 5), ("c", 9), ("d", 5), ("e", 0), ("f", 9)]:
        queue.send(body, priority=priority)
    received = [queue.receive()[0].body for _ in range(6)]
    assert received == ["c", "f", "b", "d", "a", "e"]


def test_a_batch_is_ordered_by_priority(queue: Queue) -> None:
    for body, priority in [("low", 0), ("high", 9), ("mid", 4), ("low2", 0)]:
        queue.send(body, priority=priority)
    assert _bodies(queue, 10) == ["high", "mid", "low", "low2"]


def test_fifo_over_many_messages(queue: Queue) -> None:
    queue.send_many(list(range(60)))
    received: list[Any] = []
    while batch := queue.receive(7):
        received.extend(message.body for message in batch)
        queue.ack_many(batch)
    assert received == list(range(60))


def test_delayed_delivery(queue: Queue, clock: ManualClock) -> None:
    queue.send("later", delay=10)
    queue.send("now")
    assert _bodies(queue) == ["now"]
    assert queue.stats().delayed == 1
    clock.advance(9.9)
    assert queue.receive() == []
    clock.advance(0.1)
    assert _bodies(queue) == ["later"]


def test_delays_that_end_together_join_the_line_in_the_order_they_ended(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send("five", delay=5)
    queue.send("one", delay=1)
    queue.send("three", delay=3)
    queue.send("now")
    clock.advance(10)
    assert [m.body for m in queue.peek()] == ["now", "one", "three", "five"]
    assert _bodies(queue, 4) == ["now", "one", "three", "five"]


def test_a_short_delay_is_honoured_between_quick_receives(queue: Queue, clock: ManualClock) -> None:
    queue.send("soon", delay=0.01)
    assert queue.receive() == []
    clock.advance(0.01)
    assert _bodies(queue) == ["soon"]
    queue.send("ready")
    queue.receive()[0].nack(delay=0.001)
    clock.advance(0.001)
    assert _bodies(queue) == ["ready"]


def test_a_due_high_priority_message_overtakes_waiting_low_ones(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send_many(["low-1", "low-2"])
    queue.send("urgent", priority=9, delay=1)
    assert _bodies(queue, 1) == ["low-1"]
    clock.advance(1)
    assert _bodies(queue, 1) == ["urgent"]


def test_deduplication_within_the_window(make_queue: QueueFactory, clock: ManualClock) -> None:
    queue = make_queue(dedup_window=60)
    first = queue.send("charge order 7", dedup_id="order-7")
    assert queue.send("charge order 7 again", dedup_id="order-7") == first
    assert queue.stats().ready == 1
    clock.advance(59)
    assert queue.send("still a duplicate", dedup_id="order-7") == first
    clock.advance(1)
    later = queue.send("a new charge", dedup_id="order-7")
    assert later != first
    assert _bodies(queue) == ["charge order 7", "a new charge"]


def test_deduplication_outlives_the_message(make_queue: QueueFactory) -> None:
    queue = make_queue(dedup_window=60)
    first = queue.send("once", dedup_id="k")
    queue.receive()[0].ack()
    assert queue.send("twice", dedup_id="k") == first
    assert queue.receive() == []


def test_deduplication_in_a_batch(queue: Queue) -> None:
    queue.send("already here", dedup_id="a")
    ids = queue.send_many(
        [
            Envelope("dup of a", dedup_id="a"),
            Envelope("b", dedup_id="b"),
            Envelope("b2", dedup_id="b"),
        ]
    )
    assert ids[1] == ids[2]
    assert len(set(ids)) == 2
    assert _bodies(queue) == ["already here", "b"]


# -- batches ------------------------------------------------------------------------------


def test_batch_send_and_receive(queue: Queue) -> None:
    ids = queue.send_many(range(250))
    assert len(ids) == len(set(ids)) == 250
    sizes = []
    while batch := queue.receive(100):
        sizes.append(len(batch))
        queue.ack_many(batch)
    assert sizes == [100, 100, 50]
    assert queue.stats().total == 0


def test_batch_send_with_per_message_options(queue: Queue, clock: ManualClock) -> None:
    queue.send_many(
        [
            Envelope("late", delay=5),
            Envelope("urgent", priority=9, headers={"kind": "alert"}),
            "plain",
        ],
        priority=1,
    )
    messages = queue.receive(10)
    assert [(m.body, m.priority, dict(m.headers)) for m in messages] == [
        ("urgent", 9, {"kind": "alert"}),
        ("plain", 1, {}),
    ]
    clock.advance(5)
    assert _bodies(queue) == ["late"]


def test_an_empty_batch_sends_nothing(queue: Queue) -> None:
    assert queue.send_many([]) == []
    assert queue.stats().total == 0


def test_ack_many_acknowledges_the_valid_and_reports_the_stale(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send_many(["a", "b", "c"])
    first_batch = queue.receive(3, visibility_timeout=10)
    clock.advance(10)
    redelivered = queue.receive(1, visibility_timeout=10)
    stale_id = redelivered[0].id
    with pytest.raises(StaleReceiptError) as caught:
        queue.ack_many(first_batch)
    assert caught.value.message_ids == (stale_id,)
    assert queue.stats().total == 1
    queue.ack_many(redelivered)
    assert queue.stats().total == 0


# -- inspecting ---------------------------------------------------------------------------


def test_stats_count_every_state(make_queue: QueueFactory, clock: ManualClock) -> None:
    queue = make_queue(max_deliveries=1)
    queue.send_many(["r1", "r2", "r3"])
    queue.send("delayed", delay=100)
    in_flight = queue.receive(2, visibility_timeout=50)
    queue.send("doomed")
    assert queue.stats() == QueueStats(ready=2, in_flight=2, delayed=1, dead=0)
    in_flight[0].ack()
    for message in queue.receive(2):
        if message.body == "doomed":
            message.nack()
        else:
            message.ack()
    assert queue.stats() == QueueStats(ready=0, in_flight=1, delayed=1, dead=1)
    clock.advance(50)  # the unsettled delivery expires: ready (then dead on receive)
    assert queue.stats() == QueueStats(ready=1, in_flight=0, delayed=1, dead=1)
    assert queue.stats().total == 2


def test_peek_shows_the_next_messages_without_claiming(queue: Queue, clock: ManualClock) -> None:
    queue.send("second", priority=1)
    queue.send("first", priority=2, headers={"h": "v"})
    queue.send("hidden", delay=10)
    peeked = queue.peek(5)
    assert [(m.body, m.priority, dict(m.headers)) for m in peeked] == [
        ("first", 2, {"h": "v"}),
        ("second", 1, {}),
    ]
    assert peeked[0].delivery_count == 0
    assert queue.stats().ready == 2
    assert [m.body for m in queue.peek(1)] == ["first"]
    clock.advance(10)
    assert [m.body for m in queue.peek()] == ["first", "second", "hidden"]


def test_purge_deletes_live_messages_but_keeps_dead_letters(make_queue: QueueFactory) -> None:
    queue = make_queue(max_deliveries=1)
    queue.send_many(["a", "b", "dies"])
    queue.send("later", delay=60)
    queue.receive()  # "a" in flight
    for message in queue.receive(2):
        if message.body == "dies":
            message.nack()
    assert queue.purge() == 3
    assert queue.stats() == QueueStats(ready=0, in_flight=0, delayed=0, dead=1)


# -- long-poll ----------------------------------------------------------------------------


def test_long_poll_returns_when_a_delayed_message_comes_due(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send("soon", delay=2)
    started = clock.now()
    (message,) = queue.receive(wait=5)
    assert message.body == "soon"
    assert 2 <= clock.now() - started < 2.1


def test_long_poll_gives_up_after_wait(queue: Queue, clock: ManualClock) -> None:
    started = clock.now()
    assert queue.receive(wait=3) == []
    assert clock.now() - started == pytest.approx(3)


# -- names --------------------------------------------------------------------------------


def test_unknown_queue_names_are_a_clear_error(engine: Engine, make_queue: QueueFactory) -> None:
    known = make_queue(f"known-{uuid.uuid4().hex[:8]}")
    with pytest.raises(UnknownQueueError, match="does not exist") as caught:
        open_queue(engine, "never-declared", create=False)
    assert known.name in caught.value.known
    assert known.name in list_queues(engine)
    assert open_queue(engine, known.name, create=False).name == known.name


# -- concurrency --------------------------------------------------------------------------


def test_concurrent_consumers_never_receive_the_same_message(queue: Queue) -> None:
    total = 300
    queue.send_many(range(total))
    received: list[list[int]] = [[] for _ in range(4)]
    failures: list[BaseException] = []

    def consume(slot: int) -> None:
        try:
            while batch := queue.receive(3, visibility_timeout=600):
                received[slot].extend(message.body for message in batch)
                queue.ack_many(batch)
        except BaseException as exc:  # reported to the main thread below
            failures.append(exc)

    threads = [threading.Thread(target=consume, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    everything = [body for bodies in received for body in bodies]
    assert len(everything) == len(set(everything)) == total


_CONSUMER_SCRIPT = """
import json, sys
import seawall
queue = seawall.connect(sys.argv[1]).queue(sys.argv[2], visibility_timeout=600)
print("ready", flush=True)
sys.stdin.readline()
received = []
while batch := queue.receive():
    received.append(batch[0].body)
    batch[0].ack()
print(json.dumps(received), flush=True)
"""


def test_consumers_in_two_processes_never_receive_the_same_message(
    engine_under_test: EngineUnderTest, queue: Queue, tmp_path: Path
) -> None:
    if engine_under_test.url is None:
        pytest.skip(f"the {engine_under_test.name} engine is not shared across processes")
    total = 1000
    queue.send_many(range(total))
    url = engine_under_test.url(tmp_path)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CONSUMER_SCRIPT, url, queue.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:  # wait until both have imported and connected
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:  # then start them together
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, errors) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, errors
    batches = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    everything = [body for bodies in batches for body in bodies]
    assert len(everything) == len(set(everything)) == total, [len(b) for b in batches]
    assert queue.stats().total == 0


# -- transactions -------------------------------------------------------------------------


class _BusinessRuleFailedError(Exception):
    """Raised inside a transaction to roll it back."""


def _fail_inside(begin: Callable[[], Any], action: Callable[[Any], object]) -> None:
    with begin() as tx:
        action(tx)
        raise _BusinessRuleFailedError


def test_send_and_ack_join_a_caller_transaction(
    engine_under_test: EngineUnderTest, engine: Engine, queue: Queue
) -> None:
    if not engine_under_test.transactions:
        pytest.skip(f"the {engine_under_test.name} engine: {engine_under_test.no_transactions}")
    transaction_of: Any = engine.transaction  # type: ignore[attr-defined]
    with pytest.raises(_BusinessRuleFailedError):
        _fail_inside(transaction_of, lambda tx: queue.send("rolled back", transaction=tx))
    assert queue.stats().total == 0
    with transaction_of() as tx:
        queue.send("committed", transaction=tx)
        queue.send("implicitly joined")  # same thread's connection: joins, never deadlocks
    (message, other) = queue.receive(2)
    with pytest.raises(_BusinessRuleFailedError):
        _fail_inside(transaction_of, lambda tx: queue.ack(message, transaction=tx))
    assert queue.stats().in_flight == 2
    with transaction_of() as tx:
        queue.ack_many([message, other], transaction=tx)
    assert queue.stats().total == 0


def test_memory_and_other_engines_without_transactions_refuse_one(
    engine_under_test: EngineUnderTest, queue: Queue
) -> None:
    if engine_under_test.transactions:
        pytest.skip("this engine supports transactions")
    with pytest.raises(seawall.ConfigurationError, match="transaction"):
        queue.send("x", transaction=object())  # type: ignore[arg-type]


# -- asyncio ------------------------------------------------------------------------------


async def test_async_send_receive_ack(queue: Queue, clock: ManualClock) -> None:
    message_id = await queue.asend({"async": True}, priority=2)
    (message,) = await queue.areceive(visibility_timeout=5)
    assert (message.id, message.body, message.delivery_count) == (message_id, {"async": True}, 1)
    await message.aextend_visibility(10)
    clock.advance(9)
    assert await queue.areceive() == []
    await message.anack(error="again")
    (again,) = await queue.areceive()
    await again.aack()
    assert await queue.astats() == QueueStats(0, 0, 0, 0)


async def test_async_batches_and_dead_letters(make_queue: QueueFactory) -> None:
    queue = make_queue(max_deliveries=1)
    await queue.asend_many(["a", "b", "c"])
    assert [m.body for m in await queue.apeek()] == ["a", "b", "c"]
    batch = await queue.areceive(3)
    await queue.aack_many(batch[:2])
    await batch[2].anack(error="no")
    (dead,) = await queue.dead_letters.alist()
    assert (await queue.dead_letters.apeek(dead.id)) == dead
    assert await queue.dead_letters.aredrive() == 1
    assert await queue.apurge() == 1
    assert await queue.dead_letters.apurge() == 0


async def test_async_long_poll_is_woken_by_a_send(queue: Queue, clock: ManualClock) -> None:
    async def send_soon() -> None:
        await asyncio.sleep(0)
        await queue.asend("wake up")

    sender = asyncio.create_task(send_soon())
    (message,) = await queue.areceive(wait=30)
    await sender
    assert message.body == "wake up"
    assert clock.now() - 1000.0 < 30
