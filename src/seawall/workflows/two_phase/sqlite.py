"""The SQLite decision log: the embedded default, one file, durable on every decision.

Table (``seawall_`` is the default ``table_prefix``)::

    seawall_2pc_decisions  txid PRIMARY KEY, coordinator, decision, participants (JSON),
                           decided_at, completed_at

A decision is one ``INSERT ... ON CONFLICT DO NOTHING`` (write-once; the first writer
wins), committed with ``synchronous=FULL`` by default so it is on disk before any
participant hears it. Times are Unix seconds from this machine's clock.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from seawall.engines._base import engine_for
from seawall.engines._sqlite_connections import SqliteConnections, check_synchronous
from seawall.engines.sqlite import SqliteEngine
from seawall.workflows.saga._log import check_prefix
from seawall.workflows.two_phase._model import Decision, DecisionRecord

if TYPE_CHECKING:
    from seawall.clock import Clock
    from seawall.engines._base import Engine

__all__ = ["SqliteDecisionLog"]

_COLUMNS = "txid, coordinator, decision, participants, decided_at, completed_at"


class SqliteDecisionLog:
    """A decision log in a SQLite file; the table is created when the log is built.

    ``synchronous``: ``"FULL"`` (default) syncs every decision to disk; ``"NORMAL"``
    survives a process crash but may lose the last decisions on power loss, which can
    split a committed transaction. ``clock`` replaces the wall clock (tests).
    """

    kind: ClassVar[str] = "sqlite"
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
        opened, self._owns_engine = engine_for(
            cast("SqliteEngine | str", engine), SqliteEngine, "SqliteDecisionLog", "sqlite:///"
        )
        self._engine: SqliteEngine = opened
        self.table_prefix = check_prefix(table_prefix)
        self._db = SqliteConnections(
            opened,
            synchronous=check_synchronous("SqliteDecisionLog", synchronous),
            what="decision log",
        )
        self._now: Callable[[], float] = time.time if clock is None else clock.now
        table = self.table = f"{self.table_prefix}2pc_decisions"
        self._insert = (
            f"INSERT INTO {table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)"
            " ON CONFLICT (txid) DO NOTHING"
        )
        self._select = f"SELECT {_COLUMNS} FROM {table} WHERE txid = ?"
        if create:
            self.create_tables()

    @property
    def engine(self) -> Engine:
        """The SQLite engine the log lives in."""
        return self._engine

    def create_tables(self) -> None:
        """Create the table and its index if they do not exist."""
        table = self.table
        with self._db.writing() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} ("
                " txid TEXT PRIMARY KEY, coordinator TEXT NOT NULL, decision TEXT NOT NULL,"
                " participants TEXT NOT NULL, decided_at REAL NOT NULL, completed_at REAL)"
                " WITHOUT ROWID"
            )
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {table}_pending ON {table} (coordinator, decided_at)"
                " WHERE completed_at IS NULL"
            )

    def drop_tables(self) -> None:
        """Drop the table and everything in it (tests, teardown)."""
        with self._db.writing() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {self.table}")

    def _run(self, sql: str, parameters: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return self._db.get().execute(sql, parameters)
        except sqlite3.Error as exc:
            raise self._db.error(exc) from exc

    def decide(
        self,
        txid: str,
        decision: Decision,
        *,
        coordinator: str,
        participants: Sequence[str],
    ) -> Decision:
        """Insert the decision unless one exists (one durable commit); return the stored one."""
        decision = Decision(decision)
        inserted = self._run(
            self._insert,
            (txid, coordinator, decision.value, json.dumps(list(participants)), self._now()),
        ).rowcount
        if inserted == 1:
            return decision
        stored = self.decision(txid)
        return decision if stored is None else stored

    def decision(self, txid: str) -> Decision | None:
        """The stored decision, or ``None``."""
        row = self._run(f"SELECT decision FROM {self.table} WHERE txid = ?", (txid,)).fetchone()
        return None if row is None else Decision(row[0])

    def load(self, txid: str) -> DecisionRecord | None:
        """The record, or ``None``."""
        row = self._run(self._select, (txid,)).fetchone()
        return None if row is None else _record(row)

    def complete(self, txids: Sequence[str]) -> None:
        """Mark the decisions acknowledged by every participant (one commit)."""
        if not txids:
            return
        now = self._now()
        update = f"UPDATE {self.table} SET completed_at = ? WHERE txid = ? AND completed_at IS NULL"
        if len(txids) == 1:  # one statement is its own transaction
            self._run(update, (now, txids[0]))
            return
        with self._db.writing() as conn:
            conn.executemany(update, [(now, txid) for txid in txids])

    def pending(self, coordinator: str, *, limit: int = 1000) -> list[DecisionRecord]:
        """Unacknowledged decisions of ``coordinator``, oldest first."""
        rows = self._run(
            f"SELECT {_COLUMNS} FROM {self.table} WHERE coordinator = ? AND completed_at IS NULL"
            " ORDER BY decided_at, txid LIMIT ?",
            (coordinator, max(0, int(limit))),
        ).fetchall()
        return [_record(row) for row in rows]

    def purge(self, before: float) -> int:
        """Delete completed records decided before ``before``."""
        with self._db.writing() as conn:
            deleted: int = conn.execute(
                f"DELETE FROM {self.table} WHERE completed_at IS NOT NULL AND decided_at < ?",
                (before,),
            ).rowcount
        return deleted

    def close(self) -> None:
        """Close the log's connections (and the engine, if the log opened it from a URL)."""
        self._db.close()
        if self._owns_engine:
            self._engine.close()

    def __repr__(self) -> str:
        return f"SqliteDecisionLog({self._engine!r}, table_prefix={self.table_prefix!r})"


def _record(row: Sequence[Any]) -> DecisionRecord:
    return DecisionRecord(
        txid=row[0],
        coordinator=row[1],
        decision=Decision(row[2]),
        participants=tuple(json.loads(row[3])),
        decided_at=row[4],
        completed_at=row[5],
    )
