"""One contract for change data capture on every engine that offers it (SQLite, PostgreSQL).

PostgreSQL runs on the throwaway ``wal_level=logical`` cluster of ``_pg_logical.py``,
with ``REPLICA IDENTITY FULL`` so that ``before`` images match SQLite's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import seawall
from _pg_logical import pg_logical_url  # noqa: F401  (fixture)
from seawall.clock import ManualClock
from seawall.engines._base import Engine
from seawall.engines.postgres import PostgresEngine
from seawall.engines.sqlite import SqliteEngine
from seawall.eventsourcing.cdc import ChangeCapture, ChangeEvent, capture


@dataclass
class Setup:
    """An engine with a fresh ``table``, a way to run SQL on it, and captures to clean up."""

    engine: Engine
    table: str
    execute: Callable[..., None]
    made: list[ChangeCapture]

    def capture(self, slot: str, **options: Any) -> ChangeCapture:
        if isinstance(self.engine, PostgresEngine):
            options.setdefault("full_before_images", True)
        cdc = capture(self.engine, [self.table], slot=slot, **options)
        self.made.append(cdc)
        return cdc


def _sqlite(tmp_path: Path) -> Iterator[Setup]:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'cdc.db'}")
    assert isinstance(engine, SqliteEngine)

    def execute(*statements: str) -> None:
        conn = engine.connection
        conn.execute("BEGIN IMMEDIATE")
        for statement in statements:
            conn.execute(statement)
        conn.execute("COMMIT")

    table = "items"
    execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    setup = Setup(engine, table, execute, [])
    yield setup
    for cdc in setup.made:
        cdc.drop()
    engine.close()


def _postgres(url: str) -> Iterator[Setup]:
    engine = seawall.connect(url)
    assert isinstance(engine, PostgresEngine)

    def execute(*statements: str) -> None:
        with engine.connection() as conn, conn.transaction():
            for statement in statements:
                conn.execute(statement)

    table = f"items_{uuid.uuid4().hex[:8]}"
    execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, name text, score double precision)")
    setup = Setup(engine, table, execute, [])
    yield setup
    for cdc in setup.made:
        cdc.drop()
    execute(f"DROP TABLE {table}")
    engine.close()


@pytest.fixture(params=["sqlite", "postgres"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if request.param == "sqlite":
        yield from _sqlite(tmp_path)
    else:
        yield from _postgres(request.getfixturevalue("pg_logical_url"))


def slot() -> str:
    return f"c_{uuid.uuid4().hex[:10]}"


def drain(cdc: ChangeCapture, confirm: bool = True) -> list[ChangeEvent]:
    events: list[ChangeEvent] = []
    while batch := cdc.poll(50):
        events += batch
        if confirm:
            cdc.confirm(batch[-1])
    return events


def test_the_same_changes_come_out_the_same_on_every_engine(setup: Setup) -> None:
    setup.execute(f"INSERT INTO {setup.table} VALUES (1, 'one', 1.5)")
    cdc = setup.capture(slot())
    cdc.open()
    setup.execute(f"INSERT INTO {setup.table} VALUES (2, 'two', NULL)")
    setup.execute(
        f"UPDATE {setup.table} SET name = 'ONE', score = 2.0 WHERE id = 1",
        f"DELETE FROM {setup.table} WHERE id = 2",
    )
    events = drain(cdc)
    one = {"id": 1, "name": "one", "score": 1.5}
    two = {"id": 2, "name": "two", "score": None}
    assert [(e.op, e.before, e.after, e.key) for e in events] == [
        ("r", None, one, {"id": 1}),
        ("c", None, two, {"id": 2}),
        ("u", one, {"id": 1, "name": "ONE", "score": 2.0}, {"id": 1}),
        ("d", two, None, {"id": 2}),
    ]
    assert [e.source.snapshot for e in events] == ["last", "false", "false", "false"]
    positions = [e.position for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    for event in events:
        envelope = event.to_debezium()
        assert set(envelope) == {"before", "after", "source", "op", "ts_ms"}
        assert envelope["source"]["table"] == setup.table
        assert envelope["source"]["name"] == cdc.slot
        assert isinstance(envelope["ts_ms"], int)


def test_confirmed_changes_never_come_back_and_unconfirmed_ones_do(setup: Setup) -> None:
    name = slot()
    cdc = setup.capture(name, snapshot=False)
    cdc.open()
    for number in range(1, 5):
        setup.execute(f"INSERT INTO {setup.table} (id) VALUES ({number})")
    first = cdc.poll(2)
    cdc.confirm(first[-1])
    rest = cdc.poll(10)
    assert [e.after["id"] for e in first + rest] == [1, 2, 3, 4]
    cdc.close()
    setup.made.remove(cdc)
    again = setup.capture(name, snapshot=False)
    redelivered = drain(again)
    assert [e.after["id"] for e in redelivered] == [3, 4]
    assert [e.id for e in redelivered] == [e.id for e in rest]  # same change, same id
    again.close()
    assert drain(setup.capture(name, snapshot=False)) == []


def test_no_snapshot_means_changes_only(setup: Setup) -> None:
    setup.execute(f"INSERT INTO {setup.table} (id) VALUES (1)")
    cdc = setup.capture(slot(), snapshot=False)
    cdc.open()
    setup.execute(f"INSERT INTO {setup.table} (id) VALUES (2)")
    assert [(e.op, e.after["id"]) for e in drain(cdc)] == [("c", 2)]


def test_run_redelivers_from_the_change_whose_handler_failed(setup: Setup) -> None:
    cdc = setup.capture(slot(), snapshot=False, clock=ManualClock())
    cdc.open()
    setup.execute(*(f"INSERT INTO {setup.table} (id) VALUES ({n})" for n in (1, 2, 3)))
    seen: list[int] = []
    failures = iter([True])

    def handler(event: ChangeEvent) -> None:
        if event.after["id"] == 2 and next(failures, False):
            raise RuntimeError("boom")
        seen.append(event.after["id"])

    with pytest.raises(RuntimeError):
        cdc.run(handler)
    cdc.run(handler, stop_when=lambda: len(seen) >= 3)
    assert seen == [1, 2, 3]


def test_drop_forgets_the_slot_and_a_new_one_snapshots_again(setup: Setup) -> None:
    name = slot()
    setup.execute(f"INSERT INTO {setup.table} (id) VALUES (1)")
    cdc = setup.capture(name)
    assert [e.op for e in drain(cdc)] == ["r"]
    cdc.drop()
    setup.made.remove(cdc)
    setup.execute(f"INSERT INTO {setup.table} (id) VALUES (2)")
    assert [(e.op, e.after["id"]) for e in drain(setup.capture(name))] == [("r", 1), ("r", 2)]
