"""Real-time long-polls of topics: a publish from another thread wakes a waiting receive.

Bounded real waits on SQLite (in-process doorbell), PostgreSQL (LISTEN/NOTIFY) and
Redis (``XREAD BLOCK``), with the engines' own clocks (no injected clock).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import seawall
from _engines import require_engine
from seawall.engines import Engine
from seawall.messaging.topic import Topic, open_topic


def _sqlite(tmp_path: Path) -> Engine:
    return seawall.connect(f"sqlite:///{tmp_path / 'topics.db'}")


def _postgres(tmp_path: Path) -> Engine:
    return seawall.connect(require_engine("postgres"))


def _redis(tmp_path: Path) -> Engine:
    return seawall.connect(require_engine("redis"))


@pytest.fixture(
    params=[
        pytest.param(_sqlite, id="sqlite"),
        pytest.param(_postgres, id="postgres", marks=pytest.mark.engine("postgres")),
        pytest.param(_redis, id="redis", marks=pytest.mark.engine("redis")),
    ]
)
async def topic(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Topic]:
    connect: Callable[[Path], Engine] = request.param
    engine = connect(tmp_path)
    name = f"lp-{uuid.uuid4().hex[:10]}"
    opened = open_topic(engine, name)
    yield opened
    opened.close()
    if engine.kind == "postgres":
        with engine.connection() as conn:  # type: ignore[attr-defined]
            for table in ("seawall_topic_messages", "seawall_topic_pending", "seawall_topic_dead"):
                conn.execute(f"DELETE FROM {table} WHERE topic = %s", (name,))
            conn.execute("DELETE FROM seawall_topic_groups WHERE topic = %s", (name,))
            conn.execute("DELETE FROM seawall_topics WHERE name = %s", (name,))
    elif engine.kind == "redis":
        from seawall.messaging.topic.redis import forget_topic

        forget_topic(engine, name)  # type: ignore[arg-type]
    await engine.aclose()  # the asyncio clients close on the loop that opened them


def test_a_waiting_receive_wakes_on_a_publish(topic: Topic) -> None:
    group = topic.group("g")
    timer = threading.Timer(0.2, topic.publish, args=("wake",))
    timer.start()
    started = time.monotonic()
    try:
        messages = group.receive(1, wait=10.0)
    finally:
        timer.join()
    assert [m.body for m in messages] == ["wake"]
    assert time.monotonic() - started < 5.0
    group.ack(messages[0])


def test_a_waiting_receive_gives_up_after_its_wait(topic: Topic) -> None:
    group = topic.group("g")
    started = time.monotonic()
    assert group.receive(1, wait=0.3) == []
    assert 0.25 <= time.monotonic() - started < 5.0


def test_an_expired_delivery_comes_back_in_real_time(topic: Topic) -> None:
    group = topic.group("g", visibility_timeout=0.3)
    topic.publish("job")
    (first,) = group.receive(1)
    (second,) = group.receive(1, wait=5.0)
    assert (second.offset, second.delivery_count) == (first.offset, 2)
    group.ack(second)


async def test_an_async_receive_wakes_on_a_publish(topic: Topic) -> None:
    group = await topic.agroup("g")

    async def publish_later() -> None:
        await asyncio.sleep(0.2)
        await topic.apublish("wake")

    task = asyncio.ensure_future(publish_later())
    messages = await group.areceive(1, wait=10.0)
    await task
    assert [m.body for m in messages] == ["wake"]
