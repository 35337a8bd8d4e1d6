"""The RabbitMQ queue store on the real server: confirms, delivery limit, TTL delays, reconnects.

The conformance suite runs the contract with a manual clock; visibility timers and the
TTL delay queues run in real time, so these tests use short real waits. Every queue a
test declares is deleted after it.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

import seawall
from _engines import require_engine
from _sockets import drop_client_sockets
from seawall.engines.amqp import AmqpEngine
from seawall.errors import EngineError, EngineUnavailableError, UnsupportedEngineError
from seawall.messaging.queue import Queue, QueueStats, StaleReceiptError, open_queue
from seawall.messaging.queue.rabbitmq import forget_queue, queue_names_of

pytest.importorskip("aio_pika")

pytestmark = pytest.mark.engine("rabbitmq")


@pytest.fixture
def engine() -> Iterator[AmqpEngine]:
    opened = seawall.connect(require_engine("rabbitmq"))
    assert isinstance(opened, AmqpEngine)
    names: list[str] = []
    opened.created = names  # type: ignore[attr-defined]
    yield opened
    for name in names:
        forget_queue(opened, name)
    opened.close()


def _name(engine: AmqpEngine) -> str:
    name = f"it-{uuid.uuid4().hex[:10]}"
    engine.created.append(name)  # type: ignore[attr-defined]
    return name


def _queue(engine: AmqpEngine, **options: object) -> Queue:
    return open_queue(engine, _name(engine), **options)  # type: ignore[arg-type]


def test_the_queue_is_a_quorum_queue_with_a_dead_letter_queue(engine: AmqpEngine) -> None:
    queue = _queue(engine, max_deliveries=3)
    main, dead, delays = queue_names_of(queue.name)

    async def declared() -> list[int]:
        connection = await engine.connection()
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        counts = []
        for name in (main, dead, *delays):
            ok = await raw.queue_declare(name, passive=True)
            counts.append(int(ok.message_count or 0))
        await channel.close()
        return counts

    queue.send("one")
    assert engine.run(declared())[0] == 1
    assert queue.name in seawall.messaging.queue.list_queues(engine)


def test_every_send_waits_for_its_publisher_confirm(engine: AmqpEngine) -> None:
    # A queue that holds one message and refuses the rest: RabbitMQ nacks the second
    # publish, and only a producer waiting for confirms can notice.
    name = _name(engine)
    main, _, _ = queue_names_of(name)

    async def declare_small() -> None:
        connection = await engine.connection()
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        await raw.queue_declare(
            main,
            durable=True,
            arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        )
        await channel.close()

    engine.run(declare_small())
    queue = open_queue(engine, name)
    queue.send("fits")
    with pytest.raises(EngineError, match="did not confirm"):
        queue.send("refused")
    assert queue.stats().ready == 1


def test_redelivery_after_the_visibility_timeout(engine: AmqpEngine) -> None:
    queue = _queue(engine)
    queue.send("work")
    (first,) = queue.receive(visibility_timeout=0.3)
    assert queue.receive() == []
    (second,) = queue.receive(visibility_timeout=5, wait=3)
    assert (second.id, second.delivery_count) == (first.id, 2)
    with pytest.raises(StaleReceiptError):
        first.ack()
    second.ack()
    assert queue.stats() == QueueStats(0, 0, 0, 0)


def test_extend_visibility_pushes_the_timer_back(engine: AmqpEngine) -> None:
    queue = _queue(engine)
    queue.send("long")
    (message,) = queue.receive(visibility_timeout=0.5)
    for _ in range(3):
        time.sleep(0.3)
        message.extend_visibility(0.5)
    assert queue.receive() == []
    message.ack()


def test_max_deliveries_dead_letters_after_the_last_timeout(engine: AmqpEngine) -> None:
    queue = _queue(engine, max_deliveries=2)
    message_id = queue.send({"n": 1}, headers={"trace": "t"})
    queue.receive(visibility_timeout=5)[0].nack(error="boom")
    (second,) = queue.receive(visibility_timeout=0.3)
    assert second.delivery_count == 2
    time.sleep(0.5)  # the last delivery expires unsettled
    assert queue.receive(wait=0.5) == []
    (dead,) = queue.dead_letters.list()
    assert (dead.id, dead.delivery_count, dead.last_error) == (message_id, 2, "boom")
    assert dict(dead.headers) == {"trace": "t"}
    assert "visibility timeout expired" in dead.reason
    assert queue.dead_letters.redrive() == 1
    assert queue.receive()[0].delivery_count == 1


def test_delays_use_ttl_queues_in_real_time(engine: AmqpEngine) -> None:
    queue = _queue(engine)
    queue.send("later", delay=0.5)
    queue.send("now")
    assert [m.body for m in queue.receive(5)] == ["now"]
    assert queue.stats().delayed == 1
    started = time.monotonic()
    (message,) = queue.receive(wait=5)
    assert message.body == "later"
    assert 0.4 <= time.monotonic() - started < 4
    message.nack(delay=0.3)
    (again,) = queue.receive(wait=5)
    assert again.delivery_count == 2


def test_dedup_and_peek_are_refused_clearly(engine: AmqpEngine) -> None:
    queue = _queue(engine)
    with pytest.raises(UnsupportedEngineError, match="dedup_id"):
        queue.send("x", dedup_id="k")
    with pytest.raises(UnsupportedEngineError, match="peek"):
        queue.peek()
    assert queue.stats().total == 0


async def test_the_async_store_recovers_after_the_connection_drops() -> None:
    engine = seawall.connect(require_engine("rabbitmq"))
    assert isinstance(engine, AmqpEngine)
    name = f"it-{uuid.uuid4().hex[:10]}"
    try:
        queue = open_queue(engine, name)
        await queue.asend("before")
        (held,) = await queue.areceive(visibility_timeout=60)
        assert drop_client_sockets(5672) >= 1
        deadline = time.monotonic() + 15
        while True:
            try:
                await queue.asend("after")
                break
            except EngineError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        with pytest.raises(StaleReceiptError):  # its channel closed with the connection
            await held.aack()
        bodies = sorted(m.body for m in await queue.areceive(10, wait=3))
        assert bodies == ["after", "before"]
    finally:
        await engine.aclose()
        cleanup = seawall.connect(require_engine("rabbitmq"))
        forget_queue(cleanup, name)  # type: ignore[arg-type]
        cleanup.close()


def test_an_unreachable_server_fails_fast_with_the_url_redacted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = seawall.connect(f"amqp://guest:secret@127.0.0.1:{port}/?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match=f"127.0.0.1:{port}") as caught:
        engine.queue("nowhere")
    assert "secret" not in str(caught.value)
    assert time.monotonic() - started < 3
    engine.close()
