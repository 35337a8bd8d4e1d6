"""The Redis queue store on the real server: its own clock, XREAD BLOCK wake-ups, reconnects.

The conformance suite runs the contract with a manual clock; these tests use Redis
``TIME`` and short real waits to check what only a live server shows: deadlines and
delays on the engine's clock, waiting receivers woken by new stream entries, the
streams' pending lists (``XPENDING``) tracking deliveries and ``XCLAIM`` reclaims, and
recovery after ``CLIENT KILL`` of our connections. Every key is deleted after each test.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.engines.redis import RedisEngine
from seawall.errors import ConfigurationError
from seawall.messaging.queue import Queue, QueueStats, open_queue
from seawall.messaging.queue.redis import (
    MAX_BLOCK,
    REGISTRY_KEY,
    RedisQueueStore,
    queue_key_prefix,
    queue_keys_pattern,
)

pytest.importorskip("redis")

pytestmark = pytest.mark.engine("redis")


@pytest.fixture
def client_name() -> str:
    """The name of this test's connections, so only they are ever killed."""
    return f"seawall-it-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def engine(redis_url: str, client_name: str) -> Iterator[RedisEngine]:
    opened = seawall.connect(redis_url, client_name=client_name)
    assert isinstance(opened, RedisEngine)
    yield opened
    opened.close()


def _forget(engine: RedisEngine, name: str) -> None:
    client = engine.client
    keys = list(client.scan_iter(match=queue_keys_pattern(name), count=1000))
    if keys:
        client.delete(*keys)
    client.srem(REGISTRY_KEY, name)


@pytest.fixture
def make_queue(engine: RedisEngine) -> Iterator[Callable[..., Queue]]:
    opened: list[Queue] = []

    def make(name: str | None = None, **options: Any) -> Queue:
        queue = open_queue(engine, name or f"it-{uuid.uuid4().hex[:12]}", **options)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()
        _forget(engine, queue.name)


def _kill(engine: RedisEngine, client_name: str) -> int:
    """``CLIENT KILL`` every connection of this test (found by its client name)."""
    with seawall.connect(engine.url) as admin:
        client: Any = admin.client  # type: ignore[attr-defined]
        ids = [entry["id"] for entry in client.client_list() if entry["name"] == client_name]
        for connection_id in ids:
            client.client_kill_filter(_id=connection_id)
    return len(ids)


class _Receiver(threading.Thread):
    """A consumer blocked in ``receive(wait=...)``."""

    def __init__(self, queue: Queue, wait: float) -> None:
        super().__init__(daemon=True)
        self.queue = queue
        self.wait = wait
        self.bodies: list[Any] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for message in self.queue.receive(10, wait=self.wait):
                self.bodies.append(message.body)
                message.ack()
        except BaseException as exc:  # reported by the test
            self.error = exc


def _waiting(engine: RedisEngine, client_name: str) -> bool:
    """True once one of our connections is blocked in XREAD."""
    return any(
        entry["name"] == client_name and entry.get("cmd") == "xread"
        for entry in engine.client.client_list()
    )


def _eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        time.sleep(0.01)


# -- the server's clock --------------------------------------------------------------------


def test_visibility_deadlines_use_redis_time(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.send("work")
    (first,) = queue.receive(visibility_timeout=0.3)
    assert queue.receive() == []
    started = time.monotonic()
    (again,) = queue.receive(wait=5)  # the block ends at the deadline
    assert 0.2 <= time.monotonic() - started < 1.0
    assert (again.id, again.delivery_count) == (first.id, 2)
    with pytest.raises(seawall.messaging.queue.StaleReceiptError):
        first.ack()
    again.ack()


def test_delays_use_redis_time(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.send("later", delay=0.3)
    assert queue.receive() == []
    assert queue.stats() == QueueStats(ready=0, in_flight=0, delayed=1, dead=0)
    started = time.monotonic()
    (message,) = queue.receive(wait=5)
    assert message.body == "later"
    assert 0.2 <= time.monotonic() - started < 1.0
    assert abs(message.enqueued_at - time.time()) < 5  # epoch seconds from Redis TIME


# -- waiting ------------------------------------------------------------------------------


def test_a_waiting_receive_is_woken_by_a_send_from_another_client(
    make_queue: Callable[..., Queue], engine: RedisEngine, client_name: str, redis_url: str
) -> None:
    queue = make_queue()
    receiver = _Receiver(queue, wait=10)
    receiver.start()
    _eventually(lambda: _waiting(engine, client_name))
    with seawall.connect(redis_url) as other:
        sent_at = time.monotonic()
        open_queue(other, queue.name).send("wake up", priority=7)
        receiver.join(timeout=10)
    assert receiver.error is None
    assert receiver.bodies == ["wake up"]
    assert time.monotonic() - sent_at < 1.0  # XREAD BLOCK returned at the new entry


def test_a_nack_wakes_a_waiting_receive(
    make_queue: Callable[..., Queue], engine: RedisEngine, client_name: str
) -> None:
    queue = make_queue()
    queue.send("retry me")
    (held,) = queue.receive(visibility_timeout=60)
    receiver = _Receiver(queue, wait=10)
    receiver.start()
    _eventually(lambda: _waiting(engine, client_name))
    nacked_at = time.monotonic()
    held.nack(error="first try failed")
    receiver.join(timeout=10)
    assert receiver.bodies == ["retry me"]
    assert time.monotonic() - nacked_at < 1.0


def test_a_killed_waiting_connection_recovers(
    make_queue: Callable[..., Queue], engine: RedisEngine, client_name: str, redis_url: str
) -> None:
    queue = make_queue()
    receiver = _Receiver(queue, wait=10)
    receiver.start()
    _eventually(lambda: _waiting(engine, client_name))
    assert _kill(engine, client_name) >= 1
    with seawall.connect(redis_url) as other:
        open_queue(other, queue.name).send("after the cut")
        receiver.join(timeout=10)
    assert receiver.error is None
    assert receiver.bodies == ["after the cut"]


def test_killed_connections_lose_nothing_acknowledged(
    make_queue: Callable[..., Queue], engine: RedisEngine, client_name: str
) -> None:
    queue = make_queue(visibility_timeout=60)
    queue.send_many(list(range(20)))
    seen: list[int] = []
    for _ in range(10):
        (message,) = queue.receive()
        seen.append(message.body)
        message.ack()
    assert _kill(engine, client_name) >= 1
    queue.send_many(list(range(20, 25)))
    while batch := queue.receive(3):
        seen.extend(message.body for message in batch)
        queue.ack_many(batch)
    assert sorted(seen) == list(range(25))
    assert queue.stats() == QueueStats(0, 0, 0, 0)


# -- the streams underneath ---------------------------------------------------------------


def test_deliveries_live_in_the_consumer_groups_pending_list(
    make_queue: Callable[..., Queue], engine: RedisEngine
) -> None:
    clock = ManualClock(1000.0)
    queue = make_queue(clock=clock, visibility_timeout=10)
    queue.send("tracked", priority=3)
    stream = queue_key_prefix(queue.name) + "s3"
    client = engine.client
    (first,) = queue.receive()
    (pending,) = client.xpending_range(stream, "seawall", min="-", max="+", count=10)
    assert pending["times_delivered"] == 1
    clock.advance(10)  # the deadline passes: the next receive reclaims it with XCLAIM
    (second,) = queue.receive()
    assert second.id == first.id
    (pending,) = client.xpending_range(stream, "seawall", min="-", max="+", count=10)
    assert pending["times_delivered"] == 2
    second.ack()
    assert client.xpending(stream, "seawall")["pending"] == 0
    assert client.xlen(stream) == 0
    keys = {key.decode() for key in client.scan_iter(match=queue_keys_pattern(queue.name))}
    assert keys
    assert all(f"{{{queue.name}}}" in key for key in keys)  # one cluster slot


def test_dead_letters_are_a_stream_in_the_order_they_died(
    make_queue: Callable[..., Queue], engine: RedisEngine
) -> None:
    queue = make_queue(max_deliveries=1)
    ids = queue.send_many(["a", "b"])
    for message in reversed(queue.receive(2)):
        message.nack(error=f"bad {message.body}")
    dead_stream = queue_key_prefix(queue.name) + "dead"
    entries = engine.client.xrange(dead_stream)
    assert [fields[b"i"].decode() for _, fields in entries] == list(reversed(ids))
    assert [dead.id for dead in queue.dead_letters.list()] == list(reversed(ids))
    assert queue.dead_letters.redrive() == 2
    assert engine.client.xlen(dead_stream) == 0


def test_decoded_responses_are_refused(redis_url: str) -> None:
    with (
        seawall.connect(redis_url, decode_responses=True) as engine,
        pytest.raises(ConfigurationError, match="decode_responses"),
    ):
        open_queue(engine, "never-opened")


async def test_an_async_waiting_receive_is_woken_by_a_send(redis_url: str) -> None:
    engine = seawall.connect(redis_url)
    queue = open_queue(engine, f"it-async-{uuid.uuid4().hex[:8]}")
    try:
        store = queue.async_store
        assert not isinstance(store, RedisQueueStore)

        async def send_later() -> float:
            await asyncio.sleep(0.3)
            await queue.asend("async wake")
            return time.monotonic()

        sender = asyncio.create_task(send_later())
        messages = await queue.areceive(wait=10)
        woke_after = time.monotonic() - await sender
        assert [message.body for message in messages] == ["async wake"]
        assert woke_after < 1.0
        await messages[0].aack()
        assert await queue.areceive(wait=0.2) == []
    finally:
        await queue.aclose()
        _forget(engine, queue.name)  # type: ignore[arg-type]
        await engine.aclose()


@pytest.mark.parametrize(
    ("remaining", "due_in", "expected"),
    [
        (30.0, None, MAX_BLOCK),  # nothing due: block up to the cap, then look again
        (0.5, None, 0.5),  # never past the caller's wait
        (30.0, 0.25, 0.25),  # wake when the next delay or deadline comes due
        (30.0, -0.1, 0.001),  # already due: look again at once
    ],
)
def test_a_waiting_receive_blocks_until_the_next_event_only(
    remaining: float, due_in: float | None, expected: float
) -> None:
    from seawall.messaging.queue.redis import _block_for

    assert _block_for(remaining, due_in) == pytest.approx(expected)
