"""The SQLite outbox: one table next to the business tables, written in their transaction.

Table (``seawall_`` is the default ``table_prefix``)::

    seawall_outbox   position INTEGER PRIMARY KEY, id, topic, key, body BLOB, headers (JSON),
                     created_at, available_at, attempts, status (0 pending, 1 sent, 2 dead),
                     lease_owner, lease_until, done_at, last_error
                     partial indexes on pending rows (by position), on pending rows that
                     can hold back their key (claimed, delayed or retried: by key,
                     position) and on sent rows (by done_at, for retention cleanup)

SQLite has one writer at a time, so a claim (one ``UPDATE ... RETURNING``) never
races another relay's. Times are this host's wall clock (``time.time``): the
database file is local to it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.clock import Clock
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError
from seawall.messaging.outbox._model import (
    NewMessage,
    OutboxStats,
    StoredDead,
    StoredMessage,
)
from seawall.messaging.outbox._sql import (
    check_table_prefix,
    sqlite_error,
    sqlite_errors,
    time_source,
)
from seawall.messaging.outbox._store import Listening

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["SqliteOutboxStore"]

_CLAIMED = "position, id, topic, key, body, headers, created_at, attempts"
_WAITING = (
    "status = 0 AND key IS NOT NULL AND (lease_owner IS NOT NULL OR available_at > created_at)"
)
"""Rows that may hold back later rows of their key (claimed, delayed or retried): a small
partial index, so the per-candidate check never scans the whole backlog."""
_WAITING_E = (
    "e.status = 0 AND e.key IS NOT NULL"
    " AND (e.lease_owner IS NOT NULL OR e.available_at > e.created_at)"
)


class _Sql:
    """The statements of one store, with its table name filled in."""

    def __init__(self, table: str) -> None:
        self.create = [
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " position INTEGER PRIMARY KEY,"
            " id TEXT NOT NULL,"
            " topic TEXT NOT NULL,"
            " key TEXT,"
            " body BLOB NOT NULL,"
            " headers TEXT,"
            " created_at REAL NOT NULL,"
            " available_at REAL NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0,"
            " status INTEGER NOT NULL DEFAULT 0,"
            " lease_owner TEXT,"
            " lease_until REAL,"
            " done_at REAL,"
            " last_error TEXT)",
            f"CREATE INDEX IF NOT EXISTS {table}_ready ON {table} (position) WHERE status = 0",
            f"CREATE INDEX IF NOT EXISTS {table}_waiting ON {table} (key, position)"
            f" WHERE {_WAITING}",
            f"CREATE INDEX IF NOT EXISTS {table}_sent ON {table} (done_at) WHERE status = 1",
        ]
        self.drop = [f"DROP TABLE IF EXISTS {table}"]
        self.insert = (
            f"INSERT INTO {table} (id, topic, key, body, headers, created_at, available_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self.claim = (
            f"UPDATE {table} SET lease_owner = :owner, lease_until = :until,"
            " attempts = attempts + 1"
            " WHERE position IN ("
            f"  SELECT o.position FROM {table} AS o"
            "   WHERE o.status = 0 AND o.available_at <= :now"
            "   AND (o.lease_until IS NULL OR o.lease_until <= :now)"
            "   AND (o.key IS NULL OR NOT EXISTS ("
            f"    SELECT 1 FROM {table} AS e WHERE {_WAITING_E}"
            "     AND e.key = o.key AND e.position < o.position"
            "     AND (e.available_at > :now OR e.lease_until > :now)))"
            "   ORDER BY o.position LIMIT :limit)"
            f" RETURNING {_CLAIMED}"
        )
        self.extend = (
            f"UPDATE {table} SET lease_until = ?"
            " WHERE lease_owner = ? AND status = 0"
            " AND position IN (SELECT value FROM json_each(?))"
        )
        self.mark_sent = (
            f"UPDATE {table} SET status = 1, done_at = ?, lease_owner = NULL, lease_until = NULL"
            " WHERE status = 0 AND position IN (SELECT value FROM json_each(?))"
        )
        self.delete_sent = (
            f"DELETE FROM {table} WHERE status = 0 AND position IN (SELECT value FROM json_each(?))"
        )
        self.fail = (
            f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL, available_at = ?,"
            " last_error = ?, status = ?, done_at = ?"
            " WHERE position = ? AND lease_owner = ? AND status = 0"
        )
        self.unclaim = (
            f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL,"
            " attempts = max(attempts - 1, 0)"
            " WHERE lease_owner = ? AND status = 0"
            " AND position IN (SELECT value FROM json_each(?))"
        )
        self.purge_sent = (
            f"DELETE FROM {table} WHERE position IN ("
            f" SELECT position FROM {table} WHERE status = 1 AND done_at <= ? LIMIT ?)"
        )
        self.dead = (
            "SELECT position, id, topic, key, body, headers, created_at, attempts, done_at,"
            f" last_error FROM {table} WHERE status = 2 ORDER BY position LIMIT ?"
        )
        self.redrive_all = (
            f"UPDATE {table} SET status = 0, attempts = 0, available_at = ?, done_at = NULL"
            " WHERE status = 2"
        )
        self.redrive_some = (
            f"UPDATE {table} SET status = 0, attempts = 0, available_at = ?, done_at = NULL"
            " WHERE status = 2 AND id IN (SELECT value FROM json_each(?))"
        )
        self.stats = (
            "SELECT"
            " count(*) FILTER (WHERE status = 0 AND lease_until > :now),"
            " count(*) FILTER (WHERE status = 0 AND available_at > :now"
            "  AND (lease_until IS NULL OR lease_until <= :now)),"
            " count(*) FILTER (WHERE status = 0),"
            " count(*) FILTER (WHERE status = 1),"
            " count(*) FILTER (WHERE status = 2),"
            " min(created_at) FILTER (WHERE status = 0)"
            f" FROM {table}"
        )


class SqliteOutboxStore:
    """The outbox table in a SQLite database; ``add`` joins the caller's transaction.

    ``clock`` replaces the wall clock for leases, delays and retention (tests only).
    """

    kind: ClassVar[str] = "sqlite"
    supports_transactions: ClassVar[bool] = True

    def __init__(
        self,
        engine: Engine | str,
        *,
        table_prefix: str = "seawall_",
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines import connect

        engine = connect(engine)
        if not isinstance(engine, SqliteEngine):
            raise ConfigurationError(f"SqliteOutboxStore needs a sqlite:/// engine, got {engine!r}")
        self.engine = engine
        self.table = f"{check_table_prefix(table_prefix)}outbox"
        self._sql = _Sql(self.table)
        self._now = time_source(clock)
        self._url = engine.url
        if create:
            self.create_tables()

    # -- writing in the caller's transaction ------------------------------------------------

    def _rows(self, messages: Sequence[NewMessage]) -> list[tuple[Any, ...]]:
        now = self._now()
        return [
            (m.id, m.topic, m.key, m.body, m.headers, now, now + m.delay if m.delay else now)
            for m in messages
        ]

    def add(self, messages: Sequence[NewMessage], transaction: Transaction | None) -> None:
        """Insert messages, in ``transaction`` when given (else in a short one of its own)."""
        if transaction is None:
            with sqlite_errors(self._url), self.engine.transaction() as own:
                own.connection.executemany(self._sql.insert, self._rows(messages))
            return
        connection = transaction.connection
        if not isinstance(connection, sqlite3.Connection):
            raise ConfigurationError(
                f"the transaction {transaction!r} is not a SQLite one; pass a transaction "
                f"from this outbox's engine ({self.engine!r})"
            )
        try:
            if len(messages) == 1:
                m = messages[0]
                now = self._now()
                connection.execute(
                    self._sql.insert,
                    (
                        m.id,
                        m.topic,
                        m.key,
                        m.body,
                        m.headers,
                        now,
                        now + m.delay if m.delay else now,
                    ),
                )
            else:
                connection.executemany(self._sql.insert, self._rows(messages))
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self._url) from exc

    async def aadd(self, messages: Sequence[NewMessage], transaction: Transaction | None) -> None:
        """Insert messages: SQLite transactions are synchronous, so this runs inline."""
        self.add(messages, transaction)

    # -- the relay's side -------------------------------------------------------------------

    def _execute(self, sql: str, parameters: Any) -> sqlite3.Cursor:
        with sqlite_errors(self._url):
            return self.engine.connection.execute(sql, parameters)

    def claim(self, owner: str, limit: int, lease: float) -> list[StoredMessage]:
        """Lease up to ``limit`` claimable messages to ``owner`` (one statement)."""
        now = self._now()
        rows = self._execute(
            self._sql.claim, {"owner": owner, "until": now + lease, "now": now, "limit": limit}
        ).fetchall()
        rows.sort()
        return [StoredMessage(*row) for row in rows]

    def extend(self, owner: str, positions: Sequence[int], lease: float) -> int:
        """Renew ``owner``'s leases on ``positions``; how many it still held."""
        if not positions:
            return 0
        cursor = self._execute(
            self._sql.extend, (self._now() + lease, owner, json.dumps(list(positions)))
        )
        return cursor.rowcount

    def mark_sent(self, positions: Sequence[int], keep: bool) -> int:
        """Mark messages published (``keep``) or delete them at once."""
        if not positions:
            return 0
        encoded = json.dumps(list(positions))
        if keep:
            return self._execute(self._sql.mark_sent, (self._now(), encoded)).rowcount
        return self._execute(self._sql.delete_sent, (encoded,)).rowcount

    def fail(self, owner: str, position: int, delay: float, error: str, dead: bool) -> bool:
        """Hand a failed message back for a retry after ``delay``, or set it aside."""
        now = self._now()
        cursor = self._execute(
            self._sql.fail,
            (now + delay, error, 2 if dead else 0, now if dead else None, position, owner),
        )
        return cursor.rowcount == 1

    def unclaim(self, owner: str, positions: Sequence[int]) -> int:
        """Give untried messages back without counting an attempt."""
        if not positions:
            return 0
        return self._execute(self._sql.unclaim, (owner, json.dumps(list(positions)))).rowcount

    def purge_sent(self, older_than: float, limit: int) -> int:
        """Delete up to ``limit`` messages sent more than ``older_than`` seconds ago."""
        return self._execute(self._sql.purge_sent, (self._now() - older_than, limit)).rowcount

    def dead(self, limit: int) -> list[StoredDead]:
        """The dead messages, oldest first."""
        return [StoredDead(*row) for row in self._execute(self._sql.dead, (limit,)).fetchall()]

    def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Make dead messages ready again (all of them, or those ids)."""
        if message_ids is None:
            return self._execute(self._sql.redrive_all, (self._now(),)).rowcount
        return self._execute(
            self._sql.redrive_some, (self._now(), json.dumps(list(message_ids)))
        ).rowcount

    def stats(self) -> OutboxStats:
        """Counts per state, read in one statement."""
        now = self._now()
        in_flight, delayed, pending, sent, dead, oldest = self._execute(
            self._sql.stats, {"now": now}
        ).fetchone()
        return OutboxStats(
            ready=pending - in_flight - delayed,
            in_flight=in_flight,
            delayed=delayed,
            sent=sent,
            dead=dead,
            oldest_pending_age=None if oldest is None else max(0.0, now - oldest),
        )

    def announce(self) -> None:
        """Nothing to do: relays in other processes poll a SQLite outbox."""

    def listen(self, ring: Callable[[], None]) -> Listening | None:
        """SQLite has no notifications: relays in other processes poll."""
        return None

    def create_tables(self) -> None:
        """Create the table and its indexes if missing."""
        with sqlite_errors(self._url), self.engine.transaction() as tx:
            for statement in self._sql.create:
                tx.connection.execute(statement)

    def drop_tables(self) -> None:
        """Drop the table and everything in it."""
        with sqlite_errors(self._url), self.engine.transaction() as tx:
            for statement in self._sql.drop:
                tx.connection.execute(statement)

    def close(self) -> None:
        """Nothing to release: the engine owns the connections."""

    def __repr__(self) -> str:
        return f"SqliteOutboxStore({self.engine!r}, table={self.table!r})"
