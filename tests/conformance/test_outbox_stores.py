"""The outbox-store and inbox-store contracts, run against every engine (memory, SQLite, PostgreSQL).

Each test gets stores with unique tables (dropped afterwards) and a manual clock as
their time source, so leases, delays and retention expire without sleeping. SQL
engines also prove that writes join a caller's transaction, that relays running in
parallel threads never publish a message twice nor break per-key order, and (on
PostgreSQL) that a relay in another process would be woken by NOTIFY.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.errors import ConfigurationError
from seawall.messaging.inbox import Inbox, InboxStore, open_inbox_store
from seawall.messaging.outbox import (
    NewMessage,
    Outbox,
    OutboxMessage,
    OutboxStats,
    OutboxStore,
    open_outbox_store,
)


@dataclass(frozen=True)
class EngineUnderTest:
    """How to open one engine."""

    name: str
    url: Callable[[Path], str]
    transactions: bool


ENGINES = [
    pytest.param(EngineUnderTest("memory", lambda tmp: "memory://", False), id="memory"),
    pytest.param(
        EngineUnderTest("sqlite", lambda tmp: f"sqlite:///{tmp / 'outbox.db'}", True), id="sqlite"
    ),
    pytest.param(
        EngineUnderTest("postgres", lambda tmp: require_engine("postgres"), True),
        id="postgres",
        marks=pytest.mark.engine("postgres"),
    ),
]
SQL_ENGINES = ENGINES[1:]


@pytest.fixture(params=ENGINES)
def under_test(request: pytest.FixtureRequest) -> EngineUnderTest:
    chosen: EngineUnderTest = request.param
    return chosen


@pytest.fixture
def engine(under_test: EngineUnderTest, tmp_path: Path) -> Iterator[Engine]:
    opened = seawall.connect(under_test.url(tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def store(engine: Engine, clock: ManualClock, prefix: str) -> Iterator[OutboxStore]:
    opened = open_outbox_store(engine, table_prefix=prefix, clock=clock)
    try:
        yield opened
    finally:
        opened.drop_tables()
        opened.close()


@pytest.fixture
def inbox_store(engine: Engine, clock: ManualClock, prefix: str) -> Iterator[InboxStore]:
    opened = open_inbox_store(engine, table_prefix=prefix, clock=clock)
    try:
        yield opened
    finally:
        opened.drop_tables()
        opened.close()


def new(
    body: str, key: str | None = "k", delay: float = 0.0, headers: str | None = None
) -> NewMessage:
    return NewMessage(uuid.uuid4().hex, "topic", key, body.encode(), headers, delay)


def bodies(rows: list[Any]) -> list[str]:
    return [row.body.decode() for row in rows]


# ------------------------------------------------------------------------------ outbox


def test_claims_come_in_order_with_everything_stored(
    store: OutboxStore, clock: ManualClock
) -> None:
    first = new("a", headers='{"h":"v"}')
    store.add([first, new("b", key=None), new("c", key="other")], None)
    claimed = store.claim("r1", 10, 30.0)
    assert bodies(claimed) == ["a", "b", "c"]
    assert [row.position for row in claimed] == sorted(row.position for row in claimed)
    row = claimed[0]
    assert (row.id, row.topic, row.key, row.headers) == (first.id, "topic", "k", '{"h":"v"}')
    assert row.created_at == clock.now()
    assert [row.attempts for row in claimed] == [1, 1, 1]
    assert store.claim("r2", 10, 30.0) == []  # all leased
    assert store.stats() == OutboxStats(0, 3, 0, 0, 0, 0.0)


def test_limit_and_a_second_relay_takes_the_rest(store: OutboxStore) -> None:
    store.add([new(str(n), key=f"k{n}") for n in range(5)], None)
    assert bodies(store.claim("r1", 2, 30.0)) == ["0", "1"]
    assert bodies(store.claim("r2", 10, 30.0)) == ["2", "3", "4"]


def test_a_key_leased_by_one_relay_is_skipped_by_the_other(store: OutboxStore) -> None:
    store.add(
        [new("k1", key="k"), new("j1", key="j"), new("k2", key="k"), new("n", key=None)], None
    )
    assert bodies(store.claim("r1", 1, 30.0)) == ["k1"]
    assert bodies(store.claim("r2", 10, 30.0)) == ["j1", "n"]


def test_a_message_waiting_for_a_retry_blocks_its_key(
    store: OutboxStore, clock: ManualClock
) -> None:
    store.add([new("k1"), new("k2"), new("j1", key="j")], None)
    first, second, other = store.claim("r1", 10, 30.0)
    assert store.fail("r1", first.position, 10.0, "ConnectionError: down", False)
    assert store.unclaim("r1", [second.position]) == 1
    store.mark_sent([other.position], True)
    assert store.claim("r1", 10, 30.0) == []
    stats = store.stats()
    assert (stats.delayed, stats.ready, stats.sent) == (1, 1, 1)
    clock.advance(10.0)
    retried = store.claim("r1", 10, 30.0)
    assert bodies(retried) == ["k1", "k2"]
    assert [row.attempts for row in retried] == [2, 1]  # the unclaim did not count


def test_a_delayed_message_is_not_claimed_early(store: OutboxStore, clock: ManualClock) -> None:
    store.add([new("later", delay=5.0), new("after-it")], None)
    assert store.claim("r1", 10, 30.0) == []
    clock.advance(5.0)
    assert bodies(store.claim("r1", 10, 30.0)) == ["later", "after-it"]


def test_expired_leases_are_claimed_again(store: OutboxStore, clock: ManualClock) -> None:
    store.add([new("a")], None)
    store.claim("crashed", 10, 30.0)
    clock.advance(29.0)
    assert store.claim("r1", 10, 30.0) == []
    clock.advance(1.0)
    (again,) = store.claim("r1", 10, 30.0)
    assert again.attempts == 2


def test_extend_renews_only_the_owner_s_leases(store: OutboxStore, clock: ManualClock) -> None:
    store.add([new("a"), new("b", key="j")], None)
    rows = store.claim("r1", 10, 10.0)
    positions = [row.position for row in rows]
    assert store.extend("r2", positions, 60.0) == 0
    clock.advance(9.0)
    assert store.extend("r1", positions, 60.0) == 2
    clock.advance(30.0)
    assert store.claim("r2", 10, 10.0) == []


def test_settling_requires_the_lease_owner(store: OutboxStore) -> None:
    store.add([new("a")], None)
    (row,) = store.claim("r1", 10, 30.0)
    assert not store.fail("r2", row.position, 1.0, "x", False)
    assert store.unclaim("r2", [row.position]) == 0
    assert store.fail("r1", row.position, 1.0, "x", False)


def test_dead_messages_stop_blocking_and_can_be_redriven(
    store: OutboxStore, clock: ManualClock
) -> None:
    poison, after, other = new("poison"), new("after"), new("other", key="x")
    store.add([poison, after, other], None)
    first, *_ = store.claim("r1", 1, 30.0)
    assert store.fail("r1", first.position, 0.0, "ValueError: bad", True)
    assert bodies(store.claim("r1", 10, 30.0)) == ["after", "other"]
    (dead,) = store.dead(10)
    assert (dead.id, dead.attempts, dead.last_error, dead.dead_at) == (
        poison.id,
        1,
        "ValueError: bad",
        clock.now(),
    )
    assert store.stats().dead == 1
    assert store.redrive(["unknown"]) == 0
    assert store.redrive([poison.id]) == 1
    assert store.dead(10) == []
    (again,) = store.claim("r2", 10, 30.0)
    assert (again.id, again.attempts) == (poison.id, 1)
    store.fail("r2", again.position, 0.0, "bad again", True)
    assert store.redrive(None) == 1


def test_sent_messages_are_kept_then_purged_or_deleted_at_once(
    store: OutboxStore, clock: ManualClock
) -> None:
    store.add([new("a"), new("b", key="j"), new("c", key="m")], None)
    a, b, c = store.claim("r1", 10, 30.0)
    assert store.mark_sent([a.position, b.position], True) == 2
    assert store.mark_sent([a.position], True) == 0  # already sent
    assert store.mark_sent([c.position], False) == 1
    assert store.stats() == OutboxStats(0, 0, 0, 2, 0, None)
    clock.advance(50.0)
    assert store.purge_sent(60.0, 100) == 0
    clock.advance(10.0)
    assert store.purge_sent(60.0, 1) == 1
    assert store.purge_sent(60.0, 100) == 1
    assert store.stats().sent == 0


def test_stats_reports_the_oldest_pending_age(store: OutboxStore, clock: ManualClock) -> None:
    store.add([new("a")], None)
    clock.advance(7.0)
    store.add([new("b", key="j", delay=100.0)], None)
    stats = store.stats()
    assert (stats.ready, stats.delayed, stats.pending) == (1, 1, 2)
    assert stats.oldest_pending_age == pytest.approx(7.0)


async def test_aadd_without_a_transaction(engine: Engine, store: OutboxStore) -> None:
    try:
        await store.aadd([new("a"), new("b")], None)
    finally:
        await engine.aclose()
    assert bodies(store.claim("r1", 10, 30.0)) == ["a", "b"]


def test_the_facade_relays_on_every_engine(engine: Engine, clock: ManualClock, prefix: str) -> None:
    outbox = Outbox(engine, clock=clock, table_prefix=prefix)
    try:
        outbox.add_many("orders", [{"n": n} for n in range(5)], key="o1")
        seen: list[OutboxMessage] = []
        assert outbox.relay(seen.append, clock=clock).drain() == 5
        assert [m.body for m in seen] == [{"n": n} for n in range(5)]
    finally:
        outbox.store.drop_tables()
        outbox.close()


# -- transactions (SQL engines) ----------------------------------------------------------------


@pytest.mark.parametrize("under_test", SQL_ENGINES, indirect=True)
def test_add_joins_the_caller_s_transaction(engine: Engine, store: OutboxStore) -> None:
    begin = engine.transaction  # type: ignore[attr-defined]

    def rolled_back() -> None:
        with begin() as tx:
            store.add([new("rolled back")], tx)
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert store.stats().pending == 0
    with begin() as tx:
        store.add([new("a"), new("b")], tx)
        store.add([new("c")], tx)
    assert bodies(store.claim("r1", 10, 30.0)) == ["a", "b", "c"]


@pytest.mark.parametrize("under_test", SQL_ENGINES, indirect=True)
def test_a_transaction_from_another_kind_of_engine_is_refused(
    store: OutboxStore, under_test: EngineUnderTest, tmp_path: Path
) -> None:
    other_url = "sqlite://:memory:" if under_test.name == "postgres" else require_engine("postgres")
    other = seawall.connect(other_url)
    try:
        with other.transaction() as tx, pytest.raises(ConfigurationError, match="transaction"):
            store.add([new("x")], tx)
    finally:
        other.close()


@pytest.mark.parametrize("under_test", ENGINES[2:], indirect=True)
async def test_aadd_joins_an_async_postgres_transaction(engine: Engine, store: OutboxStore) -> None:
    begin = engine.atransaction  # type: ignore[attr-defined]

    async def rolled_back() -> None:
        async with begin() as tx:
            await store.aadd([new("rolled back")], tx)
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        await rolled_back()
    async with begin() as tx:
        await store.aadd([new("a"), new("b")], tx)
    assert bodies(store.claim("r1", 10, 30.0)) == ["a", "b"]
    await engine.aclose()


@pytest.mark.parametrize("under_test", SQL_ENGINES, indirect=True)
def test_parallel_relays_publish_each_message_once_in_key_order(
    engine: Engine, prefix: str
) -> None:
    outbox = Outbox(engine, table_prefix=prefix)
    messages = 240
    for start in range(0, messages, 40):
        outbox.add_many("t", list(range(start, start + 40)), key=f"k{start // 40 % 4}")
    published: list[int] = []
    lock = threading.Lock()

    def publish(message: OutboxMessage) -> None:
        with lock:
            published.append(message.body)

    relays = [outbox.relay(publish, batch_size=7, retry=None, name=f"r{n}") for n in range(3)]
    errors: list[BaseException] = []

    def drain(relay: Any) -> None:
        try:
            relay.drain()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60.0)
    try:
        assert errors == []
        for relay in relays:  # a relay may stop while another still held messages
            relay.drain()
        assert sorted(published) == list(range(messages))  # each exactly once
        for key in range(4):
            mine = [n for n in published if n // 40 % 4 == key]
            assert mine == sorted(mine)
    finally:
        outbox.store.drop_tables()
        outbox.close()


@pytest.mark.parametrize("under_test", ENGINES[2:], indirect=True)
def test_notify_wakes_a_relay_of_another_outbox_object(engine: Engine, prefix: str) -> None:
    writer = Outbox(engine, table_prefix=prefix)
    reader = Outbox(seawall.connect(engine.url), table_prefix=prefix, create=False)
    arrived = threading.Event()
    relay = reader.relay(lambda message: arrived.set(), poll_interval=60.0)
    try:
        relay.start()
        # The reader's relay sleeps on its own doorbell (60 s): only NOTIFY can wake it.
        for _ in range(100):  # the listener connects in the background; retry the wake-up
            with engine.transaction() as tx:
                writer.add("t", "wake", transaction=tx)
            if arrived.wait(0.2):
                break
        assert arrived.is_set()
    finally:
        relay.stop()
        writer.store.drop_tables()
        writer.close()
        reader.close()
        reader.store.engine.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ inbox


def test_mark_is_true_once_per_consumer(inbox_store: InboxStore) -> None:
    assert inbox_store.mark("billing", "m1", None)
    assert not inbox_store.mark("billing", "m1", None)
    assert inbox_store.mark("shipping", "m1", None)
    assert inbox_store.seen("billing", "m1")
    assert not inbox_store.seen("billing", "m2")
    assert inbox_store.count("billing") == 1
    assert inbox_store.forget("billing", "m1")
    assert not inbox_store.forget("billing", "m1")
    assert inbox_store.mark("billing", "m1", None)


def test_inbox_purge_forgets_old_ids(inbox_store: InboxStore, clock: ManualClock) -> None:
    inbox_store.mark("c", "old", None)
    clock.advance(100.0)
    inbox_store.mark("c", "new", None)
    assert inbox_store.purge(100.0, 10) == 1
    assert not inbox_store.seen("c", "old")
    assert inbox_store.seen("c", "new")


async def test_amark_without_a_transaction(engine: Engine, inbox_store: InboxStore) -> None:
    try:
        assert await inbox_store.amark("c", "m1", None)
        assert not await inbox_store.amark("c", "m1", None)
    finally:
        await engine.aclose()


@pytest.mark.parametrize("under_test", SQL_ENGINES, indirect=True)
def test_mark_joins_the_caller_s_transaction(engine: Engine, inbox_store: InboxStore) -> None:
    begin = engine.transaction  # type: ignore[attr-defined]

    def rolled_back() -> None:
        with begin() as tx:
            assert inbox_store.mark("c", "m1", tx)
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert not inbox_store.seen("c", "m1")
    with begin() as tx:
        assert inbox_store.mark("c", "m1", tx)
        assert not inbox_store.mark("c", "m1", tx)
    assert inbox_store.seen("c", "m1")


@pytest.mark.parametrize("under_test", ENGINES[2:], indirect=True)
def test_concurrent_marks_of_one_id_let_exactly_one_through(
    engine: Engine, prefix: str, clock: ManualClock
) -> None:
    inbox = Inbox(engine, "billing", table_prefix=prefix)
    first_in = threading.Event()
    release_first = threading.Event()
    results: dict[str, bool] = {}

    def first() -> None:
        with engine.transaction() as tx:
            results["first"] = inbox.mark("m1", transaction=tx)
            first_in.set()
            release_first.wait(10.0)

    def second() -> None:
        with engine.transaction() as tx:
            results["second"] = inbox.mark("m1", transaction=tx)

    try:
        a = threading.Thread(target=first)
        a.start()
        assert first_in.wait(10.0)
        b = threading.Thread(target=second)
        b.start()
        b.join(0.3)
        assert b.is_alive()  # waits for the first transaction's outcome
        release_first.set()
        a.join(10.0)
        b.join(10.0)
        assert results == {"first": True, "second": False}
    finally:
        release_first.set()
        inbox.store.drop_tables()


@pytest.mark.parametrize("under_test", ENGINES[2:], indirect=True)
async def test_amark_joins_an_async_postgres_transaction(
    engine: Engine, inbox_store: InboxStore
) -> None:
    begin = engine.atransaction  # type: ignore[attr-defined]

    async def rolled_back() -> None:
        async with begin() as tx:
            assert await inbox_store.amark("c", "m1", tx)
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        await rolled_back()
    async with begin() as tx:
        assert await inbox_store.amark("c", "m1", tx)
    assert await asyncio.to_thread(inbox_store.seen, "c", "m1")
    await engine.aclose()
