"""Records of a shop service in one SQL table, read and written inside a caller's transaction."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seawall.engines import Engine, Transaction

__all__ = ["SqlRecords", "create_records_table", "read_records"]


def _placeholder(kind: str) -> str:
    return "%s" if kind == "postgres" else "?"


def create_records_table(engine: Engine, table: str) -> None:
    """Create ``table`` (key text primary key, JSON value) if it does not exist."""
    with engine.transaction() as tx:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )


def read_records(engine: Engine, table: str) -> dict[str, Any]:
    """Every row of ``table`` decoded, read in one transaction (a consistent snapshot)."""
    with engine.transaction() as tx:
        rows = tx.execute(f"SELECT key, value FROM {table} ORDER BY key").fetchall()
    return {str(key): json.loads(value) for key, value in rows}


class SqlRecords:
    """The logic's :class:`~seawall.shop.logic.Records` on a table, inside ``transaction``."""

    def __init__(self, transaction: Transaction, table: str) -> None:
        self.transaction = transaction
        self.table = table
        self._mark = _placeholder(transaction.engine.kind)
        if transaction.engine.kind == "postgres":
            # One writer per service at a time, as SQLite's BEGIN IMMEDIATE gives: two
            # duplicates of one request must not both see "no reservation yet".
            transaction.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table])

    def get(self, key: str) -> Any | None:
        row = self.transaction.execute(
            f"SELECT value FROM {self.table} WHERE key = {self._mark}", [key]
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        mark = self._mark
        self.transaction.execute(
            f"INSERT INTO {self.table} (key, value) VALUES ({mark}, {mark}) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, json.dumps(value, sort_keys=True)],
        )

    def delete(self, key: str) -> None:
        self.transaction.execute(f"DELETE FROM {self.table} WHERE key = {self._mark}", [key])

    def keys(self, prefix: str) -> list[str]:
        rows = self.transaction.execute(
            f"SELECT key FROM {self.table} WHERE key >= {self._mark} ORDER BY key", [prefix]
        ).fetchall()
        return [str(row[0]) for row in rows if str(row[0]).startswith(prefix)]
