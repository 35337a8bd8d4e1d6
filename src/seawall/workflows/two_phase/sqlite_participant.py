"""A SQLite database as a two-phase participant: prepared work recorded durably as a redo list.

SQLite cannot keep a transaction open across a crash, so a prepared transaction here is
not an open transaction but a row. ``prepare(txid, work)`` runs ``work(staged)`` inside
one ``BEGIN IMMEDIATE`` transaction: ``staged.execute`` runs each write at once (so
constraint errors and row counts show up now) and records it with its parameters;
``staged.lock(key, ...)`` names the keys it writes. The writes are then rolled back and,
in the same transaction, the statements are stored in ``seawall_2pc_prepared`` and the
keys in ``seawall_2pc_locks``. ``commit`` replays the statements, checks each touches as
many rows as at prepare, and deletes the prepared row, in one transaction; ``abort``
deletes it.

Honest limits: the locks are advisory. Writers that go through
:meth:`SqliteParticipant.transaction` (or another prepare) are refused on a locked key
with :class:`KeyLockedError`; a writer that ignores them can change the rows under a
prepared transaction, and then ``commit`` refuses (:class:`HeuristicOutcomeError`, the
transaction stays prepared for a person to settle) rather than apply something else
than was voted for. Statements are replayed, so they must be deterministic (no
``random()``; a time default is evaluated at commit), and their parameters JSON values.
Other readers see none of the work until it commits (no dirty reads), but they are not
blocked from reading the old values meanwhile.

Tables (``seawall_`` is the default ``table_prefix``)::

    seawall_2pc_prepared   (participant, txid) PRIMARY KEY, statements (JSON), keys (JSON),
                           prepared_at
    seawall_2pc_locks      (participant, key) PRIMARY KEY, txid
    seawall_2pc_committed  (participant, txid) PRIMARY KEY, committed_at
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from seawall.codec import JsonCodec
from seawall.engines._base import Transaction, engine_for
from seawall.engines._sqlite_connections import SqliteConnections, check_synchronous
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError
from seawall.workflows.saga._log import check_prefix
from seawall.workflows.two_phase._errors import HeuristicOutcomeError, KeyLockedError
from seawall.workflows.two_phase._model import ParticipantState, Vote, check_name

if TYPE_CHECKING:
    from seawall.engines._base import Engine

__all__ = ["SqliteParticipant", "StagedWrites"]

_CODEC = JsonCodec()


class StagedWrites:
    """What a SQLite participant's work receives: run writes now, record them for the commit."""

    def __init__(self, connection: sqlite3.Connection, participant: str) -> None:
        self.connection = connection
        self.participant = participant
        self.statements: list[tuple[str, list[Any], int]] = []
        self.keys: set[str] = set()

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run a write now (its effect is visible to the rest of the work) and record it."""
        values = list(parameters)
        _CODEC.encode(values)  # refuses a parameter that cannot be stored, naming its type
        cursor = self.connection.execute(sql, values)
        self.statements.append((sql, values, cursor.rowcount))
        return cursor

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Read (not recorded): sees the committed data and this work's writes."""
        return list(self.connection.execute(sql, list(parameters)).fetchall())

    def lock(self, *keys: str) -> None:
        """Declare the keys this work writes: held until the transaction settles."""
        for key in keys:
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"lock() takes non-empty str keys, got {key!r}")
            self.keys.add(key)


SqliteWork = Callable[[StagedWrites], object] | None
"""The work of a SQLite participant (returning :attr:`Vote.NO` refuses)."""


class SqliteParticipant:
    """A SQLite file that takes part in two-phase commit (see the module notes for its limits).

    ``name`` defaults to the file's stem. ``synchronous`` as for the SQLite logs:
    ``"FULL"`` (default) puts every prepare and commit on disk before returning.
    """

    kind: ClassVar[str] = "sqlite"

    def __init__(
        self,
        engine: Engine | str,
        *,
        name: str | None = None,
        table_prefix: str = "seawall_",
        synchronous: str = "FULL",
        create: bool = True,
    ) -> None:
        opened, self._owns_engine = engine_for(
            cast("SqliteEngine | str", engine), SqliteEngine, "SqliteParticipant", "sqlite:///"
        )
        self._engine: SqliteEngine = opened
        if name is None:
            name = "memory" if opened.path == ":memory:" else Path(opened.path).stem
        self._name = check_name(name, "name")
        self.table_prefix = prefix = check_prefix(table_prefix)
        self._db = SqliteConnections(
            opened,
            synchronous=check_synchronous("SqliteParticipant", synchronous),
            what="participant",
        )
        self._prepared = f"{prefix}2pc_prepared"
        self._locks = f"{prefix}2pc_locks"
        self._committed = f"{prefix}2pc_committed"
        if create:
            self.create_tables()

    @property
    def name(self) -> str:
        """The participant's name."""
        return self._name

    @property
    def engine(self) -> Engine:
        """The SQLite engine of the file."""
        return self._engine

    def create_tables(self) -> None:
        """Create the participant's tables if they do not exist."""
        with self._db.writing() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._prepared} (participant TEXT NOT NULL,"
                " txid TEXT NOT NULL, statements TEXT NOT NULL, keys TEXT NOT NULL,"
                " prepared_at REAL NOT NULL, PRIMARY KEY (participant, txid)) WITHOUT ROWID"
            )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._locks} (participant TEXT NOT NULL,"
                " key TEXT NOT NULL, txid TEXT NOT NULL, PRIMARY KEY (participant, key))"
                " WITHOUT ROWID"
            )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._committed} (participant TEXT NOT NULL,"
                " txid TEXT NOT NULL, committed_at REAL NOT NULL,"
                " PRIMARY KEY (participant, txid)) WITHOUT ROWID"
            )

    def drop_tables(self) -> None:
        """Drop the participant's tables (tests, teardown)."""
        with self._db.writing() as conn:
            for table in (self._prepared, self._locks, self._committed):
                conn.execute(f"DROP TABLE IF EXISTS {table}")

    # ---------------------------------------------------------------- the contract

    def prepare(self, txid: str, work: SqliteWork = None) -> Vote:
        """Run ``work`` to validate it, then record its writes and lock its keys; vote."""
        if work is None:
            return Vote.READ_ONLY
        if not callable(work):
            raise ConfigurationError(
                f"the work of SQLite participant {self._name!r} must be a function of "
                f"StagedWrites, got {work!r}"
            )
        with self._db.writing() as conn:
            if self._find(conn, txid) is not None:
                return Vote.YES  # prepared before (a repeated call)
            conn.execute("SAVEPOINT seawall_2pc_work")
            staged = StagedWrites(conn, self._name)
            try:
                answer = work(staged)
            finally:
                conn.execute("ROLLBACK TO seawall_2pc_work")
                conn.execute("RELEASE seawall_2pc_work")
            if answer is Vote.NO:
                return Vote.NO
            if not staged.statements:
                return Vote.READ_ONLY
            keys = sorted(staged.keys)
            self._refuse_locked(conn, keys, txid)
            conn.execute(
                f"INSERT INTO {self._prepared} (participant, txid, statements, keys, prepared_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (self._name, txid, json.dumps(staged.statements), json.dumps(keys), time.time()),
            )
            conn.executemany(
                f"INSERT INTO {self._locks} (participant, key, txid) VALUES (?, ?, ?)",
                [(self._name, key, txid) for key in keys],
            )
        return Vote.YES

    def commit(self, txid: str) -> None:
        """Replay the recorded writes and release the locks, in one transaction."""
        with self._db.writing() as conn:
            found = self._find(conn, txid)
            if found is None:
                if self._was_committed(conn, txid):
                    return
                raise HeuristicOutcomeError(txid, self._name, "commit", "aborted or unknown")
            for index, (sql, parameters, rowcount) in enumerate(json.loads(found)):
                now = conn.execute(sql, parameters).rowcount
                if now != rowcount:
                    raise HeuristicOutcomeError(
                        txid,
                        self._name,
                        "commit",
                        f"changed under its locks (statement {index} touched {rowcount} rows at "
                        f"prepare, {now} now; it stays prepared)",
                    )
            self._release(conn, txid)
            conn.execute(
                f"INSERT INTO {self._committed} (participant, txid, committed_at) VALUES (?, ?, ?)",
                (self._name, txid, time.time()),
            )

    def abort(self, txid: str) -> None:
        """Drop the recorded writes and release the locks; unknown is fine, committed raises."""
        with self._db.writing() as conn:
            if self._find(conn, txid) is None:
                if self._was_committed(conn, txid):
                    raise HeuristicOutcomeError(txid, self._name, "abort", "committed")
                return
            self._release(conn, txid)

    def status(self, txid: str) -> ParticipantState:
        """Prepared, committed or aborted (also: never prepared)."""
        conn = self._db.get()
        try:
            conn.execute("BEGIN")
            try:
                if self._find(conn, txid) is not None:
                    return ParticipantState.PREPARED
                if self._was_committed(conn, txid):
                    return ParticipantState.COMMITTED
                return ParticipantState.ABORTED
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._db.error(exc) from exc

    def in_doubt(self, prefix: str = "") -> list[str]:
        """Prepared transactions whose id starts with ``prefix``, oldest first."""
        try:
            rows = self._db.get().execute(
                f"SELECT txid FROM {self._prepared} WHERE participant = ?"
                " AND substr(txid, 1, ?) = ? ORDER BY prepared_at, txid",
                (self._name, len(prefix), prefix),
            )
            return [str(row[0]) for row in rows.fetchall()]
        except sqlite3.Error as exc:
            raise self._db.error(exc) from exc

    # -------------------------------------------------------------- local writes

    def locked(self, key: str) -> str | None:
        """The prepared transaction holding ``key``, or ``None``."""
        row = (
            self._db.get()
            .execute(
                f"SELECT txid FROM {self._locks} WHERE participant = ? AND key = ?",
                (self._name, key),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    @contextmanager
    def transaction(self, *keys: str) -> Iterator[Transaction]:
        """A local write transaction that respects the locks: refused if a key is locked.

        Use it (naming the keys you write) for every write outside two-phase commit to
        rows a prepared transaction may hold.
        """
        with self._db.writing() as conn:
            self._refuse_locked(conn, sorted(keys), None)
            transaction = Transaction(self._engine, conn)
            yield transaction
        transaction._run_after_commit()

    def purge(self, before: float) -> int:
        """Forget commit markers older than ``before`` (Unix seconds); returns how many."""
        with self._db.writing() as conn:
            deleted: int = conn.execute(
                f"DELETE FROM {self._committed} WHERE participant = ? AND committed_at < ?",
                (self._name, before),
            ).rowcount
        return deleted

    def close(self) -> None:
        """Close the participant's connections (and the engine, if it opened it from a URL)."""
        self._db.close()
        if self._owns_engine:
            self._engine.close()

    def __repr__(self) -> str:
        return f"SqliteParticipant({self._name!r}, {self._engine!r})"

    # ------------------------------------------------------------------- internals

    def _find(self, conn: sqlite3.Connection, txid: str) -> str | None:
        row = conn.execute(
            f"SELECT statements FROM {self._prepared} WHERE participant = ? AND txid = ?",
            (self._name, txid),
        ).fetchone()
        return None if row is None else str(row[0])

    def _was_committed(self, conn: sqlite3.Connection, txid: str) -> bool:
        row = conn.execute(
            f"SELECT 1 FROM {self._committed} WHERE participant = ? AND txid = ?",
            (self._name, txid),
        ).fetchone()
        return row is not None

    def _release(self, conn: sqlite3.Connection, txid: str) -> None:
        conn.execute(
            f"DELETE FROM {self._prepared} WHERE participant = ? AND txid = ?", (self._name, txid)
        )
        conn.execute(
            f"DELETE FROM {self._locks} WHERE participant = ? AND txid = ?", (self._name, txid)
        )

    def _refuse_locked(self, conn: sqlite3.Connection, keys: list[str], txid: str | None) -> None:
        if not keys:
            return
        marks = ", ".join("?" * len(keys))
        row = conn.execute(
            f"SELECT key, txid FROM {self._locks} WHERE participant = ? AND key IN ({marks})"
            " AND txid IS NOT ? LIMIT 1",
            (self._name, *keys, txid),
        ).fetchone()
        if row is not None:
            raise KeyLockedError(str(row[0]), str(row[1]), self._name)
