"""Topics on NATS JetStream with the server's clock: short real waits, bounded.

The conformance suite skips what needs a manual clock on NATS (ack waits, stream
ages and timestamps are the server's); these tests cover it in real time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

import seawall
from _engines import require_engine
from seawall.engines import Engine
from seawall.messaging.topic import TopicRecord, open_topic

pytestmark = pytest.mark.engine("nats")


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    opened = seawall.connect(require_engine("nats"))
    names: list[str] = []
    opened.names = names  # type: ignore[attr-defined]
    yield opened
    from seawall.messaging.topic.nats import forget_topic

    for name in names:
        forget_topic(opened, name)  # type: ignore[arg-type]
    await opened.aclose()


def _name(engine: Engine) -> str:
    name = f"nt-{uuid.uuid4().hex[:10]}"
    engine.names.append(name)  # type: ignore[attr-defined]
    return name


def test_an_expired_delivery_is_redelivered_then_dead_lettered(engine: Engine) -> None:
    topic = open_topic(engine, _name(engine))
    group = topic.group("g", visibility_timeout=0.5, max_deliveries=2)
    topic.publish("slow")
    (first,) = group.receive(1)
    (second,) = group.receive(1, wait=5.0)
    assert (second.offset, second.delivery_count) == (first.offset, 2)
    time.sleep(0.7)
    assert group.receive(1, wait=0.5) == []
    (letter,) = group.dead_letters()
    assert letter.body == "slow"
    assert "visibility timeout" in letter.reason
    assert letter.delivery_count == 2


def test_nack_with_a_delay_and_a_last_error(engine: Engine) -> None:
    topic = open_topic(engine, _name(engine))
    group = topic.group("g", max_deliveries=2)
    topic.publish("x", key="k", headers={"trace": "t1"})
    (message,) = group.receive(1)
    started = time.monotonic()
    group.nack(message, delay=0.5)
    assert group.receive(1) == []
    (again,) = group.receive(1, wait=5.0)
    assert time.monotonic() - started >= 0.4
    assert again.delivery_count == 2
    group.nack(again, error=ValueError("broken"))
    (letter,) = group.dead_letters()
    assert (letter.key, letter.last_error, dict(letter.headers)) == (
        "k",
        "ValueError: broken",
        {"trace": "t1"},
    )


def test_seek_time_replays_from_the_server_timestamps(engine: Engine) -> None:
    topic = open_topic(engine, _name(engine))
    group = topic.group("g")
    topic.publish("before")
    time.sleep(0.3)
    moment = time.time()
    offset = topic.publish("after")
    for message in group.receive(10):
        group.ack(message)
    assert group.seek_time(moment) == offset
    assert [m.body for m in group.receive(10)] == ["after"]


def test_retention_by_age_uses_the_stream_max_age(engine: Engine) -> None:
    topic = open_topic(engine, _name(engine), retention_age=1.0)
    group = topic.group("g")
    topic.publish("short-lived")
    time.sleep(1.6)
    topic.publish("fresh")
    assert [m.body for m in group.receive(10)] == ["fresh"]


def test_key_order_makes_each_group_sequential(engine: Engine) -> None:
    topic = open_topic(engine, _name(engine), key_order=True)
    group = topic.group("g")
    topic.publish_many([TopicRecord("k1", key="k"), TopicRecord("k2", key="k")])
    (first,) = group.receive(10)
    assert group.receive(10) == []
    group.ack(first)
    assert [m.body for m in group.receive(10)] == ["k2"]


def test_a_waiting_receive_wakes_on_a_publish(engine: Engine) -> None:
    import threading

    topic = open_topic(engine, _name(engine))
    group = topic.group("g")
    timer = threading.Timer(0.2, topic.publish, args=("wake",))
    timer.start()
    started = time.monotonic()
    messages = group.receive(1, wait=10.0)
    timer.join()
    assert [m.body for m in messages] == ["wake"]
    assert time.monotonic() - started < 5.0
