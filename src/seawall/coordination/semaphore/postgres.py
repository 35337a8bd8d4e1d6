"""The PostgreSQL semaphore store: holdings on server time, one round trip per operation.

Holdings are rows of ``seawall_semaphores(name, owner, token, slot, exclusive,
expires_at)``; exclusive waiters' intents live in ``<table>_intents`` and the fencing
counters in ``<table>_counters``. Acquire is one call of the PL/pgSQL function
``<table>_acquire``, created with the tables: it locks the name's counter row first, so
acquires of one name run one at a time (and never exceed the limit), drops expired
holdings, decides, and bumps the counter for a grant. Every expiry is judged with the
server's ``clock_timestamp()``. Statements run in autocommit on the engine's pool, so
a semaphore never joins (or waits for) a caller's transaction.
"""

from __future__ import annotations

import threading
from typing import Any

from seawall.coordination.lock._sql import check_table
from seawall.coordination.semaphore._sql import statements
from seawall.coordination.semaphore._store import HolderInfo, SemaphoreGrant, SemaphoreState
from seawall.engines._base import engine_for
from seawall.engines.postgres import PostgresEngine, postgres_errors

__all__ = ["DEFAULT_TABLE", "PostgresSemaphoreStore"]

DEFAULT_TABLE = "seawall_semaphores"


class PostgresSemaphoreStore:
    """Holdings in PostgreSQL tables on server time; ``engine`` is a PostgresEngine or a URL.

    The tables and the acquire function are created on first use or by :meth:`setup`.
    """

    expires = True

    def __init__(
        self,
        engine: PostgresEngine | str,
        *,
        table: str = DEFAULT_TABLE,
        owns_engine: bool = False,
    ) -> None:
        engine, opened = engine_for(
            engine, PostgresEngine, "PostgresSemaphoreStore", "postgresql://"
        )
        owns_engine = owns_engine or opened
        self.engine = engine
        self.table = check_table(table, "PostgresSemaphoreStore")
        self._owns_engine = owns_engine
        self._sql = statements("postgres", table=self.table)
        self._ready = False
        self._guard = threading.Lock()

    def setup(self) -> None:
        """Create the tables and the acquire function if they do not exist."""
        with self._guard:
            if self._ready:
                return
            with (
                self.engine.connection() as conn,
                postgres_errors(self.engine.url),
                conn.transaction(),
            ):
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                conn.execute(self._sql["create"])
            self._ready = True

    async def asetup(self) -> None:
        """Async :meth:`setup`."""
        if self._ready:
            return
        pool = await self.engine.async_pool()
        with postgres_errors(self.engine.url):
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                await conn.execute(self._sql["create"])
        self._ready = True

    def _run(self, statement: str, params: dict[str, Any], *, fetch: str) -> Any:
        if not self._ready:
            self.setup()
        with self.engine.connection() as conn, postgres_errors(self.engine.url):
            cursor = conn.execute(self._sql[statement], params, prepare=True)
            if fetch == "one":
                return cursor.fetchone()
            if fetch == "all":
                return cursor.fetchall()
            return cursor.rowcount

    async def _arun(self, statement: str, params: dict[str, Any], *, fetch: str) -> Any:
        if not self._ready:
            await self.asetup()
        pool = await self.engine.async_pool()
        with postgres_errors(self.engine.url):
            async with pool.connection() as conn:
                cursor = await conn.execute(self._sql[statement], params, prepare=True)
                if fetch == "one":
                    return await cursor.fetchone()
                if fetch == "all":
                    return await cursor.fetchall()
                return cursor.rowcount

    @staticmethod
    def _acquire_params(
        name: str, owner: str, ttl: float, limit: int, exclusive: bool, intent_ttl: float
    ) -> dict[str, Any]:
        return {
            "name": name,
            "owner": owner,
            "ttl": float(ttl),
            "limit": int(limit),
            "exclusive": bool(exclusive),
            "intent_ttl": float(intent_ttl),
        }

    @staticmethod
    def _grant(row: Any) -> SemaphoreGrant:
        token, slot, hint = row
        if token:
            return SemaphoreGrant(int(token), int(slot))
        return SemaphoreGrant(0, -1, None if hint is None else max(0.0, float(hint)))

    @staticmethod
    def _state(name: str, rows: Any) -> SemaphoreState:
        last = int(rows[0][0] or 0) if rows else 0
        holders = tuple(
            HolderInfo(str(owner), int(token), int(slot), bool(exclusive), max(0.0, float(left)))
            for _, owner, token, slot, exclusive, left in rows
            if owner is not None
        )
        return SemaphoreState(name, holders, last)

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
        """One call of the acquire function (see the module docstring)."""
        params = self._acquire_params(name, owner, ttl, limit, exclusive, intent_ttl)
        return self._grant(self._run("acquire", params, fetch="one"))

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Restart ``owner``'s holding at ``ttl`` seconds if it still has it."""
        params = {"name": name, "owner": owner, "ttl": float(ttl)}
        return bool(self._run("extend", params, fetch="count") == 1)

    def release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding and withdraw its intent (one statement)."""
        return bool(self._run("release", {"name": name, "owner": owner}, fetch="count") == 1)

    def state(self, name: str) -> SemaphoreState:
        """The live holdings (by slot) and the counter."""
        return self._state(name, self._run("state", {"name": name}, fetch="all"))

    def force_release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding whoever asks."""
        params = {"name": name, "owner": owner}
        return bool(self._run("force_release", params, fetch="count") == 1)

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
        """Async :meth:`acquire`."""
        params = self._acquire_params(name, owner, ttl, limit, exclusive, intent_ttl)
        return self._grant(await self._arun("acquire", params, fetch="one"))

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        params = {"name": name, "owner": owner, "ttl": float(ttl)}
        return bool(await self._arun("extend", params, fetch="count") == 1)

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        params = {"name": name, "owner": owner}
        return bool(await self._arun("release", params, fetch="count") == 1)

    async def astate(self, name: str) -> SemaphoreState:
        """Async :meth:`state`."""
        return self._state(name, await self._arun("state", {"name": name}, fetch="all"))

    async def aforce_release(self, name: str, owner: str) -> bool:
        """Async :meth:`force_release`."""
        params = {"name": name, "owner": owner}
        return bool(await self._arun("force_release", params, fetch="count") == 1)

    def close(self) -> None:
        """Close the engine if this store opened it."""
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        if self._owns_engine:
            await self.engine.aclose()

    def __repr__(self) -> str:
        return f"PostgresSemaphoreStore({self.engine!r}, table={self.table!r})"
