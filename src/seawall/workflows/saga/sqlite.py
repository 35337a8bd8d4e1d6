"""The SQLite saga log: the embedded default, one file, durable on every commit, safe across processes.

Tables (``seawall_`` is the default ``table_prefix``)::

    seawall_sagas         id PRIMARY KEY, name, status, plan (JSON), input (JSON), reason,
                          created_at, updated_at, deadline_at, owner, lease_until,
                          cancel_requested
    seawall_saga_entries  (saga_id, seq) PRIMARY KEY, kind, step, data (JSON), at

The log opens its own connections (one per thread) in WAL mode with
``synchronous=FULL`` by default, so each commit is on disk before it returns; a
caller's :class:`~seawall.engines._base.Transaction` is joined only when passed
explicitly. Every write is one ``BEGIN IMMEDIATE`` transaction: SQLite's single
writer makes a claim atomic, so two orchestrators never take the same saga. Times
are Unix seconds from this machine's clock (the database is local to it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Final

from seawall.clock import Clock
from seawall.engines._sqlite_connections import SqliteConnections
from seawall.errors import ConfigurationError
from seawall.workflows._listing import sqlite_filters
from seawall.workflows.saga._log import check_prefix, decode_plan, encode_plan, time_source
from seawall.workflows.saga._model import (
    UNFINISHED,
    EntryKind,
    NewEntry,
    SagaEntry,
    SagaRecord,
    SagaStatus,
    Signals,
)

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction
    from seawall.engines.sqlite import SqliteEngine

__all__ = ["SqliteSagaLog"]

_SYNCHRONOUS: Final = ("NORMAL", "FULL", "EXTRA")
_ROW = (
    "id, name, status, plan, input, reason, created_at, updated_at, deadline_at, owner,"
    " lease_until, cancel_requested"
)
_UNFINISHED_SQL = ", ".join(f"'{status.value}'" for status in UNFINISHED)


class _Sql:
    """The statements of one log, with its table names filled in."""

    def __init__(self, prefix: str) -> None:
        sagas = f"{prefix}sagas"
        entries = f"{prefix}saga_entries"
        self.sagas = sagas
        self.entries = entries
        self.create_tables = [
            f"CREATE TABLE IF NOT EXISTS {sagas} ("
            " id TEXT PRIMARY KEY,"
            " name TEXT NOT NULL,"
            " status TEXT NOT NULL,"
            " plan TEXT NOT NULL,"
            " input TEXT NOT NULL,"
            " reason TEXT,"
            " created_at REAL NOT NULL,"
            " updated_at REAL NOT NULL,"
            " deadline_at REAL,"
            " owner TEXT,"
            " lease_until REAL,"
            " cancel_requested INTEGER NOT NULL DEFAULT 0)",
            f"CREATE INDEX IF NOT EXISTS {sagas}_unfinished ON {sagas} (status)"
            f" WHERE status IN ({_UNFINISHED_SQL})",
            f"CREATE TABLE IF NOT EXISTS {entries} ("
            " saga_id TEXT NOT NULL,"
            " seq INTEGER NOT NULL,"
            " kind TEXT NOT NULL,"
            " step TEXT,"
            " data TEXT,"
            " at REAL NOT NULL,"
            " PRIMARY KEY (saga_id, seq)) WITHOUT ROWID",
        ]
        self.drop_tables = [f"DROP TABLE IF EXISTS {entries}", f"DROP TABLE IF EXISTS {sagas}"]
        self.insert_saga = (
            f"INSERT INTO {sagas} ({_ROW}) VALUES (?, ?, 'running', ?, ?, NULL, ?, ?, ?, ?, ?, 0)"
            " ON CONFLICT (id) DO NOTHING"
        )
        self.insert_entry = (
            f"INSERT INTO {entries} (saga_id, seq, kind, step, data, at) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self.advance = (
            f"UPDATE {sagas} SET status = ?, reason = ?, updated_at = ?,"
            " owner = CASE WHEN ? THEN NULL ELSE owner END,"
            " lease_until = CASE WHEN ? THEN NULL ELSE ? END"
            " WHERE id = ? AND owner = ? RETURNING cancel_requested, deadline_at"
        )
        self.claimable = (
            f"SELECT id FROM {sagas} WHERE status IN ({_UNFINISHED_SQL}) {{filters}}"
            " ORDER BY updated_at LIMIT 1"
        )
        self.take = f"UPDATE {sagas} SET owner = ?, lease_until = ? WHERE id = ? RETURNING {_ROW}"
        self.release = (
            f"UPDATE {sagas} SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?"
        )
        self.load = f"SELECT {_ROW} FROM {sagas} WHERE id = ?"
        self.history = (
            f"SELECT seq, kind, step, data, at FROM {entries} WHERE saga_id = ? ORDER BY seq"
        )
        self.list = (
            f"SELECT {_ROW} FROM {sagas} {{filters}} ORDER BY updated_at DESC, id DESC LIMIT ?"
        )
        self.status = f"SELECT status FROM {sagas} WHERE id = ?"
        self.cancel = f"UPDATE {sagas} SET cancel_requested = 1 WHERE id = ? AND status = 'running'"
        self.transition = (
            f"UPDATE {sagas} SET status = ?, reason = ?, updated_at = ?"
            " WHERE id = ? AND status = ? AND owner IS NULL"
        )


class SqliteSagaLog:
    """A saga log in a SQLite database; tables are created when the log is built.

    ``synchronous`` is the log's durability: ``"FULL"`` (default) syncs the WAL on
    every commit; ``"NORMAL"`` survives a process crash but may lose the last commits
    on power loss. ``clock`` replaces the wall clock for leases and deadlines (tests).
    """

    kind: ClassVar[str] = "sqlite"
    supports_transactions: ClassVar[bool] = True
    blocking: ClassVar[bool] = True

    def __init__(
        self,
        engine: Engine | str,
        *,
        table_prefix: str = "seawall_",
        synchronous: str = "FULL",
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines import connect
        from seawall.engines.sqlite import SqliteEngine

        opened = connect(engine)
        if not isinstance(opened, SqliteEngine):
            raise ConfigurationError(
                f"SqliteSagaLog needs a sqlite:// engine, got {opened!r}; use open_saga_log()"
            )
        if not isinstance(synchronous, str) or synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"SqliteSagaLog(synchronous={synchronous!r}) is invalid: use one of {_SYNCHRONOUS}"
            )
        self._engine: SqliteEngine = opened
        self._owns_engine = opened is not engine
        self.table_prefix = check_prefix(table_prefix)
        self.synchronous = synchronous.upper()
        self._now = time_source(clock)
        self._sql = _Sql(self.table_prefix)
        self._connections = SqliteConnections(opened, synchronous=self.synchronous, what="saga log")
        self._error = self._connections.error
        if create:
            self.create_tables()

    @property
    def engine(self) -> Engine:
        """The SQLite engine the log lives in."""
        return self._engine

    # ----------------------------------------------------------------- plumbing

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    @contextmanager
    def _writing(self, transaction: Transaction | None) -> Iterator[sqlite3.Connection]:
        """The caller's transaction, or one ``BEGIN IMMEDIATE`` transaction of our own."""
        try:
            if transaction is not None:
                yield transaction.connection
                return
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

    def _reading(self) -> sqlite3.Connection:
        return self._connection()

    def create_tables(self) -> None:
        """Create the log's tables and index if they do not exist."""
        with self._writing(None) as conn:
            for statement in self._sql.create_tables:
                conn.execute(statement)

    def drop_tables(self) -> None:
        """Drop the log's tables and everything in them (tests, teardown)."""
        with self._writing(None) as conn:
            for statement in self._sql.drop_tables:
                conn.execute(statement)

    def durability(self) -> dict[str, str]:
        """The journal mode and synchronous setting read back from the log's connection."""
        conn = self._connection()
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        level = conn.execute("PRAGMA synchronous").fetchone()[0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {
            "journal_mode": str(journal),
            "synchronous": names.get(int(level), str(level)),
            "sqlite_version": sqlite3.sqlite_version,
        }

    # --------------------------------------------------------------- the contract

    def create(
        self,
        saga_id: str,
        name: str,
        plan: tuple[tuple[str, ...], ...],
        input: str,
        *,
        deadline: float | None,
        owner: str | None,
        lease: float,
        entries: Sequence[NewEntry],
        transaction: Transaction | None = None,
    ) -> bool:
        """Insert the saga row and its first entries in one transaction."""
        sql = self._sql
        now = self._now()
        with self._writing(transaction) as conn:
            inserted = conn.execute(
                sql.insert_saga,
                (
                    saga_id,
                    name,
                    encode_plan(plan),
                    input,
                    now,
                    now,
                    None if deadline is None else now + deadline,
                    owner,
                    None if owner is None else now + lease,
                ),
            ).rowcount
            if inserted != 1:
                return False
            conn.executemany(sql.insert_entry, _entry_rows(saga_id, entries, now))
        return True

    def append(
        self,
        saga_id: str,
        entries: Sequence[NewEntry],
        *,
        owner: str,
        status: SagaStatus,
        reason: str | None,
        lease: float,
        release: bool = False,
        transaction: Transaction | None = None,
    ) -> Signals | None:
        """Update the saga row (only while ``owner`` holds it) and add the entries: one commit."""
        sql = self._sql
        now = self._now()
        with self._writing(transaction) as conn:
            rows = conn.execute(
                sql.advance,
                (status.value, reason, now, release, release, now + lease, saga_id, owner),
            ).fetchall()
            if not rows:
                return None
            conn.executemany(sql.insert_entry, _entry_rows(saga_id, entries, now))
        cancel, deadline_at = rows[0]
        return Signals(bool(cancel), deadline_at is not None and deadline_at <= now)

    def claim(
        self,
        owner: str,
        lease: float,
        *,
        names: Collection[str] | None = None,
        saga_id: str | None = None,
        ignore_leases: bool = False,
    ) -> SagaRecord | None:
        """Take one unfinished saga nobody holds, oldest update first, and load its history."""
        sql = self._sql
        now = self._now()
        filters: list[str] = []
        parameters: list[Any] = []
        if names is not None:
            names = list(names)
            if not names:
                return None
            filters.append(f"AND name IN ({', '.join('?' * len(names))})")
            parameters.extend(names)
        if saga_id is not None:
            filters.append("AND id = ?")
            parameters.append(saga_id)
        if not ignore_leases:
            filters.append("AND (owner IS NULL OR lease_until IS NULL OR lease_until <= ?)")
            parameters.append(now)
        with self._writing(None) as conn:
            found = conn.execute(
                sql.claimable.format(filters=" ".join(filters)), parameters
            ).fetchone()
            if found is None:
                return None
            row = conn.execute(sql.take, (owner, now + lease, found[0])).fetchall()[0]
            history = conn.execute(sql.history, (found[0],)).fetchall()
        return _record(row, history, now)

    def release(self, saga_id: str, owner: str) -> None:
        """Drop ``owner``'s lease on the saga, if it holds it."""
        with self._writing(None) as conn:
            conn.execute(self._sql.release, (saga_id, owner))

    def load(self, saga_id: str) -> SagaRecord | None:
        """The saga and its history, read in one snapshot."""
        sql = self._sql
        conn = self._reading()
        try:
            conn.execute("BEGIN")
            try:
                row = conn.execute(sql.load, (saga_id,)).fetchone()
                history = conn.execute(sql.history, (saga_id,)).fetchall() if row else []
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        if row is None:
            return None
        return _record(row, history, self._now())

    def list(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Sagas without their history, most recently updated first."""
        statuses = None if status is None else [SagaStatus(value).value for value in status]
        filtered = sqlite_filters(statuses, "name", name)
        if filtered is None:
            return []
        where, parameters = filtered
        parameters.append(max(0, int(limit)))
        try:
            rows = self._reading().execute(self._sql.list.format(filters=where), parameters)
            now = self._now()
            return [_record(row, (), now) for row in rows.fetchall()]
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def request_cancel(self, saga_id: str) -> SagaStatus | None:
        """Flag a running saga for cancellation; its status, or ``None`` if unknown."""
        with self._writing(None) as conn:
            conn.execute(self._sql.cancel, (saga_id,))
            row = conn.execute(self._sql.status, (saga_id,)).fetchone()
        return None if row is None else SagaStatus(row[0])

    def transition(
        self,
        saga_id: str,
        *,
        expected: SagaStatus,
        status: SagaStatus,
        reason: str | None,
        entries: Sequence[NewEntry],
    ) -> bool:
        """Move an unowned saga from ``expected`` to ``status``, adding ``entries``."""
        sql = self._sql
        now = self._now()
        with self._writing(None) as conn:
            changed = conn.execute(
                sql.transition, (status.value, reason, now, saga_id, expected.value)
            ).rowcount
            if changed != 1:
                return False
            conn.executemany(sql.insert_entry, _entry_rows(saga_id, entries, now))
        return True

    def close(self) -> None:
        """Close the log's own connections (and the engine, if the log opened it from a URL)."""
        self._connections.close()
        if self._owns_engine:
            self._engine.close()

    def __repr__(self) -> str:
        return f"SqliteSagaLog({self._engine!r}, table_prefix={self.table_prefix!r})"


def _entry_rows(saga_id: str, entries: Sequence[NewEntry], now: float) -> list[tuple[Any, ...]]:
    return [
        (saga_id, entry.seq, entry.kind.value, entry.step, entry.data, now) for entry in entries
    ]


def _record(row: Sequence[Any], history: Sequence[Sequence[Any]], now: float) -> SagaRecord:
    deadline_at = row[8]
    return SagaRecord(
        id=row[0],
        name=row[1],
        status=SagaStatus(row[2]),
        plan=decode_plan(row[3]),
        input=row[4],
        reason=row[5],
        created_at=row[6],
        updated_at=row[7],
        deadline_at=deadline_at,
        owner=row[9],
        lease_until=row[10],
        cancel_requested=bool(row[11]),
        entries=tuple(
            SagaEntry(seq, EntryKind(kind), step, data, at) for seq, kind, step, data, at in history
        ),
        deadline_passed=deadline_at is not None and deadline_at <= now,
    )
