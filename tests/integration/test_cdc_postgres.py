"""Change data capture against a real PostgreSQL with wal_level=logical (a throwaway cluster).

The shared server runs with wal_level=replica and is never reconfigured; these tests
start their own cluster once per session (``_pg_logical.py``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import seawall
from _pg_logical import pg_logical_url  # noqa: F401  (fixture)
from seawall.clock import ManualClock
from seawall.engines.postgres import PostgresEngine
from seawall.errors import ConfigurationError
from seawall.eventsourcing.cdc import (
    ChangeEvent,
    LogicalDecodingUnavailableError,
    UncapturableTableError,
    UnknownTableError,
    acapture,
    capture,
)
from seawall.eventsourcing.cdc.postgres import PostgresChangeCapture

pytestmark = pytest.mark.engine("postgres")


@pytest.fixture
def engine(pg_logical_url: str) -> Iterator[PostgresEngine]:  # noqa: F811
    db = seawall.connect(pg_logical_url)
    assert isinstance(db, PostgresEngine)
    yield db
    db.close()


@pytest.fixture
def table(engine: PostgresEngine) -> Iterator[str]:
    name = f"orders_{uuid.uuid4().hex[:8]}"
    with engine.connection() as conn:
        conn.execute(
            f"CREATE TABLE {name} (id int PRIMARY KEY, item text, qty int, price numeric, "
            "data jsonb, ok boolean)"
        )
    yield name
    with engine.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def slots(engine: PostgresEngine) -> Iterator[list[PostgresChangeCapture]]:
    """Captures to drop at the end, so no slot keeps WAL after the test."""
    made: list[PostgresChangeCapture] = []
    yield made
    for cdc in made:
        cdc.drop()


def new_capture(
    engine: PostgresEngine, tables: list[str], made: list[PostgresChangeCapture], **options: Any
) -> PostgresChangeCapture:
    options.setdefault("slot", f"t_{uuid.uuid4().hex[:10]}")
    cdc = capture(engine, tables, **options)
    assert isinstance(cdc, PostgresChangeCapture)
    made.append(cdc)
    return cdc


def execute(engine: PostgresEngine, *statements: str) -> None:
    with engine.connection() as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement)


def ops(events: list[ChangeEvent]) -> list[tuple[str, Any, Any]]:
    return [(event.op, event.before, event.after) for event in events]


@pytest.mark.parametrize("plugin", ["pgoutput", "test_decoding"])
def test_snapshot_then_insert_update_delete_round_trip(
    engine: PostgresEngine, table: str, slots: list[PostgresChangeCapture], plugin: str
) -> None:
    execute(engine, f"INSERT INTO {table} VALUES (1, 'tea', 1, 2.50, '{{\"a\": 1}}', true)")
    cdc = new_capture(engine, [table], slots, plugin=plugin, full_before_images=True)
    cdc.open()
    assert cdc.core.snapshot_exported  # superuser: the exact, exported snapshot
    execute(engine, f"INSERT INTO {table} (id, item) VALUES (2, 'it''s')")
    execute(
        engine,
        f"UPDATE {table} SET qty = 5 WHERE id = 1",
        f"DELETE FROM {table} WHERE id = 2",
    )
    row1 = {"id": 1, "item": "tea", "qty": 1, "price": "2.50", "data": {"a": 1}, "ok": True}
    row2 = {"id": 2, "item": "it's", "qty": None, "price": None, "data": None, "ok": None}
    snapshot = cdc.poll(10)
    assert ops(snapshot) == [("r", None, row1)]
    assert snapshot[0].source.snapshot == "last"
    changes = cdc.poll(10)
    assert ops(changes) == [("c", None, row2), ("u", row1, {**row1, "qty": 5}), ("d", row2, None)]
    assert [event.key for event in changes] == [{"id": 2}, {"id": 1}, {"id": 2}]
    # The update and the delete share a transaction: one offset, two sequence numbers.
    assert changes[1].position.offset == changes[2].position.offset
    assert [changes[1].position.sequence, changes[2].position.sequence] == [0, 1]
    envelope = changes[0].to_debezium()
    assert envelope["source"]["connector"] == "postgresql"
    assert envelope["source"]["table"] == table
    assert envelope["source"]["schema"] == "public"
    assert envelope["source"]["db"] == "postgres"
    assert isinstance(envelope["source"]["lsn"], int)
    assert isinstance(envelope["source"]["txId"], int)
    assert changes[1].source.tx_id == changes[2].source.tx_id != changes[0].source.tx_id
    cdc.confirm(changes[-1])
    assert cdc.poll(10) == []


def test_default_replica_identity_gives_key_only_before_images(
    engine: PostgresEngine, table: str, slots: list[PostgresChangeCapture]
) -> None:
    cdc = new_capture(engine, [table], slots, snapshot=False)
    cdc.open()
    execute(engine, f"INSERT INTO {table} (id, item) VALUES (1, 'a')")
    execute(engine, f"UPDATE {table} SET item = 'b' WHERE id = 1")
    execute(engine, f"UPDATE {table} SET id = 2 WHERE id = 1")
    execute(engine, f"DELETE FROM {table} WHERE id = 2")
    events = cdc.poll(10)
    assert [(event.op, event.before) for event in events] == [
        ("c", None),
        ("u", None),  # no before image without REPLICA IDENTITY FULL
        ("u", {"id": 1}),  # the old key, because it changed
        ("d", {"id": 2}),
    ]


def test_writes_after_open_are_changes_not_snapshot_rows(
    engine: PostgresEngine, table: str, slots: list[PostgresChangeCapture]
) -> None:
    execute(engine, f"INSERT INTO {table} (id) SELECT g FROM generate_series(1, 50) g")
    cdc = new_capture(engine, [table], slots)
    cdc.open()
    execute(engine, f"INSERT INTO {table} (id) VALUES (51)", f"DELETE FROM {table} WHERE id = 1")
    seen: list[tuple[str, int]] = []
    while events := cdc.poll(7):
        seen += [(e.op, (e.after or e.before or {})["id"]) for e in events]
        cdc.confirm(events[-1])
    assert seen == [("r", n) for n in range(1, 51)] + [("c", 51), ("d", 1)]


def test_resume_after_restart_from_the_confirmed_position(
    engine: PostgresEngine, table: str, slots: list[PostgresChangeCapture]
) -> None:
    slot = f"t_{uuid.uuid4().hex[:10]}"
    cdc = new_capture(engine, [table], slots, slot=slot, snapshot=False)
    cdc.open()
    execute(engine, f"INSERT INTO {table} (id) VALUES (1)")
    execute(engine, f"INSERT INTO {table} (id) VALUES (2)", f"INSERT INTO {table} (id) VALUES (3)")
    execute(engine, f"INSERT INTO {table} (id) VALUES (4)")
    first = cdc.poll(2)
    assert [event.after["id"] for event in first] == [1, 2]
    cdc.confirm(first[-1])  # confirms transaction 1 and half of transaction 2
    cdc.close()
    resumed = new_capture(engine, [table], slots, slot=slot, snapshot=False)
    ids = [event.after["id"] for event in resumed.poll(10)]
    # Transaction 1 is gone for good; transaction 2 comes back whole (the slot moves by
    # transactions, so id 2 is delivered a second time: at-least-once).
    assert ids == [2, 3, 4]
    slots.remove(cdc)


def test_no_loss_and_no_duplicates_beyond_unconfirmed_ones_with_a_concurrent_writer(
    engine: PostgresEngine, table: str, slots: list[PostgresChangeCapture]
) -> None:
    slot = f"t_{uuid.uuid4().hex[:10]}"
    execute(engine, f"INSERT INTO {table} (id) SELECT g FROM generate_series(1, 100) g")
    total = 400

    def write() -> None:
        with psycopg.connect(engine.url, autocommit=True) as conn:
            for start in range(101, 101 + total, 4):
                with conn.transaction():
                    for number in range(start, start + 4):
                        conn.execute(f"INSERT INTO {table} (id) VALUES (%s)", (number,))

    writer = threading.Thread(target=write)
    delivered: list[int] = []
    cdc = new_capture(engine, [table], slots, slot=slot)
    cdc.open()
    writer.start()
    try:
        # First life: handle and confirm a few batches, then "crash" with a batch unconfirmed.
        batches = 0
        confirmed: list[ChangeEvent] = []
        deadline = time.monotonic() + 60
        while batches < 5 and time.monotonic() < deadline:
            events = cdc.poll(30)
            if not events:
                time.sleep(0.005)  # the writer has not committed more yet
                continue
            delivered += [event.after["id"] for event in events]
            cdc.confirm(events[-1])
            confirmed += events
            batches += 1
        unconfirmed = cdc.poll(30)
        delivered += [event.after["id"] for event in unconfirmed]
        cdc.close()
    finally:
        writer.join(timeout=60)
    assert not writer.is_alive()
    resumed = new_capture(engine, [table], slots, slot=slot, clock=ManualClock())
    wanted = set(range(1, 101 + total))

    def record(event: ChangeEvent) -> None:
        delivered.append(event.after["id"])

    resumed.run(record, batch_size=50, stop_when=lambda: wanted <= set(delivered))
    assert set(delivered) == wanted  # nothing lost
    duplicates = len(delivered) - len(set(delivered))
    # Only what was handed out but never confirmed comes again, plus the confirmed
    # start of a transaction the last confirmation cut in two (a slot moves by whole
    # transactions; here at most 3 of a transaction's 4 rows).
    last = confirmed[-1].position
    split = bool(unconfirmed) and unconfirmed[0].position.offset == last.offset
    cut = sum(1 for event in confirmed if event.position.offset == last.offset) if split else 0
    assert cut <= 3
    assert duplicates <= len(unconfirmed) + cut
    slots.remove(cdc)


def test_an_interrupted_snapshot_starts_over_with_a_new_slot(
    engine: PostgresEngine, table: str, slots: list[PostgresChangeCapture]
) -> None:
    slot = f"t_{uuid.uuid4().hex[:10]}"
    execute(engine, f"INSERT INTO {table} (id) VALUES (1), (2)")
    cdc = new_capture(engine, [table], slots, slot=slot)
    first = cdc.poll(1)
    cdc.confirm(first[0])
    cdc.close()
    execute(engine, f"INSERT INTO {table} (id) VALUES (3)")
    again = new_capture(engine, [table], slots, slot=slot)
    rows = again.poll(10)
    assert [(event.op, event.after["id"]) for event in rows] == [("r", 1), ("r", 2), ("r", 3)]
    again.confirm(rows[-1])
    assert again.poll(10) == []
    slots.remove(cdc)


def test_other_tables_traffic_does_not_hold_the_slot_back(
    engine: PostgresEngine, table: str, slots: list[PostgresChangeCapture]
) -> None:
    other = f"other_{uuid.uuid4().hex[:8]}"
    execute(engine, f"CREATE TABLE {other} (id int PRIMARY KEY)")
    try:
        cdc = new_capture(engine, [table], slots, plugin="test_decoding", snapshot=False)
        cdc.open()
        execute(engine, f"INSERT INTO {other} VALUES (1)")
        start = cdc.core.slot_offset
        assert cdc.poll(10) == []
        assert cdc.core.slot_offset > start  # moved past a transaction with nothing for us
        with engine.connection() as conn:
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (cdc.slot,),
            ).fetchone()
        assert row is not None
        from seawall.eventsourcing.cdc._decoding import parse_lsn

        assert parse_lsn(row[0]) == cdc.core.slot_offset
    finally:
        execute(engine, f"DROP TABLE {other}")


def test_bad_input_gives_clear_errors(
    engine: PostgresEngine, table: str, slots: list[PostgresChangeCapture]
) -> None:
    with pytest.raises(UnknownTableError, match="nope"):
        new_capture(engine, [table, "nope"], slots).open()
    keyless = f"keyless_{uuid.uuid4().hex[:8]}"
    execute(engine, f"CREATE TABLE {keyless} (line text)")
    try:
        with pytest.raises(UncapturableTableError, match="no primary key"):
            new_capture(engine, [keyless], slots).open()
    finally:
        execute(engine, f"DROP TABLE {keyless}")
    cdc = new_capture(engine, [table], slots, snapshot=False)
    with pytest.raises(ConfigurationError, match="not transactional"):
        cdc.confirm((1, 0), transaction=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="transactional=True"):
        cdc.run(lambda event: None, transactional=True)
    with engine.connection() as conn:
        busy = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
    assert busy is not None


def test_the_shared_server_without_logical_decoding_is_refused(postgres_url: str) -> None:
    db = seawall.connect(postgres_url)
    try:
        with db.connection() as conn:  # type: ignore[attr-defined]
            level = conn.execute("SHOW wal_level").fetchone()[0]
        if level == "logical":
            pytest.skip("the shared server already runs with wal_level=logical")
        with pytest.raises(LogicalDecodingUnavailableError, match="wal_level=logical"):
            capture(db, ["anything"], slot="never_created").open()
    finally:
        db.close()


async def test_the_async_twin_round_trip(engine: PostgresEngine, table: str) -> None:
    execute(engine, f"INSERT INTO {table} (id, item) VALUES (1, 'a')")
    cdc = acapture(engine, [table], slot=f"t_{uuid.uuid4().hex[:10]}", clock=ManualClock())
    try:
        await cdc.open()
        execute(engine, f"INSERT INTO {table} (id, item) VALUES (2, 'b')")
        seen: list[tuple[str, int]] = []

        async def handler(event: ChangeEvent) -> None:
            seen.append((event.op, event.after["id"]))

        await cdc.run(handler, stop_when=lambda: len(seen) >= 2)
        assert seen == [("r", 1), ("c", 2)]
        assert cdc.position is not None
        assert cdc.position.offset > 0
    finally:
        await cdc.drop()
        await engine.aclose()
