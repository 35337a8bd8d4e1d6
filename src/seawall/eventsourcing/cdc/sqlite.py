"""Change data capture on SQLite: triggers write every row change into a change table.

For each captured table, three triggers (``AFTER INSERT``, ``UPDATE``, ``DELETE``)
insert a row into ``seawall_cdc_changes`` holding the old and new row as JSON
(``json_object`` of the table's columns; BLOBs as ``\\x``-prefixed hex, as PostgreSQL
prints ``bytea``). The change row's id is the position: ids only grow, because the row
with the highest id is never deleted (SQLite gives a new row the highest id plus one;
``AUTOINCREMENT`` would guarantee the same at the cost of a second write per change).
Each slot stores the id it confirmed last. The change is written in the application's own transaction, so a rolled
back write leaves no change behind and a committed one always has its change.

Confirming a position deletes the slot's change rows up to it. Each slot (consumer)
has its own triggers and its own change rows, like a PostgreSQL replication slot.

The initial snapshot is exact on a database file: the triggers are created in a write
transaction, and a second connection opens its read transaction while that write
lock is held, so it sees the tables exactly as they were when capture began; every
later write is in the change table. An in-memory database is read inside the write
transaction instead.

Triggers list the columns the table has when the capture opens; opening the capture
again after ``ALTER TABLE`` re-creates them with the new columns.
"""

from __future__ import annotations

import asyncio
import functools
import json
import json.scanner
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.eventsourcing.cdc._capture import DEFAULT_BATCH, AsyncChangeCapture, ChangeCapture
from seawall.eventsourcing.cdc._cursor import SnapshotProgress, check_max_events, check_position
from seawall.eventsourcing.cdc._errors import (
    ChangeDecodingError,
    UncapturableTableError,
    UnknownTableError,
)
from seawall.eventsourcing.cdc._events import CaptureOpened, SnapshotCompleted
from seawall.eventsourcing.cdc._model import (
    ChangeEvent,
    ChangePosition,
    ChangeSource,
    TableInfo,
    new_change_event,
)

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.engines.sqlite import SqliteEngine

__all__ = ["AsyncSqliteChangeCapture", "SqliteChangeCapture"]

CHANGES = "seawall_cdc_changes"
SLOTS = "seawall_cdc_slots"
MAX_PAIRS = 60
"""Columns per ``json_object`` call: SQLite allows 127 function arguments by default."""

_T = TypeVar("_T")
# The C scanner of the json module: parses the compact JSON json_object writes, without the
# whitespace handling of json.loads (typeshed types its argument as a scanner context).
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]

_CREATE_CHANGES = f"""CREATE TABLE IF NOT EXISTS {CHANGES} (
    id INTEGER PRIMARY KEY,
    slot TEXT NOT NULL,
    tbl TEXT NOT NULL,
    op TEXT NOT NULL,
    before TEXT,
    after TEXT,
    ts_ms INTEGER NOT NULL
)"""
_CREATE_SLOTS = f"""CREATE TABLE IF NOT EXISTS {SLOTS} (
    slot TEXT PRIMARY KEY,
    tables TEXT NOT NULL,
    triggers TEXT NOT NULL,
    snapshot_done INTEGER NOT NULL,
    confirmed_id INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
)"""
_KEEP_NEWEST = f"id < (SELECT max(id) FROM {CHANGES})"
"""Never delete the newest change row: new ids would start again below it."""
_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def row_json(columns: Sequence[str], prefix: str) -> str:
    """SQL building a JSON object of ``columns`` (read through ``prefix``, e.g. ``NEW.``)."""
    pairs = []
    for column in columns:
        value = f"{prefix}{_quote(column)}"
        pairs.append(
            (
                column,
                f"CASE WHEN typeof({value}) = 'blob' THEN '\\x' || lower(hex({value})) "
                f"ELSE {value} END",
            )
        )
    head = pairs[:MAX_PAIRS]
    sql = "json_object(" + ", ".join(f"{_literal(name)}, {value}" for name, value in head) + ")"
    for start in range(MAX_PAIRS, len(pairs), MAX_PAIRS):
        chunk = pairs[start : start + MAX_PAIRS]
        sql = (
            f"json_insert({sql}, "
            + ", ".join(f"{_literal('$.' + _quote(name))}, {value}" for name, value in chunk)
            + ")"
        )
    return sql


def _trigger_sql(slot: str, info: TableInfo) -> list[tuple[str, str]]:
    """(name, CREATE TRIGGER statement) for the insert, update and delete triggers."""
    table = info.name
    new, old = row_json(info.columns, "NEW."), row_json(info.columns, "OLD.")
    values = {
        "i": ("INSERT", "'c'", "NULL", new),
        "u": ("UPDATE", "'u'", old, new),
        "d": ("DELETE", "'d'", old, "NULL"),
    }
    statements = []
    for suffix, (event, op, before, after) in values.items():
        name = f"seawall_cdc__{slot}__{table}__{suffix}"
        statements.append(
            (
                name,
                f"CREATE TRIGGER {_quote(name)} AFTER {event} ON {_quote(table)} BEGIN "
                f"INSERT INTO {CHANGES} (slot, tbl, op, before, after, ts_ms) VALUES "
                f"({_literal(slot)}, {_literal(table)}, {op}, {before}, {after}, {_NOW_MS}); END",
            )
        )
    return statements


def _now_ms() -> int:
    return int(time.time() * 1000)


class SqliteChangeCapture(ChangeCapture):
    """Trigger-based change capture of SQLite tables (see the module docs).

    Opens its own connections to the database file (the engine's per-thread
    connection for ``:memory:``). ``confirm(position, transaction=tx)`` deletes the
    confirmed changes inside the caller's transaction, so a read model written in
    the same transaction and the position commit together.
    """

    supports_transactions = True

    def __init__(
        self,
        engine: SqliteEngine,
        tables: Sequence[str],
        *,
        slot: str,
        snapshot: bool = True,
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(slot=slot, tables=tables, name=name, clock=clock)
        self.engine = engine
        self.snapshot = snapshot
        self._memory = engine.path == ":memory:"
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_cursor: sqlite3.Cursor | None = None
        self._reader_info: TableInfo | None = None
        self._reader_queue: deque[TableInfo] = deque()
        self._infos: dict[str, TableInfo] = {}
        self._progress = SnapshotProgress()
        self._epoch = 0
        self._confirmed_id = 0
        self._opened = False
        self._delivered: ChangePosition | None = None
        self._stream_after = 0
        self._sql_poll = (
            f"SELECT id, tbl, op, before, after, ts_ms FROM {CHANGES} "
            "WHERE slot = ? AND id > ? ORDER BY id LIMIT ?"
        )

    # -- connections --------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._memory:
            return self.engine.connection
        conn = self._conn
        if conn is None:
            conn = self._conn = self._connect()
        return conn

    def _connect(self) -> sqlite3.Connection:
        engine = self.engine
        conn = sqlite3.connect(
            engine.path, timeout=engine.timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(engine.timeout * 1000)}")
        return conn

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _transaction(self) -> AbstractContextManager[Transaction]:
        return self.engine.transaction()

    # -- opening ------------------------------------------------------------------------------

    def _describe(self, conn: sqlite3.Connection) -> dict[str, TableInfo]:
        infos: dict[str, TableInfo] = {}
        missing: list[str] = []
        for spec in self.tables:
            name = spec
            found = conn.execute(
                "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name = ? COLLATE NOCASE",
                (name,),
            ).fetchone()
            if found is None and spec.lower().startswith("main."):
                name = spec[5:]
                found = conn.execute(
                    "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                    "AND name = ? COLLATE NOCASE",
                    (name,),
                ).fetchone()
            if found is None:
                missing.append(spec)
                continue
            name, kind = found
            if kind != "table":
                raise UncapturableTableError(
                    spec, "it is a view; capture the tables the view reads instead"
                )
            if name.startswith("seawall_cdc_"):
                raise UncapturableTableError(spec, "it is one of change capture's own tables")
            columns = conn.execute(f"PRAGMA main.table_info({_quote(name)})").fetchall()
            keys = sorted((row[5], row[1]) for row in columns if row[5])
            infos[name] = TableInfo(
                "main",
                name,
                tuple(row[1] for row in columns),
                tuple(0 for _ in columns),
                tuple(column for _, column in keys),
                identity_full=True,
            )
        if missing:
            raise UnknownTableError(missing, f"SQLite database {self.engine.path!r}")
        return infos

    def open(self) -> None:
        """Create the change table and this slot's triggers; start the snapshot if one is due.

        A slot whose snapshot was interrupted (the process stopped before its last row
        was confirmed) starts over: its pending changes are dropped and a new snapshot
        is taken, so nothing is lost.
        """
        if self._opened:
            return
        conn = self._connection()
        if conn.in_transaction:
            raise ConfigurationError(
                "a change capture on an in-memory SQLite database cannot open inside a "
                "transaction; open it (cdc.open()) before beginning one"
            )
        infos = self._describe(conn)
        progress = SnapshotProgress()
        try:
            created = self._begin_capture(conn, infos, progress)
        except BaseException:
            self._close_reader()
            raise
        self._infos = infos
        self._progress = progress
        self._delivered = None
        self._stream_after = self._confirmed_id
        self._opened = True
        if self.events.active:
            self.events.emit(CaptureOpened(self.name, self.slot, created, progress.active))

    def _begin_capture(
        self, conn: sqlite3.Connection, infos: dict[str, TableInfo], progress: SnapshotProgress
    ) -> bool:
        """Create the tables and triggers; returns True when the slot starts afresh."""
        tables_json = json.dumps(sorted(infos))
        with self._write(conn):
            conn.execute(_CREATE_CHANGES)
            conn.execute(_CREATE_SLOTS)
            state = conn.execute(
                f"SELECT tables, triggers, snapshot_done, confirmed_id FROM {SLOTS} WHERE slot = ?",
                (self.slot,),
            ).fetchone()
            newest = conn.execute(f"SELECT coalesce(max(id), 0) FROM {CHANGES}").fetchone()[0]
            old_triggers: list[str] = json.loads(state[1]) if state is not None else []
            for trigger in old_triggers:
                conn.execute(f"DROP TRIGGER IF EXISTS {_quote(trigger)}")
            triggers: list[str] = []
            for info in infos.values():
                for trigger, statement in _trigger_sql(self.slot, info):
                    conn.execute(statement)
                    triggers.append(trigger)
            fresh = bool(state is None or (self.snapshot and not state[2]))
            if fresh:
                conn.execute(
                    f"DELETE FROM {CHANGES} WHERE slot = ? AND {_KEEP_NEWEST}", (self.slot,)
                )
                conn.execute(
                    f"INSERT OR REPLACE INTO {SLOTS} VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        self.slot,
                        tables_json,
                        json.dumps(triggers),
                        int(not self.snapshot),
                        newest,  # changes from now on only
                        _now_ms(),
                    ),
                )
                self._confirmed_id = newest
            else:
                self._confirmed_id = int(state[3])
                conn.execute(
                    f"UPDATE {SLOTS} SET tables = ?, triggers = ?, snapshot_done = 1 WHERE slot = ?",
                    (tables_json, json.dumps(triggers), self.slot),
                )
            if fresh and self.snapshot:
                progress.active = True
                self._epoch = newest
                self._reader_queue = deque(infos.values())
                if self._memory:
                    self._reader = conn
                    self._infos = infos
                    self._progress = progress
                    self._read_snapshot(progress, (1 << 31) - 1)
                else:
                    reader = self._reader = self._connect()
                    reader.execute("BEGIN")
                    reader.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return fresh

    # -- reading ------------------------------------------------------------------------------

    def _read_snapshot(self, progress: SnapshotProgress, count: int) -> None:
        reader = self._reader
        now_ms = _now_ms()
        slot, db, epoch = self.slot, self.engine.path, self._epoch
        while count > 0 and not progress.exhausted and reader is not None:
            cursor = self._reader_cursor
            info = self._reader_info
            if cursor is None or info is None:
                if not self._reader_queue:
                    progress.exhausted = True
                    self._close_reader()
                    break
                info = self._reader_info = self._reader_queue.popleft()
                cursor = self._reader_cursor = reader.execute(
                    f"SELECT {row_json(info.columns, '')} FROM {_quote(info.name)}"
                )
            rows = cursor.fetchmany(count)
            key_columns = info.primary_key
            for (data,) in rows:
                after = json.loads(data)
                progress.buffer.append(
                    ChangeEvent(
                        "r",
                        None,
                        after,
                        ChangeSource(
                            "sqlite", slot, db, "main", info.name, now_ms, "true", None, None, epoch
                        ),
                        now_ms,
                        ChangePosition(0, progress.next_sequence()),
                        {column: after.get(column) for column in key_columns}
                        if key_columns
                        else None,
                    )
                )
            if len(rows) < count:
                self._reader_cursor = None
                self._reader_info = None
            count -= len(rows)

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        self._reader_cursor = None
        self._reader_info = None
        if reader is None or reader is self._conn or self._memory:
            return
        try:
            if reader.in_transaction:
                reader.execute("ROLLBACK")
        finally:
            reader.close()

    def poll(self, max_events: int = DEFAULT_BATCH) -> list[ChangeEvent]:
        """Up to ``max_events`` changes: the snapshot's rows first, then the change table's."""
        check_max_events(max_events)
        self.open()
        progress = self._progress
        if progress.reading:
            self._read_snapshot(progress, progress.wanted(max_events))
            if progress.empty:
                progress.active = False
                self._snapshot_done(self._connection(), 0)
            events = progress.take(max_events)
            if events:
                self._delivered = events[-1].position
                return events
        rows = (
            self._connection()
            .execute(self._sql_poll, (self.slot, self._stream_after, max_events))
            .fetchall()
        )
        if not rows:
            return []
        now_ms = _now_ms()
        slot, db, infos, scan = self.slot, self.engine.path, self._infos, _scan
        events = []
        for change_id, table, op, before_json, after_json, ts_ms in rows:
            try:
                before = scan(before_json, 0)[0] if before_json is not None else None
                after = scan(after_json, 0)[0] if after_json is not None else None
            except (StopIteration, ValueError, TypeError) as exc:
                raise ChangeDecodingError(
                    f"change row {change_id} of {CHANGES} does not hold a JSON row image "
                    f"({type(exc).__name__}); repair or delete that row",
                    data=str(after_json or before_json),
                ) from exc
            info = infos.get(table)
            key = None
            row = after if after is not None else before
            if info is not None and info.primary_key and row is not None:
                key = {column: row.get(column) for column in info.primary_key}
            events.append(
                new_change_event(
                    op,
                    before,
                    after,
                    ChangeSource(
                        "sqlite", slot, db, "main", table, ts_ms, "false", None, None, change_id
                    ),
                    now_ms,
                    ChangePosition(change_id, 0),
                    key,
                )
            )
        self._stream_after = rows[-1][0]
        self._delivered = events[-1].position
        return events

    # -- confirming ---------------------------------------------------------------------------

    def _snapshot_done(self, conn: sqlite3.Connection, rows: int) -> None:
        conn.execute(f"UPDATE {SLOTS} SET snapshot_done = 1 WHERE slot = ?", (self.slot,))
        if self.events.active:
            self.events.emit(SnapshotCompleted(self.name, self.slot, rows))

    def confirm(
        self, position: ChangePosition | ChangeEvent, *, transaction: Transaction | None = None
    ) -> None:
        """Delete the changes up to ``position``: they are never delivered again.

        With ``transaction`` the deletion is part of the caller's transaction (it must
        be a transaction on this database's engine).
        """
        target = check_position(position)
        delivered = self._delivered
        if delivered is None or target > delivered:
            raise ConfigurationError(
                f"position {tuple(target)} has not been delivered by this capture yet (last "
                f"delivered: {None if delivered is None else tuple(delivered)}); confirm only "
                "positions of events poll() returned"
            )
        confirmed = self._confirmed
        if confirmed is not None and target <= confirmed:
            return
        if transaction is not None:
            conn = transaction.connection
            if not isinstance(conn, sqlite3.Connection):
                raise ConfigurationError(
                    f"transaction={transaction!r} is not a SQLite transaction; pass one from "
                    "the capture's engine (engine.transaction())"
                )
            self._apply_confirm(conn, target)
        else:
            conn = self._connection()
            with self._write(conn):
                self._apply_confirm(conn, target)
        self._confirmed = target
        if target.offset > 0:
            self._confirmed_id = target.offset

    def _apply_confirm(self, conn: sqlite3.Connection, target: ChangePosition) -> None:
        progress = self._progress
        if progress.confirm(target):
            self._snapshot_done(conn, progress.total or 0)
        if target.offset > 0:
            conn.execute(
                f"UPDATE {SLOTS} SET confirmed_id = ? WHERE slot = ?", (target.offset, self.slot)
            )
            conn.execute(
                f"DELETE FROM {CHANGES} WHERE slot = ? AND id <= ? AND {_KEEP_NEWEST}",
                (self.slot, target.offset),
            )

    def _unread(self, events: list[ChangeEvent], last_handled: ChangePosition | None) -> None:
        snapshot = [event for event in events if event.position.offset == 0]
        if snapshot:
            self._progress.unread(snapshot)
        self._delivered = last_handled
        if last_handled is not None and last_handled.offset > 0:
            self._stream_after = last_handled.offset
        else:
            self._stream_after = self._confirmed_id

    # -- lifecycle ----------------------------------------------------------------------------

    def drop(self) -> None:
        """Remove this slot's triggers and its unconfirmed changes (other slots are untouched).

        The two bookkeeping tables stay (with at most one old row), so that change ids
        keep growing and never repeat for a slot created again under the same name.
        """
        self._close_reader()
        conn = self._connection()
        with self._write(conn):
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SLOTS,)
            ).fetchone()
            if exists:
                state = conn.execute(
                    f"SELECT triggers FROM {SLOTS} WHERE slot = ?", (self.slot,)
                ).fetchone()
                for trigger in json.loads(state[0]) if state else []:
                    conn.execute(f"DROP TRIGGER IF EXISTS {_quote(trigger)}")
                conn.execute(f"DELETE FROM {SLOTS} WHERE slot = ?", (self.slot,))
                conn.execute(
                    f"DELETE FROM {CHANGES} WHERE slot = ? AND {_KEEP_NEWEST}", (self.slot,)
                )
        self._opened = False
        self._progress = SnapshotProgress()
        self._delivered = None
        self._confirmed = None

    def close(self) -> None:
        """Close the capture's connections; the triggers keep recording changes for the slot."""
        self._close_reader()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._opened = False


class AsyncSqliteChangeCapture(AsyncChangeCapture):
    """The asyncio twin of :class:`SqliteChangeCapture`: each call runs in a worker thread.

    SQLite has no asyncio driver; like the queue, each short call is offloaded to the
    loop's default executor (an in-memory database is called inline, since its
    connection belongs to one thread). Waits between polls are awaited on the loop.
    """

    def __init__(self, capture: SqliteChangeCapture) -> None:
        super().__init__(
            slot=capture.slot, tables=capture.tables, name=capture.name, clock=capture.clock
        )
        self.sync = capture
        self.events = capture.events
        self._offload = not capture._memory

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        if not self._offload:
            return function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(function, *args))

    async def open(self) -> None:
        """See :meth:`SqliteChangeCapture.open`."""
        await self._call(self.sync.open)

    async def poll(self, max_events: int = DEFAULT_BATCH) -> list[ChangeEvent]:
        """See :meth:`SqliteChangeCapture.poll`."""
        return await self._call(self.sync.poll, max_events)

    async def confirm(self, position: ChangePosition | ChangeEvent) -> None:
        """See :meth:`SqliteChangeCapture.confirm`."""
        await self._call(self.sync.confirm, position)
        self._confirmed = self.sync.position

    def _unread(self, events: list[ChangeEvent], last_handled: ChangePosition | None) -> None:
        self.sync._unread(events, last_handled)

    async def drop(self) -> None:
        """See :meth:`SqliteChangeCapture.drop`."""
        await self._call(self.sync.drop)
        self._confirmed = None

    async def close(self) -> None:
        """See :meth:`SqliteChangeCapture.close`."""
        await self._call(self.sync.close)
