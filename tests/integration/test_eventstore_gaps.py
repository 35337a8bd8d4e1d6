"""The gap guarantee on PostgreSQL: a reader of the global log never skips an event.

Concurrent transactions commit in any order. If positions came from a plain
sequence, a transaction that took a low position and committed late would appear
*behind* a reader that had already moved past it, and be skipped forever. These
tests provoke exactly that (slow transactions holding low positions, with
``pg_sleep`` before commit) and check that every event reaches the reader, in
increasing position order, exactly once.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

import seawall
from seawall.engines.postgres import PostgresEngine
from seawall.eventsourcing import ANY, NewEvent, RecordedEvent, open_event_store
from seawall.eventsourcing.store.postgres import PostgresEventStore

pytestmark = pytest.mark.engine("postgres")

WRITERS = 4
WRITE_SECONDS = 3.0
DRAIN_SECONDS = 12.0


@pytest.fixture
def engine(postgres_url: str) -> Iterator[PostgresEngine]:
    opened = seawall.connect(postgres_url, max_size=WRITERS + 4)
    assert isinstance(opened, PostgresEngine)
    yield opened
    opened.close()


@pytest.fixture
def store(engine: PostgresEngine) -> Iterator[PostgresEventStore]:
    prefix = f"gap_{uuid.uuid4().hex[:10]}_"
    opened = open_event_store(engine, table_prefix=prefix)
    assert isinstance(opened, PostgresEventStore)
    with engine.connection() as connection:
        connection.execute(f'CREATE TABLE "{prefix}business" (n bigint)')
    yield opened
    with engine.connection() as connection:
        connection.execute(f'DROP TABLE IF EXISTS "{prefix}business"')
    opened.drop_tables()
    opened.close()


def _naive_positions(engine: PostgresEngine, store: PostgresEventStore, after: int) -> list[int]:
    """What a reader without the horizon would see: every committed row, by position."""
    with engine.connection() as connection:
        rows = connection.execute(
            f'SELECT position FROM "{store.table_prefix}events" WHERE position > %s'
            " ORDER BY position",
            (after,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def test_a_slow_transaction_holding_a_lower_position_is_not_skipped(
    engine: PostgresEngine, store: PostgresEventStore
) -> None:
    slow_appended = threading.Event()
    release = threading.Event()
    slow_result: list[int] = []

    def slow_writer() -> None:
        with engine.transaction() as tx:
            tx.execute(f'INSERT INTO "{store.table_prefix}business" VALUES (1)')
            result = store.append("slow", [NewEvent("Slow", {})], transaction=tx)
            slow_result.append(result.position)
            slow_appended.set()
            assert release.wait(15)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert slow_appended.wait(15)
        fast = store.append("fast", [NewEvent("Fast", {})])
        assert fast.position > slow_result[0]
        # A naive reader sees the fast event and would move past the slow one's position.
        assert _naive_positions(engine, store, 0) == [fast.position]
        # The store's reader does not show the fast event while the slower, older
        # transaction is still open.
        assert [e.position for e in store.read_all()] == []
    finally:
        release.set()
        writer.join(15)
    deadline = time.monotonic() + DRAIN_SECONDS
    while len(seen := store.read_all()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e.type for e in seen] == ["Slow", "Fast"]
    assert [e.position for e in seen] == [slow_result[0], fast.position]


def test_concurrent_writers_never_make_the_reader_skip(
    engine: PostgresEngine, store: PostgresEventStore
) -> None:
    committed: list[str] = []
    committed_lock = threading.Lock()
    stop_writing = threading.Event()
    failures: list[BaseException] = []
    business = f'"{store.table_prefix}business"'

    def writer(number: int) -> None:
        randomness = random.Random(number)
        count = 0
        try:
            while not stop_writing.is_set():
                count += 1
                stream = f"w{number}-{count % 5}"
                events = [
                    NewEvent("Wrote", {"writer": number, "n": count, "i": i}, id=uuid.uuid4())
                    for i in range(randomness.randint(1, 3))
                ]
                style = randomness.random()
                if style < 0.3:
                    store.append(stream, events, expected_version=ANY)
                else:
                    with engine.transaction() as tx:
                        if style < 0.6:  # take a transaction id early, append late
                            tx.execute(f"INSERT INTO {business} VALUES (%s)", (count,))
                            tx.execute("SELECT pg_sleep(%s)", (randomness.uniform(0.0, 0.15),))
                        store.append(stream, events, expected_version=ANY, transaction=tx)
                        if style >= 0.6:  # hold the appended positions before committing
                            tx.execute("SELECT pg_sleep(%s)", (randomness.uniform(0.0, 0.15),))
                with committed_lock:
                    committed.extend(str(event.id) for event in events)
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    seen: list[RecordedEvent] = []
    subscription = store.subscribe("gap-reader", seen.append, batch_size=7)
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in writers:
        thread.start()
    started = time.monotonic()
    while time.monotonic() - started < WRITE_SECONDS:
        subscription.poll()
        time.sleep(0.005)
    stop_writing.set()
    for thread in writers:
        thread.join(15)
    assert not failures, failures
    deadline = time.monotonic() + DRAIN_SECONDS
    while len(seen) < len(committed) and time.monotonic() < deadline:
        if subscription.poll() == 0:
            time.sleep(0.02)

    positions = [event.position for event in seen]
    assert all(a < b for a, b in itertools.pairwise(positions)), (
        "a position was seen after a higher one"
    )
    assert len(committed) > 50
    assert sorted(str(event.id) for event in seen) == sorted(committed)
    assert store.load_checkpoint("gap-reader") == positions[-1]
    # Every event is also in the table, so the reader missed nothing that committed.
    assert len(_naive_positions(engine, store, 0)) == len(committed)
