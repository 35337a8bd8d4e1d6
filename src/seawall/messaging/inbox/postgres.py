"""The PostgreSQL inbox: processed ids in a table, marked in the consumer's transaction.

Table (``seawall_`` is the default ``table_prefix``; ``schema`` optional)::

    seawall_inbox   (consumer, message_id) PRIMARY KEY, processed_at float8
                    index on processed_at (retention cleanup)

``mark`` is ``INSERT ... ON CONFLICT DO NOTHING``: when two consumers handle the same
message at once, the second insert waits for the first transaction; if that commits,
the second reports a duplicate, if it rolls back, the second proceeds. Times are the
server's (``statement_timestamp()``) unless ``clock=`` replaces it in tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from seawall.clock import Clock
from seawall.engines.postgres import PostgresEngine, postgres_errors
from seawall.errors import ConfigurationError
from seawall.messaging.outbox._sql import check_table_prefix

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["PostgresInboxStore"]

_NOW = "coalesce(%(now)s::float8, extract(epoch FROM statement_timestamp())::float8)"


class PostgresInboxStore:
    """Processed ids in PostgreSQL; ``mark`` joins ``engine.transaction()`` or ``atransaction()``."""

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

        engine = connect(engine)
        if not isinstance(engine, PostgresEngine):
            raise ConfigurationError(
                f"PostgresInboxStore needs a postgresql:// engine, got {engine!r}"
            )
        if schema is not None:
            check_table_prefix(schema, "schema")
        self.engine = engine
        self.table = f"{check_table_prefix(table_prefix)}inbox"
        name = f'"{schema}".{self.table}' if schema else self.table
        self._clock = clock
        self._create = [
            *([f'CREATE SCHEMA IF NOT EXISTS "{schema}"'] if schema else []),
            f"CREATE TABLE IF NOT EXISTS {name} ("
            " consumer text NOT NULL, message_id text NOT NULL, processed_at float8 NOT NULL,"
            " PRIMARY KEY (consumer, message_id))",
            f"CREATE INDEX IF NOT EXISTS {self.table}_processed ON {name} (processed_at)",
        ]
        self._drop = f"DROP TABLE IF EXISTS {name}"
        self._mark = (
            f"INSERT INTO {name} (consumer, message_id, processed_at)"
            f" VALUES (%(consumer)s, %(id)s, {_NOW}) ON CONFLICT DO NOTHING"
        )
        self._seen = f"SELECT 1 FROM {name} WHERE consumer = %(consumer)s AND message_id = %(id)s"
        self._forget = f"DELETE FROM {name} WHERE consumer = %(consumer)s AND message_id = %(id)s"
        self._count = f"SELECT count(*) FROM {name} WHERE consumer = %(consumer)s"
        self._purge = (
            f"DELETE FROM {name} WHERE (consumer, message_id) IN ("
            f" SELECT consumer, message_id FROM {name} WHERE processed_at <= {_NOW} - %(age)s"
            " LIMIT %(limit)s)"
        )
        if create:
            self.create_tables()

    def _parameters(self, **values: Any) -> dict[str, Any]:
        values["now"] = None if self._clock is None else self._clock.now()
        return values

    def _rows(self, sql: str, parameters: dict[str, Any]) -> list[Any]:
        with self.engine.connection() as connection:
            return connection.execute(sql, parameters).fetchall()

    def _count_rows(self, sql: str, parameters: dict[str, Any]) -> int:
        with self.engine.connection() as connection:
            return connection.execute(sql, parameters).rowcount

    def mark(self, consumer: str, message_id: str, transaction: Transaction | None) -> bool:
        """Record the id (in ``transaction`` when given); True the first time."""
        parameters = self._parameters(consumer=consumer, id=message_id)
        if transaction is None:
            return self._count_rows(self._mark, parameters) == 1
        import psycopg

        connection = transaction.connection
        if not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(
                "this needs a synchronous PostgreSQL transaction from engine.transaction(); "
                "for engine.atransaction() use await inbox.amark(...)"
            )
        with postgres_errors(self.engine.url):
            return connection.execute(self._mark, parameters).rowcount == 1

    async def amark(self, consumer: str, message_id: str, transaction: Transaction | None) -> bool:
        """Record the id in an ``engine.atransaction()`` (or a short one of its own)."""
        import psycopg

        parameters = self._parameters(consumer=consumer, id=message_id)
        if transaction is None:
            pool = await self.engine.async_pool()
            with postgres_errors(self.engine.url):
                async with pool.connection() as own:
                    return (await own.execute(self._mark, parameters)).rowcount == 1
        connection = transaction.connection
        if isinstance(connection, psycopg.Connection):
            return self.mark(consumer, message_id, transaction)
        if not isinstance(connection, psycopg.AsyncConnection):
            raise ConfigurationError(
                f"the transaction {transaction!r} is not a PostgreSQL one; pass a transaction "
                f"from this inbox's engine ({self.engine!r})"
            )
        with postgres_errors(self.engine.url):
            return (await connection.execute(self._mark, parameters)).rowcount == 1

    def seen(self, consumer: str, message_id: str) -> bool:
        """True when the id is recorded."""
        return bool(self._rows(self._seen, {"consumer": consumer, "id": message_id}))

    def forget(self, consumer: str, message_id: str) -> bool:
        """Remove the record; True if it existed."""
        return self._count_rows(self._forget, {"consumer": consumer, "id": message_id}) == 1

    def count(self, consumer: str) -> int:
        """How many ids the consumer has recorded."""
        return int(self._rows(self._count, {"consumer": consumer})[0][0])

    def purge(self, older_than: float, limit: int) -> int:
        """Forget up to ``limit`` ids recorded more than ``older_than`` seconds ago."""
        return self._count_rows(self._purge, self._parameters(age=older_than, limit=limit))

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
        return f"PostgresInboxStore({self.engine!r}, table={self.table!r})"
