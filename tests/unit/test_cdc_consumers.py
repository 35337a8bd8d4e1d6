"""Consumers of captured changes: a durable queue, cache invalidation, an event store feed."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import seawall
from seawall.eventsourcing import open_async_event_store, open_event_store
from seawall.eventsourcing.cdc import (
    BatchChangeHandler,
    CacheInvalidator,
    ChangeEvent,
    ChangeHandler,
    ChangePosition,
    ChangeSource,
    EventStoreFeed,
    QueueSink,
    TopicSink,
    cache_key,
    change_headers,
)
from seawall.eventsourcing.cdc._consumers import CDC_NAMESPACE


def change(
    op: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    key: dict[str, Any] | None = None,
    offset: int = 10,
    sequence: int = 0,
    table: str = "orders",
) -> ChangeEvent:
    source = ChangeSource(
        "sqlite", "shop", "app.db", "main", table, 5, "true" if op == "r" else "false"
    )
    return ChangeEvent(op, before, after, source, 7, ChangePosition(offset, sequence), key)


INSERT = change("c", after={"id": 1, "item": "tea"}, key={"id": 1}, offset=10)
UPDATE = change("u", before={"id": 1, "item": "tea"}, after={"id": 1, "item": "TEA"},
                key={"id": 1}, offset=11)  # fmt: skip
REKEY = change("u", before={"id": 1, "item": "tea"}, after={"id": 9, "item": "tea"},
               key={"id": 9}, offset=12)  # fmt: skip
DELETE = change("d", before={"id": 9, "item": "tea"}, key={"id": 9}, offset=13)


def test_the_adapters_are_handlers() -> None:
    queue = seawall.connect("memory://").queue("q")
    for adapter in (
        QueueSink(queue),
        CacheInvalidator(print),
        EventStoreFeed(open_event_store("memory://")),
    ):
        assert isinstance(adapter, ChangeHandler)
        assert isinstance(adapter, BatchChangeHandler)


def test_queue_sink_sends_the_debezium_envelope_once_per_change(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'q.db'}")
    queue = engine.queue("changes")
    sink = QueueSink(queue)
    sink.handle_batch([INSERT, UPDATE])
    sink.handle_batch([UPDATE, DELETE])  # UPDATE delivered again: deduplicated by its id
    sink(DELETE)
    messages = queue.receive(max_messages=10)
    assert [message.body["op"] for message in messages] == ["c", "u", "d"]
    assert messages[0].body == INSERT.to_debezium()
    assert messages[1].headers == {"cdc-table": "main.orders", "cdc-op": "u", "cdc-id": "shop:11:0"}
    engine.close()


def test_queue_sink_can_send_a_custom_body_without_deduplication() -> None:
    queue = seawall.connect("memory://").queue("changes")
    sink = QueueSink(queue, body=lambda event: event.after, deduplicate=False)
    sink.handle_batch([INSERT, INSERT])
    assert [message.body for message in queue.receive(max_messages=10)] == [INSERT.after] * 2


async def test_queue_sink_async() -> None:
    queue = seawall.connect("memory://").queue("changes")
    await QueueSink(queue).ahandle_batch([INSERT, INSERT, DELETE])
    messages = await queue.areceive(max_messages=10)
    assert [message.body["op"] for message in messages] == ["c", "d"]


def test_topic_sink_publishes_every_change_keyed_by_its_row(tmp_path: Path) -> None:
    from seawall.messaging.topic import open_topic

    topic = open_topic(f"sqlite:///{tmp_path / 't.db'}", "changes")
    group = topic.group("search-index")
    sink = TopicSink(topic)
    sink.handle_batch([INSERT, UPDATE])
    sink(DELETE)
    sink(change("c", after={"line": "x"}, key=None, table="audit"))  # no primary key
    first = group.receive(max_messages=10)
    # one row's changes go one at a time: the update waits for the insert's ack
    assert [(message.key, message.body["op"]) for message in first] == [
        ("main.orders:1", "c"),
        ("main.orders:9", "d"),
        ("main.audit", "c"),
    ]
    assert first[0].body == INSERT.to_debezium()
    assert first[0].headers["cdc-id"] == "shop:10:0"
    group.ack(first[0])
    [update] = group.receive(max_messages=10)
    assert update.body["op"] == "u"
    assert update.offset > first[0].offset
    topic.close()


async def test_topic_sink_async_with_a_custom_body() -> None:
    from seawall.messaging.topic import open_topic

    topic = open_topic("memory://", "changes")
    group = topic.group("cache")
    await TopicSink(topic, body=lambda event: event.after).ahandle_batch([INSERT, REKEY])
    messages = await group.areceive(max_messages=10)
    assert [message.body for message in messages] == [INSERT.after, REKEY.after]


def test_cache_invalidator_names_every_stale_key() -> None:
    invalidated: list[str] = []
    truncated: list[str] = []
    invalidator = CacheInvalidator(invalidated.append, on_truncate=truncated.append)
    invalidator.handle_batch([INSERT, UPDATE, REKEY, DELETE])
    assert invalidated == ["orders:1", "orders:1", "orders:9", "orders:1", "orders:9"]
    invalidator(change("r", after={"id": 3}, key={"id": 3}))  # snapshot rows: nothing stale
    invalidator(change("c", after={"line": "x"}, key=None))  # no primary key: no cache key
    invalidator(change("t", table="orders"))
    assert invalidated[-1] == "orders:9"
    assert truncated == ["orders"]


def test_cache_invalidator_custom_keys_and_snapshot_rows() -> None:
    invalidated: list[str] = []
    invalidator = CacheInvalidator(
        invalidated.append,
        key=lambda table, key: f"{table}/{key['b']}/{key['a']}",
        include_snapshot=True,
    )
    invalidator(change("r", after={"a": 1, "b": 2}, key={"a": 1, "b": 2}))
    invalidator(change("t"))  # no on_truncate: ignored
    assert invalidated == ["orders/2/1"]
    assert cache_key("t", {"a": 1, "b": "x"}) == "t:1:x"


async def test_cache_invalidator_awaits_an_async_callback() -> None:
    invalidated: list[str] = []

    async def invalidate(key: str) -> None:
        invalidated.append(key)

    await CacheInvalidator(invalidate).ahandle_batch([INSERT, DELETE])
    assert invalidated == ["orders:1", "orders:9"]


def test_event_store_feed_appends_in_order_with_stable_ids() -> None:
    store = open_event_store("memory://")
    feed = EventStoreFeed(store)
    feed.handle_batch([INSERT, UPDATE])
    feed(DELETE)
    recorded = store.read_all()
    assert [(event.stream_id, event.version, event.type) for event in recorded] == [
        ("cdc-shop", 1, "orders.created"),
        ("cdc-shop", 2, "orders.updated"),
        ("cdc-shop", 3, "orders.deleted"),
    ]
    assert recorded[1].data == UPDATE.to_debezium()
    assert recorded[0].id == uuid.uuid5(CDC_NAMESPACE, INSERT.id)
    assert recorded[0].headers == change_headers(INSERT)


def test_event_store_feed_with_a_stream_per_row() -> None:
    feed = EventStoreFeed(
        open_event_store("memory://"),
        stream=lambda event: f"{event.table}-{(event.key or {}).get('id')}",
        event_type=lambda event: event.op,
    )
    requests = feed.requests([INSERT, REKEY, DELETE])
    assert [(request.stream_id, len(request.events)) for request in requests] == [
        ("orders-1", 1),
        ("orders-9", 2),
    ]
    assert [event.type for event in requests[1].events] == ["u", "d"]


async def test_event_store_feed_async(tmp_path: Path) -> None:
    store = open_async_event_store(f"sqlite:///{tmp_path / 'events.db'}")
    feed = EventStoreFeed(store)
    await feed.ahandle_batch([INSERT, DELETE])
    assert [event.type for event in await store.read_all()] == ["orders.created", "orders.deleted"]
    with pytest.raises(TypeError, match="asyncio event store"):
        feed.handle_batch([INSERT])
    await store.close()
