"""The SQLite event store: the embedded default, one file, durable, safe across processes.

Tables (``seawall_`` is the default ``table_prefix``)::

    seawall_events       position INTEGER PRIMARY KEY, stream_id, version, type,
                         schema_version, data (JSON), metadata (JSON array:
                         [id, timestamp µs, causation id, correlation id, headers]);
                         UNIQUE (stream_id, version)
    seawall_snapshots    stream_id PRIMARY KEY, version, schema_version, data, recorded_at
    seawall_checkpoints  name PRIMARY KEY, position, updated_at

SQLite has one writer at a time, so an append (``BEGIN IMMEDIATE``, read the stream's
head, insert, ``COMMIT``) is serialised by the database itself: positions are
consecutive and a reader can never see a later position before an earlier one.
Subscriptions poll, which costs one indexed lookup when nothing is new.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.engines.sqlite import SqliteEngine
from seawall.errors import EngineError, EngineUnavailableError
from seawall.eventsourcing.store._base import (
    Batch,
    EventStoreBase,
    SnapshotRow,
    ThreadedAsyncEventStore,
)
from seawall.eventsourcing.store._model import AppendResult, metadata_json, now_micros
from seawall.eventsourcing.store._store import check_version

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction
    from seawall.eventsourcing.store._upcasting import EventTypes

__all__ = ["AsyncSqliteEventStore", "SqliteEventStore"]

_COLUMNS = "position, stream_id, version, type, schema_version, data, metadata"
_NO_LIMIT = -1
_TOP_VERSION = 1 << 62


class _Sql:
    """The statements of one store, with its table names filled in."""

    def __init__(self, prefix: str) -> None:
        events = f"{prefix}events"
        snapshots = f"{prefix}snapshots"
        checkpoints = f"{prefix}checkpoints"
        self.create = [
            f"CREATE TABLE IF NOT EXISTS {events} ("
            " position INTEGER PRIMARY KEY,"
            " stream_id TEXT NOT NULL,"
            " version INTEGER NOT NULL,"
            " type TEXT NOT NULL,"
            " schema_version INTEGER NOT NULL,"
            " data TEXT NOT NULL,"
            " metadata TEXT NOT NULL)",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {events}_stream ON {events} (stream_id, version)",
            f"CREATE TABLE IF NOT EXISTS {snapshots} ("
            " stream_id TEXT PRIMARY KEY,"
            " version INTEGER NOT NULL,"
            " schema_version INTEGER NOT NULL,"
            " data TEXT NOT NULL,"
            " recorded_at INTEGER NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {checkpoints} ("
            " name TEXT PRIMARY KEY,"
            " position INTEGER NOT NULL,"
            " updated_at INTEGER NOT NULL)",
        ]
        self.drop = [
            f"DROP TABLE IF EXISTS {events}",
            f"DROP TABLE IF EXISTS {snapshots}",
            f"DROP TABLE IF EXISTS {checkpoints}",
        ]
        self.head = (
            f"SELECT (SELECT max(version) FROM {events} WHERE stream_id = ?),"
            f" (SELECT max(position) FROM {events})"
        )
        self.version = f"SELECT max(version) FROM {events} WHERE stream_id = ?"
        self.last_position = f"SELECT max(position) FROM {events}"
        self.insert = f"INSERT INTO {events} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        self.forwards = (
            f"SELECT {_COLUMNS} FROM {events} WHERE stream_id = ? AND version >= ?"
            " ORDER BY version LIMIT ?"
        )
        self.backwards = (
            f"SELECT {_COLUMNS} FROM {events} WHERE stream_id = ? AND version <= ?"
            " ORDER BY version DESC LIMIT ?"
        )
        self.all = f"SELECT {_COLUMNS} FROM {events} WHERE position > ? ORDER BY position LIMIT ?"
        self._all_typed = (
            f"SELECT {_COLUMNS} FROM {events} WHERE position > ? AND type IN ({{}})"
            " ORDER BY position LIMIT ?"
        )
        self.put_snapshot = (
            f"INSERT INTO {snapshots} (stream_id, version, schema_version, data, recorded_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET"
            " version = excluded.version, schema_version = excluded.schema_version,"
            " data = excluded.data, recorded_at = excluded.recorded_at"
            f" WHERE excluded.version >= {snapshots}.version"
        )
        self.get_snapshot = (
            f"SELECT version, schema_version, data, recorded_at FROM {snapshots}"
            " WHERE stream_id = ?"
        )
        self.get_checkpoint = f"SELECT position FROM {checkpoints} WHERE name = ?"
        self.put_checkpoint = (
            f"INSERT INTO {checkpoints} (name, position, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
            " updated_at = excluded.updated_at"
        )

    def all_typed(self, count: int) -> str:
        """``read_all`` filtered by ``count`` type names."""
        return self._all_typed.format(", ".join("?" * count))


@contextmanager
def sqlite_errors(url: str) -> Iterator[None]:
    """Translate sqlite3 errors into seawall's, naming the database and the fix."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise EngineUnavailableError(
                f"SQLite at {url} stayed locked by another writer ({exc}); "
                "retry, or raise the engine's timeout",
                url=url,
            ) from exc
        raise EngineError(f"SQLite at {url} failed: {exc}", url=url) from exc
    except sqlite3.Error as exc:
        raise EngineError(f"SQLite at {url} failed: {exc}", url=url) from exc


class SqliteEventStore(EventStoreBase):
    """An event store in a SQLite database; positions are 1, 2, 3, ... with no gaps.

    The tables are created when the store is built (``create=False`` skips that).
    """

    supports_transactions: ClassVar[bool] = True
    kind: ClassVar[str] = "sqlite"

    def __init__(
        self,
        engine: Engine | str,
        *,
        types: EventTypes | None = None,
        table_prefix: str = "seawall_",
        create: bool = True,
    ) -> None:
        from seawall.engines import connect

        engine = connect(engine)
        super().__init__(engine, types=types, table_prefix=table_prefix)
        self._sql = _Sql(table_prefix)
        if create:
            self.create_tables()

    @property
    def _sqlite(self) -> SqliteEngine:
        engine = self.engine
        if not isinstance(engine, SqliteEngine):  # pragma: no cover - checked by the base
            raise TypeError(engine)
        return engine

    def _connection(self, transaction: Transaction | None) -> sqlite3.Connection:
        if transaction is not None:
            connection: sqlite3.Connection = transaction.connection
            return connection
        return self._sqlite.connection

    @contextmanager
    def _writing(self, transaction: Transaction | None) -> Iterator[sqlite3.Connection]:
        """The caller's transaction, or a short one of our own (joining an open one)."""
        if transaction is not None:
            with sqlite_errors(self.engine.url):
                yield transaction.connection
            return
        connection = self._sqlite.connection
        if connection.in_transaction:
            with sqlite_errors(self.engine.url), self._sqlite.transaction() as own:
                yield own.connection
            return
        with sqlite_errors(self.engine.url):
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _append(self, batch: Batch, transaction: Transaction | None) -> list[AppendResult]:
        sql = self._sql
        timestamp = now_micros()
        with self._writing(transaction) as connection:
            execute = connection.execute
            if len(batch) == 1:
                stream_id, expected, encoded = batch[0]
                current, last = execute(sql.head, (stream_id,)).fetchone()
                current = current or 0
                check_version(stream_id, expected, current)
                heads = [current]
            else:
                heads = []
                for stream_id, expected, _ in batch:
                    current = execute(sql.version, (stream_id,)).fetchone()[0] or 0
                    check_version(stream_id, expected, current)
                    heads.append(current)
                last = execute(sql.last_position).fetchone()[0]
            position = last or 0
            rows = []
            results = []
            for (stream_id, _, encoded), version in zip(batch, heads, strict=True):
                if not encoded:
                    results.append(AppendResult(stream_id, version, 0))
                    continue
                for event in encoded:
                    position += 1
                    version += 1
                    rows.append(
                        (
                            position,
                            stream_id,
                            version,
                            event[0],
                            event[1],
                            event[2],
                            metadata_json(event, timestamp),
                        )
                    )
                results.append(AppendResult(stream_id, version, position))
            if len(rows) == 1:
                execute(sql.insert, rows[0])
            elif rows:
                connection.executemany(sql.insert, rows)
        return results

    def _select_stream(
        self,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        connection = self._connection(transaction)
        size = _NO_LIMIT if limit is None else limit
        with sqlite_errors(self.engine.url):
            if backwards:
                top = _TOP_VERSION if from_version is None else from_version
                return connection.execute(self._sql.backwards, (stream_id, top, size)).fetchall()
            first = 1 if from_version is None else from_version
            return connection.execute(self._sql.forwards, (stream_id, first, size)).fetchall()

    def _select_version(self, stream_id: str, transaction: Transaction | None) -> int:
        with sqlite_errors(self.engine.url):
            row = self._connection(transaction).execute(self._sql.version, (stream_id,)).fetchone()
        return row[0] or 0

    def _select_all(
        self,
        after: int,
        limit: int,
        stored_types: tuple[str, ...] | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        connection = self._connection(transaction)
        with sqlite_errors(self.engine.url):
            if stored_types is None:
                return connection.execute(self._sql.all, (after, limit)).fetchall()
            return connection.execute(
                self._sql.all_typed(len(stored_types)), (after, *stored_types, limit)
            ).fetchall()

    def _put_snapshot(
        self,
        stream_id: str,
        version: int,
        schema_version: int,
        data_json: str,
        transaction: Transaction | None,
    ) -> None:
        with self._writing(transaction) as connection:
            connection.execute(
                self._sql.put_snapshot,
                (stream_id, version, schema_version, data_json, now_micros()),
            )

    def _get_snapshot(self, stream_id: str, transaction: Transaction | None) -> SnapshotRow | None:
        with sqlite_errors(self.engine.url):
            row = (
                self._connection(transaction)
                .execute(self._sql.get_snapshot, (stream_id,))
                .fetchone()
            )
        return None if row is None else (row[0], row[1], row[2], row[3])

    def _get_checkpoint(self, name: str, transaction: Transaction | None) -> int | None:
        with sqlite_errors(self.engine.url):
            row = (
                self._connection(transaction).execute(self._sql.get_checkpoint, (name,)).fetchone()
            )
        return None if row is None else int(row[0])

    def _put_checkpoint(self, name: str, position: int, transaction: Transaction | None) -> None:
        connection = self._connection(transaction)
        with sqlite_errors(self.engine.url):
            connection.execute(self._sql.put_checkpoint, (name, position, now_micros()))

    def create_tables(self) -> None:
        """Create the tables and the stream index if missing."""
        with self._writing(None) as connection:
            for statement in self._sql.create:
                connection.execute(statement)

    def drop_tables(self) -> None:
        """Drop the store's tables and everything in them."""
        with self._writing(None) as connection:
            for statement in self._sql.drop:
                connection.execute(statement)


class AsyncSqliteEventStore(ThreadedAsyncEventStore):
    """The asyncio API over :class:`SqliteEventStore`: each call runs in a worker thread."""

    def __init__(
        self,
        engine: Engine | str,
        *,
        types: EventTypes | None = None,
        table_prefix: str = "seawall_",
        create: bool = True,
    ) -> None:
        super().__init__(
            SqliteEventStore(engine, types=types, table_prefix=table_prefix, create=create),
            offload=True,
        )
