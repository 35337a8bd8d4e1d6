"""The PostgreSQL lock stores: a lease table on server time, and session-scoped advisory locks.

:class:`PostgresLockStore` keeps leases in ``seawall_locks(name, owner, token,
expires_at)``. Acquire is one statement: an ``INSERT ... ON CONFLICT DO UPDATE ... WHERE
expired RETURNING token`` that takes a free or expired row and increments its fencing
token, wrapped so a refusal reports the holder's remaining lease in the same round
trip. Expiry is judged with ``clock_timestamp()`` on the server, never a client's
clock. Release clears ``owner`` and keeps the row, so tokens never repeat; the table
is as durable as any committed row (replicated with the database, safe on failover
to a synchronous standby).

:class:`PostgresAdvisoryLockStore` is the session-scoped variant: the lease is a
``pg_try_advisory_lock`` held by a connection the store keeps for the holder, so it
lasts exactly as long as that session: it ends when the holder releases it or its
connection dies (process crash, network cut, ``pg_terminate_backend``), never by TTL.
A fencing counter per name in ``seawall_lock_fences`` is bumped in the statement that
takes the lock. ``extend`` checks that the session is still alive.

Both stores run statements in autocommit on connections of their own, so a lock
never waits for a caller's transaction. An unreachable server raises
:class:`~seawall.errors.EngineUnavailableError` within the engine's connect timeout.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from seawall.coordination.lock._sql import check_table, statements
from seawall.coordination.lock._store import Acquisition, LeaseInfo
from seawall.engines._base import engine_for
from seawall.engines.postgres import PostgresEngine, postgres_errors

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from seawall.errors import MissingExtraError

    raise MissingExtraError("postgres", "psycopg") from exc

__all__ = [
    "DEFAULT_FENCES_TABLE",
    "DEFAULT_TABLE",
    "PostgresAdvisoryLockStore",
    "PostgresLockStore",
    "advisory_key",
]

DEFAULT_TABLE = "seawall_locks"
DEFAULT_FENCES_TABLE = "seawall_lock_fences"
Params = Mapping[str, Any]
_IDLE = psycopg.pq.TransactionStatus.IDLE


def advisory_key(name: str) -> int:
    """The signed 64-bit advisory lock key of ``name`` (BLAKE2b of its UTF-8 bytes)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _Connections:
    """Autocommit connections of one store, sync and asyncio, durable and relaxed.

    *Relaxed* connections run with ``synchronous_commit = off``: their commits return
    before the WAL reaches disk. Only releases use them: a release lost in a server
    crash leaves the lease to expire by its TTL, which delays the next holder but never
    lets two hold the lock or a token repeat. Grants and extensions stay durable.
    """

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine
        self._idle: dict[bool, deque[psycopg.Connection[Any]]] = {False: deque(), True: deque()}
        self._async_idle: dict[bool, deque[psycopg.AsyncConnection[Any]]] = {
            False: deque(),
            True: deque(),
        }
        self._pid = os.getpid()
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(engine.timeout)),
        }

    def take(self, relaxed: bool = False) -> tuple[psycopg.Connection[Any], bool]:
        """An idle connection (reused: True) or a new one."""
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._idle = {False: deque(), True: deque()}
            self._async_idle = {False: deque(), True: deque()}
            self._pid = os.getpid()
        try:
            return self._idle[relaxed].pop(), True
        except IndexError:
            with postgres_errors(self.engine.url):
                conn = psycopg.Connection.connect(self.engine.url, **self._kwargs)
                if relaxed:
                    conn.execute("SET synchronous_commit = off")
            return conn, False

    def give(self, conn: psycopg.Connection[Any], relaxed: bool = False) -> None:
        """Return a healthy connection for reuse."""
        if conn.pgconn.transaction_status != _IDLE:  # closed, broken or mid-transaction
            conn.close()
        else:
            self._idle[relaxed].append(conn)

    async def atake(self, relaxed: bool = False) -> tuple[psycopg.AsyncConnection[Any], bool]:
        """Async :meth:`take`."""
        try:
            return self._async_idle[relaxed].pop(), True
        except IndexError:
            with postgres_errors(self.engine.url):
                conn = await psycopg.AsyncConnection.connect(self.engine.url, **self._kwargs)
                if relaxed:
                    await conn.execute("SET synchronous_commit = off")
            return conn, False

    def agive(self, conn: psycopg.AsyncConnection[Any], relaxed: bool = False) -> None:
        """Async :meth:`give` (closing a broken connection needs no await)."""
        if conn.pgconn.transaction_status != _IDLE:  # closed, broken or mid-transaction
            conn.pgconn.finish()
        else:
            self._async_idle[relaxed].append(conn)

    def run(self, sql: str, params: Params, *, rows: bool, relaxed: bool = False) -> Any:
        """Execute one statement; the first row (``rows=True``) or the row count."""
        conn, reused = self.take(relaxed)
        try:
            try:
                cursor = conn.execute(sql, params, prepare=True)
            except psycopg.OperationalError:
                if not reused:
                    raise
                # an idle connection the server dropped: once more on a fresh one
                conn.close()
                conn, reused = self.take(relaxed)
                cursor = conn.execute(sql, params, prepare=True)
            result = cursor.fetchone() if rows else cursor.rowcount
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                with postgres_errors(self.engine.url):
                    raise
            raise
        self.give(conn, relaxed)
        return result

    async def arun(self, sql: str, params: Params, *, rows: bool, relaxed: bool = False) -> Any:
        """Async :meth:`run`."""
        conn, reused = await self.atake(relaxed)
        try:
            try:
                cursor = await conn.execute(sql, params, prepare=True)
            except psycopg.OperationalError:
                if not reused:
                    raise
                conn.pgconn.finish()
                conn, reused = await self.atake(relaxed)
                cursor = await conn.execute(sql, params, prepare=True)
            result = await cursor.fetchone() if rows else cursor.rowcount
        except BaseException as exc:
            conn.pgconn.finish()
            if isinstance(exc, psycopg.Error):
                with postgres_errors(self.engine.url):
                    raise
            raise
        self.agive(conn, relaxed)
        return result

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        for async_idle in self._async_idle.values():
            while async_idle:
                conn = async_idle.pop()  # keep a reference: finish() before it is collected
                conn.pgconn.finish()


def _create(connections: _Connections, sql: str, table: str) -> None:
    """Create a table once per database, serialised so concurrent first uses cannot clash."""
    conn, _ = connections.take()
    try:
        with postgres_errors(connections.engine.url), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (table,))
            conn.execute(sql)
    except BaseException:
        conn.close()
        raise
    connections.give(conn)


async def _acreate(connections: _Connections, sql: str, table: str) -> None:
    """Async :func:`_create`."""
    conn, _ = await connections.atake()
    try:
        with postgres_errors(connections.engine.url):
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (table,))
                await conn.execute(sql)
    except BaseException:
        conn.pgconn.finish()
        raise
    connections.agive(conn)


class PostgresLockStore:
    """Leases in a PostgreSQL table on server time; ``engine`` is a PostgresEngine or a URL.

    The table (default ``seawall_locks``) is created on first use or by :meth:`setup`.
    """

    expires = True

    def __init__(
        self,
        engine: PostgresEngine | str,
        *,
        table: str = DEFAULT_TABLE,
        owns_engine: bool = False,
    ) -> None:
        self.engine, opened = engine_for(
            engine, PostgresEngine, "PostgresLockStore", "postgresql://"
        )
        self._owns_engine = owns_engine or opened
        self.table = check_table(table, "PostgresLockStore")
        self._sql = statements("postgres", table=self.table, fences=DEFAULT_FENCES_TABLE)
        self._connections = _Connections(self.engine)
        self._ready = False
        self._guard = threading.Lock()

    def setup(self) -> None:
        """Create the lease table if it does not exist (otherwise done on first use)."""
        with self._guard:
            if not self._ready:
                _create(self._connections, self._sql["create"], self.table)
                self._ready = True

    async def asetup(self) -> None:
        """Async :meth:`setup`."""
        if not self._ready:
            await _acreate(self._connections, self._sql["create"], self.table)
            self._ready = True

    def _run(self, statement: str, params: Params, *, rows: bool, relaxed: bool = False) -> Any:
        if not self._ready:
            self.setup()
        return self._connections.run(self._sql[statement], params, rows=rows, relaxed=relaxed)

    async def _arun(
        self, statement: str, params: Params, *, rows: bool, relaxed: bool = False
    ) -> Any:
        if not self._ready:
            await self.asetup()
        sql = self._sql[statement]
        return await self._connections.arun(sql, params, rows=rows, relaxed=relaxed)

    @staticmethod
    def _acquisition(row: Any) -> Acquisition:
        if row is None:  # the row was taken and freed by others while we ran: try again
            return Acquisition(0, None)
        token, left = row
        if token:
            return Acquisition(int(token))
        return Acquisition(0, max(0.0, float(left)))

    @staticmethod
    def _info(name: str, row: Any) -> LeaseInfo | None:
        if row is None:
            return None
        return LeaseInfo(name, str(row[0]), int(row[1]), max(0.0, float(row[2])))

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """One statement: take a free or expired row and increment its token."""
        row = self._run("acquire", {"name": name, "owner": owner, "ttl": ttl}, rows=True)
        return self._acquisition(row)

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Restart ``owner``'s lease at ``ttl`` seconds if it still holds it."""
        params = {"name": name, "owner": owner, "ttl": ttl}
        return bool(self._run("extend", params, rows=False) == 1)

    def release(self, name: str, owner: str) -> bool:
        """Clear ``owner`` from the row if it still holds the lease (a relaxed commit)."""
        params = {"name": name, "owner": owner}
        return bool(self._run("release", params, rows=False, relaxed=True) == 1)

    def inspect(self, name: str) -> LeaseInfo | None:
        """The live lease on ``name``, or ``None``."""
        return self._info(name, self._run("inspect", {"name": name}, rows=True))

    def force_release(self, name: str) -> bool:
        """End whoever's lease on ``name``; the token is kept."""
        return bool(self._run("force_release", {"name": name}, rows=False) == 1)

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Async :meth:`acquire`."""
        params = {"name": name, "owner": owner, "ttl": ttl}
        return self._acquisition(await self._arun("acquire", params, rows=True))

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        params = {"name": name, "owner": owner, "ttl": ttl}
        return bool(await self._arun("extend", params, rows=False) == 1)

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        params = {"name": name, "owner": owner}
        return bool(await self._arun("release", params, rows=False, relaxed=True) == 1)

    async def ainspect(self, name: str) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        return self._info(name, await self._arun("inspect", {"name": name}, rows=True))

    async def aforce_release(self, name: str) -> bool:
        """Async :meth:`force_release`."""
        return bool(await self._arun("force_release", {"name": name}, rows=False) == 1)

    def close(self) -> None:
        """Close this store's connections (and the engine, when it opened it)."""
        self._connections.close()
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self._connections.close()
        if self._owns_engine:
            await self.engine.aclose()

    def __repr__(self) -> str:
        return f"PostgresLockStore({self.engine!r}, table={self.table!r})"


class PostgresAdvisoryLockStore:
    """Session-scoped advisory locks: a lease lives as long as the holder's connection.

    ``expires`` is False: the TTL given to acquire only paces the holder's own checks
    (``extend`` confirms the session is alive). Names map to 64-bit keys by hash, so
    two names can, very rarely, share a key and exclude each other.
    """

    expires = False

    def __init__(
        self,
        engine: PostgresEngine | str,
        *,
        fences_table: str = DEFAULT_FENCES_TABLE,
        owns_engine: bool = False,
    ) -> None:
        self.engine, opened = engine_for(
            engine, PostgresEngine, "PostgresAdvisoryLockStore", "postgresql://"
        )
        self._owns_engine = owns_engine or opened
        self.fences_table = check_table(fences_table, "PostgresAdvisoryLockStore")
        self._sql = statements("postgres", table=DEFAULT_TABLE, fences=self.fences_table)
        self._connections = _Connections(self.engine)
        self._sessions: dict[str, tuple[str, psycopg.Connection[Any]]] = {}
        self._async_sessions: dict[str, tuple[str, psycopg.AsyncConnection[Any]]] = {}
        self._ready = False
        self._guard = threading.Lock()

    def setup(self) -> None:
        """Create the fencing counter table if it does not exist."""
        with self._guard:
            if not self._ready:
                _create(self._connections, self._sql["create_fences"], self.fences_table)
                self._ready = True

    async def asetup(self) -> None:
        """Async :meth:`setup`."""
        if not self._ready:
            await _acreate(self._connections, self._sql["create_fences"], self.fences_table)
            self._ready = True

    @staticmethod
    def _key_params(name: str) -> dict[str, Any]:
        key = advisory_key(name)
        unsigned = key & 0xFFFFFFFFFFFFFFFF
        return {"name": name, "key": key, "high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF}

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """One statement on a connection kept for the holder if the lock is granted."""
        if not self._ready:
            self.setup()
        session = self._sessions.get(owner)
        if session is not None and session[0] == name:  # a retry whose reply was lost
            with postgres_errors(self.engine.url):
                row = (
                    session[1]
                    .execute(self._sql["advisory_regrant"], {"name": name, "owner": owner})
                    .fetchone()
                )
            return Acquisition(int(row[0])) if row is not None else Acquisition(0, None)
        conn, _ = self._connections.take()
        params = {"name": name, "owner": owner, "key": advisory_key(name)}
        try:
            with postgres_errors(self.engine.url):
                row = conn.execute(self._sql["advisory_acquire"], params, prepare=True).fetchone()
        except BaseException:
            conn.close()
            raise
        if row is None:
            self._connections.give(conn)
            return Acquisition(0, None)
        self._sessions[owner] = (name, conn)
        return Acquisition(int(row[0]))

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """True while the holder's session is alive (its advisory lock is then held)."""
        session = self._sessions.get(owner)
        if session is None or session[0] != name:
            return False
        conn = session[1]
        try:
            conn.execute(self._sql["advisory_alive"])
        except psycopg.Error:  # the session is gone, and its advisory lock with it
            self._sessions.pop(owner, None)
            conn.close()
            return False
        return True

    def release(self, name: str, owner: str) -> bool:
        """Unlock on the holder's session and return the connection for reuse."""
        session = self._sessions.get(owner)
        if session is None or session[0] != name:
            return False
        del self._sessions[owner]
        conn = session[1]
        try:
            row = conn.execute(
                self._sql["advisory_release"], {"key": advisory_key(name)}
            ).fetchone()
        except psycopg.Error:
            conn.close()
            return False  # the session died, and its lock with it
        self._connections.give(conn)
        return bool(row is not None and row[0])

    def inspect(self, name: str) -> LeaseInfo | None:
        """The holder if some session holds the advisory lock of ``name``."""
        if not self._ready:
            self.setup()
        row = self._connections.run(
            self._sql["advisory_inspect"], self._key_params(name), rows=True
        )
        if row is None or row[2] is None:
            return None
        return LeaseInfo(name, str(row[0]), int(row[1]), math.inf)

    def force_release(self, name: str) -> bool:
        """Terminate the session holding ``name`` (its lock ends with it)."""
        row = self._connections.run(
            self._sql["advisory_force_release"], self._key_params(name), rows=True
        )
        return bool(row is not None and row[0])

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Async :meth:`acquire` on an asyncio connection kept for the holder."""
        if not self._ready:
            await self.asetup()
        session = self._async_sessions.get(owner)
        if session is not None and session[0] == name:  # a retry whose reply was lost
            with postgres_errors(self.engine.url):
                cursor = await session[1].execute(
                    self._sql["advisory_regrant"], {"name": name, "owner": owner}
                )
                row = await cursor.fetchone()
            return Acquisition(int(row[0])) if row is not None else Acquisition(0, None)
        conn, _ = await self._connections.atake()
        params = {"name": name, "owner": owner, "key": advisory_key(name)}
        try:
            with postgres_errors(self.engine.url):
                cursor = await conn.execute(self._sql["advisory_acquire"], params, prepare=True)
                row = await cursor.fetchone()
        except BaseException:
            conn.pgconn.finish()
            raise
        if row is None:
            self._connections.agive(conn)
            return Acquisition(0, None)
        self._async_sessions[owner] = (name, conn)
        return Acquisition(int(row[0]))

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        session = self._async_sessions.get(owner)
        if session is None or session[0] != name:
            return self.extend(name, owner, ttl)
        conn = session[1]
        try:
            await conn.execute(self._sql["advisory_alive"])
        except psycopg.Error:
            self._async_sessions.pop(owner, None)
            conn.pgconn.finish()
            return False
        return True

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        session = self._async_sessions.get(owner)
        if session is None or session[0] != name:
            return self.release(name, owner)
        del self._async_sessions[owner]
        conn = session[1]
        try:
            cursor = await conn.execute(self._sql["advisory_release"], {"key": advisory_key(name)})
            row = await cursor.fetchone()
        except psycopg.Error:
            conn.pgconn.finish()
            return False
        self._connections.agive(conn)
        return bool(row is not None and row[0])

    async def ainspect(self, name: str) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        if not self._ready:
            await self.asetup()
        row = await self._connections.arun(
            self._sql["advisory_inspect"], self._key_params(name), rows=True
        )
        if row is None or row[2] is None:
            return None
        return LeaseInfo(name, str(row[0]), int(row[1]), math.inf)

    async def aforce_release(self, name: str) -> bool:
        """Async :meth:`force_release`."""
        row = await self._connections.arun(
            self._sql["advisory_force_release"], self._key_params(name), rows=True
        )
        return bool(row is not None and row[0])

    def close(self) -> None:
        """Close every connection, ending the sessions (and locks) still held."""
        for _, conn in self._sessions.values():
            conn.close()
        self._sessions.clear()
        for _, aconn in self._async_sessions.values():
            aconn.pgconn.finish()
        self._async_sessions.clear()
        self._connections.close()
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        for _, aconn in self._async_sessions.values():
            await aconn.close()
        self._async_sessions.clear()
        self.close()

    def __repr__(self) -> str:
        return f"PostgresAdvisoryLockStore({self.engine!r}, fences_table={self.fences_table!r})"
