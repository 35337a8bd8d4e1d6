"""The queue facade: opening, argument checks, errors and events (memory engine)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from typing import Any

import pytest

import seawall
import seawall.messaging.queue as queue_module
from seawall.clock import ManualClock
from seawall.codec import EncodeError
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.events import Event
from seawall.messaging.channel import BlockingInEventLoopError
from seawall.messaging.queue import (
    Envelope,
    MessageDeadLettered,
    MessageDeduplicated,
    MessageRedelivered,
    MessageTooLargeError,
    Queue,
    QueueError,
    QueueStore,
    Receipt,
    StaleReceiptError,
    StaleReceiptRejected,
    UnknownQueueError,
    open_queue,
)
from seawall.messaging.queue.memory import MemoryQueueStore


@pytest.fixture
def queue(clock: ManualClock) -> Iterator[Queue]:
    engine = seawall.connect("memory://")
    opened = engine.queue("orders", clock=clock)
    yield opened
    opened.close()


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(queue_module.__all__) == queue_module.__all__
    assert set(queue_module.__all__) == {
        "AsyncQueueStore",
        "DeadLetter",
        "DeadLetters",
        "Envelope",
        "HandlerFailed",
        "HeartbeatSent",
        "Message",
        "MessageDeadLettered",
        "MessageDeduplicated",
        "MessageHandled",
        "MessageRedelivered",
        "MessageReleased",
        "MessageTooLargeError",
        "NackOutcome",
        "OutgoingMessage",
        "Queue",
        "QueueError",
        "QueueStats",
        "QueueStore",
        "QueuedMessage",
        "Receipt",
        "StaleReceiptError",
        "StaleReceiptRejected",
        "StoreCallFailed",
        "StoredMessage",
        "UnknownQueueError",
        "Worker",
        "WorkerStarted",
        "WorkerStats",
        "WorkerStopped",
        "current_message",
        "current_transaction",
        "list_queues",
        "open_queue",
    }


def test_engine_queue_and_open_queue_by_url_reach_the_same_store(clock: ManualClock) -> None:
    engine = seawall.connect("memory://api-shared")
    by_engine = engine.queue("jobs", clock=clock)
    by_url = open_queue("memory://api-shared", "jobs", clock=clock)
    by_engine.send("hello")
    assert [m.body for m in by_url.receive()] == ["hello"]
    assert isinstance(by_engine.store, MemoryQueueStore)
    assert isinstance(by_engine.store, QueueStore)
    assert repr(by_engine) == "Queue('jobs', store=MemoryQueueStore('jobs'))"


def test_an_engine_without_a_queue_store_names_the_supported_ones() -> None:
    class TapeEngine(seawall.Engine):
        kind = "tape"

    with pytest.raises(
        UnsupportedEngineError, match="memory, nats, postgres, rabbitmq, redis, sqlite"
    ):
        TapeEngine("tape://").queue("jobs")
    with pytest.raises(UnsupportedEngineError, match="'tape'"):
        queue_module.list_queues(TapeEngine("tape://"))


def test_malformed_urls_are_clear_errors() -> None:
    with pytest.raises(UnsupportedEngineError, match="no scheme"):
        open_queue("shop.db", "jobs")
    with pytest.raises(ConfigurationError, match="three slashes"):
        open_queue("sqlite://shop.db", "jobs")


@pytest.mark.parametrize("name", ["", "has space", "-leading", "a" * 201, "star*", 42])
def test_invalid_queue_names_are_refused(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="queue name"):
        open_queue("memory://", name)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("visibility_timeout", 0, "visibility_timeout=0 must be"),
        ("visibility_timeout", float("inf"), "visibility_timeout=inf"),
        ("max_deliveries", 0, "max_deliveries=0 must be an integer >= 1"),
        ("max_deliveries", 2.5, "max_deliveries=2.5"),
        ("max_message_size", -1, "max_message_size=-1"),
        ("dedup_window", -5, "dedup_window=-5"),
        ("codec", "yaml", "codec='yaml'"),
        ("clock", "now", "clock='now'"),
        ("synchronous", "full", "unknown queue option"),
    ],
)
def test_invalid_options_name_the_field_and_value(option: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        open_queue("memory://", "jobs", **{option: value})


def test_unknown_queue_names_list_the_known_ones() -> None:
    engine = seawall.connect("memory://")
    engine.queue("alpha")
    with pytest.raises(UnknownQueueError, match="'alpha'") as caught:
        engine.queue("beta", create=False)
    assert caught.value.known == ("alpha",)
    assert isinstance(caught.value, ConfigurationError)
    assert isinstance(caught.value, QueueError)
    assert queue_module.list_queues(engine) == ["alpha"]


# -- send checks ----------------------------------------------------------------------------


def test_an_unserialisable_body_fails_at_send_naming_the_type(queue: Queue) -> None:
    with pytest.raises(EncodeError, match="'datetime'") as caught:
        queue.send({"at": datetime.datetime(2024, 1, 1)})
    assert caught.value.path == "$['at']"
    assert queue.stats().total == 0


def test_an_oversize_body_is_a_clear_error(clock: ManualClock) -> None:
    small = open_queue("memory://", "small", max_message_size=64, clock=clock)
    small.send("x" * 62)  # 64 bytes with the JSON quotes
    with pytest.raises(MessageTooLargeError, match="65 bytes encoded, over max_message_size=64"):
        small.send("x" * 63)
    with pytest.raises(MessageTooLargeError) as caught:
        small.send_many(["ok", "y" * 100])
    assert (caught.value.size, caught.value.limit) == (102, 64)
    assert isinstance(caught.value, ValueError)
    assert small.stats().total == 1  # the batch stored nothing


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 10}, "priority=10 must be an integer from 0 to 9"),
        ({"priority": -1}, "priority=-1"),
        ({"priority": True}, "priority=True"),
        ({"priority": 1.0}, "priority=1.0"),
        ({"delay": -1}, "delay=-1 must be"),
        ({"delay": float("nan")}, "delay=nan"),
        ({"headers": {"k": 1}}, "headers must map str to str"),
        ({"headers": ["k"]}, "must be a mapping"),
        ({"dedup_id": ""}, "dedup_id=''"),
        ({"dedup_id": "x" * 257}, "at most 256"),
    ],
)
def test_invalid_send_arguments_name_the_field(
    queue: Queue, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        queue.send("body", **options)
    assert queue.stats().total == 0


def test_invalid_batch_items_fail_before_anything_is_stored(queue: Queue) -> None:
    with pytest.raises(ConfigurationError, match="priority=12"):
        queue.send_many(["fine", Envelope("bad", priority=12)])
    assert queue.stats().total == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda q: q.receive(0), "max_messages=0"),
        (lambda q: q.receive(10_001), "max_messages=10001"),
        (lambda q: q.receive(visibility_timeout=-1), "visibility_timeout=-1"),
        (lambda q: q.receive(wait=-1), "wait=-1"),
        (lambda q: q.peek(0), "limit=0"),
        (lambda q: q.dead_letters.list(0), "limit=0"),
    ],
)
def test_invalid_receive_arguments_name_the_field(queue: Queue, call: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        call(queue)


def test_invalid_settle_arguments_name_the_field(queue: Queue) -> None:
    queue.send("x")
    (message,) = queue.receive()
    with pytest.raises(ConfigurationError, match="delay=-2"):
        message.nack(delay=-2)
    with pytest.raises(ConfigurationError, match="visibility_timeout=0"):
        message.extend_visibility(0)
    message.ack()


def test_a_forged_receipt_is_stale(queue: Queue) -> None:
    queue.send("x")
    (message,) = queue.receive()
    for receipt in [Receipt(message.id, "nope"), Receipt("nope", message.token)]:
        with pytest.raises(StaleReceiptError):
            queue.ack(receipt)
    message.ack()


def test_error_text_is_kept_short(queue: Queue) -> None:
    small = open_queue("memory://", "errors", max_deliveries=1)
    small.send("x")
    small.receive()[0].nack(error="e" * 10_000)
    (dead,) = small.dead_letters.list()
    assert dead.last_error is not None
    assert len(dead.last_error) == 4000
    assert dead.last_error.endswith("...")


def test_message_repr_and_receipt(queue: Queue) -> None:
    queue.send({"n": 1}, priority=4)
    (message,) = queue.receive()
    assert message.queue is queue
    assert message.receipt == Receipt(message.id, message.token)
    assert repr(message) == (
        f"Message(id={message.id!r}, queue='orders', priority=4, delivery_count=1, body={{'n': 1}})"
    )


# -- events ---------------------------------------------------------------------------------


def test_events_tell_what_happened(clock: ManualClock) -> None:
    queue = open_queue("memory://", "observed", clock=clock, max_deliveries=2)
    seen: list[Event] = []
    unsubscribe = queue.events.subscribe(seen.append)
    try:
        first = queue.send("work", dedup_id="job-1")
        queue.send("work again", dedup_id="job-1")
        (message,) = queue.receive(visibility_timeout=5)
        clock.advance(5)
        (again,) = queue.receive()
        with pytest.raises(StaleReceiptError):
            message.ack()
        again.nack(error="boom")
    finally:
        unsubscribe()
    assert seen == [
        MessageDeduplicated("observed", first, "job-1"),
        MessageRedelivered("observed", first, 2),
        StaleReceiptRejected("observed", first, "ack"),
        MessageDeadLettered(
            "observed",
            first,
            "negatively acknowledged on its last allowed delivery (2 of max_deliveries=2)",
            2,
        ),
    ]


def test_nothing_is_emitted_without_listeners(queue: Queue) -> None:
    assert queue.events.active is False
    queue.send("quiet")
    queue.receive()[0].ack()


# -- asyncio guards -------------------------------------------------------------------------


async def test_a_blocking_long_poll_inside_an_event_loop_is_refused(queue: Queue) -> None:
    with pytest.raises(BlockingInEventLoopError, match="areceive"):
        queue.receive(wait=1)
    assert queue.receive() == []  # a non-waiting receive is a short call: allowed


async def test_async_and_sync_share_one_queue(queue: Queue) -> None:
    await queue.asend("from async")
    assert [m.body for m in queue.receive()] == ["from async"]
    queue.send("from sync")
    (message,) = await queue.areceive()
    await message.aack()
    async with queue:
        pass


async def test_async_stale_receipts_and_undecodable_messages(clock: ManualClock) -> None:
    engine = seawall.connect("memory://")
    raw = engine.queue("mixed", codec="bytes", clock=clock)
    queue = engine.queue("mixed", clock=clock)
    raw.send(b"\xff")
    assert await queue.areceive(wait=1) == []
    assert queue.stats().dead == 1
    queue.send("fine")
    (message,) = await queue.areceive(visibility_timeout=1)
    clock.advance(1)
    (again,) = await queue.areceive()
    for settle in (message.aack(), message.anack(), message.aextend_visibility(5)):
        with pytest.raises(StaleReceiptError):
            await settle
    with pytest.raises(StaleReceiptError):
        await queue.aack_many([message])
    await again.aack()


async def test_async_long_poll_times_out_on_the_clock(clock: ManualClock) -> None:
    queue = open_queue("memory://", "idle", clock=clock)
    started = clock.now()
    assert await queue.areceive(wait=2) == []
    assert clock.now() - started == pytest.approx(2)


def test_a_queue_is_a_context_manager(clock: ManualClock) -> None:
    with open_queue("memory://", "ctx", clock=clock) as queue:
        queue.send(1)
    assert asyncio.run(_async_close(clock)) is None


async def _async_close(clock: ManualClock) -> None:
    async with open_queue("memory://", "actx", clock=clock) as queue:
        await queue.asend(1)
