"""Fencing on the resource side: refuse writes that carry a token older than one already seen.

A lock alone cannot stop a holder that paused (GC, swap, SIGSTOP) past its lease from
writing after a new holder took over: it does not know it lost the lock. Fencing
makes the *resource* refuse such writes. Each write carries the lease's fencing token;
the resource remembers the highest token it accepted and refuses lower ones.

* :func:`sql_fence` / :class:`SqlFence`: inside the caller's SQLite or PostgreSQL
  transaction, one upsert on a ``seawall_fence(resource, token)`` row that only moves
  the token forward. When it refuses, :class:`FencingError` is raised and the caller's
  transaction rolls back, so the stale write never commits. The row lock it takes
  serialises writers of one resource until commit.
* :class:`FenceGuard`: the same rule in process memory, for resources seawall does not
  store (a file, an in-process cache, a service the guard fronts).

Equal tokens are accepted: one holder writes many times with the same token.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from seawall.coordination.lock._core import Lease, check_name
from seawall.coordination.lock._errors import FencingError
from seawall.errors import ConfigurationError

__all__ = ["DEFAULT_FENCE_TABLE", "FenceGuard", "SqlFence", "asql_fence", "sql_fence"]

DEFAULT_FENCE_TABLE = "seawall_fence"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _token(token: int | Lease) -> int:
    if isinstance(token, Lease):
        return token.fencing_token
    if isinstance(token, bool) or not isinstance(token, int) or token < 1:
        raise ConfigurationError(
            f"fencing token must be a Lease or a positive int from Lease.fencing_token, got {token!r}"
        )
    return token


class FenceGuard:
    """The highest fencing token accepted per resource, in this process; thread-safe.

    ``check(resource, token)`` accepts a token at least as high as the last one seen
    (and remembers it) or raises :class:`FencingError`. ``with guard.fenced(resource,
    token):`` checks and keeps other writers of that resource out until the block
    ends, so the check and the write are one step.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._last: dict[str, int] = {}
        self._resource_locks: dict[str, threading.Lock] = {}

    def _resource_lock(self, resource: str) -> threading.Lock:
        with self._mutex:
            lock = self._resource_locks.get(resource)
            if lock is None:
                lock = self._resource_locks[resource] = threading.Lock()
            return lock

    def _advance(self, resource: str, token: int) -> None:
        last = self._last.get(resource)
        if last is not None and token < last:
            raise FencingError(resource, token, last)
        self._last[resource] = token

    def check(self, resource: str, token: int | Lease) -> None:
        """Accept ``token`` for a write to ``resource`` or raise :class:`FencingError`."""
        value = _token(token)
        with self._resource_lock(resource):
            self._advance(resource, value)

    @contextmanager
    def fenced(self, resource: str, token: int | Lease) -> Iterator[None]:
        """Check ``token`` and hold ``resource`` for the write in the block."""
        value = _token(token)
        with self._resource_lock(resource):
            self._advance(resource, value)
            yield

    def last_seen(self, resource: str) -> int | None:
        """The highest token accepted for ``resource``, or ``None``."""
        return self._last.get(resource)

    def __repr__(self) -> str:
        return f"FenceGuard(resources={len(self._last)})"


def _unwrap(connection: Any) -> Any:
    """The driver connection behind a seawall ``Transaction`` (or the connection itself)."""
    inner = getattr(connection, "connection", None)
    if inner is not None and not isinstance(connection, sqlite3.Connection):
        return inner
    return connection


class SqlFence:
    """Fencing rows in a SQL table, written inside the caller's transaction.

    ``table`` (default ``seawall_fence``) is created on first use, or ahead of time by
    :meth:`create`. Works with ``sqlite3.Connection``, ``psycopg.Connection``,
    ``psycopg.AsyncConnection`` (via :meth:`acheck`) and seawall ``Transaction`` objects.
    """

    def __init__(self, table: str = DEFAULT_FENCE_TABLE) -> None:
        if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(
                "SqlFence table must be an SQL identifier (letters, digits, underscores, "
                f"not starting with a digit, at most 63 characters), got {table!r}"
            )
        self.table = table
        self._create = (
            f"CREATE TABLE IF NOT EXISTS {table} (resource TEXT PRIMARY KEY, token BIGINT NOT NULL)"
        )
        upsert = (
            f"INSERT INTO {table} (resource, token) VALUES ({{p}}, {{p}}) "
            f"ON CONFLICT (resource) DO UPDATE SET token = excluded.token "
            f"WHERE {table}.token <= excluded.token RETURNING token"
        )
        last = f"SELECT token FROM {table} WHERE resource = {{p}}"
        self._sqlite_upsert = upsert.format(p="?")
        self._sqlite_last = last.format(p="?")
        self._pg_upsert = upsert.format(p="%s")
        self._pg_last = last.format(p="%s")
        self._pg_ready: weakref.WeakSet[Any] = weakref.WeakSet()

    # ------------------------------------------------------------------ sync

    def create(self, connection: Any) -> None:
        """Create the fence table if it does not exist (idempotent)."""
        conn = _unwrap(connection)
        if isinstance(conn, sqlite3.Connection):
            conn.execute(self._create)
            return
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
        conn.execute(self._create)

    def check(self, connection: Any, resource: str, token: int | Lease) -> None:
        """Move ``resource``'s fence to ``token`` in the caller's transaction, or raise.

        Raises :class:`FencingError` (roll the transaction back) when a higher token was
        already accepted. Run it before the guarded writes, in the same transaction.
        """
        value = _token(token)
        check_name(resource, "fenced resource")
        conn = _unwrap(connection)
        if isinstance(conn, sqlite3.Connection):
            try:
                row = conn.execute(self._sqlite_upsert, (resource, value)).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                conn.execute(self._create)
                row = conn.execute(self._sqlite_upsert, (resource, value)).fetchone()
            if row is None:
                last = conn.execute(self._sqlite_last, (resource,)).fetchone()
                raise FencingError(resource, value, int(last[0]))
            return
        if conn not in self._pg_ready:
            found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table,)).fetchone()
            if found is not None and found[0]:
                self._pg_ready.add(conn)
            else:
                self.create(conn)
        row = conn.execute(self._pg_upsert, (resource, value)).fetchone()
        if row is None:
            last = conn.execute(self._pg_last, (resource,)).fetchone()
            raise FencingError(resource, value, int(last[0]))

    def last_seen(self, connection: Any, resource: str) -> int | None:
        """The highest token accepted for ``resource`` (``None`` if none or no table)."""
        conn = _unwrap(connection)
        if isinstance(conn, sqlite3.Connection):
            try:
                row = conn.execute(self._sqlite_last, (resource,)).fetchone()
            except sqlite3.OperationalError:
                return None
        else:
            row = conn.execute(self._pg_last, (resource,)).fetchone()
        return None if row is None else int(row[0])

    # ------------------------------------------------------------------ async (psycopg)

    async def acreate(self, connection: Any) -> None:
        """Async :meth:`create` on a ``psycopg.AsyncConnection``."""
        conn = _unwrap(connection)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
        await conn.execute(self._create)

    async def acheck(self, connection: Any, resource: str, token: int | Lease) -> None:
        """Async :meth:`check` on a ``psycopg.AsyncConnection`` (or its seawall Transaction)."""
        value = _token(token)
        check_name(resource, "fenced resource")
        conn = _unwrap(connection)
        if conn not in self._pg_ready:
            cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table,))
            found = await cursor.fetchone()
            if found is not None and found[0]:
                self._pg_ready.add(conn)
            else:
                await self.acreate(conn)
        cursor = await conn.execute(self._pg_upsert, (resource, value))
        row = await cursor.fetchone()
        if row is None:
            cursor = await conn.execute(self._pg_last, (resource,))
            last = await cursor.fetchone()
            raise FencingError(resource, value, int(last[0]))

    def __repr__(self) -> str:
        return f"SqlFence({self.table!r})"


_DEFAULT_FENCE = SqlFence()


def sql_fence(
    connection: Any, resource: str, token: int | Lease, *, table: str = DEFAULT_FENCE_TABLE
) -> None:
    """Fence a write to ``resource`` at ``token`` in the caller's transaction (see :class:`SqlFence`)."""
    fence = _DEFAULT_FENCE if table == DEFAULT_FENCE_TABLE else SqlFence(table)
    fence.check(connection, resource, token)


async def asql_fence(
    connection: Any, resource: str, token: int | Lease, *, table: str = DEFAULT_FENCE_TABLE
) -> None:
    """Async :func:`sql_fence` for ``psycopg.AsyncConnection``."""
    fence = _DEFAULT_FENCE if table == DEFAULT_FENCE_TABLE else SqlFence(table)
    await fence.acheck(connection, resource, token)
