"""The SQLite topic store: the embedded default. One file, WAL, safe across processes.

Each topic's messages live in a table of their own, ``seawall_t_<name>``, whose
``INTEGER PRIMARY KEY`` is the offset: a publish reserves offsets from the topic's
counter in ``seawall_topics`` and inserts, in one write transaction, so offsets are
dense, strictly increasing and committed in order (SQLite has one writer at a time).
Groups keep their cursor in ``seawall_topic_groups`` and their pending messages (in
flight, ready again, or blocked behind an earlier message of the same key) in
``seawall_topic_pending``; dead letters, with a copy of the message, in
``seawall_topic_dead``. A receive is one write transaction (``BEGIN IMMEDIATE``):
consumers of a group never take the same message, and the per-key check sees every
committed claim. The decisions are shared with PostgreSQL (``_sql.py``).

**Durability.** ``synchronous="full"`` (the default) fsyncs every publish before it
returns. Receives, acks and nacks commit with ``synchronous=NORMAL``: a power cut
can undo the last few of them, which means a redelivery (at-least-once).
``synchronous="normal"`` makes publishes survive process crashes but not power cuts.

**Connections and transactions.** The store opens its own connection per thread,
but writes through the caller's when a ``transaction=`` is passed or the engine's
connection on this thread is inside a transaction; the publish (or ack) then
commits with the caller's transaction, and waiting receivers are woken on commit.

**Time** is this host's wall clock (``time.time``), shared by every process on the
machine; ``clock=`` drives it by hand in tests. Long-polls wait on an in-process
doorbell (a publish here wakes them at once) plus polling capped at 50 ms.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.clock import Clock
from seawall.engines._sqlite_connections import atomic_write, declared_names, store_error
from seawall.errors import ConfigurationError, EngineError
from seawall.events import EventHub, hub
from seawall.messaging.queue._polling import Doorbell, apoll, poll
from seawall.messaging.topic._errors import UnknownTopicError
from seawall.messaging.topic._model import (
    NackOutcome,
    OutgoingRecord,
    Start,
    StoredTopicMessage,
    TopicDeadLetter,
)
from seawall.messaging.topic._sql import Dialect, Operation, Query, SqlCore

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.engines.sqlite import SqliteEngine

__all__ = ["SqliteTopicStore", "sqlite_topic_names", "topic_table"]

T = TypeVar("T")

_LEVELS = {"full": 2, "normal": 1}
_PRAGMA = {2: "PRAGMA synchronous=FULL", 1: "PRAGMA synchronous=NORMAL"}
_TRIM_INTERVAL = 1.0

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS seawall_topics (
        name TEXT PRIMARY KEY,
        last_offset INTEGER NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS seawall_topic_groups (
        topic TEXT NOT NULL,
        name TEXT NOT NULL,
        cursor INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (topic, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS seawall_topic_pending (
        topic TEXT NOT NULL,
        grp TEXT NOT NULL,
        position INTEGER NOT NULL,
        key TEXT,
        blocked INTEGER NOT NULL,
        visible_at REAL NOT NULL,
        token INTEGER,
        deliveries INTEGER NOT NULL,
        last_error TEXT,
        PRIMARY KEY (topic, grp, position)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS seawall_topic_pending_keys "
    "ON seawall_topic_pending (topic, grp, key, position)",
    """CREATE TABLE IF NOT EXISTS seawall_topic_dead (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        grp TEXT NOT NULL,
        position INTEGER NOT NULL,
        key TEXT,
        body BLOB NOT NULL,
        headers TEXT,
        published_at REAL NOT NULL,
        deliveries INTEGER NOT NULL,
        dead_at REAL NOT NULL,
        reason TEXT NOT NULL,
        last_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS seawall_topic_dead_order ON seawall_topic_dead (topic, grp, id)",
)


def topic_table(name: str) -> str:
    """The quoted table of topic ``name``'s messages (names are validated: no quotes)."""
    return f'"seawall_t_{name}"'


def _statements(name: str) -> dict[str, str]:
    m = topic_table(name)
    pending = "seawall_topic_pending"
    last = "(SELECT last_offset FROM seawall_topics WHERE name = :topic)"
    first = f"coalesce((SELECT min(position) FROM {m}), {last} + 1)"
    return {
        "reserve": (
            "UPDATE seawall_topics SET last_offset = last_offset + :count WHERE name = :topic "
            "RETURNING last_offset"
        ),
        "insert": (
            f"INSERT INTO {m} (position, key, body, headers, published_at) "
            "VALUES (:position, :key, :body, :headers, :now)"
        ),
        "trim_count": f"DELETE FROM {m} WHERE position <= {last} - :keep",
        "trim_age": (
            f"DELETE FROM {m} WHERE position < coalesce((SELECT position FROM {m} "
            f"WHERE published_at >= :now - :age ORDER BY position LIMIT 1), {last} + 1)"
        ),
        "group_names": "SELECT name FROM seawall_topic_groups WHERE topic = :topic ORDER BY name",
        "group_exists": "SELECT 1 FROM seawall_topic_groups WHERE topic = :topic AND name = :group",
        "group_create": (
            "INSERT INTO seawall_topic_groups (topic, name, cursor, created_at) "
            f"VALUES (:topic, :group, coalesce(:cursor, {last}), :now) ON CONFLICT DO NOTHING"
        ),
        "lock_group": (
            f"SELECT g.cursor, (SELECT count(*) FROM {pending} p "
            "WHERE p.topic = g.topic AND p.grp = g.name) "
            "FROM seawall_topic_groups g WHERE g.topic = :topic AND g.name = :group"
        ),
        "candidates": (
            "SELECT p.position, p.key, p.deliveries, m.position IS NULL, m.body, m.headers, "
            f"m.published_at FROM {pending} p LEFT JOIN {m} m ON m.position = p.position "
            "WHERE p.topic = :topic AND p.grp = :group AND p.blocked = 0 "
            "AND p.visible_at <= :now ORDER BY p.position LIMIT :limit"
        ),
        "claim_pending": (
            f"UPDATE {pending} SET token = :token, deliveries = deliveries + 1, "
            "visible_at = :now + :visibility WHERE topic = :topic AND grp = :group "
            "AND position IN (SELECT value FROM json_each(:positions)) RETURNING position"
        ),
        "share_group": "",  # BEGIN IMMEDIATE already serialises every writer
        "remove": (
            f"DELETE FROM {pending} WHERE topic = :topic AND grp = :group AND position = :position"
        ),
        "unblock": (
            f"UPDATE {pending} SET blocked = 0 WHERE topic = :topic AND grp = :group "
            f"AND position = (SELECT min(position) FROM {pending} "
            "WHERE topic = :topic AND grp = :group AND key = :key)"
        ),
        "bury": (
            "INSERT INTO seawall_topic_dead (topic, grp, position, key, body, headers, "
            "published_at, deliveries, dead_at, reason, last_error) "
            "SELECT p.topic, p.grp, p.position, p.key, m.body, m.headers, m.published_at, "
            "p.deliveries, :now, :reason, coalesce(:error, p.last_error) "
            f"FROM {pending} p JOIN {m} m ON m.position = p.position "
            "WHERE p.topic = :topic AND p.grp = :group AND p.position = :position"
        ),
        "fresh": (
            f"SELECT position, key, body, headers, published_at FROM {m} "
            "WHERE position > :cursor ORDER BY position LIMIT :limit"
        ),
        "busy_keys": (
            f"SELECT DISTINCT key FROM {pending} WHERE topic = :topic AND grp = :group "
            "AND key IN (SELECT value FROM json_each(:keys))"
        ),
        "admit": (
            f"INSERT INTO {pending} "
            "(topic, grp, position, key, blocked, visible_at, token, deliveries) "
            "VALUES (:topic, :group, :position, :key, :blocked, "
            "CASE WHEN :blocked THEN 0 ELSE :now + :visibility END, :token, :deliveries)"
        ),
        "set_cursor": (
            "UPDATE seawall_topic_groups SET cursor = :cursor WHERE topic = :topic AND name = :group"
        ),
        "ack": (
            f"DELETE FROM {pending} WHERE topic = :topic AND grp = :group "
            "AND position = :position AND token = :token RETURNING key"
        ),
        "held": (
            f"SELECT p.deliveries, p.key, m.position IS NULL FROM {pending} p "
            f"LEFT JOIN {m} m ON m.position = p.position WHERE p.topic = :topic "
            "AND p.grp = :group AND p.position = :position AND p.token = :token"
        ),
        "requeue": (
            f"UPDATE {pending} SET token = NULL, visible_at = :now + :delay, "
            "last_error = coalesce(:error, last_error) WHERE topic = :topic AND grp = :group "
            "AND position = :position AND token = :token"
        ),
        "forget_pending": f"DELETE FROM {pending} WHERE topic = :topic AND grp = :group",
        "offset_at": (
            f"SELECT coalesce((SELECT position FROM {m} WHERE published_at >= :at "
            f"ORDER BY position LIMIT 1), {last} + 1)"
        ),
        "lag": (
            f"SELECT max({last} - max(g.cursor, f.first - 1), 0) + (SELECT count(*) "
            f"FROM {pending} p WHERE p.topic = g.topic AND p.grp = g.name "
            f"AND p.position >= f.first) FROM seawall_topic_groups g, (SELECT {first} AS first) f "
            "WHERE g.topic = :topic AND g.name = :group"
        ),
        "dead_letters": (
            "SELECT position, key, body, headers, published_at, deliveries, dead_at, reason, "
            "last_error FROM seawall_topic_dead WHERE topic = :topic AND grp = :group "
            "ORDER BY id LIMIT :limit"
        ),
    }


def _headers_out(headers: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(headers), separators=(",", ":")) if headers else None


def _headers_in(value: Any) -> Mapping[str, str] | None:
    return json.loads(value) if value else None


def _publish(
    core: SqlCore, records: Sequence[OutgoingRecord], now: float | None
) -> Operation[list[int]]:
    sql = core.sql
    rows = yield Query(sql["reserve"], core.params(now, count=len(records)), "rows")
    last = int(rows[0][0])
    first = last - len(records) + 1
    yield Query(
        sql["insert"],
        [
            {
                "position": first + index,
                "key": record.key,
                "body": record.body,
                "headers": _headers_out(record.headers),
                "now": now,
            }
            for index, record in enumerate(records)
        ],
        "many",
    )
    return list(range(first, last + 1))


def _dialect(name: str) -> Dialect:
    return Dialect(
        _statements(name),
        lambda values: json.dumps(values),
        _headers_out,
        _headers_in,
        _publish,
    )


def sqlite_topic_names(engine: SqliteEngine) -> list[str]:
    """The names of the topics declared in this SQLite database."""
    return declared_names(engine, "seawall_topics", "topic store")


def _engine_error(exc: sqlite3.Error, path: str) -> EngineError:
    return store_error(exc, path, "topic store")


def _as_int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 else None


_doorbells: weakref.WeakValueDictionary[tuple[str, str], Doorbell] = weakref.WeakValueDictionary()
_doorbells_lock = threading.Lock()


def _doorbell_for(path: str, name: str) -> Doorbell:
    key = (os.path.realpath(path) if path != ":memory:" else path, name)
    with _doorbells_lock:
        doorbell = _doorbells.get(key)
        if doorbell is None:
            doorbell = _doorbells[key] = Doorbell()
        return doorbell


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
    level = 0


class SqliteTopicStore:
    """A :class:`~seawall.messaging.topic.TopicStore` in a SQLite database file."""

    def __init__(
        self,
        engine: SqliteEngine,
        name: str,
        *,
        retention_age: float | None = None,
        retention_count: int | None = None,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
        synchronous: str = "full",
    ) -> None:
        level = _LEVELS.get(str(synchronous).lower())
        if level is None:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not valid; use 'full' (publishes survive "
                "power loss) or 'normal' (publishes survive a process crash)"
            )
        self.name = name
        self.retention_age = retention_age
        self.retention_count = retention_count
        self.synchronous = "full" if level == 2 else "normal"
        self.events = events if events is not None else EventHub(parent=hub)
        self._engine = engine
        self._path = engine.path
        self._shared_only = engine.path == ":memory:"
        self._data_level = level
        self._clock = clock
        self._now: Callable[[], float] = clock.now if clock is not None else time.time
        self._next_trim = 0.0
        self._core = SqlCore(name, _dialect(name), self.events, retention_age, retention_count)
        self._local = _Local()
        self._owned: list[sqlite3.Connection] = []
        self._owned_lock = threading.Lock()
        self._doorbell = _doorbell_for(self._path, name)
        self._declare(create)

    # -- connections -----------------------------------------------------------------------

    def _connection(self, level: int) -> sqlite3.Connection:
        shared = self._engine.connection
        if shared.in_transaction or self._shared_only:
            return shared
        local = self._local
        conn = local.conn
        if conn is None:
            conn = sqlite3.connect(
                self._path,
                timeout=self._engine.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(self._engine.timeout * 1000)}")
            with self._owned_lock:
                self._owned.append(conn)
            local.conn = conn
            local.level = 0
        if local.level != level:
            conn.execute(_PRAGMA[level])
            local.level = level
        return conn

    def _joined(self, transaction: Transaction | None, level: int) -> sqlite3.Connection:
        if transaction is None:
            return self._connection(level)
        conn = transaction.connection
        if (
            not isinstance(conn, sqlite3.Connection)
            or getattr(transaction.engine, "path", None) != self._path
        ):
            raise ConfigurationError(
                f"transaction={transaction!r} is not a transaction on this topic's SQLite "
                f"database {self._path!r}; open it with engine.transaction() on the same engine"
            )
        return conn

    def _write(self, conn: sqlite3.Connection) -> AbstractContextManager[None]:
        """One atomic unit: our own write transaction, or a savepoint in the caller's."""
        return atomic_write(conn, "seawall_topic")

    def _run(self, conn: sqlite3.Connection, operation: Operation[T], atomic: bool) -> T:
        try:
            if atomic:
                with self._write(conn):
                    return _drive(conn, operation)
            return _drive(conn, operation)
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc

    def _declare(self, create: bool) -> None:
        conn = self._connection(self._data_level)
        if not create:
            names = sqlite_topic_names(self._engine)
            if self.name not in names:
                raise UnknownTopicError(self.name, names)
            return
        try:
            with self._write(conn):
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {topic_table(self.name)} ("
                    "position INTEGER PRIMARY KEY, key TEXT, body BLOB NOT NULL, headers TEXT, "
                    "published_at REAL NOT NULL)"
                )
                conn.execute(
                    "INSERT INTO seawall_topics (name, last_offset, created_at) VALUES (?, 0, ?) "
                    "ON CONFLICT DO NOTHING",
                    (self.name, self._now()),
                )
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc

    # -- the contract ----------------------------------------------------------------------

    def publish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """Store every record in one transaction; see :meth:`TopicStore.publish`."""
        conn = self._joined(transaction, self._data_level)
        now = self._now()
        offsets = self._run(conn, self._core.publish(records, now), atomic=True)
        if self._core.retains:
            self._next_trim = now + _TRIM_INTERVAL
        if transaction is not None:
            transaction.on_commit(self._doorbell.ring)
        else:
            self._doorbell.ring()
        return offsets

    def declare_group(self, group: str, start: Start, create: bool) -> None:
        """Create the group unless it exists; see :meth:`TopicStore.declare_group`."""
        conn = self._connection(self._data_level)
        self._run(conn, self._core.declare_group(group, start, create, self._now()), atomic=False)

    def groups(self) -> list[str]:
        """The topic's groups; see :meth:`TopicStore.groups`."""
        return self._run(self._connection(1), self._core.group_names(), atomic=False)

    def _claim(
        self, group: str, max_messages: int, visibility_timeout: float, max_deliveries: int
    ) -> list[StoredTopicMessage]:
        now = self._now()
        trim = self._core.retains and now >= self._next_trim
        if trim:
            self._next_trim = now + _TRIM_INTERVAL
        operation = self._core.receive(
            group,
            max_messages,
            visibility_timeout,
            max_deliveries,
            random.getrandbits(62),
            now,
            trim,
        )
        return self._run(self._connection(1), operation, atomic=True)

    def receive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """Claim messages for the group; see :meth:`TopicStore.receive`."""

        def attempt() -> list[StoredTopicMessage]:
            return self._claim(group, max_messages, visibility_timeout, max_deliveries)

        if wait <= 0:
            return attempt()
        return poll(attempt, wait, self._doorbell, self._clock)

    def ack(self, group: str, offset: int, token: str, transaction: Transaction | None) -> bool:
        """Settle the delivery; see :meth:`TopicStore.ack`."""
        conn = self._joined(transaction, 1)
        done = self._run(conn, self._core.ack(group, offset, _as_int(token)), atomic=True)
        if done:
            self._doorbell.ring()  # the next message of its key may be ready
        return done

    def nack(
        self,
        group: str,
        offset: int,
        token: str,
        delay: float,
        error: str | None,
        max_deliveries: int,
        kill: str | None,
    ) -> NackOutcome:
        """Release the delivery; see :meth:`TopicStore.nack`."""
        operation = self._core.nack(
            group, offset, _as_int(token), delay, error, max_deliveries, kill, self._now()
        )
        outcome = self._run(self._connection(1), operation, atomic=True)
        if outcome != "stale":
            self._doorbell.ring()
        return outcome

    def seek(self, group: str, offset: int) -> None:
        """Restart the group at ``offset``; see :meth:`TopicStore.seek`."""
        self._run(self._connection(1), self._core.seek(group, offset), atomic=True)
        self._doorbell.ring()

    def seek_time(self, group: str, timestamp: float) -> int:
        """Restart the group at a time; see :meth:`TopicStore.seek_time`."""
        offset = self._run(self._connection(1), self._core.seek_time(group, timestamp), True)
        self._doorbell.ring()
        return offset

    def lag(self, group: str) -> int:
        """Unacknowledged retained messages; see :meth:`TopicStore.lag`."""
        return self._run(self._connection(1), self._core.lag(group), atomic=False)

    def dead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """The group's dead letters; see :meth:`TopicStore.dead_letters`."""
        return self._run(self._connection(1), self._core.dead_letters(group, limit), False)

    def close(self) -> None:
        """Close the connections this store opened (the engine's stay open)."""
        with self._owned_lock:
            for conn in self._owned:
                conn.close()
            self._owned.clear()
        self._local = _Local()

    # -- asyncio twins: each call runs in the loop's default thread pool ---------------------

    async def _offload(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(function, *args))

    async def apublish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """See :meth:`publish`."""
        if transaction is not None:  # the caller's connection belongs to this thread
            return self.publish(records, transaction)
        return await self._offload(self.publish, records, None)

    async def adeclare_group(self, group: str, start: Start, create: bool) -> None:
        """See :meth:`declare_group`."""
        await self._offload(self.declare_group, group, start, create)

    async def areceive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """See :meth:`receive`; pauses between looks are awaited on the loop."""

        async def attempt() -> list[StoredTopicMessage]:
            return await self._offload(
                self._claim, group, max_messages, visibility_timeout, max_deliveries
            )

        return await apoll(attempt, wait, self._doorbell, self._clock)

    async def aack(
        self, group: str, offset: int, token: str, transaction: Transaction | None
    ) -> bool:
        """See :meth:`ack`."""
        if transaction is not None:
            return self.ack(group, offset, token, transaction)
        return await self._offload(self.ack, group, offset, token, None)

    async def anack(
        self,
        group: str,
        offset: int,
        token: str,
        delay: float,
        error: str | None,
        max_deliveries: int,
        kill: str | None,
    ) -> NackOutcome:
        """See :meth:`nack`."""
        return await self._offload(
            self.nack, group, offset, token, delay, error, max_deliveries, kill
        )

    async def aseek(self, group: str, offset: int) -> None:
        """See :meth:`seek`."""
        await self._offload(self.seek, group, offset)

    async def aseek_time(self, group: str, timestamp: float) -> int:
        """See :meth:`seek_time`."""
        return await self._offload(self.seek_time, group, timestamp)

    async def alag(self, group: str) -> int:
        """See :meth:`lag`."""
        return await self._offload(self.lag, group)

    async def adead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """See :meth:`dead_letters`."""
        return await self._offload(self.dead_letters, group, limit)

    async def aclose(self) -> None:
        """See :meth:`close`."""
        self.close()

    def __repr__(self) -> str:
        return f"SqliteTopicStore({self.name!r}, path={self._path!r})"


def _drive(conn: sqlite3.Connection, operation: Operation[T]) -> T:
    """Run an operation's statements on ``conn``, feeding each result back."""
    try:
        query = next(operation)
        while True:
            if query.mode == "many":
                result: Any = conn.executemany(query.sql, query.params).rowcount
            else:
                cursor = conn.execute(query.sql, query.params)
                result = cursor.fetchall() if query.mode == "rows" else cursor.rowcount
            query = operation.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
