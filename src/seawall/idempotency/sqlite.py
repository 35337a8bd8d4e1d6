"""The SQLite idempotency store: keys next to the business tables, completed in their commit.

Table (``seawall_`` is the default ``table_prefix``)::

    seawall_idempotency_keys   key PRIMARY KEY, fingerprint, status (0 in flight, 1 completed),
                               token, response BLOB, created_at, locked_until, expires_at
                               index on expires_at (cleanup)

A claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` (taking the key only
when it is new, expired, or an abandoned in-flight claim of the same request),
followed by a read of the existing record when it did not take it. Times are this
host's wall clock (``time.time``) unless ``clock=`` replaces it (tests).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.clock import Clock
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError, EngineError
from seawall.idempotency._base import SyncBackedStore
from seawall.idempotency._model import ClaimResult, IdempotencyRecord, KeyStatus
from seawall.messaging.outbox._sql import check_table_prefix, sqlite_errors, time_source

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["SqliteIdempotencyStore"]

_COLUMNS = "key, fingerprint, status, token, response, created_at, locked_until, expires_at"
_CLAIM_TRIES = 5


def record_from_row(row: Any) -> IdempotencyRecord:
    """A record from a row of the columns above."""
    key, fingerprint, status, token, response, created_at, locked_until, expires_at = row
    return IdempotencyRecord(
        key,
        fingerprint,
        KeyStatus(status),
        token,
        None if response is None else bytes(response),
        created_at,
        locked_until,
        expires_at,
    )


class SqliteIdempotencyStore(SyncBackedStore):
    """Idempotency keys in a SQLite table; ``claim``/``complete``/``release`` join a transaction.

    The asyncio methods run in a worker thread.
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
            raise ConfigurationError(
                f"SqliteIdempotencyStore needs a sqlite:/// engine, got {engine!r}"
            )
        self.engine = engine
        table = self.table = f"{check_table_prefix(table_prefix)}idempotency_keys"
        self._now = time_source(clock)
        self._url = engine.url
        self._create = [
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " key TEXT PRIMARY KEY,"
            " fingerprint TEXT NOT NULL,"
            " status INTEGER NOT NULL,"
            " token TEXT,"
            " response BLOB,"
            " created_at REAL NOT NULL,"
            " locked_until REAL,"
            " expires_at REAL NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {table}_expires ON {table} (expires_at)",
        ]
        self._claim = (
            f"INSERT INTO {table} ({_COLUMNS})"
            " VALUES (:key, :fingerprint, 0, :token, NULL, :now, :now + :lease, :now + :ttl)"
            " ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, status = 0,"
            " token = excluded.token, response = NULL, created_at = excluded.created_at,"
            " locked_until = excluded.locked_until, expires_at = excluded.expires_at"
            f" WHERE {table}.expires_at <= :now OR ({table}.status = 0"
            f" AND {table}.locked_until <= :now AND {table}.fingerprint = excluded.fingerprint)"
            f" RETURNING {_COLUMNS}"
        )
        self._get = f"SELECT {_COLUMNS} FROM {table} WHERE key = ?"
        self._complete = (
            f"UPDATE {table} SET status = 1, response = ?, locked_until = NULL, expires_at = ?"
            " WHERE key = ? AND token = ? AND status = 0"
        )
        self._release = f"DELETE FROM {table} WHERE key = ? AND token = ? AND status = 0"
        self._extend = (
            f"UPDATE {table} SET locked_until = ? WHERE key = ? AND token = ? AND status = 0"
        )
        self._purge = (
            f"DELETE FROM {table} WHERE key IN"
            f" (SELECT key FROM {table} WHERE expires_at <= ? LIMIT ?)"
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
                f"from this store's engine ({self.engine!r})"
            )
        return connection

    def claim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Take the key (one upsert) or read who holds it."""
        connection = self._connection(transaction)
        with sqlite_errors(self._url):
            for _ in range(_CLAIM_TRIES):
                now = self._now()
                row = connection.execute(
                    self._claim,
                    {
                        "key": key,
                        "fingerprint": fingerprint,
                        "token": token,
                        "now": now,
                        "lease": lease,
                        "ttl": ttl,
                    },
                ).fetchone()
                if row is not None:
                    return ClaimResult(record_from_row(row), True, now)
                row = connection.execute(self._get, (key,)).fetchone()
                if row is not None:  # else deleted meanwhile: try again
                    return ClaimResult(record_from_row(row), False, now)
        raise EngineError(
            f"claiming idempotency key {key!r} kept racing with deletes", url=self._url
        )

    def complete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Store the response if ``token`` still holds the key."""
        with sqlite_errors(self._url):
            cursor = self._connection(transaction).execute(
                self._complete, (response, self._now() + ttl, key, token)
            )
        return bool(cursor.rowcount == 1)

    def release(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the in-flight record if ``token`` holds it."""
        with sqlite_errors(self._url):
            cursor = self._connection(transaction).execute(self._release, (key, token))
        return bool(cursor.rowcount == 1)

    def extend(self, key: str, token: str, lease: float) -> bool:
        """Push the holder's lease ahead."""
        with sqlite_errors(self._url):
            cursor = self.engine.connection.execute(self._extend, (self._now() + lease, key, token))
        return bool(cursor.rowcount == 1)

    def get(self, key: str) -> IdempotencyRecord | None:
        """The key's record unless absent or expired."""
        with sqlite_errors(self._url):
            row = self.engine.connection.execute(self._get, (key,)).fetchone()
        if row is None:
            return None
        record = record_from_row(row)
        return None if record.expires_at <= self._now() else record

    def purge_expired(self, limit: int) -> int:
        """Delete up to ``limit`` expired records."""
        with sqlite_errors(self._url):
            return int(self.engine.connection.execute(self._purge, (self._now(), limit)).rowcount)

    def create_tables(self) -> None:
        """Create the table and its index if missing."""
        with sqlite_errors(self._url), self.engine.transaction() as tx:
            for statement in self._create:
                tx.connection.execute(statement)

    def drop_tables(self) -> None:
        """Drop the table and everything in it."""
        with sqlite_errors(self._url):
            self.engine.connection.execute(f"DROP TABLE IF EXISTS {self.table}")

    def close(self) -> None:
        """Nothing to release: the engine owns the connections."""

    def __repr__(self) -> str:
        return f"SqliteIdempotencyStore({self.engine!r}, table={self.table!r})"
