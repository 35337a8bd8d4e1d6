"""The PostgreSQL queue store on the real server: its own clock, LISTEN/NOTIFY, reconnects.

The conformance suite runs the contract with a manual clock; these tests use the
server's ``clock_timestamp()`` and short real waits (each well under a second or two)
to check what only a live server shows: visibility deadlines and delays on the
engine's clock, idle consumers woken by ``NOTIFY`` without polling, the listener and
pooled connections recovering after ``pg_terminate_backend``, and asyncio
transactions. Tables live in a schema of this module, dropped at the end.
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
from seawall.engines.postgres import PostgresEngine
from seawall.errors import ConfigurationError, EngineError
from seawall.messaging.queue import MessageDeduplicated, Queue, QueueStats, open_queue
from seawall.messaging.queue.postgres import SAFETY_POLL, PostgresQueueStore

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.engine("postgres")

SCHEMA = f"seawall_queue_it_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from _engines import require_engine

    url = require_engine("postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def _url(base: str, application: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}application_name={application}&options=-csearch_path%3D{SCHEMA}"


@pytest.fixture
def application() -> str:
    """A name that marks this test's connections, so only they are ever terminated."""
    return f"seawall-it-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def url(base_url: str, application: str) -> str:
    return _url(base_url, application)


@pytest.fixture
def engine(url: str) -> Iterator[PostgresEngine]:
    opened = seawall.connect(url)
    assert isinstance(opened, PostgresEngine)
    yield opened
    opened.close()


@pytest.fixture
def make_queue(engine: PostgresEngine) -> Iterator[Callable[..., Queue]]:
    opened: list[Queue] = []

    def make(name: str | None = None, **options: Any) -> Queue:
        queue = open_queue(engine, name or f"it-{uuid.uuid4().hex[:12]}", **options)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.purge()
        queue.dead_letters.purge()
        queue.close()


def _terminate(base_url: str, application: str, only_pid: int | None = None) -> int:
    """Terminate this test's server connections (one by pid, or all of them)."""
    with psycopg.connect(base_url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND (%s::int IS NULL OR pid = %s::int)",
            (application, only_pid, only_pid),
        ).fetchall()
    return len(rows)


def _eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        time.sleep(0.01)


class _Receiver(threading.Thread):
    """A consumer blocked in ``receive(wait=...)``, timing how long it waited."""

    def __init__(self, queue: Queue, wait: float) -> None:
        super().__init__(daemon=True)
        self.queue = queue
        self.wait = wait
        self.bodies: list[Any] = []
        self.waited = -1.0
        self.error: BaseException | None = None

    def run(self) -> None:
        started = time.monotonic()
        try:
            messages = self.queue.receive(10, wait=self.wait)
            for message in messages:
                self.bodies.append(message.body)
                message.ack()
        except BaseException as exc:  # reported by the test
            self.error = exc
        self.waited = time.monotonic() - started


# -- the server's clock --------------------------------------------------------------------


def test_visibility_deadlines_use_the_server_clock(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.send("work")
    (first,) = queue.receive(visibility_timeout=0.3)
    assert queue.receive() == []
    assert queue.stats() == QueueStats(ready=0, in_flight=1, delayed=0, dead=0)
    started = time.monotonic()
    (again,) = queue.receive(wait=5)  # wakes when the deadline passes, not on a poll tick
    waited = time.monotonic() - started
    assert again.id == first.id
    assert again.delivery_count == 2
    assert 0.2 <= waited < 0.3 + SAFETY_POLL * 0.7
    again.ack()


def test_delays_use_the_server_clock(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.send("later", delay=0.3)
    assert queue.receive() == []
    assert queue.stats().delayed == 1
    started = time.monotonic()
    (message,) = queue.receive(wait=5)
    assert message.body == "later"
    assert 0.2 <= time.monotonic() - started < 0.3 + SAFETY_POLL * 0.7
    assert abs(message.enqueued_at - time.time()) < 5  # epoch seconds from the server


# -- LISTEN/NOTIFY ------------------------------------------------------------------------


def test_an_idle_receive_is_woken_by_a_send_from_another_process(
    make_queue: Callable[..., Queue], url: str
) -> None:
    queue = make_queue()
    receiver = _Receiver(queue, wait=10)
    receiver.start()
    store = queue.store
    assert isinstance(store, PostgresQueueStore)
    _eventually(store.listener.ready.is_set)
    time.sleep(0.1)  # let the receiver settle into its wait
    with seawall.connect(url) as other:  # another engine: only NOTIFY can wake it
        sent_at = time.monotonic()
        open_queue(other, queue.name).send("wake up")
        receiver.join(timeout=10)
    woke_after = time.monotonic() - sent_at
    assert receiver.error is None
    assert receiver.bodies == ["wake up"]
    assert woke_after < SAFETY_POLL * 0.8  # the notification, not the safety poll


def test_an_idle_receive_does_not_poll_in_a_loop(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    store = queue.store
    assert isinstance(store, PostgresQueueStore)
    core: Any = store._core
    claim = core.claim
    looks: list[float] = []

    def counted(*args: Any) -> Any:
        looks.append(time.monotonic())
        return claim(*args)

    core.claim = counted
    assert queue.receive(wait=2.5) == []
    # One look at the start, one per safety interval, one at the end: not a storm.
    assert 2 <= len(looks) <= 2 + int(2.5 / SAFETY_POLL) + 1


def test_the_listener_reconnects_after_its_connection_is_terminated(
    make_queue: Callable[..., Queue], base_url: str, application: str, url: str
) -> None:
    queue = make_queue()
    store = queue.store
    assert isinstance(store, PostgresQueueStore)
    receiver = _Receiver(queue, wait=15)
    receiver.start()
    listener = store.listener
    _eventually(listener.ready.is_set)
    first_pid, connects = listener.backend_pid, listener.connects
    assert first_pid is not None
    assert _terminate(base_url, application, only_pid=first_pid) == 1
    _eventually(lambda: listener.connects > connects and listener.ready.is_set())
    assert listener.backend_pid != first_pid
    with seawall.connect(url) as other:
        sent_at = time.monotonic()
        open_queue(other, queue.name).send("after the cut")
        receiver.join(timeout=15)
    assert receiver.error is None
    assert receiver.bodies == ["after the cut"]
    assert time.monotonic() - sent_at < SAFETY_POLL * 0.8


def test_dropped_pooled_connections_are_replaced_and_nothing_acknowledged_is_lost(
    make_queue: Callable[..., Queue], base_url: str, application: str
) -> None:
    queue = make_queue(visibility_timeout=60)
    queue.send_many(list(range(20)))
    seen: list[int] = []
    for _ in range(10):
        (message,) = queue.receive()
        seen.append(message.body)
        message.ack()
    assert _terminate(base_url, application) >= 1  # the pool's connections die
    queue.send_many(list(range(20, 25)))  # the producer carries on
    while batch := queue.receive(3):
        seen.extend(message.body for message in batch)
        queue.ack_many(batch)
    assert sorted(seen) == list(range(25))  # every message acknowledged exactly once
    assert queue.stats() == QueueStats(0, 0, 0, 0)


def test_concurrent_sends_with_one_dedup_id_store_one_message(
    make_queue: Callable[..., Queue], engine: PostgresEngine
) -> None:
    queue = make_queue()
    deduplicated: list[str] = []
    queue.events.subscribe(
        lambda event: (
            deduplicated.append(event.message_id)
            if isinstance(event, MessageDeduplicated)
            else None
        )
    )
    ids: list[str] = []
    barrier = threading.Barrier(6)

    def send(number: int) -> None:
        barrier.wait()
        ids.append(queue.send({"attempt": number}, dedup_id="payment-42"))

    threads = [threading.Thread(target=send, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(ids) == 6
    assert len(set(ids)) == 1
    assert queue.stats().ready == 1
    assert deduplicated == [ids[0]] * 5


# -- options and transactions -------------------------------------------------------------


def test_durable_acks_is_checked_and_reported(
    make_queue: Callable[..., Queue], engine: PostgresEngine
) -> None:
    with pytest.raises(ConfigurationError, match="durable_acks"):
        make_queue(durable_acks="yes")
    with pytest.raises(ConfigurationError, match="synchronous"):
        make_queue(synchronous="full")  # a SQLite option: the error lists ours
    durable = make_queue(durable_acks=True)
    durable.send("kept")
    (message,) = durable.receive()
    message.ack()
    assert "durable_acks=True" in repr(durable.store)


def test_a_transaction_of_another_kind_is_refused(
    make_queue: Callable[..., Queue], tmp_path: Any
) -> None:
    queue = make_queue()
    other: Any = seawall.connect(f"sqlite:///{tmp_path / 'other.db'}")
    with other.transaction() as tx, pytest.raises(ConfigurationError, match="PostgreSQL"):
        queue.send("x", transaction=tx)
    other.close()
    assert queue.stats().total == 0


def test_a_caller_transaction_that_fails_leaves_nothing(
    make_queue: Callable[..., Queue], engine: PostgresEngine
) -> None:
    queue = make_queue()

    def fail() -> None:
        with engine.transaction() as tx:
            queue.send("with the bad row", transaction=tx)
            tx.execute("SELECT 1 / 0")

    with pytest.raises(EngineError):
        fail()
    assert queue.stats().total == 0


async def test_async_sends_and_acks_join_an_async_transaction(url: str) -> None:
    engine = seawall.connect(url)
    assert isinstance(engine, PostgresEngine)
    queue = open_queue(engine, f"it-async-{uuid.uuid4().hex[:8]}")
    try:

        async def fail() -> None:
            async with engine.atransaction() as tx:
                await queue.asend("rolled back", transaction=tx)
                raise RuntimeError("business rule failed")

        with pytest.raises(RuntimeError):
            await fail()
        assert (await queue.astats()).total == 0
        async with engine.atransaction() as tx:
            await queue.asend_many(["a", "b"], transaction=tx)
        batch = await queue.areceive(2)
        assert [message.body for message in batch] == ["a", "b"]
        with engine.transaction() as sync_tx, pytest.raises(ConfigurationError, match="asyncio"):
            await queue.aack(batch[0], transaction=sync_tx)
        async with engine.atransaction() as tx:
            await queue.aack_many(batch, transaction=tx)
        assert await queue.astats() == QueueStats(0, 0, 0, 0)
    finally:
        await queue.apurge()
        await queue.aclose()
        await engine.aclose()


async def test_an_async_idle_receive_is_woken_by_notify(url: str) -> None:
    engine = seawall.connect(url)
    other = seawall.connect(url)
    queue = open_queue(engine, f"it-async-{uuid.uuid4().hex[:8]}")
    try:

        async def send_later() -> float:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(open_queue(other, queue.name).send, "async wake")
            return time.monotonic()

        sender = asyncio.create_task(send_later())
        messages = await queue.areceive(wait=10)
        woke_after = time.monotonic() - await sender
        assert [message.body for message in messages] == ["async wake"]
        assert woke_after < SAFETY_POLL * 0.8
        await messages[0].aack()
        assert await queue.areceive(wait=0.2) == []
    finally:
        await queue.apurge()
        await queue.aclose()
        await engine.aclose()
        other.close()


# -- the idle wait, decided without I/O ---------------------------------------------------


@pytest.mark.parametrize(
    ("remaining", "due_in", "listening", "expected"),
    [
        (10.0, None, True, SAFETY_POLL),  # nothing due: the safety interval
        (0.2, None, True, 0.2),  # never past the caller's wait
        (10.0, 0.3, True, 0.3),  # wake when the next message comes due
        (10.0, 0.0001, True, 0.002),  # but not in a spin
        (10.0, -1.0, True, 0.05),  # due yet locked by someone else: a short pause
        (10.0, None, False, 0.05),  # listener reconnecting: short polls
    ],
)
def test_an_idle_receive_waits_for_the_next_event_only(
    remaining: float, due_in: float | None, listening: bool, expected: float
) -> None:
    from seawall.messaging.queue.postgres import _pause

    assert _pause(remaining, due_in, listening) == pytest.approx(expected)
