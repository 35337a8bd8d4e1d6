"""The PostgreSQL topic store: dense offsets, row-locked groups, LISTEN/NOTIFY wake-ups.

Tables (found through the connection's ``search_path``, so a schema per tenant or
per test works): ``seawall_topics`` (name, last offset), ``seawall_topic_messages``
(topic, position, key, body, headers, published_at), ``seawall_topic_groups`` (the
cursor of each group), ``seawall_topic_pending`` (each group's delivered-but-unsettled
and key-blocked messages) and ``seawall_topic_dead``. The decisions are shared with
SQLite (``_sql.py``).

**Offsets without gaps a reader could skip.** A publish is one statement that bumps
the topic's counter row (``UPDATE seawall_topics SET last_offset = last_offset + n``)
and inserts the messages. The row lock it takes is held until the publishing
transaction ends, so publishers of one topic take turns: offsets are dense (1, 2,
3...) and a lower offset always commits before a higher one. A group therefore never
moves its cursor past an offset that commits later. The price: publishes to one
topic are serialised for the length of their transactions (keep transactions that
publish short; a caller's transaction holds the topic until it commits), while
different topics publish in parallel. We chose this over transaction-id positions
(what the event store does) because those make every delivery wait for the oldest
writing transaction anywhere in the cluster.

**Consumers.** A receive runs in one transaction that locks the group's row
(``SELECT ... FOR UPDATE``): receives of one group take turns for the few
milliseconds of a claim, different groups never wait on each other. Acks and nacks
take the same row ``FOR SHARE`` (they never wait on each other), so a key's next
message is unblocked exactly once.

**Durability.** Publishes commit durably. Receives, acks and nacks commit with
``synchronous_commit = off`` for their own transaction only (never a caller's): a
crash of the server can undo the last few of them, which means a redelivery
(at-least-once allows exactly that; nothing published is lost).

**Time** is the server's (``clock_timestamp()`` in epoch seconds); ``clock=``
replaces it in tests. **Long-poll**: publishes ``NOTIFY`` (sent at commit), and a
waiting receive sleeps on the engine's LISTEN connection (shared with the queues)
between looks, looking again at least once a second.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.clock import Clock
from seawall.engines._base import Transaction
from seawall.engines.postgres import PostgresEngine, postgres_errors
from seawall.errors import ConfigurationError, MissingExtraError
from seawall.events import EventHub, hub
from seawall.messaging.queue._polling import apoll, poll
from seawall.messaging.queue.postgres import CHANNEL, SAFETY_POLL, _listener_for
from seawall.messaging.topic._errors import UnknownTopicError
from seawall.messaging.topic._model import (
    NackOutcome,
    OutgoingRecord,
    Start,
    StoredTopicMessage,
    TopicDeadLetter,
)
from seawall.messaging.topic._sql import Dialect, Operation, Query, SqlCore

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("postgres", "psycopg") from exc

if TYPE_CHECKING:
    import psycopg_pool

__all__ = ["PostgresTopicStore", "notify_payload", "postgres_topic_names"]

T = TypeVar("T")

_NOW = "coalesce(:now::float8, extract(epoch FROM clock_timestamp())::float8)"
_SCHEMA_LOCK = 0x5EA3A11_0007
_RELAX = "SET LOCAL synchronous_commit = off"
_TRIM_INTERVAL = 1.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS seawall_topics (
    name text PRIMARY KEY,
    last_offset bigint NOT NULL,
    created_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS seawall_topic_messages (
    topic text NOT NULL,
    position bigint NOT NULL,
    key text,
    body bytea NOT NULL,
    headers jsonb,
    published_at double precision NOT NULL,
    PRIMARY KEY (topic, position)
);
CREATE TABLE IF NOT EXISTS seawall_topic_groups (
    topic text NOT NULL,
    name text NOT NULL,
    cursor bigint NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (topic, name)
);
CREATE TABLE IF NOT EXISTS seawall_topic_pending (
    topic text NOT NULL,
    grp text NOT NULL,
    position bigint NOT NULL,
    key text,
    blocked smallint NOT NULL,
    visible_at double precision NOT NULL,
    token bigint,
    deliveries integer NOT NULL,
    last_error text,
    PRIMARY KEY (topic, grp, position)
);
CREATE INDEX IF NOT EXISTS seawall_topic_pending_keys
    ON seawall_topic_pending (topic, grp, key, position);
CREATE TABLE IF NOT EXISTS seawall_topic_dead (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    grp text NOT NULL,
    position bigint NOT NULL,
    key text,
    body bytea NOT NULL,
    headers jsonb,
    published_at double precision NOT NULL,
    deliveries integer NOT NULL,
    dead_at double precision NOT NULL,
    reason text NOT NULL,
    last_error text
);
CREATE INDEX IF NOT EXISTS seawall_topic_dead_order ON seawall_topic_dead (topic, grp, id);
"""

_M = "seawall_topic_messages"
_P = "seawall_topic_pending"
_LAST = "(SELECT last_offset FROM seawall_topics WHERE name = :topic)"

_STATEMENTS = {
    "publish": (
        "WITH counter AS (UPDATE seawall_topics SET last_offset = last_offset + :count::bigint "
        "WHERE name = :topic RETURNING last_offset), "
        f"inserted AS (INSERT INTO {_M} (topic, position, key, body, headers, published_at) "
        "SELECT :topic, c.last_offset - :count::bigint + b.ordinal, b.key, b.body, "
        f"b.headers::jsonb, {_NOW} FROM counter c, unnest(:keys::text[], :bodies::bytea[], "
        ":headers::text[]) WITH ORDINALITY AS b(key, body, headers, ordinal) RETURNING 1) "
        "SELECT c.last_offset, (SELECT count(*) FROM inserted), pg_notify(:channel, :payload) "
        "FROM counter c"
    ),
    "trim_count": (
        f"DELETE FROM {_M} WHERE topic = :topic AND position <= {_LAST} - :keep::bigint"
    ),
    "trim_age": (
        f"DELETE FROM {_M} WHERE topic = :topic AND position < coalesce((SELECT position "
        f"FROM {_M} WHERE topic = :topic AND published_at >= {_NOW} - :age::float8 "
        f"ORDER BY position LIMIT 1), {_LAST} + 1)"
    ),
    "group_names": "SELECT name FROM seawall_topic_groups WHERE topic = :topic ORDER BY name",
    "group_exists": "SELECT 1 FROM seawall_topic_groups WHERE topic = :topic AND name = :group",
    "group_create": (
        "INSERT INTO seawall_topic_groups (topic, name, cursor, created_at) "
        f"VALUES (:topic, :group, coalesce(:cursor::bigint, {_LAST}), {_NOW}) "
        "ON CONFLICT DO NOTHING"
    ),
    "lock_group": (
        f"SELECT g.cursor, (SELECT count(*) FROM {_P} p "
        "WHERE p.topic = g.topic AND p.grp = g.name) "
        "FROM seawall_topic_groups g WHERE g.topic = :topic AND g.name = :group FOR UPDATE OF g"
    ),
    "share_group": (
        "SELECT 1 FROM seawall_topic_groups WHERE topic = :topic AND name = :group FOR SHARE"
    ),
    "candidates": (
        "SELECT p.position, p.key, p.deliveries, m.position IS NULL, m.body, m.headers, "
        f"m.published_at FROM {_P} p LEFT JOIN {_M} m "
        "ON m.topic = p.topic AND m.position = p.position "
        "WHERE p.topic = :topic AND p.grp = :group AND p.blocked = 0 "
        f"AND p.visible_at <= {_NOW} ORDER BY p.position LIMIT :limit"
    ),
    "claim_pending": (
        f"UPDATE {_P} SET token = :token, deliveries = deliveries + 1, "
        f"visible_at = {_NOW} + :visibility::float8 WHERE topic = :topic AND grp = :group "
        "AND position = ANY(:positions::bigint[]) RETURNING position"
    ),
    "remove": f"DELETE FROM {_P} WHERE topic = :topic AND grp = :group AND position = :position",
    "unblock": (
        f"UPDATE {_P} SET blocked = 0 WHERE topic = :topic AND grp = :group "
        f"AND position = (SELECT min(position) FROM {_P} "
        "WHERE topic = :topic AND grp = :group AND key = :key)"
    ),
    "bury": (
        "INSERT INTO seawall_topic_dead (topic, grp, position, key, body, headers, "
        "published_at, deliveries, dead_at, reason, last_error) "
        "SELECT p.topic, p.grp, p.position, p.key, m.body, m.headers, m.published_at, "
        f"p.deliveries, {_NOW}, :reason, coalesce(:error::text, p.last_error) "
        f"FROM {_P} p JOIN {_M} m ON m.topic = p.topic AND m.position = p.position "
        "WHERE p.topic = :topic AND p.grp = :group AND p.position = :position"
    ),
    "fresh": (
        f"SELECT position, key, body, headers, published_at FROM {_M} "
        "WHERE topic = :topic AND position > :cursor ORDER BY position LIMIT :limit"
    ),
    "busy_keys": (
        f"SELECT DISTINCT key FROM {_P} WHERE topic = :topic AND grp = :group "
        "AND key = ANY(:keys::text[])"
    ),
    "admit": (
        f"INSERT INTO {_P} (topic, grp, position, key, blocked, visible_at, token, deliveries) "
        "VALUES (:topic, :group, :position, :key, :blocked, "
        f"CASE WHEN :blocked = 1 THEN 0 ELSE {_NOW} + :visibility::float8 END, "
        ":token, :deliveries)"
    ),
    "set_cursor": (
        "UPDATE seawall_topic_groups SET cursor = :cursor WHERE topic = :topic AND name = :group"
    ),
    "ack": (
        f"DELETE FROM {_P} WHERE topic = :topic AND grp = :group "
        "AND position = :position AND token = :token RETURNING key"
    ),
    "held": (
        f"SELECT p.deliveries, p.key, m.position IS NULL FROM {_P} p "
        f"LEFT JOIN {_M} m ON m.topic = p.topic AND m.position = p.position "
        "WHERE p.topic = :topic AND p.grp = :group AND p.position = :position "
        "AND p.token = :token FOR UPDATE OF p"
    ),
    "requeue": (
        f"UPDATE {_P} SET token = NULL, visible_at = {_NOW} + :delay::float8, "
        "last_error = coalesce(:error::text, last_error) WHERE topic = :topic AND grp = :group "
        "AND position = :position AND token = :token"
    ),
    "forget_pending": f"DELETE FROM {_P} WHERE topic = :topic AND grp = :group",
    "offset_at": (
        f"SELECT coalesce((SELECT position FROM {_M} WHERE topic = :topic "
        f"AND published_at >= :at::float8 ORDER BY position LIMIT 1), {_LAST} + 1)"
    ),
    "lag": (
        "SELECT greatest(t.last_offset - greatest(g.cursor, f.first - 1), 0) + "
        f"(SELECT count(*) FROM {_P} p WHERE p.topic = g.topic AND p.grp = g.name "
        "AND p.position >= f.first) "
        "FROM seawall_topic_groups g JOIN seawall_topics t ON t.name = g.topic, "
        f"LATERAL (SELECT coalesce((SELECT min(position) FROM {_M} WHERE topic = :topic), "
        "t.last_offset + 1) AS first) f WHERE g.topic = :topic AND g.name = :group"
    ),
    "dead_letters": (
        "SELECT position, key, body, headers, published_at, deliveries, dead_at, reason, "
        "last_error FROM seawall_topic_dead WHERE topic = :topic AND grp = :group "
        "ORDER BY id LIMIT :limit"
    ),
}
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_]+)")


def _psycopg_style(sql: str) -> str:
    """``:name`` placeholders as psycopg's ``%(name)s`` (``::type`` casts untouched)."""
    return _PARAMETER.sub(r"%(\1)s", sql)


STATEMENTS = {name: _psycopg_style(sql) for name, sql in _STATEMENTS.items()}


def notify_payload(name: str) -> str:
    """The NOTIFY payload that wakes topic ``name``'s receivers (on the queues' channel).

    Topic and queue names cannot contain ``:``, so ``topic:<name>`` never meets a queue.
    """
    return f"topic:{name}"


def _headers_out(headers: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(headers), separators=(",", ":")) if headers else None


def _headers_in(value: Any) -> Mapping[str, str] | None:
    if value is None:
        return None
    return json.loads(value) if isinstance(value, str | bytes) else dict(value)


def _publish(
    core: SqlCore, records: Sequence[OutgoingRecord], now: float | None
) -> Operation[list[int]]:
    params = core.params(
        now,
        count=len(records),
        keys=[record.key for record in records],
        bodies=[record.body for record in records],
        headers=[_headers_out(record.headers) for record in records],
        channel=CHANNEL,
        payload=notify_payload(core.name),
    )
    rows = yield Query(core.sql["publish"], params, "rows")
    if not rows:
        raise UnknownTopicError(core.name, [])
    last = int(rows[0][0])
    return list(range(last - len(records) + 1, last + 1))


DIALECT = Dialect(STATEMENTS, list, _headers_out, _headers_in, _publish)


_schema_ready: weakref.WeakSet[PostgresEngine] = weakref.WeakSet()


def postgres_topic_names(engine: PostgresEngine) -> list[str]:
    """The names of the topics declared in this database (on the engine's search_path)."""
    with engine.connection() as conn:
        if not conn.execute("SELECT to_regclass('seawall_topics') IS NOT NULL").fetchall()[0][0]:
            return []
        return [row[0] for row in conn.execute("SELECT name FROM seawall_topics ORDER BY name")]


def _declare(engine: PostgresEngine, name: str, now: float | None, create: bool) -> None:
    if not create:
        names = postgres_topic_names(engine)
        if name not in names:
            raise UnknownTopicError(name, names)
        return
    with engine.connection() as conn:
        if engine not in _schema_ready:
            if not conn.execute("SELECT to_regclass('seawall_topic_dead') IS NOT NULL").fetchall()[
                0
            ][0]:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    conn.execute(SCHEMA.encode())
            _schema_ready.add(engine)
        conn.execute(
            "INSERT INTO seawall_topics (name, last_offset, created_at) VALUES "
            f"(%(topic)s, 0, {_psycopg_style(_NOW)}) ON CONFLICT DO NOTHING",
            {"topic": name, "now": now},
        )


def _as_int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 else None


def _drive(conn: psycopg.Connection[Any], operation: Operation[T]) -> T:
    """Run an operation's statements on ``conn``, feeding each result back."""
    try:
        query = next(operation)
        while True:
            if query.mode == "many":
                with conn.cursor() as cursor:
                    cursor.executemany(query.sql, query.params)
                    result: Any = cursor.rowcount
            else:
                cursor = conn.execute(query.sql, query.params)
                result = cursor.fetchall() if query.mode == "rows" else cursor.rowcount
            query = operation.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def _adrive(conn: psycopg.AsyncConnection[Any], operation: Operation[T]) -> T:
    """Asyncio twin of :func:`_drive`."""
    try:
        query = next(operation)
        while True:
            if query.mode == "many":
                async with conn.cursor() as cursor:
                    await cursor.executemany(query.sql, query.params)
                    result: Any = cursor.rowcount
            else:
                cursor = await conn.execute(query.sql, query.params)
                result = await cursor.fetchall() if query.mode == "rows" else cursor.rowcount
            query = operation.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def _wrong_transaction(transaction: Transaction, flavour: str) -> ConfigurationError:
    return ConfigurationError(
        f"transaction={transaction!r} is not a {flavour} PostgreSQL transaction; open it with "
        f"engine.{'transaction' if flavour == 'synchronous' else 'atransaction'}() on a "
        "PostgreSQL engine"
    )


class PostgresTopicStore:
    """A :class:`~seawall.messaging.topic.TopicStore` in PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        engine: PostgresEngine,
        name: str,
        *,
        retention_age: float | None = None,
        retention_count: int | None = None,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        if not isinstance(engine, PostgresEngine):
            raise ConfigurationError(
                f"the PostgreSQL topic store needs a PostgresEngine, got {engine!r}"
            )
        self._engine = engine
        self.name = name
        self.retention_age = retention_age
        self.retention_count = retention_count
        self.events = events if events is not None else EventHub(parent=hub)
        self._core = SqlCore(name, DIALECT, self.events, retention_age, retention_count)
        self._clock = clock
        self._next_trim = 0.0
        self._listener = _listener_for(engine)
        self._bell = self._listener.doorbell(notify_payload(name))
        self._listening = False
        self._listening_lock = threading.Lock()
        with postgres_errors(engine.url):
            _declare(engine, name, self._now(), create)

    def _now(self) -> float | None:
        return self._clock.now() if self._clock is not None else None

    def _trim_due(self) -> bool:
        if not self._core.retains:
            return False
        moment = time.monotonic() if self._clock is None else self._clock.now()
        if moment < self._next_trim:
            return False
        self._next_trim = moment + _TRIM_INTERVAL
        return True

    # -- drivers ---------------------------------------------------------------------------

    def _run(
        self,
        operation: Operation[T],
        transaction: Transaction | None = None,
        atomic: bool = True,
        relaxed: bool = False,
    ) -> T:
        url = self._engine.url
        with postgres_errors(url):
            if transaction is not None:
                conn = transaction.connection
                if not isinstance(conn, psycopg.Connection) or not isinstance(
                    transaction.engine, PostgresEngine
                ):
                    raise _wrong_transaction(transaction, "synchronous")
                with conn.transaction():  # a savepoint inside the caller's transaction
                    return _drive(conn, operation)
            with self._engine.connection() as conn:
                if atomic:
                    with conn.transaction():
                        if relaxed:
                            conn.execute(_RELAX)
                        return _drive(conn, operation)
                return _drive(conn, operation)

    async def _pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        return await self._engine.async_pool()

    async def _arun(
        self,
        operation: Operation[T],
        transaction: Transaction | None = None,
        atomic: bool = True,
        relaxed: bool = False,
    ) -> T:
        url = self._engine.url
        with postgres_errors(url):
            if transaction is not None:
                conn = transaction.connection
                if not isinstance(conn, psycopg.AsyncConnection) or not isinstance(
                    transaction.engine, PostgresEngine
                ):
                    raise _wrong_transaction(transaction, "asyncio")
                async with conn.transaction():
                    return await _adrive(conn, operation)
            pool = await self._pool()
            async with pool.connection() as used:
                if atomic:
                    async with used.transaction():
                        if relaxed:
                            await used.execute(_RELAX)
                        return await _adrive(used, operation)
                return await _adrive(used, operation)

    def _listen(self) -> None:
        with self._listening_lock:
            if not self._listening:
                self._listening = True
                self._listener.acquire()
                return
        self._listener.ensure_running()

    def _claim_operation(
        self, group: str, max_messages: int, visibility_timeout: float, max_deliveries: int
    ) -> Operation[list[StoredTopicMessage]]:
        return self._core.receive(
            group,
            max_messages,
            visibility_timeout,
            max_deliveries,
            random.getrandbits(62),
            self._now(),
            self._trim_due(),
        )

    # -- the contract ----------------------------------------------------------------------

    def publish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """Store every record in one statement; see :meth:`TopicStore.publish`."""
        offsets = self._run(self._core.publish(records, self._now()), transaction)
        if transaction is None:
            self._bell.ring()
        else:
            transaction.on_commit(self._bell.ring)
        return offsets

    def declare_group(self, group: str, start: Start, create: bool) -> None:
        """Create the group unless it exists; see :meth:`TopicStore.declare_group`."""
        self._run(self._core.declare_group(group, start, create, self._now()), atomic=False)

    def groups(self) -> list[str]:
        """The topic's groups; see :meth:`TopicStore.groups`."""
        return self._run(self._core.group_names(), atomic=False)

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
            return self._run(
                self._claim_operation(group, max_messages, visibility_timeout, max_deliveries),
                relaxed=True,
            )

        if wait <= 0:
            return attempt()
        if self._clock is not None:
            return poll(attempt, wait, self._bell, self._clock)
        deadline = time.monotonic() + wait
        self._listen()
        self._listener.ready.wait(min(wait, 1.0))
        bell = self._bell
        while True:
            seen = bell.generation
            found = attempt()
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            bell.wait(seen, min(remaining, SAFETY_POLL if self._listener.ready.is_set() else 0.05))

    def ack(self, group: str, offset: int, token: str, transaction: Transaction | None) -> bool:
        """Settle the delivery; see :meth:`TopicStore.ack`."""
        return self._run(self._core.ack(group, offset, _as_int(token)), transaction, relaxed=True)

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
        outcome = self._run(operation, relaxed=True)
        if outcome != "stale":
            self._bell.ring()
        return outcome

    def seek(self, group: str, offset: int) -> None:
        """Restart the group at ``offset``; see :meth:`TopicStore.seek`."""
        self._run(self._core.seek(group, offset))
        self._bell.ring()

    def seek_time(self, group: str, timestamp: float) -> int:
        """Restart the group at a time; see :meth:`TopicStore.seek_time`."""
        offset = self._run(self._core.seek_time(group, timestamp))
        self._bell.ring()
        return offset

    def lag(self, group: str) -> int:
        """Unacknowledged retained messages; see :meth:`TopicStore.lag`."""
        return self._run(self._core.lag(group), atomic=False)

    def dead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """The group's dead letters; see :meth:`TopicStore.dead_letters`."""
        return self._run(self._core.dead_letters(group, limit), atomic=False)

    def close(self) -> None:
        """Stop using the engine's listener (the engine's pools stay open)."""
        with self._listening_lock:
            if self._listening:
                self._listening = False
                self._listener.release()

    # -- asyncio twins -----------------------------------------------------------------------

    async def apublish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """See :meth:`publish`."""
        offsets = await self._arun(self._core.publish(records, self._now()), transaction)
        if transaction is None:
            self._bell.ring()
        else:
            transaction.on_commit(self._bell.ring)
        return offsets

    async def adeclare_group(self, group: str, start: Start, create: bool) -> None:
        """See :meth:`declare_group`."""
        await self._arun(self._core.declare_group(group, start, create, self._now()), atomic=False)

    async def areceive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """See :meth:`receive`; the long-poll suspends on the listener's doorbell."""

        async def attempt() -> list[StoredTopicMessage]:
            return await self._arun(
                self._claim_operation(group, max_messages, visibility_timeout, max_deliveries),
                relaxed=True,
            )

        if wait <= 0:
            return await attempt()
        if self._clock is not None:
            return await apoll(attempt, wait, self._bell, self._clock)
        deadline = time.monotonic() + wait
        self._listen()
        bell = self._bell
        while True:
            seen = bell.generation
            found = await attempt()
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            pause = SAFETY_POLL if self._listener.ready.is_set() else 0.05
            await bell.await_ring(seen, min(remaining, pause))

    async def aack(
        self, group: str, offset: int, token: str, transaction: Transaction | None
    ) -> bool:
        """See :meth:`ack`."""
        return await self._arun(
            self._core.ack(group, offset, _as_int(token)), transaction, relaxed=True
        )

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
        operation = self._core.nack(
            group, offset, _as_int(token), delay, error, max_deliveries, kill, self._now()
        )
        outcome = await self._arun(operation, relaxed=True)
        if outcome != "stale":
            self._bell.ring()
        return outcome

    async def aseek(self, group: str, offset: int) -> None:
        """See :meth:`seek`."""
        await self._arun(self._core.seek(group, offset))
        self._bell.ring()

    async def aseek_time(self, group: str, timestamp: float) -> int:
        """See :meth:`seek_time`."""
        offset = await self._arun(self._core.seek_time(group, timestamp))
        self._bell.ring()
        return offset

    async def alag(self, group: str) -> int:
        """See :meth:`lag`."""
        return await self._arun(self._core.lag(group), atomic=False)

    async def adead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """See :meth:`dead_letters`."""
        return await self._arun(self._core.dead_letters(group, limit), atomic=False)

    async def aclose(self) -> None:
        """See :meth:`close`."""
        self.close()

    def __repr__(self) -> str:
        return f"PostgresTopicStore({self.name!r})"
