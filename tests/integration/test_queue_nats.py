"""The NATS JetStream queue store on the real server: ack wait, max deliver, advisories, reconnects.

The conformance suite runs the contract with a manual clock; JetStream times
deliveries itself, so these tests use short real waits (ack waits of a fraction of a
second) for what only the live server shows. Every stream a test creates is deleted.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

import seawall
from _engines import require_engine
from _sockets import drop_client_sockets
from seawall.engines.nats import NatsEngine
from seawall.errors import EngineUnavailableError
from seawall.messaging.queue import Queue, QueueStats, open_queue
from seawall.messaging.queue.nats import dead_letter_stream_name, forget_queue, stream_name

pytest.importorskip("nats")

pytestmark = pytest.mark.engine("nats")


@pytest.fixture
def engine() -> Iterator[NatsEngine]:
    opened = seawall.connect(require_engine("nats"))
    assert isinstance(opened, NatsEngine)
    names: list[str] = []
    opened.created = names  # type: ignore[attr-defined]
    yield opened
    for name in names:
        forget_queue(opened, name)
    opened.close()


def _queue(engine: NatsEngine, **options: object) -> Queue:
    name = f"it-{uuid.uuid4().hex[:10]}"
    engine.created.append(name)  # type: ignore[attr-defined]
    return open_queue(engine, name, **options)  # type: ignore[arg-type]


def _wait_for(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_the_queue_is_a_work_queue_stream_with_durable_pull_consumers(engine: NatsEngine) -> None:
    queue = _queue(engine, max_deliveries=4)

    async def inspect() -> tuple[str, float, list[str], int, float]:
        js = await engine.jetstream()
        info = await js.stream_info(stream_name(queue.name))
        consumer = await js.consumer_info(stream_name(queue.name), "p0")
        dead = await js.stream_info(dead_letter_stream_name(queue.name))
        return (
            str(info.config.retention),
            float(info.config.duplicate_window or 0),
            list(dead.config.subjects or []),
            int(consumer.config.max_deliver or 0),
            float(consumer.config.ack_wait or 0),
        )

    retention, window, dead_subjects, max_deliver, _ = engine.run(inspect())
    assert "workqueue" in retention.lower()
    assert window == pytest.approx(300.0)
    assert any("MAX_DELIVERIES" in subject for subject in dead_subjects)
    assert max_deliver == 5
    queue.send("x")
    queue.receive(visibility_timeout=12)
    assert engine.run(inspect())[4] == pytest.approx(12.0)


def test_redelivery_after_the_ack_wait(engine: NatsEngine) -> None:
    queue = _queue(engine)
    queue.send("work")
    (first,) = queue.receive(visibility_timeout=0.5)
    assert queue.receive(visibility_timeout=0.5) == []
    time.sleep(0.8)
    (second,) = queue.receive(visibility_timeout=0.5, wait=3)
    assert (second.id, second.delivery_count) == (first.id, 2)
    with pytest.raises(seawall.messaging.queue.StaleReceiptError):
        first.ack()  # this process saw the newer delivery
    second.ack()
    assert queue.stats() == QueueStats(0, 0, 0, 0)


def test_extend_visibility_restarts_the_ack_wait(engine: NatsEngine) -> None:
    queue = _queue(engine)
    queue.send("long")
    (message,) = queue.receive(visibility_timeout=1.0)
    for _ in range(3):
        time.sleep(0.5)
        message.extend_visibility(1.0)
    assert queue.receive(visibility_timeout=1.0) == []
    message.ack()


def test_max_deliveries_dead_letters_after_the_last_ack_wait(engine: NatsEngine) -> None:
    queue = _queue(engine, max_deliveries=2)
    message_id = queue.send({"n": 1})
    (first,) = queue.receive(visibility_timeout=0.4)
    first.nack(error="boom")
    (second,) = queue.receive(visibility_timeout=0.4)
    assert second.delivery_count == 2
    time.sleep(0.7)  # the last delivery expires unsettled
    assert queue.receive(visibility_timeout=0.4, wait=1.0) == []
    (dead,) = queue.dead_letters.list()
    assert (dead.id, dead.delivery_count, dead.last_error) == (message_id, 2, "boom")
    assert "visibility timeout expired" in dead.reason


def test_a_max_deliveries_advisory_is_adopted_into_the_dead_letters(engine: NatsEngine) -> None:
    queue = _queue(engine, max_deliveries=1)
    message_id = queue.send("orphan")

    async def pull_and_forget() -> int:
        # A consumer that died mid-way took the final delivery and never settled it, so
        # JetStream reaches max_deliver and publishes a MAX_DELIVERIES advisory.
        core = queue.store._core  # type: ignore[attr-defined]
        return len(await core._pull(await engine.connection(), "p0", 1))

    queue.receive(visibility_timeout=0.4)  # also sets the consumers' ack wait
    time.sleep(0.6)
    assert engine.run(pull_and_forget()) == 1
    time.sleep(0.6)
    # JetStream notices the spent delivery on the next pull and sends the advisory.
    _wait_for(lambda: queue.receive() == [] and queue.stats().dead == 1)
    (dead,) = queue.dead_letters.list()
    assert dead.id == message_id
    assert "visibility timeout expired" in dead.reason
    assert queue.stats().total == 0


def test_delays_are_honoured_in_real_time(engine: NatsEngine) -> None:
    queue = _queue(engine)
    queue.send("later", delay=0.6)
    queue.send("now")
    assert [m.body for m in queue.receive(5)] == ["now"]
    assert queue.stats().delayed == 1
    started = time.monotonic()
    (message,) = queue.receive(wait=3)
    assert message.body == "later"
    assert 0.5 <= time.monotonic() - started < 2.5


def test_deduplication_uses_the_stream_window(engine: NatsEngine) -> None:
    queue = _queue(engine, dedup_window=1)
    first = queue.send("a", dedup_id="k")
    assert queue.send("b", dedup_id="k") == first
    time.sleep(1.3)
    assert queue.send("c", dedup_id="k") != first


async def test_the_async_store_recovers_after_the_connection_drops() -> None:
    engine = seawall.connect(require_engine("nats"))
    assert isinstance(engine, NatsEngine)
    name = f"it-{uuid.uuid4().hex[:10]}"
    try:
        queue = open_queue(engine, name)
        await queue.asend("before")
        assert drop_client_sockets(4222) >= 1
        deadline = time.monotonic() + 10
        while True:
            try:
                await queue.asend("after")
                break
            except seawall.errors.EngineError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        bodies = [m.body for m in await queue.areceive(10, wait=2)]
        assert "before" in bodies
        assert "after" in bodies
    finally:
        await engine.aclose()
        cleanup = seawall.connect(require_engine("nats"))
        forget_queue(cleanup, name)  # type: ignore[arg-type]
        cleanup.close()


def test_an_unreachable_server_fails_fast_with_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = seawall.connect(f"nats://127.0.0.1:{port}?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match=f"127.0.0.1:{port}"):
        engine.queue("nowhere")
    assert time.monotonic() - started < 3
    engine.close()


@pytest.fixture
async def async_engine() -> AsyncIterator[NatsEngine]:
    opened = seawall.connect(require_engine("nats"))
    assert isinstance(opened, NatsEngine)
    yield opened
    await opened.aclose()
