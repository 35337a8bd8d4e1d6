"""The topic facade on the memory engine: the documented examples, checks and events."""

from __future__ import annotations

from pathlib import Path

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.messaging.topic import (
    TopicMessageRedelivered,
    TopicReceipt,
    TopicRecord,
    open_topic,
)
from seawall.messaging.topic._validate import check_key, check_start


def test_the_replay_example_of_the_docs_runs() -> None:
    clock = ManualClock(1000.0)
    log = open_topic("memory://", "audit", retention_count=1000, clock=clock)
    audit = log.group("audit")
    first = log.publish("created")
    log.publish("paid")
    assert [m.body for m in audit.receive(10)] == ["created", "paid"]
    audit.seek(first)
    assert audit.lag() == 2
    assert [m.body for m in audit.receive(10)] == ["created", "paid"]


def test_the_transaction_example_of_the_docs_runs(tmp_path: Path) -> None:
    db = seawall.connect(f"sqlite:///{tmp_path / 'shop.db'}")
    orders = open_topic(db, "orders")
    with db.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, total INTEGER)")
        tx.execute("INSERT INTO orders (total) VALUES (?)", [1250])
        orders.publish({"event": "order-placed", "total": 1250}, transaction=tx)
    (message,) = orders.group("billing").receive(10)
    assert message.body == {"event": "order-placed", "total": 1250}
    db.close()


def test_a_receipt_settles_the_message_by_itself() -> None:
    topic = open_topic("memory://", "receipts")
    group = topic.group("g")
    topic.publish("x")
    (message,) = group.receive(1)
    receipt = message.receipt
    assert receipt == TopicReceipt("g", message.offset, message.token)
    group.ack(receipt)
    assert group.lag() == 0


def test_redeliveries_are_reported_to_listeners() -> None:
    topic = open_topic("memory://", "events")
    group = topic.group("g")
    seen: list[TopicMessageRedelivered] = []
    topic.events.subscribe(seen.append, types=(TopicMessageRedelivered,))
    topic.publish_many([TopicRecord("x", key="k")])
    (message,) = group.receive(1)
    group.nack(message)
    group.receive(1)
    assert [(event.group, event.delivery_count) for event in seen] == [("g", 2)]


def test_a_blocking_wait_inside_an_event_loop_is_refused() -> None:
    import asyncio

    from seawall.messaging.channel import BlockingInEventLoopError

    group = open_topic("memory://", "loop").group("g")

    async def main() -> None:
        with pytest.raises(BlockingInEventLoopError, match="areceive"):
            group.receive(1, wait=1.0)

    asyncio.run(main())


@pytest.mark.parametrize("key", ["", "a\nb", "x" * 1025, 3])
def test_bad_keys_are_refused(key: object) -> None:
    with pytest.raises(seawall.ConfigurationError, match="key"):
        check_key(key)


@pytest.mark.parametrize(
    ("start", "expected"), [("earliest", "earliest"), ("latest", "latest"), (7, 7)]
)
def test_starts(start: object, expected: object) -> None:
    assert check_start(start) == expected


def test_an_unknown_engine_kind_is_refused() -> None:
    with pytest.raises(seawall.UnsupportedEngineError, match="topics do not run"):
        open_topic(seawall.connect("etcd://127.0.0.1:2379"), "x")
