"""What only the SQLite queue store does: durability levels, connections, ids, errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError, EngineError
from seawall.messaging.queue import Queue, open_queue
from seawall.messaging.queue import sqlite as sqlite_store
from seawall.messaging.queue.sqlite import SqliteQueueStore


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[SqliteEngine]:
    opened = seawall.connect(f"sqlite:///{tmp_path / 'shop.db'}")
    assert isinstance(opened, SqliteEngine)
    yield opened
    opened.close()


def _store(queue: Queue) -> SqliteQueueStore:
    assert isinstance(queue.store, SqliteQueueStore)
    return queue.store


def _synchronous(conn: sqlite3.Connection) -> int:
    level: int = conn.execute("PRAGMA synchronous").fetchone()[0]
    return level


def _own_connection(queue: Queue) -> sqlite3.Connection:
    conn = _store(queue)._local.conn
    assert conn is not None
    return conn


def test_full_fsyncs_sends_and_commits_acks_at_normal(engine: SqliteEngine) -> None:
    queue = engine.queue("jobs")
    assert repr(queue.store).endswith("synchronous='full', durable_acks=False)")
    queue.send("x")
    assert _synchronous(_own_connection(queue)) == 2
    queue.receive()[0].ack()
    assert _synchronous(_own_connection(queue)) == 1
    assert engine.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_durable_acks_fsync_every_write(engine: SqliteEngine) -> None:
    queue = engine.queue("jobs", durable_acks=True)
    queue.send("x")
    queue.receive()[0].ack()
    assert _synchronous(_own_connection(queue)) == 2


def test_normal_never_fsyncs_a_commit(engine: SqliteEngine) -> None:
    queue = engine.queue("jobs", synchronous="NORMAL")
    queue.send("x")
    assert _synchronous(_own_connection(queue)) == 1
    queue.receive()[0].ack()
    assert _synchronous(_own_connection(queue)) == 1


def test_the_engines_own_connection_keeps_its_setting(engine: SqliteEngine) -> None:
    before = _synchronous(engine.connection)
    queue = engine.queue("jobs", synchronous="normal")
    queue.send("x")
    queue.receive()[0].ack()
    assert _synchronous(engine.connection) == before


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("synchronous", "off", "synchronous='off' is not valid"),
        ("durable_acks", "yes", "durable_acks='yes' must be True or False"),
        ("fsync", True, "unknown queue option.*sqlite options: durable_acks, synchronous"),
    ],
)
def test_invalid_sqlite_options(
    engine: SqliteEngine, option: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        engine.queue("jobs", **{option: value})


def test_messages_survive_reopening_the_file(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    with seawall.connect(url) as first, first.queue("jobs", clock=clock) as queue:
        queue.send_many(["a", "b"])
        queue.send("later", delay=60)
        queue.receive(visibility_timeout=30)
    with seawall.connect(url) as second, second.queue("jobs", clock=clock) as queue:
        assert queue.stats() == seawall.messaging.queue.QueueStats(1, 1, 1, 0)
        clock.advance(60)
        assert sorted(m.body for m in queue.receive(5)) == ["a", "b", "later"]


def test_ids_keep_growing_across_stores_and_reopens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    seen: list[int] = []
    for _ in range(3):
        with seawall.connect(url) as engine, engine.queue("jobs") as queue:
            seen.append(int(queue.send("x")))
            queue.receive()[0].ack()
    assert seen == sorted(set(seen))


def test_driver_errors_become_engine_errors_naming_the_file(engine: SqliteEngine) -> None:
    queue = engine.queue("jobs")
    queue.send("x")
    engine.connection.execute('DROP TABLE "seawall_q_jobs"')
    with pytest.raises(EngineError, match=r"shop\.db.*no such table") as caught:
        queue.send("y")
    assert caught.value.url == engine.path
    for call in (queue.receive, queue.stats, queue.purge, queue.peek, queue.dead_letters.list):
        with pytest.raises(EngineError):
            call()


def test_a_write_lock_held_too_long_is_an_engine_error_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    engine = SqliteEngine(f"sqlite:///{path}", timeout=0.0)
    queue = engine.queue("jobs")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(EngineError, match="busy timeout"):
            queue.send("blocked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    queue.send("fine now")
    assert queue.stats().ready == 1
    engine.close()


def test_an_in_memory_database_works_on_one_thread() -> None:
    with seawall.connect("sqlite://:memory:") as engine:
        queue = engine.queue("scratch")
        queue.send({"n": 1})
        assert [m.body for m in queue.receive()] == [{"n": 1}]


def test_expired_dedup_ids_are_swept(engine: SqliteEngine, clock: ManualClock) -> None:
    queue = engine.queue("jobs", clock=clock, dedup_window=10)
    for key in range(5):
        queue.send(key, dedup_id=f"k{key}")
    clock.advance(11)
    queue.send("fresh", dedup_id="new")
    rows = engine.connection.execute("SELECT dedup_id FROM seawall_queue_dedup").fetchall()
    assert rows == [("new",)]


def test_stats_and_receive_inside_a_caller_transaction(engine: SqliteEngine) -> None:
    queue = engine.queue("jobs")
    queue.send("x")
    with engine.transaction():
        assert queue.stats().ready == 1
        (message,) = queue.receive()
        message.ack()
    assert queue.stats().total == 0


def test_a_transaction_from_another_database_is_refused(
    engine: SqliteEngine, tmp_path: Path
) -> None:
    queue = engine.queue("jobs")
    other = seawall.connect(f"sqlite:///{tmp_path / 'other.db'}")
    assert isinstance(other, SqliteEngine)
    with other.transaction() as tx, pytest.raises(ConfigurationError, match="not a transaction"):
        queue.send("x", transaction=tx)
    other.close()


def test_a_forked_child_opens_its_own_connections(engine: SqliteEngine) -> None:
    queue = engine.queue("jobs")
    queue.send("before")
    parent_connection = _own_connection(queue)
    sqlite_store._forget_connections_after_fork()  # what os.fork runs in the child
    assert _store(queue)._local.conn is None
    queue.send("after")
    assert _own_connection(queue) is not parent_connection
    assert sorted(m.body for m in queue.receive(2)) == ["after", "before"]
    parent_connection.close()


def test_close_releases_the_stores_connections(engine: SqliteEngine) -> None:
    queue = open_queue(engine, "jobs")
    queue.send("x")
    conn = _own_connection(queue)
    queue.close()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    queue.send("reopened on demand")
    assert queue.stats().ready == 2


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_a_redelivered_message_keeps_its_place_in_line(
    url: str, tmp_path: Path, clock: ManualClock
) -> None:
    engine = seawall.connect(url if url != "sqlite" else f"sqlite:///{tmp_path / 'line.db'}")
    queue = engine.queue("line", clock=clock, visibility_timeout=10)
    queue.send_many(["first", "second", "third"])
    (first,) = queue.receive()
    first.nack()  # no delay: back in its place, ahead of the others
    assert [m.body for m in queue.peek()] == ["first", "second", "third"]
    (again,) = queue.receive()
    assert (again.body, again.delivery_count) == ("first", 2)
    clock.advance(10)  # expired: still first in line
    assert [m.body for m in queue.receive(3)] == ["first", "second", "third"]
    engine.close()


def test_a_slot_taken_by_another_process_is_retried(
    engine: SqliteEngine, clock: ManualClock
) -> None:
    queue = engine.queue("jobs", clock=clock)
    queue.send("a")
    # As if another process had just used the sequence number this one takes next.
    sqlite_store._SEQUENCE._last -= 1
    queue.send("b")
    sqlite_store._SEQUENCE._last -= 1
    queue.send_many(["c", "d"])
    assert [m.body for m in queue.receive(10)] == ["a", "b", "c", "d"]
