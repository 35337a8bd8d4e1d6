"""Topics on NATS JetStream with the server's clock: short real waits, bounded.

The conformance suite skips what needs a manual clock on NATS (ack waits, stream
ages and timestamps are the server's); these tests cover it in real time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator

import pytest

import seawall
from _engines import require_engine
from seawall.engines import Engine
from seawall.errors import ConfigurationError
from seawall.messaging.topic import ConsumerGroup, TopicRecord, open_topic

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


def test_a_partition_hands_out_one_message_at_a_time(engine: Engine) -> None:
    topic = open_topic(engine, _name(engine), partitions=1)
    group = topic.group("g")
    topic.publish_many([TopicRecord("k1", key="k"), TopicRecord("j1", key="j"), "free"])
    # One partition: every key waits behind the one in flight; keyless messages do not.
    assert [m.body for m in group.receive(10)] == ["k1", "free"]
    assert group.receive(10, wait=0.1) == []
    assert group.lag() == 3


def test_partitions_are_fixed_when_the_topic_is_created(engine: Engine) -> None:
    name = _name(engine)
    open_topic(engine, name, partitions=4)
    with pytest.raises(ConfigurationError, match="partitions=4"):
        open_topic(engine, name, partitions=2)
    reopened = open_topic(engine, name, create=False)
    assert reopened.store.partitions == 4  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="partitions"):
        open_topic(engine, _name(engine), partitions=0)


def test_a_stream_of_the_old_layout_is_refused_with_the_fix(engine: Engine) -> None:
    from seawall.messaging.topic.nats import stream_name

    name = _name(engine)

    async def old_layout() -> None:
        js = await engine.jetstream()  # type: ignore[attr-defined]
        await js.add_stream(name=stream_name(name), subjects=[f"seawall.topic.{name}"])

    engine.run(old_layout())  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="forget_topic"):
        open_topic(engine, name)


def test_seek_recreates_every_partition_consumer(engine: Engine) -> None:
    topic = open_topic(engine, _name(engine))
    group = topic.group("g")
    records = [TopicRecord(n, key=f"k{n % 5}") for n in range(10)]
    offsets = topic.publish_many(records)
    assert sorted(_drain(group)) == list(range(10))
    assert group.lag() == 0
    group.seek(offsets[4])
    assert group.lag() == 6
    assert sorted(_drain(group)) == list(range(4, 10))
    assert group.seek_time(0) == offsets[0]
    assert sorted(_drain(group)) == list(range(10))


def test_competing_consumers_keep_each_key_in_order(engine: Engine) -> None:
    name = _name(engine)
    topic = open_topic(engine, name)
    topic.group("workers")
    keys = [f"order-{n}" for n in range(6)]
    topic.publish_many([TopicRecord([key, n], key=key) for n in range(10) for key in keys])
    seen: dict[str, list[int]] = {key: [] for key in keys}
    holding: set[str] = set()
    per_consumer = [0, 0]
    lock = threading.Lock()
    errors: list[str] = []
    deadline = time.monotonic() + 8.0

    def consume(index: int) -> None:
        connected = seawall.connect(require_engine("nats"))  # its own connection
        try:
            group = open_topic(connected, name, create=False).group("workers")
            while time.monotonic() < deadline:
                with lock:
                    if sum(len(numbers) for numbers in seen.values()) == 60:
                        return
                for message in group.receive(4, wait=0.2):
                    key, n = message.body
                    with lock:
                        if key in holding:
                            errors.append(f"{key} held by two consumers at once")
                        holding.add(key)
                        seen[key].append(n)
                        per_consumer[index] += 1
                    time.sleep(0.005)  # some work, so the other consumer runs meanwhile
                    with lock:
                        holding.discard(key)
                    group.ack(message)
        except BaseException as exc:  # reported below
            errors.append(repr(exc))
        finally:
            connected.close()

    threads = [threading.Thread(target=consume, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert seen == {key: list(range(10)) for key in keys}
    assert all(count > 0 for count in per_consumer), per_consumer


def _drain(group: ConsumerGroup) -> list[object]:
    seen: list[object] = []
    while messages := group.receive(10):
        for message in messages:
            seen.append(message.body)
            group.ack(message)
    return seen


def test_a_waiting_receive_wakes_on_a_publish(engine: Engine) -> None:
    topic = open_topic(engine, _name(engine))
    group = topic.group("g")
    timer = threading.Timer(0.2, topic.publish, args=("wake",))
    timer.start()
    started = time.monotonic()
    messages = group.receive(1, wait=10.0)
    timer.join()
    assert [m.body for m in messages] == ["wake"]
    assert time.monotonic() - started < 5.0
