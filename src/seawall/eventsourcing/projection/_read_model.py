"""The query side: read SQL read models as lists of dicts.

A thin helper over the engine's connection: ``query`` returns every row as a dict
of column name to value, ``one`` the first row or ``None``, ``scalar`` the first
column of the first row. SQL uses the engine's own placeholders (``?`` on SQLite,
``%s`` on PostgreSQL)::

    orders = ReadModel(engine)
    rows = orders.query("SELECT id, total FROM order_totals WHERE total > ?", [100])
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seawall.engines import connect
from seawall.errors import ConfigurationError

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["AsyncReadModel", "ReadModel"]

Parameters = Sequence[Any] | Mapping[str, Any]
"""Positional parameters, or named ones (``:name`` on SQLite, ``%(name)s`` on PostgreSQL)."""

Row = dict[str, Any]


def _rows(cursor: Any, rows: list[Any]) -> list[Row]:
    description = cursor.description
    if description is None:
        return []
    names = [column[0] for column in description]
    return [dict(zip(names, row, strict=True)) for row in rows]


def _check_engine(engine: Engine) -> Engine:
    if engine.kind not in {"sqlite", "postgres"}:
        raise ConfigurationError(
            f"ReadModel reads SQL read models on SQLite or PostgreSQL, not {engine!r}"
        )
    return engine


class ReadModel:
    """Reads rows of SQL read models (synchronous), optionally inside a transaction."""

    def __init__(self, engine: Engine | str) -> None:
        self.engine = _check_engine(connect(engine))

    def query(
        self, sql: str, parameters: Parameters = (), *, transaction: Transaction | None = None
    ) -> list[Row]:
        """Every row the query returns, as dicts of column name to value."""
        engine: Any = self.engine
        if transaction is not None:
            cursor = transaction.execute(sql, parameters)
            return _rows(cursor, cursor.fetchall())
        if engine.kind == "sqlite":
            from seawall.eventsourcing.store.sqlite import sqlite_errors

            with sqlite_errors(engine.url):
                cursor = engine.connection.execute(sql, parameters)
                return _rows(cursor, cursor.fetchall())
        with engine.connection() as connection:
            cursor = connection.execute(sql, parameters)
            return _rows(cursor, cursor.fetchall())

    def one(
        self, sql: str, parameters: Parameters = (), *, transaction: Transaction | None = None
    ) -> Row | None:
        """The first row as a dict, or ``None`` when there is none."""
        rows = self.query(sql, parameters, transaction=transaction)
        return rows[0] if rows else None

    def scalar(
        self, sql: str, parameters: Parameters = (), *, transaction: Transaction | None = None
    ) -> Any:
        """The first column of the first row (``None`` when there is no row)."""
        row = self.one(sql, parameters, transaction=transaction)
        return None if row is None else next(iter(row.values()))

    def __repr__(self) -> str:
        return f"ReadModel({self.engine!r})"


class AsyncReadModel:
    """The asyncio twin of :class:`ReadModel`: PostgreSQL's async pool, SQLite in a thread."""

    def __init__(self, engine: Engine | str) -> None:
        self.engine = _check_engine(connect(engine))
        self._sync = ReadModel(self.engine)

    async def query(
        self, sql: str, parameters: Parameters = (), *, transaction: Transaction | None = None
    ) -> list[Row]:
        """Every row the query returns, as dicts of column name to value."""
        engine: Any = self.engine
        if engine.kind == "sqlite":
            if transaction is not None:
                return self._sync.query(sql, parameters, transaction=transaction)
            return await asyncio.to_thread(self._sync.query, sql, parameters)
        if transaction is not None:
            cursor = await transaction.connection.execute(sql, parameters)
            return _rows(cursor, await cursor.fetchall())
        from seawall.engines.postgres import postgres_errors

        pool = await engine.async_pool()
        with postgres_errors(engine.url):
            async with pool.connection() as connection:
                cursor = await connection.execute(sql, parameters)
                return _rows(cursor, await cursor.fetchall())

    async def one(
        self, sql: str, parameters: Parameters = (), *, transaction: Transaction | None = None
    ) -> Row | None:
        """The first row as a dict, or ``None`` when there is none."""
        rows = await self.query(sql, parameters, transaction=transaction)
        return rows[0] if rows else None

    async def scalar(
        self, sql: str, parameters: Parameters = (), *, transaction: Transaction | None = None
    ) -> Any:
        """The first column of the first row (``None`` when there is no row)."""
        row = await self.one(sql, parameters, transaction=transaction)
        return None if row is None else next(iter(row.values()))

    def __repr__(self) -> str:
        return f"AsyncReadModel({self.engine!r})"
