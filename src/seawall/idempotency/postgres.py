"""The PostgreSQL idempotency store: one statement per operation, on the server's clock.

Table (``seawall_`` is the default ``table_prefix``; ``schema`` optional)::

    seawall_idempotency_keys   key PRIMARY KEY, fingerprint, status (0 in flight, 1 completed),
                               token, response bytea, created_at, locked_until, expires_at
                               index on expires_at (cleanup)

A claim is one statement: an ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` that takes
the key only when it is new, expired, or an abandoned in-flight claim of the same
request, united with a read of the existing row when it did not. Concurrent claims
of a new key queue on its unique index: exactly one inserts, the others then see
its record. Leases and expiry use the server's ``statement_timestamp()`` so hosts with
skewed clocks agree; ``clock=`` replaces it in tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from seawall.clock import Clock
from seawall.engines.postgres import PostgresEngine, postgres_errors
from seawall.errors import ConfigurationError, EngineError
from seawall.idempotency._model import ClaimResult, IdempotencyRecord
from seawall.idempotency.sqlite import record_from_row
from seawall.messaging.outbox._sql import check_table_prefix

if TYPE_CHECKING:
    import psycopg

    from seawall.engines._base import Engine, Transaction

__all__ = ["PostgresIdempotencyStore"]

_NOW = "coalesce(%(now)s::float8, extract(epoch FROM statement_timestamp())::float8)"
_COLUMNS = "key, fingerprint, status, token, response, created_at, locked_until, expires_at"
_CLAIM_TRIES = 5


class PostgresIdempotencyStore:
    """Idempotency keys in PostgreSQL; writes join ``engine.transaction()`` or ``atransaction()``.

    The asyncio methods use the engine's asyncio pool.
    """

    kind: ClassVar[str] = "postgres"
    supports_transactions: ClassVar[bool] = True

    def __init__(
        self,
        engine: Engine | str,
        *,
        table_prefix: str = "seawall_",
        schema: str | None = None,
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines import connect

        connected = connect(engine)
        if not isinstance(connected, PostgresEngine):
            raise ConfigurationError(
                f"PostgresIdempotencyStore needs a postgresql:// engine, got {connected!r}"
            )
        if schema is not None:
            check_table_prefix(schema, "schema")
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise ConfigurationError(f"clock={clock!r} is not a seawall.clock.Clock (or None)")
        self.engine = connected
        self.table = f"{check_table_prefix(table_prefix)}idempotency_keys"
        name = f'"{schema}".{self.table}' if schema else self.table
        self._clock = clock
        self._create = [
            *([f'CREATE SCHEMA IF NOT EXISTS "{schema}"'] if schema else []),
            f"CREATE TABLE IF NOT EXISTS {name} ("
            " key text PRIMARY KEY,"
            " fingerprint text NOT NULL,"
            " status smallint NOT NULL,"
            " token text,"
            " response bytea,"
            " created_at float8 NOT NULL,"
            " locked_until float8,"
            " expires_at float8 NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {self.table}_expires ON {name} (expires_at)",
        ]
        self._drop = f"DROP TABLE IF EXISTS {name}"
        self._claim = (
            f"WITH t AS (SELECT {_NOW} AS now),"
            " taken AS ("
            f"  INSERT INTO {name} AS k ({_COLUMNS})"
            "   SELECT %(key)s, %(fingerprint)s, 0, %(token)s, NULL, t.now, t.now + %(lease)s,"
            "   t.now + %(ttl)s FROM t"
            "   ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, status = 0,"
            "   token = excluded.token, response = NULL, created_at = excluded.created_at,"
            "   locked_until = excluded.locked_until, expires_at = excluded.expires_at"
            "   WHERE k.expires_at <= excluded.created_at OR (k.status = 0"
            "   AND k.locked_until <= excluded.created_at AND k.fingerprint = excluded.fingerprint)"
            f"  RETURNING {_COLUMNS})"
            f" SELECT {_COLUMNS}, true, (SELECT now FROM t) FROM taken"
            " UNION ALL"
            f" SELECT {_COLUMNS}, false, (SELECT now FROM t) FROM {name}"
            " WHERE key = %(key)s AND NOT EXISTS (SELECT 1 FROM taken)"
        )
        self._get = f"SELECT {_COLUMNS} FROM {name} WHERE key = %(key)s AND expires_at > {_NOW}"
        self._complete = (
            f"UPDATE {name} SET status = 1, response = %(response)s, locked_until = NULL,"
            f" expires_at = {_NOW} + %(ttl)s"
            " WHERE key = %(key)s AND token = %(token)s AND status = 0"
        )
        self._release = (
            f"DELETE FROM {name} WHERE key = %(key)s AND token = %(token)s AND status = 0"
        )
        self._extend = (
            f"UPDATE {name} SET locked_until = {_NOW} + %(lease)s"
            " WHERE key = %(key)s AND token = %(token)s AND status = 0"
        )
        self._purge = (
            f"DELETE FROM {name} WHERE key IN"
            f" (SELECT key FROM {name} WHERE expires_at <= {_NOW} LIMIT %(limit)s)"
        )
        if create:
            self.create_tables()

    def _parameters(self, **values: Any) -> dict[str, Any]:
        values["now"] = None if self._clock is None else self._clock.now()
        return values

    # -- synchronous ------------------------------------------------------------------------

    def _sync_connection(self, transaction: Transaction) -> psycopg.Connection[Any]:
        import psycopg

        connection = transaction.connection
        if not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(
                "this needs a synchronous PostgreSQL transaction from engine.transaction(); "
                "for engine.atransaction() use the a-prefixed methods (aclaim, acomplete, ...)"
            )
        return connection

    def _fetch(
        self, sql: str, parameters: dict[str, Any], transaction: Transaction | None
    ) -> list[Any]:
        if transaction is not None:
            with postgres_errors(self.engine.url):
                return self._sync_connection(transaction).execute(sql, parameters).fetchall()
        with self.engine.connection() as connection:
            return connection.execute(sql, parameters).fetchall()

    def _count(self, sql: str, parameters: dict[str, Any], transaction: Transaction | None) -> int:
        if transaction is not None:
            with postgres_errors(self.engine.url):
                return self._sync_connection(transaction).execute(sql, parameters).rowcount
        with self.engine.connection() as connection:
            return connection.execute(sql, parameters).rowcount

    def claim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Take the key or read who holds it, in one statement."""
        parameters = self._parameters(
            key=key, fingerprint=fingerprint, token=token, lease=lease, ttl=ttl
        )
        for _ in range(_CLAIM_TRIES):
            rows = self._fetch(self._claim, parameters, transaction)
            if rows:
                return _result(rows[0])
        raise _racing(key, self.engine.url)

    def complete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Store the response if ``token`` still holds the key."""
        parameters = self._parameters(key=key, token=token, response=response, ttl=ttl)
        return self._count(self._complete, parameters, transaction) == 1

    def release(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the in-flight record if ``token`` holds it."""
        return self._count(self._release, {"key": key, "token": token}, transaction) == 1

    def extend(self, key: str, token: str, lease: float) -> bool:
        """Push the holder's lease ahead."""
        parameters = self._parameters(key=key, token=token, lease=lease)
        return self._count(self._extend, parameters, None) == 1

    def get(self, key: str) -> IdempotencyRecord | None:
        """The key's record unless absent or expired."""
        rows = self._fetch(self._get, self._parameters(key=key), None)
        return record_from_row(rows[0]) if rows else None

    def purge_expired(self, limit: int) -> int:
        """Delete up to ``limit`` expired records."""
        return self._count(self._purge, self._parameters(limit=limit), None)

    # -- asyncio ----------------------------------------------------------------------------

    async def _afetch(
        self, sql: str, parameters: dict[str, Any], transaction: Transaction | None, rows: bool
    ) -> Any:
        import psycopg

        if transaction is not None:
            connection = transaction.connection
            if isinstance(connection, psycopg.Connection):
                with postgres_errors(self.engine.url):
                    cursor = connection.execute(sql, parameters)
                    return cursor.fetchall() if rows else cursor.rowcount
            if not isinstance(connection, psycopg.AsyncConnection):
                raise ConfigurationError(
                    f"the transaction {transaction!r} is not a PostgreSQL one; pass a "
                    f"transaction from this store's engine ({self.engine!r})"
                )
            with postgres_errors(self.engine.url):
                acursor = await connection.execute(sql, parameters)
                return await acursor.fetchall() if rows else acursor.rowcount
        pool = await self.engine.async_pool()
        with postgres_errors(self.engine.url):
            async with pool.connection() as own:
                acursor = await own.execute(sql, parameters)
                return await acursor.fetchall() if rows else acursor.rowcount

    async def aclaim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Asyncio twin of :meth:`claim`."""
        parameters = self._parameters(
            key=key, fingerprint=fingerprint, token=token, lease=lease, ttl=ttl
        )
        for _ in range(_CLAIM_TRIES):
            rows = await self._afetch(self._claim, parameters, transaction, True)
            if rows:
                return _result(rows[0])
        raise _racing(key, self.engine.url)

    async def acomplete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Asyncio twin of :meth:`complete`."""
        parameters = self._parameters(key=key, token=token, response=response, ttl=ttl)
        return bool(await self._afetch(self._complete, parameters, transaction, False) == 1)

    async def arelease(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Asyncio twin of :meth:`release`."""
        parameters = {"key": key, "token": token}
        return bool(await self._afetch(self._release, parameters, transaction, False) == 1)

    async def aextend(self, key: str, token: str, lease: float) -> bool:
        """Asyncio twin of :meth:`extend`."""
        parameters = self._parameters(key=key, token=token, lease=lease)
        return bool(await self._afetch(self._extend, parameters, None, False) == 1)

    async def aget(self, key: str) -> IdempotencyRecord | None:
        """Asyncio twin of :meth:`get`."""
        rows = await self._afetch(self._get, self._parameters(key=key), None, True)
        return record_from_row(rows[0]) if rows else None

    async def apurge_expired(self, limit: int) -> int:
        """Asyncio twin of :meth:`purge_expired`."""
        return int(await self._afetch(self._purge, self._parameters(limit=limit), None, False))

    def create_tables(self) -> None:
        """Create the table (and schema) and its index if missing."""
        with self.engine.connection() as connection, connection.transaction():
            for statement in self._create:
                connection.execute(statement)

    def drop_tables(self) -> None:
        """Drop the table and everything in it."""
        with self.engine.connection() as connection:
            connection.execute(self._drop)

    def close(self) -> None:
        """Nothing to release: the engine owns the pools."""

    def __repr__(self) -> str:
        return f"PostgresIdempotencyStore({self.engine!r}, table={self.table!r})"


def _result(row: Any) -> ClaimResult:
    return ClaimResult(record_from_row(row[:8]), bool(row[8]), float(row[9]))


def _racing(key: str, url: str) -> EngineError:
    return EngineError(
        f"claiming idempotency key {key!r} kept racing with concurrent deletes; retry", url=url
    )
