"""The SQLite tracker store: the embedded default, one file, safe across processes.

Tables (``seawall_`` is the default ``table_prefix``)::

    seawall_choreography_flows   correlation_id PRIMARY KEY, flow, status, reason, state (JSON),
                                 started_at, updated_at, event_count
    seawall_choreography_events  (correlation_id, event_id) PRIMARY KEY, seq, type, step,
                                 causation_id, data (JSON), published_at, recorded_at

The store opens its own connections (one per thread) in WAL mode. Every ``record`` is
one ``BEGIN IMMEDIATE`` transaction: SQLite's single writer makes the read-fold-write of
a transaction's state atomic, so two trackers never lose each other's events. Times are
Unix seconds from this machine's clock unless a test injects one.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Final

from seawall.clock import Clock
from seawall.engines._sqlite_connections import SqliteConnections
from seawall.errors import ConfigurationError
from seawall.workflows._listing import sqlite_filters
from seawall.workflows.choreography._model import (
    FlowRecord,
    FlowState,
    FlowStatus,
    NewTrackedEvent,
    TrackedEvent,
)
from seawall.workflows.choreography._store import Advance, Recorded
from seawall.workflows.saga._log import check_prefix, time_source

if TYPE_CHECKING:
    from seawall.engines._base import Engine
    from seawall.engines.sqlite import SqliteEngine

__all__ = ["SqliteTrackerStore"]

_SYNCHRONOUS: Final = ("NORMAL", "FULL", "EXTRA")
_ROW: Final = "correlation_id, flow, status, reason, state, started_at, updated_at, event_count"
_EVENT: Final = "seq, event_id, type, step, causation_id, data, published_at, recorded_at"


class _Sql:
    """The statements of one store, with its table names filled in."""

    def __init__(self, prefix: str) -> None:
        flows = f"{prefix}choreography_flows"
        events = f"{prefix}choreography_events"
        self.create_tables = [
            f"CREATE TABLE IF NOT EXISTS {flows} ("
            " correlation_id TEXT PRIMARY KEY,"
            " flow TEXT NOT NULL,"
            " status TEXT NOT NULL,"
            " reason TEXT,"
            " state TEXT NOT NULL,"
            " started_at REAL NOT NULL,"
            " updated_at REAL NOT NULL,"
            " event_count INTEGER NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {flows}_updated ON {flows} (updated_at)",
            f"CREATE INDEX IF NOT EXISTS {flows}_unfinished ON {flows} (updated_at)"
            " WHERE status IN ('running', 'compensating')",
            f"CREATE TABLE IF NOT EXISTS {events} ("
            " correlation_id TEXT NOT NULL,"
            " event_id TEXT NOT NULL,"
            " seq INTEGER NOT NULL,"
            " type TEXT NOT NULL,"
            " step TEXT,"
            " causation_id TEXT,"
            " data TEXT,"
            " published_at REAL,"
            " recorded_at REAL NOT NULL,"
            " PRIMARY KEY (correlation_id, event_id)) WITHOUT ROWID",
        ]
        self.drop_tables = [f"DROP TABLE IF EXISTS {events}", f"DROP TABLE IF EXISTS {flows}"]
        self.row = f"SELECT {_ROW} FROM {flows} WHERE correlation_id = ?"
        self.insert_event = (
            f"INSERT INTO {events} (correlation_id, {_EVENT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING"
        )
        self.insert_flow = f"INSERT INTO {flows} ({_ROW}) VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
        self.update_flow = (
            f"UPDATE {flows} SET status = ?, reason = ?, state = ?, updated_at = ?,"
            " event_count = event_count + 1 WHERE correlation_id = ?"
            f" RETURNING {_ROW}"
        )
        self.history = f"SELECT {_EVENT} FROM {events} WHERE correlation_id = ? ORDER BY seq"
        self.list = (
            f"SELECT {_ROW} FROM {flows} {{filters}} ORDER BY updated_at DESC,"
            " correlation_id DESC LIMIT ?"
        )
        self.mark_stuck = (
            f"UPDATE {flows} SET status = 'stuck' WHERE correlation_id IN ("
            f" SELECT correlation_id FROM {flows} WHERE status IN ('running', 'compensating')"
            f" AND updated_at <= ? ORDER BY updated_at LIMIT ?) RETURNING {_ROW}"
        )


class SqliteTrackerStore:
    """A tracker store in a SQLite database; tables are created when the store is built.

    ``synchronous`` is the durability (``"NORMAL"`` by default: the tracker's history can
    be rebuilt by replaying the topic, so it need not sync every commit); ``clock``
    replaces the wall clock (tests).
    """

    kind: ClassVar[str] = "sqlite"

    def __init__(
        self,
        engine: Engine | str,
        *,
        table_prefix: str = "seawall_",
        synchronous: str = "NORMAL",
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines._base import engine_for
        from seawall.engines.sqlite import SqliteEngine

        opened: Any
        opened, self._owns_engine = engine_for(
            engine, SqliteEngine, "SqliteTrackerStore", "sqlite:///"
        )
        if not isinstance(synchronous, str) or synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"SqliteTrackerStore(synchronous={synchronous!r}) is invalid: use one of "
                f"{_SYNCHRONOUS}"
            )
        self._engine: SqliteEngine = opened
        self.table_prefix = check_prefix(table_prefix)
        self.synchronous = synchronous.upper()
        self._now = time_source(clock)
        self._sql = _Sql(self.table_prefix)
        self._connections = SqliteConnections(
            opened, synchronous=self.synchronous, what="tracker store"
        )
        self._error = self._connections.error
        if create:
            self.create_tables()

    @property
    def engine(self) -> Engine:
        """The SQLite engine the store lives in."""
        return self._engine

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def create_tables(self) -> None:
        """Create the store's tables and indexes if they do not exist."""
        with self._writing() as conn:
            for statement in self._sql.create_tables:
                conn.execute(statement)

    def drop_tables(self) -> None:
        """Drop the store's tables and everything in them (tests, teardown)."""
        with self._writing() as conn:
            for statement in self._sql.drop_tables:
                conn.execute(statement)

    def record(self, event: NewTrackedEvent, advance: Advance) -> Recorded | None:
        """Append the event and store the folded state in one transaction (duplicates: ``None``)."""
        sql = self._sql
        now = self._now()
        with self._writing() as conn:
            row = conn.execute(sql.row, (event.correlation_id,)).fetchone()
            seq = 0 if row is None else int(row[7])
            inserted = conn.execute(
                sql.insert_event,
                (
                    event.correlation_id,
                    seq,
                    event.event_id,
                    event.type,
                    event.step,
                    event.causation_id,
                    event.data,
                    event.published_at,
                    now,
                ),
            ).rowcount
            if inserted != 1:
                return None
            previous = None if row is None else _record(row, ())
            state = advance(None if previous is None else previous.state)
            if previous is None:
                conn.execute(
                    sql.insert_flow,
                    (
                        event.correlation_id,
                        event.flow,
                        state.status.value,
                        state.reason,
                        state.to_json(),
                        now,
                        now,
                    ),
                )
                updated = FlowRecord(
                    event.correlation_id, event.flow, state.status, state.reason, state, now, now, 1
                )
                return Recorded(None, None, updated)
            changed = conn.execute(
                sql.update_flow,
                (state.status.value, state.reason, state.to_json(), now, event.correlation_id),
            ).fetchone()
        return Recorded(previous.status, previous.state, _record(changed, ()))

    def load(self, correlation_id: str) -> FlowRecord | None:
        """The business transaction and its history, read in one snapshot."""
        sql = self._sql
        try:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                row = conn.execute(sql.row, (correlation_id,)).fetchone()
                history = conn.execute(sql.history, (correlation_id,)).fetchall() if row else []
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return None if row is None else _record(row, history)

    def list(
        self,
        *,
        status: Collection[FlowStatus] | None = None,
        flow: str | None = None,
        limit: int = 100,
    ) -> list[FlowRecord]:
        """Business transactions without history, most recently updated first."""
        statuses = None if status is None else [FlowStatus(value).value for value in status]
        filtered = sqlite_filters(statuses, "flow", flow)
        if filtered is None:
            return []
        where, parameters = filtered
        parameters.append(max(0, int(limit)))
        try:
            rows = self._connection().execute(self._sql.list.format(filters=where), parameters)
            return [_record(row, ()) for row in rows.fetchall()]
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def mark_stuck(self, idle: float, limit: int = 1000) -> builtins.list[FlowRecord]:
        """Mark idle running or compensating transactions stuck; those newly marked."""
        now = self._now()
        with self._writing() as conn:
            rows = conn.execute(self._sql.mark_stuck, (now - idle, int(limit))).fetchall()
        return sorted((_record(row, ()) for row in rows), key=lambda record: record.updated_at)

    def close(self) -> None:
        """Close the store's own connections (and the engine, if the store opened it)."""
        self._connections.close()
        if self._owns_engine:
            self._engine.close()

    def __repr__(self) -> str:
        return f"SqliteTrackerStore({self._engine!r}, table_prefix={self.table_prefix!r})"


def _record(row: Sequence[Any], history: Sequence[Sequence[Any]]) -> FlowRecord:
    return FlowRecord(
        correlation_id=row[0],
        flow=row[1],
        status=FlowStatus(row[2]),
        reason=row[3],
        state=FlowState.from_json(row[4]),
        started_at=row[5],
        updated_at=row[6],
        event_count=int(row[7]),
        events=tuple(TrackedEvent(*event) for event in history),
    )
