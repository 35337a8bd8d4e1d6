"""The SQLite inbox: processed ids in a table next to the consumer's own state.

Table (``seawall_`` is the default ``table_prefix``)::

    seawall_inbox   (consumer, message_id) PRIMARY KEY, processed_at   WITHOUT ROWID
                    index on processed_at (retention cleanup)
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.clock import Clock
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError
from seawall.messaging.outbox._sql import check_table_prefix, sqlite_errors, time_source

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["SqliteInboxStore"]


class SqliteInboxStore:
    """Processed ids in a SQLite table; ``mark`` joins the caller's transaction.

    ``clock`` replaces the wall clock for retention (tests only).
    """

    kind: ClassVar[str] = "sqlite"
    supports_transactions: ClassVar[bool] = True

    def __init__(
        self,
        engine: Engine | str,
        *,
        table_prefix: str = "seawall_",
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines import connect

        engine = connect(engine)
        if not isinstance(engine, SqliteEngine):
            raise ConfigurationError(f"SqliteInboxStore needs a sqlite:/// engine, got {engine!r}")
        self.engine = engine
        table = self.table = f"{check_table_prefix(table_prefix)}inbox"
        self._now = time_source(clock)
        self._url = engine.url
        self._create = [
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " consumer TEXT NOT NULL, message_id TEXT NOT NULL, processed_at REAL NOT NULL,"
            " PRIMARY KEY (consumer, message_id)) WITHOUT ROWID",
            f"CREATE INDEX IF NOT EXISTS {table}_processed ON {table} (processed_at)",
        ]
        self._mark = (
            f"INSERT INTO {table} (consumer, message_id, processed_at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING"
        )
        self._seen = f"SELECT 1 FROM {table} WHERE consumer = ? AND message_id = ?"
        self._forget = f"DELETE FROM {table} WHERE consumer = ? AND message_id = ?"
        self._count = f"SELECT count(*) FROM {table} WHERE consumer = ?"
        self._purge = (
            f"DELETE FROM {table} WHERE (consumer, message_id) IN ("
            f" SELECT consumer, message_id FROM {table} WHERE processed_at <= ? LIMIT ?)"
        )
        if create:
            self.create_tables()

    def _connection(self, transaction: Transaction | None) -> sqlite3.Connection:
        if transaction is None:
            return self.engine.connection
        connection = transaction.connection
        if not isinstance(connection, sqlite3.Connection):
            raise ConfigurationError(
                f"the transaction {transaction!r} is not a SQLite one; pass a transaction "
                f"from this inbox's engine ({self.engine!r})"
            )
        return connection

    def _execute(self, sql: str, parameters: Any, transaction: Transaction | None = None) -> Any:
        with sqlite_errors(self._url):
            return self._connection(transaction).execute(sql, parameters)

    def mark(self, consumer: str, message_id: str, transaction: Transaction | None) -> bool:
        """Record the id (in ``transaction`` when given); True the first time."""
        cursor = self._execute(self._mark, (consumer, message_id, self._now()), transaction)
        return bool(cursor.rowcount == 1)

    async def amark(self, consumer: str, message_id: str, transaction: Transaction | None) -> bool:
        """SQLite transactions are synchronous: this runs inline."""
        return self.mark(consumer, message_id, transaction)

    def seen(self, consumer: str, message_id: str) -> bool:
        """True when the id is recorded."""
        return self._execute(self._seen, (consumer, message_id)).fetchone() is not None

    def forget(self, consumer: str, message_id: str) -> bool:
        """Remove the record; True if it existed."""
        return bool(self._execute(self._forget, (consumer, message_id)).rowcount == 1)

    def count(self, consumer: str) -> int:
        """How many ids the consumer has recorded."""
        return int(self._execute(self._count, (consumer,)).fetchone()[0])

    def purge(self, older_than: float, limit: int) -> int:
        """Forget up to ``limit`` ids recorded more than ``older_than`` seconds ago."""
        return int(self._execute(self._purge, (self._now() - older_than, limit)).rowcount)

    def create_tables(self) -> None:
        """Create the table and its index if missing."""
        with sqlite_errors(self._url), self.engine.transaction() as tx:
            for statement in self._create:
                tx.connection.execute(statement)

    def drop_tables(self) -> None:
        """Drop the table and everything in it."""
        self._execute(f"DROP TABLE IF EXISTS {self.table}", ())

    def close(self) -> None:
        """Nothing to release: the engine owns the connections."""

    def __repr__(self) -> str:
        return f"SqliteInboxStore({self.engine!r}, table={self.table!r})"
