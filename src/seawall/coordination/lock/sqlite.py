"""The SQLite lock store: locks between the processes of one machine, one statement each.

Leases are rows of ``seawall_locks(name, owner, token, expires_at)`` in the engine's
database file. Acquire is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired
RETURNING token``: SQLite's write lock makes it atomic across processes, and the same
statement increments the row's ``token`` column, the fencing token. Release clears
``owner`` but keeps the row, so tokens never repeat. Expiry is judged on the
database's clock (``julianday('now')``), which every process on the machine shares;
a wall-clock step (NTP, a manual change) moves every lease by the same amount.

The store opens its own connection per thread (autocommit, WAL, ``busy_timeout``), so
a caller's open transaction on the engine's connection never holds a lock row back.
An in-memory database (``sqlite://:memory:``) is private to one connection: it only
coordinates the threads of one process through the engine's connection. Async calls
run the statements in a worker thread. Grants and extensions commit with SQLite's
default ``synchronous=FULL`` (a granted token survives a power cut); releases commit
with ``synchronous=NORMAL``, which is safe: a release lost in a power cut only leaves
the lease to expire by its TTL.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from seawall.coordination.lock._sql import check_table, statements
from seawall.coordination.lock._store import Acquisition, LeaseInfo
from seawall.engines._base import engine_for
from seawall.engines._sqlite_connections import SqliteConnections
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError

__all__ = ["DEFAULT_TABLE", "SqliteLockStore"]

DEFAULT_TABLE = "seawall_locks"
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


class SqliteLockStore:
    """Leases in a SQLite table; ``engine`` is a SqliteEngine or a ``sqlite:///`` URL.

    ``timeout`` bounds how long one statement waits for SQLite's write lock (seconds).
    """

    expires = True

    def __init__(
        self,
        engine: SqliteEngine | str,
        *,
        table: str = DEFAULT_TABLE,
        timeout: float = 5.0,
        owns_engine: bool = False,
    ) -> None:
        engine, opened = engine_for(engine, SqliteEngine, "SqliteLockStore", "sqlite://")
        owns_engine = owns_engine or opened
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigurationError(
                f"SqliteLockStore timeout must be seconds > 0, got {timeout!r}"
            )
        self.engine = engine
        self.table = check_table(table, "SqliteLockStore")
        self.timeout = float(timeout)
        self._owns_engine = owns_engine
        self._sql = statements("sqlite", table=self.table, now=_NOW)
        self._connections = SqliteConnections(
            engine, timeout=self.timeout, create=[self._sql["create"]]
        )

    # ------------------------------------------------------------------ connections

    def _connection(self, relaxed: bool = False) -> sqlite3.Connection:
        """This thread's connection; *relaxed* ones commit without waiting for the disk.

        Only releases use a relaxed connection: a release lost in a power cut leaves
        the lease to expire by its TTL, which delays the next holder but never lets two
        hold the lock or a token repeat. Grants and extensions stay durable.
        """
        return self._connections.get(relaxed)

    def setup(self) -> None:
        """Create the lease table if it does not exist (otherwise done on first use)."""
        self._connection()

    def _run(
        self, statement: str, parameters: tuple[Any, ...], *, relaxed: bool = False
    ) -> sqlite3.Cursor:
        try:
            return self._connection(relaxed).execute(self._sql[statement], parameters)
        except sqlite3.Error as exc:
            raise self._connections.error(exc) from exc

    # ------------------------------------------------------------------ operations

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """One upsert: take the row if it is free or expired, incrementing its token."""
        row = self._run("acquire", (name, owner, ttl)).fetchone()
        if row is not None:
            return Acquisition(int(row[0]))
        left = self._run("remaining", (name,)).fetchone()
        return Acquisition(0, max(0.0, float(left[0])) if left is not None else None)

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Restart ``owner``'s lease at ``ttl`` seconds if it still holds it."""
        return self._run("extend", (name, owner, ttl)).rowcount == 1

    def release(self, name: str, owner: str) -> bool:
        """Clear ``owner`` from the row if it still holds the lease (a relaxed commit)."""
        return self._run("release", (name, owner), relaxed=True).rowcount == 1

    def inspect(self, name: str) -> LeaseInfo | None:
        """The live lease on ``name``, or ``None``."""
        row = self._run("inspect", (name,)).fetchone()
        if row is None:
            return None
        return LeaseInfo(name, str(row[0]), int(row[1]), max(0.0, float(row[2])))

    def force_release(self, name: str) -> bool:
        """End whoever's lease on ``name``; the token is kept."""
        return self._run("force_release", (name,)).rowcount == 1

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Async :meth:`acquire` (in a worker thread)."""
        return await asyncio.to_thread(self.acquire, name, owner, ttl)

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        return await asyncio.to_thread(self.extend, name, owner, ttl)

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        return await asyncio.to_thread(self.release, name, owner)

    async def ainspect(self, name: str) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        return await asyncio.to_thread(self.inspect, name)

    async def aforce_release(self, name: str) -> bool:
        """Async :meth:`force_release`."""
        return await asyncio.to_thread(self.force_release, name)

    def close(self) -> None:
        """Close this store's connections (and the engine, when it opened it)."""
        self._connections.close()
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()

    def __repr__(self) -> str:
        return f"SqliteLockStore({self.engine!r}, table={self.table!r})"
