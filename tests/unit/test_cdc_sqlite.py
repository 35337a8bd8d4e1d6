"""Trigger-based change capture on SQLite: snapshot, stream, confirm, resume, run loops."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.eventsourcing import open_event_store
from seawall.eventsourcing.cdc import (
    CaptureOpened,
    ChangeEvent,
    ChangePosition,
    ChangesHandled,
    EventStoreFeed,
    SnapshotCompleted,
    UncapturableTableError,
    UnknownTableError,
    acapture,
    capture,
)
from seawall.eventsourcing.cdc.sqlite import SqliteChangeCapture


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[SqliteEngine]:
    db = seawall.connect(f"sqlite:///{tmp_path / 'app.db'}")
    assert isinstance(db, SqliteEngine)
    db.connection.execute(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER, price REAL, photo BLOB)"
    )
    yield db
    db.close()


@pytest.fixture
def writer(engine: SqliteEngine) -> sqlite3.Connection:
    """Another connection, as the application writing its rows."""
    conn = sqlite3.connect(engine.path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def undelivered(engine: SqliteEngine, slot: str) -> int:
    """Change rows of ``slot`` past its confirmed id (what a new capture would deliver)."""
    row = engine.connection.execute(
        "SELECT count(*) FROM seawall_cdc_changes WHERE slot = ? AND id > "
        "(SELECT confirmed_id FROM seawall_cdc_slots WHERE slot = ?)",
        (slot, slot),
    ).fetchone()
    return int(row[0])


def summary(events: list[ChangeEvent]) -> list[tuple[str, Any, Any]]:
    return [(event.op, event.before, event.after) for event in events]


def open_capture(engine: SqliteEngine, **options: Any) -> SqliteChangeCapture:
    cdc = capture(engine, ["orders"], slot=options.pop("slot", "shop"), **options)
    assert isinstance(cdc, SqliteChangeCapture)
    return cdc


def test_snapshot_first_then_every_change_in_order(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    writer.execute("INSERT INTO orders VALUES (1, 'tea', 1, 2.5, x'00ff')")
    cdc = open_capture(engine)
    cdc.open()
    writer.execute("INSERT INTO orders VALUES (2, 'it''s', 2, NULL, NULL)")
    writer.execute("UPDATE orders SET qty = 5 WHERE id = 1")
    writer.execute("DELETE FROM orders WHERE id = 2")
    snapshot = cdc.poll(10)
    assert summary(snapshot) == [
        ("r", None, {"id": 1, "item": "tea", "qty": 1, "price": 2.5, "photo": "\\x00ff"})
    ]
    assert snapshot[0].source.snapshot == "last"
    assert snapshot[0].position == ChangePosition(0, 1)
    changes = cdc.poll(10)
    row1 = {"id": 1, "item": "tea", "qty": 1, "price": 2.5, "photo": "\\x00ff"}
    row2 = {"id": 2, "item": "it's", "qty": 2, "price": None, "photo": None}
    assert summary(changes) == [
        ("c", None, row2),
        ("u", row1, {**row1, "qty": 5}),
        ("d", row2, None),
    ]
    assert [event.key for event in changes] == [{"id": 2}, {"id": 1}, {"id": 2}]
    assert [event.position.offset for event in changes] == sorted(
        event.position.offset for event in changes
    )
    envelope = changes[0].to_debezium()
    assert envelope["op"] == "c"
    assert envelope["source"]["connector"] == "sqlite"
    assert envelope["source"]["table"] == "orders"
    assert envelope["source"]["schema"] == "main"
    assert envelope["source"]["snapshot"] == "false"
    assert envelope["source"]["change_id"] == changes[0].position.offset
    assert isinstance(envelope["source"]["ts_ms"], int)
    assert envelope["source"]["ts_ms"] > 0
    assert cdc.poll(10) == []
    cdc.close()


def test_the_snapshot_is_exact_even_with_writes_before_it_is_read(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    writer.execute("INSERT INTO orders (id, item) VALUES (1, 'a'), (2, 'b')")
    cdc = open_capture(engine)
    cdc.open()  # triggers created, snapshot pinned
    writer.execute("INSERT INTO orders (id, item) VALUES (3, 'c')")
    writer.execute("UPDATE orders SET item = 'A' WHERE id = 1")
    rows = cdc.poll(100)
    assert [(event.op, event.after["id"], event.after["item"]) for event in rows] == [
        ("r", 1, "a"),
        ("r", 2, "b"),
    ]
    changes = cdc.poll(100)
    assert [(event.op, event.after["id"], event.after["item"]) for event in changes] == [
        ("c", 3, "c"),
        ("u", 1, "A"),
    ]
    cdc.close()


def test_confirmed_changes_are_gone_and_unconfirmed_ones_come_back_after_a_restart(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    cdc = open_capture(engine, snapshot=False)
    cdc.open()
    for number in range(5):
        writer.execute("INSERT INTO orders (id, item) VALUES (?, 'x')", (number,))
    first = cdc.poll(3)
    cdc.confirm(first[1].position)
    assert cdc.position == first[1].position
    assert [event.after["id"] for event in cdc.poll(10)] == [3, 4]  # not yet confirmed
    cdc.close()
    again = open_capture(engine, snapshot=False)
    assert [event.after["id"] for event in again.poll(10)] == [2, 3, 4]
    remaining = engine.connection.execute("SELECT count(*) FROM seawall_cdc_changes").fetchone()
    assert remaining[0] == 3
    again.close()


def test_an_interrupted_snapshot_is_taken_again_from_scratch(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    writer.execute("INSERT INTO orders (id, item) VALUES (1, 'a'), (2, 'b')")
    cdc = open_capture(engine)
    first = cdc.poll(1)
    cdc.confirm(first[0])
    writer.execute("INSERT INTO orders (id, item) VALUES (3, 'c')")
    cdc.close()  # stops before the snapshot's last row is confirmed
    again = open_capture(engine)
    rows = again.poll(10)
    assert [(event.op, event.after["id"]) for event in rows] == [("r", 1), ("r", 2), ("r", 3)]
    assert rows[0].id != first[0].id  # a new snapshot gets new ids
    assert again.poll(10) == []  # the insert of 3 is in the snapshot, not delivered twice
    again.confirm(rows[-1])
    again.close()
    third = open_capture(engine)
    assert third.poll(10) == []  # the snapshot is done: never taken again for this slot
    third.close()


def test_without_snapshot_only_changes_are_delivered(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    writer.execute("INSERT INTO orders (id, item) VALUES (1, 'a')")
    cdc = open_capture(engine, snapshot=False)
    cdc.open()
    writer.execute("INSERT INTO orders (id, item) VALUES (2, 'b')")
    assert [(event.op, event.after["id"]) for event in cdc.poll(10)] == [("c", 2)]
    cdc.close()


def test_an_empty_table_completes_the_snapshot_at_once(engine: SqliteEngine) -> None:
    cdc = open_capture(engine)
    seen: list[Any] = []
    cdc.events.subscribe(seen.append)
    assert cdc.poll(10) == []
    assert [type(event) for event in seen] == [CaptureOpened, SnapshotCompleted]
    assert engine.connection.execute("SELECT snapshot_done FROM seawall_cdc_slots").fetchone()[0]
    cdc.close()


def test_a_rolled_back_write_leaves_no_change(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    cdc = open_capture(engine, snapshot=False)
    cdc.open()
    writer.execute("BEGIN")
    writer.execute("INSERT INTO orders (id, item) VALUES (1, 'a')")
    writer.execute("ROLLBACK")
    writer.execute("INSERT INTO orders (id, item) VALUES (2, 'b')")
    assert [event.after["id"] for event in cdc.poll(10)] == [2]
    cdc.close()


def test_slots_are_independent_consumers(engine: SqliteEngine, writer: sqlite3.Connection) -> None:
    one = open_capture(engine, slot="one", snapshot=False)
    two = open_capture(engine, slot="two", snapshot=False)
    one.open()
    two.open()
    writer.execute("INSERT INTO orders (id, item) VALUES (1, 'a')")
    events_one = one.poll(10)
    one.confirm(events_one[-1])
    assert [event.after["id"] for event in two.poll(10)] == [1]
    assert events_one[0].source.name == "one"
    one.drop()
    writer.execute("INSERT INTO orders (id, item) VALUES (2, 'b')")
    assert [event.after["id"] for event in two.poll(10)] == [2]
    triggers = engine.connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    ).fetchall()
    assert [name for (name,) in triggers] == [
        "seawall_cdc__two__orders__d",
        "seawall_cdc__two__orders__i",
        "seawall_cdc__two__orders__u",
    ]
    last_id = engine.connection.execute("SELECT max(id) FROM seawall_cdc_changes").fetchone()[0]
    two.drop()
    triggers = engine.connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    assert triggers.fetchall() == []
    assert engine.connection.execute("SELECT count(*) FROM seawall_cdc_slots").fetchone()[0] == 0
    # A slot created again under the same name never sees an old change id again.
    again = open_capture(engine, slot="one", snapshot=False)
    again.open()
    writer.execute("INSERT INTO orders (id, item) VALUES (3, 'c')")
    (third,) = again.poll(10)
    assert third.position.offset > last_id
    again.close()


def test_change_ids_keep_growing_when_every_change_is_confirmed(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    cdc = open_capture(engine, snapshot=False)
    cdc.open()
    offsets: list[int] = []
    for number in range(3):
        writer.execute("INSERT INTO orders (id) VALUES (?)", (number,))
        (event,) = cdc.poll(10)
        cdc.confirm(event)
        offsets.append(event.position.offset)
    assert offsets == sorted(set(offsets))  # no id reused after the table was emptied
    assert undelivered(engine, "shop") == 0
    cdc.close()
    assert open_capture(engine, snapshot=False).poll(10) == []  # the newest row is not redelivered


def test_reopening_after_a_schema_change_captures_the_new_column(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    cdc = open_capture(engine, snapshot=False)
    cdc.open()
    writer.execute("ALTER TABLE orders ADD COLUMN note TEXT")
    writer.execute("INSERT INTO orders (id, item, note) VALUES (1, 'a', 'n')")
    (before_reopen,) = cdc.poll(10)
    assert "note" not in before_reopen.after  # triggers list the columns of their creation
    cdc.confirm(before_reopen)
    cdc.close()
    cdc = open_capture(engine, snapshot=False)
    cdc.open()
    writer.execute("INSERT INTO orders (id, item, note) VALUES (2, 'b', 'm')")
    (after_reopen,) = cdc.poll(10)
    assert after_reopen.after["note"] == "m"
    cdc.close()


def test_wide_tables_compound_keys_and_keyless_tables(engine: SqliteEngine) -> None:
    conn = engine.connection
    columns = ", ".join(f"c{i} INTEGER" for i in range(130))
    conn.execute(f"CREATE TABLE wide (a TEXT, b INTEGER, {columns}, PRIMARY KEY (b, a))")
    conn.execute("CREATE TABLE log (line TEXT)")
    cdc = capture(engine, ["wide", "log"], slot="wide", snapshot=False)
    cdc.open()
    values = ", ".join(str(i) for i in range(130))
    conn.execute(f"INSERT INTO wide VALUES ('x', 7, {values})")
    conn.execute("INSERT INTO log VALUES ('hello')")
    wide, log = cdc.poll(10)
    assert wide.after == {"a": "x", "b": 7, **{f"c{i}": i for i in range(130)}}
    assert list(wide.after)[:3] == ["a", "b", "c0"]
    assert wide.key == {"b": 7, "a": "x"}
    assert log.key is None
    cdc.close()


def test_unknown_tables_views_and_our_own_tables_are_refused(engine: SqliteEngine) -> None:
    engine.connection.execute("CREATE VIEW big_orders AS SELECT * FROM orders WHERE qty > 10")
    with pytest.raises(UnknownTableError, match="'nope', 'missing'") as caught:
        capture(engine, ["orders", "nope", "missing"]).open()
    assert caught.value.tables == ("nope", "missing")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(UncapturableTableError, match="view"):
        capture(engine, ["big_orders"]).open()
    capture(engine, ["orders"], slot="a").open()
    with pytest.raises(UncapturableTableError, match="own tables"):
        capture(engine, ["seawall_cdc_changes"], slot="b").open()


def test_table_names_are_matched_like_sqlite_does(engine: SqliteEngine) -> None:
    cdc = capture(engine, ["main.ORDERS"], slot="case", snapshot=False)
    cdc.open()
    engine.connection.execute("INSERT INTO orders (id) VALUES (1)")
    (event,) = cdc.poll()
    assert event.table == "orders"
    cdc.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tables": "orders"}, "must be a list"),
        ({"tables": []}, "at least one table"),
        ({"tables": ["orders", "orders"]}, "twice"),
        ({"tables": ["orders"], "slot": "Bad-Name"}, "slot='Bad-Name'"),
        ({"tables": ["orders"], "slot": ""}, "slot=''"),
        ({"tables": ["orders"], "snapshot": "yes"}, "snapshot='yes'"),
        ({"tables": ["orders"], "plugin": "wal2json"}, "plugin='wal2json'"),
        ({"tables": ["orders"], "plugin": "pgoutput"}, "PostgreSQL only"),
        ({"tables": ["orders"], "name": ""}, "name=''"),
        ({"tables": ["orders"], "advance_interval": 1.0}, "PostgreSQL only"),
    ],
)
def test_bad_options_are_refused_at_construction(
    engine: SqliteEngine, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        capture(engine, **options)


def test_engines_without_capture_are_refused() -> None:
    with pytest.raises(UnsupportedEngineError, match="'memory'"):
        capture("memory://", ["orders"])


def test_only_delivered_positions_can_be_confirmed(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    cdc = open_capture(engine, snapshot=False)
    with pytest.raises(ConfigurationError, match="has not been delivered"):
        cdc.confirm(ChangePosition(1, 0))
    cdc.open()
    writer.execute("INSERT INTO orders (id) VALUES (1), (2)")
    first, second = cdc.poll(10)
    cdc.confirm(second)
    cdc.confirm(first)  # older than the confirmed position: nothing to do
    assert cdc.position == second.position
    with pytest.raises(ConfigurationError, match="position"):
        cdc.confirm("latest")  # type: ignore[arg-type]
    cdc.close()


def test_confirm_can_join_the_callers_transaction(
    engine: SqliteEngine, writer: sqlite3.Connection
) -> None:
    cdc = open_capture(engine, snapshot=False)
    cdc.open()
    writer.execute("INSERT INTO orders (id) VALUES (1)")
    (event,) = cdc.poll()

    def update_read_model_and_fail() -> None:
        with engine.transaction() as tx:
            cdc.confirm(event, transaction=tx)
            raise RuntimeError("read model update failed")

    with pytest.raises(RuntimeError):
        update_read_model_and_fail()
    count = engine.connection.execute("SELECT count(*) FROM seawall_cdc_changes").fetchone()[0]
    assert count == 1  # the confirmation rolled back with the caller's transaction
    cdc.close()


def test_an_in_memory_database_works_too() -> None:
    engine = seawall.connect("sqlite://:memory:")
    assert isinstance(engine, SqliteEngine)
    engine.connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    engine.connection.execute("INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
    cdc = capture(engine, ["orders"])
    assert [(event.op, event.after["id"]) for event in cdc.poll(1)] == [("r", 1)]
    rows = cdc.poll(10)
    assert [(event.op, event.after["id"]) for event in rows] == [("r", 2)]
    cdc.confirm(rows[-1])
    engine.connection.execute("UPDATE orders SET item = 'z' WHERE id = 2")
    (update,) = cdc.poll(10)
    assert (update.op, update.before["item"], update.after["item"]) == ("u", "b", "z")
    engine.connection.execute("BEGIN")
    try:
        with pytest.raises(ConfigurationError, match="inside a transaction"):
            capture(engine, ["orders"], slot="other").open()
    finally:
        engine.connection.execute("ROLLBACK")
    cdc.drop()
    engine.close()


# -- run loops -----------------------------------------------------------------------------------


def test_run_hands_every_change_to_the_handler_and_confirms_it(
    engine: SqliteEngine, writer: sqlite3.Connection, clock: ManualClock
) -> None:
    writer.execute("INSERT INTO orders (id) VALUES (1), (2)")
    cdc = capture(engine, ["orders"], clock=clock)
    cdc.open()
    writer.execute("INSERT INTO orders (id) VALUES (3)")
    seen: list[tuple[str, int]] = []
    batches: list[ChangesHandled] = []
    cdc.events.subscribe(batches.append, types=(ChangesHandled,))
    polls = iter(range(3))
    handled = cdc.run(
        lambda event: seen.append((event.op, event.after["id"])),
        batch_size=2,
        poll_interval=0.25,
        stop_when=lambda: next(polls, None) is None,
    )
    assert handled == 3
    assert seen == [("r", 1), ("r", 2), ("c", 3)]
    assert [(batch.count, batch.position.offset > 0) for batch in batches] == [
        (2, False),
        (1, True),
    ]
    assert clock.sleeps == [0.25, 0.25]  # a full batch polls again at once; a short one waits
    assert undelivered(engine, "seawall") == 0
    cdc.close()


def test_a_failing_handler_keeps_the_failed_change_for_the_next_run(
    engine: SqliteEngine, writer: sqlite3.Connection, clock: ManualClock
) -> None:
    cdc = capture(engine, ["orders"], snapshot=False, clock=clock)
    cdc.open()
    writer.execute("INSERT INTO orders (id) VALUES (1), (2), (3)")
    seen: list[int] = []

    def handler(event: ChangeEvent) -> None:
        if event.after["id"] == 2 and 2 not in seen:
            seen.append(2)
            raise RuntimeError("downstream is down")
        seen.append(event.after["id"])

    with pytest.raises(RuntimeError, match="downstream"):
        cdc.run(handler)
    assert cdc.position is not None
    assert engine.connection.execute("SELECT count(*) FROM seawall_cdc_changes").fetchone()[0] == 2
    cdc.run(handler, stop_when=lambda: True)
    assert seen == [1, 2, 2, 3]
    cdc.close()


def test_stop_ends_run_before_it_waits(engine: SqliteEngine, clock: ManualClock) -> None:
    cdc = capture(engine, ["orders"], snapshot=False, clock=clock)

    def stop_now() -> bool:
        cdc.stop()
        return False

    assert cdc.run(lambda event: None, stop_when=stop_now) == 0
    assert clock.sleeps == []
    cdc.close()


def test_transactional_run_feeds_an_event_store_exactly_once(
    engine: SqliteEngine, writer: sqlite3.Connection, clock: ManualClock
) -> None:
    store = open_event_store(engine)
    feed = EventStoreFeed(store)
    cdc = capture(engine, ["orders"], slot="feed", clock=clock)
    writer.execute("INSERT INTO orders (id, item) VALUES (1, 'a')")
    cdc.open()
    writer.execute("INSERT INTO orders (id, item) VALUES (2, 'b')")
    writer.execute("DELETE FROM orders WHERE id = 1")

    appended = store.append_batch

    def failing_once(requests: Any, **options: Any) -> Any:
        appended(requests, **options)
        store.append_batch = appended  # type: ignore[method-assign]
        raise RuntimeError("crash after the append, before the commit")

    store.append_batch = failing_once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="crash"):
        cdc.run(feed, transactional=True, stop_when=lambda: True)
    assert store.read_all() == []  # the append rolled back with the confirmation
    cdc.run(feed, transactional=True, stop_when=lambda: True)  # the snapshot row again
    cdc.run(feed, transactional=True, stop_when=lambda: True)  # then the two changes
    recorded = store.read_all()
    assert [event.type for event in recorded] == [
        "orders.read",
        "orders.created",
        "orders.deleted",
    ]
    assert {event.stream_id for event in recorded} == {"cdc-feed"}
    assert recorded[1].data["after"] == {
        "id": 2,
        "item": "b",
        "qty": None,
        "price": None,
        "photo": None,
    }
    assert undelivered(engine, "feed") == 0
    cdc.close()


def test_transactional_needs_a_handler_on_the_same_engine_thread(engine: SqliteEngine) -> None:
    cdc = capture(engine, ["orders"], snapshot=False)
    assert cdc.supports_transactions
    assert cdc.run(lambda event: None, transactional=True, stop_when=lambda: True) == 0
    cdc.close()


# -- asyncio ---------------------------------------------------------------------------------------


async def test_the_async_twin_polls_confirms_and_runs(
    engine: SqliteEngine, writer: sqlite3.Connection, clock: ManualClock
) -> None:
    writer.execute("INSERT INTO orders (id) VALUES (1)")
    cdc = acapture(engine, ["orders"], slot="aio", clock=clock)
    await cdc.open()
    writer.execute("INSERT INTO orders (id) VALUES (2)")
    (snapshot_row,) = await cdc.poll(10)
    assert snapshot_row.op == "r"
    await cdc.confirm(snapshot_row)
    assert cdc.position == snapshot_row.position
    seen: list[int] = []

    async def handler(event: ChangeEvent) -> None:
        seen.append(event.after["id"])

    assert await cdc.run(handler, stop_when=lambda: True) == 1
    assert seen == [2]
    async with cdc:
        pass
    again = acapture(engine, ["orders"], slot="aio")
    assert await again.poll() == []
    await again.drop()
    assert again.position is None


async def test_the_async_twin_on_memory_runs_inline() -> None:
    engine = seawall.connect("sqlite://:memory:")
    assert isinstance(engine, SqliteEngine)
    engine.connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    cdc = acapture(engine, ["t"], snapshot=False)
    await cdc.open()
    engine.connection.execute("INSERT INTO t VALUES (1)")
    (event,) = await cdc.poll()
    await cdc.confirm(event)
    await cdc.close()
    engine.close()
