"""The SQLite semaphore store: holdings shared by the processes of one machine.

Holdings, intents and fencing counters are tables in the engine's database file.
Acquire and release run inside ``BEGIN IMMEDIATE``: SQLite's write lock makes each one
atomic across processes, and the decision (:func:`._core.choose`) runs while it is
held. Expiry is judged on the database's clock (``julianday('now')``), which every
process on the machine shares. The store opens its own connection per thread; async
calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from seawall.coordination.lock._sql import check_table
from seawall.coordination.semaphore._core import Holding, choose
from seawall.coordination.semaphore._sql import statements
from seawall.coordination.semaphore._store import HolderInfo, SemaphoreGrant, SemaphoreState
from seawall.engines._base import engine_for
from seawall.engines._sqlite_connections import SqliteConnections
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError

__all__ = ["DEFAULT_TABLE", "SqliteSemaphoreStore"]

DEFAULT_TABLE = "seawall_semaphores"
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


class SqliteSemaphoreStore:
    """Holdings in SQLite tables; ``engine`` is a SqliteEngine or a ``sqlite:///`` URL.

    ``timeout`` bounds how long one operation waits for SQLite's write lock (seconds).
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
        engine, opened = engine_for(engine, SqliteEngine, "SqliteSemaphoreStore", "sqlite://")
        owns_engine = owns_engine or opened
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigurationError(
                f"SqliteSemaphoreStore timeout must be seconds > 0, got {timeout!r}"
            )
        self.engine = engine
        self.table = check_table(table, "SqliteSemaphoreStore")
        self.timeout = float(timeout)
        self._owns_engine = owns_engine
        self._sql = statements("sqlite", table=self.table, now=_NOW)
        self._connections = SqliteConnections(
            engine,
            timeout=self.timeout,
            create=[
                self._sql[block]
                for block in ("create_holdings", "create_intents", "create_counters")
            ],
        )
        self._error = self._connections.error

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    def setup(self) -> None:
        """Create the tables if they do not exist (otherwise done on first use)."""
        self._connection()

    def _write(self, work: Any) -> Any:
        """Run ``work(conn)`` inside BEGIN IMMEDIATE; commit, or roll back on error."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            result = work(conn)
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            raise
        conn.execute("COMMIT")
        return result

    def _read(self, statement: str, parameters: tuple[Any, ...]) -> list[Any]:
        try:
            return self._connection().execute(self._sql[statement], parameters).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def acquire(
        self,
        name: str,
        owner: str,
        ttl: float,
        limit: int,
        *,
        exclusive: bool = False,
        intent_ttl: float = 0.0,
    ) -> SemaphoreGrant:
        """One write transaction: prune, decide, then grant or record the intent."""
        sql = self._sql

        def work(conn: sqlite3.Connection) -> SemaphoreGrant:
            now = float(conn.execute(sql["now"]).fetchone()[0])
            conn.execute(sql["prune_holdings"], (name, now))
            conn.execute(sql["prune_intents"], (name, now))
            holdings: dict[str, Holding] = {
                str(row[0]): (int(row[1]), bool(row[2]), float(row[3]))
                for row in conn.execute(sql["holdings"], (name,))
            }
            intents = {str(row[0]): float(row[1]) for row in conn.execute(sql["intents"], (name,))}
            slot, hint = choose(holdings, intents, owner, limit, exclusive, now)
            if slot < 0:
                if exclusive and intent_ttl > 0:
                    conn.execute(sql["intend"], (name, owner, now + intent_ttl))
                return SemaphoreGrant(0, -1, hint)
            token = int(conn.execute(sql["bump"], (name,)).fetchone()[0])
            previous = holdings.get(owner)
            held_exclusive = previous[1] if previous is not None else exclusive
            conn.execute(sql["hold"], (name, owner, token, slot, int(held_exclusive), now + ttl))
            conn.execute(sql["withdraw"], (name, owner))
            return SemaphoreGrant(token, slot)

        result: SemaphoreGrant = self._write(work)
        return result

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Restart ``owner``'s holding at ``ttl`` seconds if it still has it."""
        try:
            cursor = self._connection().execute(self._sql["extend"], (name, owner, ttl))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return cursor.rowcount == 1

    def release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding and withdraw its intent, in one transaction."""

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute(self._sql["withdraw"], (name, owner))
            return conn.execute(self._sql["release"], (name, owner)).rowcount == 1

        return bool(self._write(work))

    def state(self, name: str) -> SemaphoreState:
        """The live holdings (by slot) and the counter."""
        rows = self._read("state", (name,))
        last = self._read("last_token", (name,))
        holders = tuple(
            HolderInfo(str(owner), int(token), int(slot), bool(exclusive), max(0.0, float(left)))
            for owner, token, slot, exclusive, left in rows
        )
        return SemaphoreState(name, holders, int(last[0][0]) if last else 0)

    def force_release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding whoever asks."""
        try:
            cursor = self._connection().execute(self._sql["release"], (name, owner))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return cursor.rowcount == 1

    async def aacquire(
        self,
        name: str,
        owner: str,
        ttl: float,
        limit: int,
        *,
        exclusive: bool = False,
        intent_ttl: float = 0.0,
    ) -> SemaphoreGrant:
        """Async :meth:`acquire` (in a worker thread)."""
        return await asyncio.to_thread(
            lambda: self.acquire(
                name, owner, ttl, limit, exclusive=exclusive, intent_ttl=intent_ttl
            )
        )

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        return await asyncio.to_thread(self.extend, name, owner, ttl)

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        return await asyncio.to_thread(self.release, name, owner)

    async def astate(self, name: str) -> SemaphoreState:
        """Async :meth:`state`."""
        return await asyncio.to_thread(self.state, name)

    async def aforce_release(self, name: str, owner: str) -> bool:
        """Async :meth:`force_release`."""
        return await asyncio.to_thread(self.force_release, name, owner)

    def close(self) -> None:
        """Close this store's connections (and the engine, when it opened it)."""
        self._connections.close()
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()

    def __repr__(self) -> str:
        return f"SqliteSemaphoreStore({self.engine!r}, table={self.table!r})"
