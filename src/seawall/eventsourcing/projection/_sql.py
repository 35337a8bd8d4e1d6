"""The little engine-specific SQL a projection runner needs: a lock and a count.

On PostgreSQL a transaction-scoped advisory lock per projection keeps two runners
from applying the same batch (the second one skips its turn); SQLite needs none,
because ``BEGIN IMMEDIATE`` already admits one writer at a time. Lag is counted
with one indexed query on the store's documented events table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["count_query", "lock_key", "lock_statement"]

_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))"
_LOCK = "SELECT true FROM (SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))) AS locked"


def lock_key(store: Any, name: str) -> str:
    """A key naming one projection of one store (its schema and table prefix included)."""
    schema = getattr(store, "schema", None) or ""
    prefix = getattr(store, "table_prefix", "")
    return f"seawall.projection:{schema}.{prefix}:{name}"


def lock_statement(kind: str, *, wait: bool) -> str | None:
    """The statement that takes the projection's lock in a transaction (``None``: not needed).

    It returns one row whose first column is true when the lock was taken.
    """
    if kind != "postgres":
        return None
    return _LOCK if wait else _TRY_LOCK


def count_query(
    store: Any, kind: str, after: int, stored_types: Sequence[str] | None
) -> tuple[str, list[Any]] | None:
    """SQL counting the events after ``after`` (of those stored types), or ``None``."""
    prefix = getattr(store, "table_prefix", None)
    if not isinstance(prefix, str):
        return None
    if kind == "sqlite":
        sql = f"SELECT count(*) FROM {prefix}events WHERE position > ?"
        parameters: list[Any] = [after]
        if stored_types is not None:
            sql += f" AND type IN ({', '.join('?' * len(stored_types))})"
            parameters.extend(stored_types)
        return sql, parameters
    if kind == "postgres":
        schema = getattr(store, "schema", None)
        table = f'"{schema}"."{prefix}events"' if schema else f'"{prefix}events"'
        sql = f"SELECT count(*) FROM {table} WHERE position > %s"
        parameters = [after]
        if stored_types is not None:
            sql += " AND type = ANY(%s::text[])"
            parameters.append(list(stored_types))
        return sql, parameters
    return None
