"""Blobs in a table of the SQLite or PostgreSQL database the queue already uses.

One row per blob: ``(key, data, created_at)``. A ``put`` given the caller's
transaction on the same database joins it, so the blob and the message referring to
it commit (or roll back) together: no orphan blob, even on a crash.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from seawall.clock import Clock
from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.messaging.claim_check._errors import BlobNotFoundError
from seawall.messaging.claim_check._file import check_key

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["SqlBlobStore"]

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class SqlBlobStore:
    """A :class:`BlobStore` in table ``table`` of a SQLite or PostgreSQL engine (or URL).

    The table is created on first use. ``clock`` stamps blob times by hand (tests);
    otherwise SQLite uses this host's wall clock and PostgreSQL the server's.
    """

    def __init__(
        self, engine: Engine | str, *, table: str = "seawall_blobs", clock: Clock | None = None
    ) -> None:
        self.engine = connect(engine)
        if self.engine.kind not in {"sqlite", "postgres"}:
            raise UnsupportedEngineError(
                f"SqlBlobStore needs a SQLite or PostgreSQL engine, got {self.engine!r}; use "
                "FileBlobStore(directory) for other engines"
            )
        if not isinstance(table, str) or _TABLE.fullmatch(table) is None:
            raise ConfigurationError(
                f"table={table!r} is not a valid table name; use letters, digits and '_'"
            )
        self.table = table
        self._postgres = self.engine.kind == "postgres"
        self._clock = clock
        self._now: Callable[[], float] = clock.now if clock is not None else time.time
        mark = "%s" if self._postgres else "?"
        self._insert = (
            f"INSERT INTO {table} (key, data, created_at) VALUES ({mark}, {mark}, {mark})"
        )
        self._select = f"SELECT data FROM {table} WHERE key = {mark}"
        self._delete = f"DELETE FROM {table} WHERE key = {mark}"
        self._old = f"SELECT key FROM {table} WHERE created_at < {mark}"
        kind = "BYTEA" if self._postgres else "BLOB"
        number = "DOUBLE PRECISION" if self._postgres else "REAL"
        self._execute(
            f"CREATE TABLE IF NOT EXISTS {table} "
            f"(key TEXT PRIMARY KEY, data {kind} NOT NULL, created_at {number} NOT NULL)"
        )

    def _execute(self, sql: str, parameters: Any = (), *, fetch: bool = False) -> Any:
        engine: Any = self.engine
        if self._postgres:
            with engine.connection() as conn:
                cursor = conn.execute(sql, parameters)
                return cursor.fetchall() if fetch else cursor.rowcount
        cursor = engine.connection.execute(sql, parameters)
        return cursor.fetchall() if fetch else cursor.rowcount

    def _stamp(self) -> float:
        if self._clock is None and self._postgres:
            rows = self._execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())", fetch=True)
            return float(rows[0][0])
        return self._now()

    def put(self, key: str, data: bytes, transaction: Transaction | None = None) -> None:
        """Insert the blob; joins ``transaction`` when it is on this store's database."""
        parameters = (check_key(key), bytes(data), self._stamp())
        if transaction is not None and self.joins(transaction):
            transaction.connection.execute(self._insert, parameters)
            return
        self._execute(self._insert, parameters)

    async def aput(self, key: str, data: bytes, transaction: Transaction | None = None) -> None:
        """Asyncio twin of :meth:`put`; joins sync and asyncio transactions alike."""
        if transaction is not None and self.joins(transaction):
            parameters = (check_key(key), bytes(data), self._stamp())
            result = transaction.connection.execute(self._insert, parameters)
            if inspect.isawaitable(result):  # an asyncio transaction (PostgreSQL atransaction)
                await result
            return
        await asyncio.to_thread(self.put, key, data)

    def joins(self, transaction: Transaction) -> bool:
        """Whether ``transaction`` is on this store's database (a put then joins it)."""
        return transaction.engine is self.engine or (
            not self._postgres
            and getattr(transaction.engine, "path", None) == getattr(self.engine, "path", "")
        )

    def get(self, key: str) -> bytes:
        """The blob's bytes; :class:`BlobNotFoundError` when there is no such row."""
        rows = self._execute(self._select, (check_key(key),), fetch=True)
        if not rows:
            raise BlobNotFoundError(key, f"table {self.table!r} of {self.engine!r}")
        return bytes(rows[0][0])

    def delete(self, key: str) -> bool:
        """Delete the row; False when it was not there."""
        return bool(self._execute(self._delete, (check_key(key),)))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete every listed row that exists; return how many."""
        return sum(1 for key in keys if self.delete(key))

    def collect(self, older_than: float, keep: Collection[str]) -> int:
        """Delete rows created more than ``older_than`` seconds ago, except ``keep``."""
        rows = self._execute(self._old, (self._stamp() - older_than,), fetch=True)
        return sum(1 for (key,) in rows if key not in keep and self.delete(key))

    def keys(self) -> list[str]:
        """Every stored key, sorted."""
        rows = self._execute(f"SELECT key FROM {self.table} ORDER BY key", fetch=True)
        return [key for (key,) in rows]

    def __repr__(self) -> str:
        return f"SqlBlobStore({self.engine!r}, table={self.table!r})"
