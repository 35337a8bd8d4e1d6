"""Queues on brokers: seawall on RabbitMQ and NATS JetStream beside the raw drivers, one run.

    python benchmarks/messaging_brokers.py                 # 10,000 messages per case
    BENCH_SCALE=0.0005 python benchmarks/messaging_brokers.py   # smoke: a few seconds

10,000 messages of 100 bytes (scaled by ``BENCH_SCALE``), one asyncio task, one
message at a time, a fresh queue per library:

* produce: send every message, each waiting for the broker's confirmation;
* receive+ack: take one message and acknowledge it, until the queue is empty.

RabbitMQ: seawall's ``asend``/``areceive``/``aack`` beside raw aio-pika on the same
kind of queue (a durable quorum queue), persistent messages, publisher confirms,
``basic.get`` + ack. NATS: seawall beside raw nats-py on a work-queue stream with a
durable pull consumer, ``js.publish`` (waits for the PubAck) and ``fetch(1)`` +
``ack_sync``. Brokers that do not answer are skipped with a note. Everything created
is deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Result, dump_json, ops_for, print_table

MESSAGES = ops_for(10_000)
PAYLOAD = b"x" * 100
NATS_URL = os.environ.get("SEAWALL_TEST_NATS_URL", "nats://127.0.0.1:4222")
RABBITMQ_URL = os.environ.get("SEAWALL_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


async def _timed(operation: Callable[[], Awaitable[object]], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await operation()
    return time.perf_counter() - started


def _result(bench: str, lib: str, seconds: float, count: int, config: str) -> Result:
    ns = seconds * 1e9 / count
    return Result(bench, lib, ns, count, 1, ns, ns, config)


async def _seawall(url: str, broker: str) -> list[Result]:
    import seawall

    engine = seawall.connect(url)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    queue = engine.queue(name, codec="bytes")
    try:
        produce = await _timed(lambda: queue.asend(PAYLOAD), MESSAGES)
        received = 0

        async def take() -> None:
            nonlocal received
            (message,) = await queue.areceive()
            await message.aack()
            received += 1

        consume = await _timed(take, MESSAGES)
        assert received == MESSAGES
    finally:
        await queue.aclose()
        await engine.aclose()
        cleanup = seawall.connect(url)
        if broker == "nats":
            from seawall.messaging.queue.nats import forget_queue as forget_nats

            forget_nats(cleanup, name)  # type: ignore[arg-type]
        else:
            from seawall.messaging.queue.rabbitmq import forget_queue as forget_rabbit

            forget_rabbit(cleanup, name)  # type: ignore[arg-type]
        cleanup.close()
    return [
        _result(f"{broker} produce", "seawall", produce, MESSAGES, "confirmed send"),
        _result(f"{broker} receive+ack", "seawall", consume, MESSAGES, "one at a time"),
    ]


async def _aio_pika() -> list[Result]:
    import aio_pika

    connection = await aio_pika.connect_robust(RABBITMQ_URL)
    channel = await connection.channel(publisher_confirms=True)
    name = f"bench-raw-{uuid.uuid4().hex[:8]}"
    queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    try:

        async def publish() -> None:
            await channel.default_exchange.publish(
                aio_pika.Message(PAYLOAD, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=name,
            )

        produce = await _timed(publish, MESSAGES)

        async def take() -> None:
            message = await queue.get(no_ack=False)
            await message.ack()

        consume = await _timed(take, MESSAGES)
    finally:
        await queue.delete(if_unused=False, if_empty=False)
        await connection.close()
    return [
        _result("rabbitmq produce", "aio-pika", produce, MESSAGES, "quorum, persistent, confirms"),
        _result("rabbitmq receive+ack", "aio-pika", consume, MESSAGES, "basic.get + ack"),
    ]


async def _nats_py() -> list[Result]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    stream = f"BENCH_RAW_{uuid.uuid4().hex[:8]}"
    subject = f"bench.{stream}"
    await js.add_stream(
        StreamConfig(name=stream, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE)
    )
    await js.add_consumer(
        stream, ConsumerConfig(durable_name="work", ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
    )
    try:
        produce = await _timed(lambda: js.publish(subject, PAYLOAD), MESSAGES)
        subscription = await js.pull_subscribe_bind("work", stream)

        async def take() -> None:
            (message,) = await subscription.fetch(1, timeout=5)
            await message.ack_sync()

        consume = await _timed(take, MESSAGES)
    finally:
        await js.delete_stream(stream)
        await client.close()
    return [
        _result("nats produce", "nats-py", produce, MESSAGES, "js.publish (PubAck)"),
        _result("nats receive+ack", "nats-py", consume, MESSAGES, "fetch(1) + ack_sync"),
    ]


async def main() -> list[Result]:
    results: list[Result] = []
    if _answers("127.0.0.1", 5672):
        results += await _seawall(RABBITMQ_URL, "rabbitmq")
        results += await _aio_pika()
    else:
        print("RabbitMQ does not answer on 127.0.0.1:5672: skipped")
    if _answers("127.0.0.1", 4222):
        results += await _seawall(NATS_URL, "nats")
        results += await _nats_py()
    else:
        print("NATS does not answer on 127.0.0.1:4222: skipped")
    return results


if __name__ == "__main__":
    measured = asyncio.run(main())
    measured.sort(key=lambda result: result.bench)
    print_table(f"Queues on brokers: {MESSAGES:,} messages of 100 bytes, one run", measured)
    dump_json(measured)
