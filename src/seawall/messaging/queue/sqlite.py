"""The SQLite queue store: the embedded default. One file, WAL, safe across processes.

Each queue is one table clustered by **slot**, its rowid, which is the message's
place in line: ready and in-flight messages sit in slot order (priority first, then
a time-based sequence), delayed messages and dead letters in slot ranges of their
own. So the common operations touch a single B-tree page each: a send is one
``INSERT`` at the end of its priority, a receive one ``UPDATE ... RETURNING`` of the
first ready slots (an expired delivery is simply ready again in place), an ack one
``DELETE`` by slot. Only delayed messages carry a secondary index (on when they come
due). Batches use one transaction and ``executemany``/``json_each``.

A receipt's token is ``"<slot>.<nonce>"``: the slot finds the row without an index,
the random nonce (new on every delivery) proves the receipt is the latest one.

**Durability.** ``synchronous="full"`` (the default) fsyncs every send before it
returns: a sent message survives a power cut. Receives, acks, nacks and extensions
are committed with ``synchronous=NORMAL``: they survive a crash of the process, and
a power cut can roll back only the last few of them, which means those messages
are delivered again; at-least-once delivery allows exactly that, and nothing sent
is lost. ``durable_acks=True`` fsyncs those too. ``synchronous="normal"`` makes
sends survive process crashes but not power cuts (SQLite's usual WAL setting).

**Connections.** The store opens its own connection per thread (so it can set the
``synchronous`` level per operation without touching the engine's connection), but
when the engine's connection on this thread is inside a transaction, or a
``transaction=`` is passed, it writes through that connection and the write joins
the caller's transaction.

**Time.** Deadlines use this host's wall clock (``time.time``); SQLite is one
machine, so every process shares it. Pass ``clock=`` to drive time by hand in tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.clock import Clock
from seawall.engines._sqlite_connections import atomic_write, declared_names, store_error
from seawall.errors import ConfigurationError, EngineError
from seawall.events import EventHub, hub
from seawall.messaging.queue._errors import UnknownQueueError
from seawall.messaging.queue._events import MessageDeadLettered, MessageDeduplicated
from seawall.messaging.queue._model import (
    DeadLetter,
    OutgoingMessage,
    QueuedMessage,
    QueueStats,
    ReceiptLike,
    StoredMessage,
)
from seawall.messaging.queue._polling import Doorbell, poll
from seawall.messaging.queue._store import NackOutcome
from seawall.messaging.queue._validate import MAX_PRIORITY

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.engines.sqlite import SqliteEngine

__all__ = ["SYNCHRONOUS_LEVELS", "SqliteQueueStore", "queue_table", "sqlite_queue_names"]

T = TypeVar("T")

SYNCHRONOUS_LEVELS = {"full": 2, "normal": 1}
"""Accepted ``synchronous=`` values and SQLite's numbers for them."""

_ID_BLOCK = 1024
"""Message ids reserved per round trip (ids are never reused, even after a queue drains)."""
_DUE_CHECK_INTERVAL = 0.05
"""Longest a due delayed message waits behind ready ones while claims keep coming back full."""
_ATTEMPTS = 3
"""Tries when a new slot collides with another process's (the sequence is then reseeded)."""

_READY, _DELAYED = 0, 2  # row states: 0 ready, 1 in flight, 2 delayed, 3 dead
_PRIORITY_SHIFT = 57
_DELAYED_BASE = 1 << 61  # below it: ready and in-flight slots, in claim order
_DEAD_BASE = 2 << 61
_SEQUENCE_EPOCH = 1_577_836_800.0  # 2020-01-01T00:00:00Z: sequences fit 57 bits until 2091

SHARED_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS seawall_queues (
        name TEXT PRIMARY KEY,
        created_at REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS seawall_queue_dedup (
        queue TEXT NOT NULL,
        dedup_id TEXT NOT NULL,
        expires_at REAL NOT NULL,
        message_id INTEGER NOT NULL,
        PRIMARY KEY (queue, dedup_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS seawall_queue_ids (
        key INTEGER PRIMARY KEY CHECK (key = 1),
        next_id INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO seawall_queue_ids (key, next_id) VALUES (1, 1)",
)


def queue_table(name: str) -> str:
    """The quoted table name of queue ``name`` (names are validated: no quotes inside)."""
    return f'"seawall_q_{name}"'


def _queue_schema(name: str) -> tuple[str, ...]:
    # slot: the place in line (see the module docstring); state: 0 ready, 1 in flight
    # (until visible_at), 2 delayed (until visible_at), 3 dead (visible_at: when it died).
    # state and visible_at come first: the claim scan reads only them until it matches.
    table = queue_table(name)
    return (
        f"""CREATE TABLE IF NOT EXISTS {table} (
            slot INTEGER PRIMARY KEY,
            state INTEGER NOT NULL,
            visible_at REAL NOT NULL,
            token INTEGER,
            delivery_count INTEGER NOT NULL DEFAULT 0,
            id INTEGER NOT NULL,
            priority INTEGER NOT NULL,
            enqueued_at REAL NOT NULL,
            body BLOB NOT NULL,
            headers TEXT,
            last_error TEXT,
            dead_reason TEXT
        )""",
        f'CREATE INDEX IF NOT EXISTS "seawall_q_{name}_delayed" ON {table} (visible_at, id) '
        "WHERE state = 2",
    )


class _Statements:
    """The SQL of one queue's table, built once per store."""

    def __init__(self, table: str) -> None:
        returning = "RETURNING slot, id, body, headers, priority, delivery_count, enqueued_at"
        claim = (
            f"UPDATE {table} SET state = 1, token = ?1, delivery_count = delivery_count + 1, "
            "visible_at = ?2 WHERE slot {} (SELECT slot FROM {} WHERE slot < {} AND "
            "(state = 0 OR (state = 1 AND visible_at <= ?3)) ORDER BY slot LIMIT ?4) "
        )
        self.insert_ready = (
            f"INSERT INTO {table} (slot, state, visible_at, id, priority, enqueued_at, body) "
            "VALUES (?1, 0, ?2, ?3, ?4, ?2, ?5)"
        )
        self.insert = (
            f"INSERT INTO {table} "
            "(slot, state, visible_at, id, priority, enqueued_at, body, headers) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self.any_due = f"SELECT 1 FROM {table} WHERE state = 2 AND visible_at <= ? LIMIT 1"
        self.due = (
            f"SELECT slot, priority FROM {table} WHERE state = 2 AND visible_at <= ? "
            "ORDER BY visible_at, id"
        )
        self.move_ready = f"UPDATE {table} SET slot = ?, state = 0 WHERE slot = ?"
        self.claim_one = claim.format("=", table, _DELAYED_BASE) + returning
        self.claim_many = claim.format("IN", table, _DELAYED_BASE) + returning
        self.expire = (
            f"UPDATE {table} SET slot = ?1, state = 3, token = NULL, visible_at = ?2, "
            "delivery_count = delivery_count - 1, "
            "dead_reason = 'visibility timeout expired on its last allowed delivery (' "
            "|| (delivery_count - 1) || ' of max_deliveries=' || ?3 || ')' "
            "WHERE slot = ?4 AND token = ?5 RETURNING id, delivery_count, dead_reason"
        )
        self.ack = f"DELETE FROM {table} WHERE slot = ? AND token = ? AND id = ?"
        self.ack_group = (
            f"DELETE FROM {table} WHERE token = ? "
            "AND slot IN (SELECT value FROM json_each(?)) RETURNING slot"
        )
        self.nack_ready = (
            f"UPDATE {table} SET state = 0, token = NULL, visible_at = ?1, "
            "last_error = coalesce(?2, last_error) "
            "WHERE slot = ?3 AND token = ?4 AND id = ?5 AND delivery_count < ?6"
        )
        self.nack_delayed = (
            f"UPDATE {table} SET slot = ?1, state = 2, token = NULL, visible_at = ?2, "
            "last_error = coalesce(?3, last_error) "
            "WHERE slot = ?4 AND token = ?5 AND id = ?6 AND delivery_count < ?7"
        )
        self.nack_dead = (
            f"UPDATE {table} SET slot = ?1, state = 3, token = NULL, visible_at = ?2, "
            "last_error = coalesce(?3, last_error), "
            "dead_reason = 'negatively acknowledged on its last allowed delivery (' "
            "|| delivery_count || ' of max_deliveries=' || ?4 || ')' "
            "WHERE slot = ?5 AND token = ?6 AND id = ?7 RETURNING delivery_count, dead_reason"
        )
        self.extend = f"UPDATE {table} SET visible_at = ? WHERE slot = ? AND token = ? AND id = ?"
        self.dead_letter = (
            f"UPDATE {table} SET slot = ?, state = 3, token = NULL, visible_at = ?, "
            "dead_reason = ? WHERE slot = ? AND token = ? AND id = ? RETURNING delivery_count"
        )
        columns = "slot, id, body, headers, priority, delivery_count, enqueued_at, visible_at"
        self.peek_ready = (
            f"SELECT {columns}, last_error FROM {table} WHERE slot < {_DELAYED_BASE} AND "
            "(state = 0 OR (state = 1 AND visible_at <= ?)) ORDER BY slot LIMIT ?"
        )
        self.peek_due = (
            f"SELECT {columns}, last_error FROM {table} WHERE state = 2 AND visible_at <= ? "
            "ORDER BY priority DESC, visible_at, id LIMIT ?"
        )
        self.stats = (
            "SELECT coalesce(sum(state = 0 OR (state IN (1, 2) AND visible_at <= ?1)), 0), "
            "coalesce(sum(state = 1 AND visible_at > ?1), 0), "
            "coalesce(sum(state = 2 AND visible_at > ?1), 0), "
            f"coalesce(sum(state = 3), 0) FROM {table}"
        )
        self.purge = f"DELETE FROM {table} WHERE slot < {_DEAD_BASE}"
        dead_columns = (
            "id, body, headers, priority, delivery_count, enqueued_at, visible_at, "
            "dead_reason, last_error"
        )
        self.dead_list = (
            f"SELECT {dead_columns} FROM {table} WHERE slot >= {_DEAD_BASE} ORDER BY slot LIMIT ?"
        )
        self.dead_one = f"SELECT {dead_columns} FROM {table} WHERE slot >= {_DEAD_BASE} AND id = ?"
        self.dead_slots = (
            f"SELECT slot, priority FROM {table} WHERE slot >= {_DEAD_BASE} ORDER BY slot"
        )
        self.dead_slots_of = (
            f"SELECT slot, priority FROM {table} WHERE slot >= {_DEAD_BASE} "
            "AND id IN (SELECT value FROM json_each(?)) ORDER BY slot"
        )
        self.redrive = (
            f"UPDATE {table} SET slot = ?, state = 0, visible_at = ?, token = NULL, "
            "delivery_count = 0, last_error = NULL, dead_reason = NULL WHERE slot = ?"
        )
        self.purge_dead = f"DELETE FROM {table} WHERE slot >= {_DEAD_BASE}"


_DEDUP_FIND = (
    "SELECT message_id FROM seawall_queue_dedup WHERE queue = ? AND dedup_id = ? AND expires_at > ?"
)
_DEDUP_RECORD = (
    "INSERT OR REPLACE INTO seawall_queue_dedup (queue, dedup_id, expires_at, message_id) "
    "VALUES (?, ?, ?, ?)"
)
_DEDUP_SWEEP = "DELETE FROM seawall_queue_dedup WHERE queue = ? AND expires_at <= ?"
_RESERVE_IDS = "UPDATE seawall_queue_ids SET next_id = next_id + ? WHERE key = 1 RETURNING next_id"
_PRAGMA_SYNCHRONOUS = {2: "PRAGMA synchronous=FULL", 1: "PRAGMA synchronous=NORMAL"}


class _Sequence:
    """Places in line: microseconds since 2020 (x64, with a per-process salt), increasing.

    Time-based, so producers in different processes interleave in send order; strictly
    increasing within the process. A collision with another process's slot is rare
    and retried after :meth:`reseed`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._salt = random.getrandbits(6)

    def take(self, now: float, count: int = 1) -> int:
        """The first of ``count`` consecutive fresh sequence numbers."""
        micros = int((now - _SEQUENCE_EPOCH) * 1_000_000)
        candidate = (micros << 6 | self._salt) if micros > 0 else 0
        with self._lock:
            first = candidate if candidate > self._last else self._last + 1
            self._last = first + count - 1
        return first

    def reseed(self) -> None:
        """Move past a collision (and apart from a forked parent)."""
        with self._lock:
            self._salt = random.getrandbits(6)
            self._last += random.randint(1, 1 << 16)


_SEQUENCE = _Sequence()
_doorbells: weakref.WeakValueDictionary[tuple[str, str], Doorbell] = weakref.WeakValueDictionary()
_doorbells_lock = threading.Lock()
_stores: weakref.WeakSet[SqliteQueueStore] = weakref.WeakSet()


def _ready_slot(priority: int, sequence: int) -> int:
    return (MAX_PRIORITY - priority) << _PRIORITY_SHIFT | sequence


def _doorbell_for(path: str, name: str) -> Doorbell:
    """The process-wide doorbell of queue ``name`` in database ``path``."""
    key = (os.path.realpath(path) if path != ":memory:" else path, name)
    with _doorbells_lock:
        doorbell = _doorbells.get(key)
        if doorbell is None:
            doorbell = _doorbells[key] = Doorbell()
        return doorbell


def _forget_connections_after_fork() -> None:
    """A forked child must not use its parent's connections, id block or sequence."""
    _SEQUENCE.reseed()
    for store in list(_stores):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections_after_fork)


def sqlite_queue_names(engine: SqliteEngine) -> list[str]:
    """The names of the queues declared in this SQLite database."""
    return declared_names(engine, "seawall_queues", "queue store")


def _engine_error(exc: sqlite3.Error, path: str) -> EngineError:
    return store_error(exc, path, "queue store")


def _headers_text(headers: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(headers), separators=(",", ":")) if headers else None


def _receipt(message_id: str, token: str) -> tuple[int, int, int] | None:
    """``(slot, nonce, id)`` from a receipt, or None when it cannot be one of ours."""
    slot, _, nonce = token.partition(".")
    try:
        return int(slot), int(nonce), int(message_id)
    except ValueError:
        return None


_loads = json.loads


class _Local(threading.local):
    """Per-thread state: the store's own connection and its current synchronous level."""

    conn: sqlite3.Connection | None = None
    level = 0


class SqliteQueueStore:
    """A :class:`~seawall.messaging.queue.QueueStore` in a SQLite database file."""

    def __init__(
        self,
        engine: SqliteEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
        synchronous: str = "full",
        durable_acks: bool = False,
    ) -> None:
        level = SYNCHRONOUS_LEVELS.get(str(synchronous).lower())
        if level is None:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not valid; use 'full' (sends survive power "
                "loss) or 'normal' (sends survive a process crash)"
            )
        if not isinstance(durable_acks, bool):
            raise ConfigurationError(f"durable_acks={durable_acks!r} must be True or False")
        self.name = name
        self.max_deliveries = max_deliveries
        self.events = events if events is not None else EventHub(parent=hub)
        self.synchronous = "full" if level == 2 else "normal"
        self.durable_acks = durable_acks
        self._engine = engine
        self._path = engine.path
        self._table = queue_table(name)
        self._sql = _Statements(self._table)
        self._shared_only = engine.path == ":memory:"
        self._data_level = level
        self._consumer_level = level if durable_acks else 1
        self._dedup_window = dedup_window
        self._next_dedup_sweep = 0.0
        self._next_due_check = 0.0
        self._clock = clock
        self._now: Callable[[], float] = clock.now if clock is not None else time.time
        self._local = _Local()
        self._owned: list[sqlite3.Connection] = []
        self._owned_lock = threading.Lock()
        self._ids: tuple[Iterator[int], int] = (iter(()), 0)
        self._ids_lock = threading.Lock()
        self._doorbell = _doorbell_for(self._path, name)
        _stores.add(self)
        self._declare(create)

    # -- connections -----------------------------------------------------------------------

    def _connection(self, level: int) -> sqlite3.Connection:
        """The connection for an operation at ``level``: the caller's transaction, or ours."""
        shared = self._engine.connection
        if shared.in_transaction or self._shared_only:
            return shared
        local = self._local
        conn = local.conn
        if conn is None:
            conn = self._open()
        if local.level != level:
            conn.execute(_PRAGMA_SYNCHRONOUS[level])
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
                f"transaction={transaction!r} is not a transaction on this queue's SQLite "
                f"database {self._path!r}; open it with the same engine"
            )
        return conn

    def _open(self) -> sqlite3.Connection:
        engine = self._engine
        conn = sqlite3.connect(
            self._path, timeout=engine.timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(engine.timeout * 1000)}")
        conn.execute("PRAGMA temp_store=MEMORY")
        with self._owned_lock:
            self._owned.append(conn)
        self._local.conn = conn
        self._local.level = 0
        return conn

    def _write(self, conn: sqlite3.Connection) -> AbstractContextManager[None]:
        """One atomic unit: our own write transaction, or a savepoint in the caller's."""
        return atomic_write(conn, "seawall_queue")

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt``; if a new slot collided with another process's, reseed and retry."""
        for tries in range(1, _ATTEMPTS + 1):
            try:
                return attempt()
            except sqlite3.IntegrityError as exc:
                _SEQUENCE.reseed()
                self._ids = (iter(()), 0)
                if tries == _ATTEMPTS:
                    raise _engine_error(exc, self._path) from exc
            except sqlite3.Error as exc:
                raise _engine_error(exc, self._path) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _after_fork(self) -> None:
        self._local = _Local()
        self._owned = []
        self._owned_lock = threading.Lock()
        self._ids = (iter(()), 0)
        self._ids_lock = threading.Lock()

    def _declare(self, create: bool) -> None:
        conn = self._connection(self._data_level)
        try:
            if not create:
                names = sqlite_queue_names(self._engine)
                if self.name not in names:
                    raise UnknownQueueError(self.name, names)
                return
            with self._write(conn):
                for statement in (*SHARED_SCHEMA, *_queue_schema(self.name)):
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO seawall_queues (name, created_at) VALUES (?, ?)",
                    (self.name, self._now()),
                )
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc

    # -- ids -------------------------------------------------------------------------------

    def _next_id(self, conn: sqlite3.Connection) -> int:
        block = self._ids
        value = next(block[0], block[1])
        if value < block[1]:
            return value
        return self._take_ids(conn, 1)[0]

    def _take_ids(self, conn: sqlite3.Connection, count: int) -> list[int]:
        """``count`` fresh message ids, from this store's reserved block when it can.

        Inside a caller's transaction the ids are reserved in that transaction and not
        cached: if it rolls back, the reservation and the rows vanish together.
        """
        if conn.in_transaction:
            end = conn.execute(_RESERVE_IDS, (count,)).fetchall()[0][0]
            return list(range(end - count, end))
        block = self._ids
        taken = [next(block[0], block[1]) for _ in range(count)]
        if taken and taken[-1] < block[1]:
            return taken
        size = max(count, _ID_BLOCK)
        with self._ids_lock:
            end = conn.execute(_RESERVE_IDS, (size,)).fetchall()[0][0]
            ids = iter(range(end - size, end))
            taken = [next(ids) for _ in range(count)]
            self._ids = (ids, end)
        return taken

    # -- sending ---------------------------------------------------------------------------

    def send(
        self,
        body: bytes,
        headers: Mapping[str, str] | None,
        priority: int,
        delay: float,
        dedup_id: str | None,
        transaction: Transaction | None,
    ) -> str:
        """Store one message; see :meth:`QueueStore.send`."""
        if dedup_id is not None:  # looked up and recorded in one transaction
            return self._send_batch(
                [OutgoingMessage(body, headers, priority, delay, dedup_id)], transaction
            )[0]
        conn = (
            self._connection(self._data_level)
            if transaction is None
            else self._joined(transaction, self._data_level)
        )
        plain = delay <= 0 and not headers  # the common case binds fewer values
        now = self._now()
        for tries in range(1, _ATTEMPTS + 1):
            try:
                message_id = self._next_id(conn)
                if plain:
                    slot = _ready_slot(priority, _SEQUENCE.take(now))
                    conn.execute(self._sql.insert_ready, (slot, now, message_id, priority, body))
                else:
                    outgoing = OutgoingMessage(body, headers, priority, delay, None)
                    conn.execute(
                        self._sql.insert, _row(outgoing, message_id, _SEQUENCE.take(now), now)
                    )
                break
            except sqlite3.IntegrityError as exc:  # a slot taken by another process
                _SEQUENCE.reseed()
                if tries == _ATTEMPTS:
                    raise _engine_error(exc, self._path) from exc
            except sqlite3.Error as exc:
                raise _engine_error(exc, self._path) from exc
        if delay <= 0:
            self._doorbell.ring()
        return str(message_id)

    def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """Store every message in one transaction; see :meth:`QueueStore.send_many`."""
        if not messages:
            return []
        return self._send_batch(messages, transaction)

    def _send_batch(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        conn = self._joined(transaction, self._data_level)
        deduplicated: list[tuple[str, str]] = []

        def attempt() -> list[str]:
            # Ids are taken before our own transaction begins: its rollback cannot reissue them.
            numbers = self._take_ids(conn, len(messages))
            deduplicated.clear()
            with self._write(conn):
                now = self._now()
                if any(message.dedup_id is not None for message in messages):
                    return self._insert_deduplicated(conn, messages, numbers, now, deduplicated)
                first = _SEQUENCE.take(now, len(messages))
                conn.executemany(
                    self._sql.insert,
                    [
                        _row(message, number, first + offset, now)
                        for offset, (number, message) in enumerate(
                            zip(numbers, messages, strict=True)
                        )
                    ],
                )
                return [str(number) for number in numbers]

        ids = self._retrying(attempt)
        if self.events.active:
            for message_id, dedup_id in deduplicated:
                self.events.emit(MessageDeduplicated(self.name, message_id, dedup_id))
        self._doorbell.ring()
        return ids

    def _insert_deduplicated(
        self,
        conn: sqlite3.Connection,
        messages: Sequence[OutgoingMessage],
        numbers: list[int],
        now: float,
        deduplicated: list[tuple[str, str]],
    ) -> list[str]:
        name = self.name
        if now >= self._next_dedup_sweep:
            conn.execute(_DEDUP_SWEEP, (name, now))
            self._next_dedup_sweep = now + self._dedup_window / 2
        ids: list[str] = []
        for message, number in zip(messages, numbers, strict=True):
            if message.dedup_id is not None:
                found = conn.execute(_DEDUP_FIND, (name, message.dedup_id, now)).fetchone()
                if found is not None:
                    ids.append(str(found[0]))
                    deduplicated.append((str(found[0]), message.dedup_id))
                    continue
            conn.execute(self._sql.insert, _row(message, number, _SEQUENCE.take(now), now))
            if message.dedup_id is not None:
                conn.execute(
                    _DEDUP_RECORD, (name, message.dedup_id, now + self._dedup_window, number)
                )
            ids.append(str(number))
        return ids

    # -- receiving -------------------------------------------------------------------------

    def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """Claim up to ``max_messages``; see :meth:`QueueStore.receive`."""
        if wait <= 0:
            return self._claim(max_messages, visibility_timeout)
        return poll(
            lambda: self._claim(max_messages, visibility_timeout),
            wait,
            self._doorbell,
            self._clock,
        )

    def _claim(self, max_messages: int, visibility_timeout: float) -> list[StoredMessage]:
        conn = self._connection(self._consumer_level)
        sql = self._sql
        now = self._now()
        nonce = random.getrandbits(40)
        deadline = now + visibility_timeout
        try:
            promoted = now >= self._next_due_check and self._promote_due(conn, now)
            rows = conn.execute(
                sql.claim_one if max_messages == 1 else sql.claim_many,
                (nonce, deadline, now, max_messages),
            ).fetchall()
            if len(rows) < max_messages and not promoted and self._promote_due(conn, now):
                rows += conn.execute(
                    sql.claim_many, (nonce, deadline, now, max_messages - len(rows))
                ).fetchall()
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc
        if not rows:
            return []
        if len(rows) > 1:
            rows.sort()  # slot order: the order they were claimed in
        token = f".{nonce}"
        limit = self.max_deliveries
        claimed: list[StoredMessage] = []
        spent: list[int] = []
        for slot, message_id, body, headers, priority, count, enqueued_at in rows:
            if count > limit:
                spent.append(slot)
                continue
            claimed.append(
                StoredMessage(
                    str(message_id),
                    body,
                    None if headers is None else _loads(headers),
                    priority,
                    count,
                    enqueued_at,
                    f"{slot}{token}",
                )
            )
        if spent:
            self._expire(conn, spent, nonce, now)
            if len(claimed) < max_messages:  # spent messages do not count: look again
                claimed += self._claim(max_messages - len(claimed), visibility_timeout)
        return claimed

    def _promote_due(self, conn: sqlite3.Connection, now: float) -> bool:
        """Put delayed messages whose time has come in line; True if there were any.

        Runs when a claim comes back short, and at least every 50 ms of steady
        claiming. Each takes its place behind the messages already ready.
        """
        self._next_due_check = now + _DUE_CHECK_INTERVAL
        sql = self._sql
        if conn.execute(sql.any_due, (now,)).fetchone() is None:
            return False

        def attempt() -> None:
            with self._write(conn):
                due = conn.execute(sql.due, (now,)).fetchall()
                first = _SEQUENCE.take(now, len(due))
                conn.executemany(
                    sql.move_ready,
                    [
                        (_ready_slot(priority, first + offset), slot)
                        for offset, (slot, priority) in enumerate(due)
                    ],
                )

        self._retrying(attempt)
        return True

    def _expire(self, conn: sqlite3.Connection, slots: list[int], nonce: int, now: float) -> None:
        """Dead-letter messages whose last allowed delivery expired unsettled."""
        dead: list[tuple[int, int, str]] = []

        def attempt() -> None:
            dead.clear()
            with self._write(conn):
                first = _SEQUENCE.take(now, len(slots))
                for offset, slot in enumerate(slots):
                    dead.extend(
                        conn.execute(
                            self._sql.expire,
                            (_DEAD_BASE | first + offset, now, self.max_deliveries, slot, nonce),
                        ).fetchall()
                    )

        self._retrying(attempt)
        if self.events.active:
            for message_id, count, reason in dead:
                self.events.emit(MessageDeadLettered(self.name, str(message_id), reason, count))

    # -- settling --------------------------------------------------------------------------

    def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the held message; see :meth:`QueueStore.ack`."""
        receipt = _receipt(message_id, token)
        if receipt is None:
            return False
        conn = (
            self._connection(self._consumer_level)
            if transaction is None
            else self._joined(transaction, self._consumer_level)
        )
        try:
            return conn.execute(self._sql.ack, receipt).rowcount == 1
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc

    def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """Acknowledge each receipt, grouped by delivery; see :meth:`QueueStore.ack_many`."""
        groups: dict[int, list[int]] = {}
        parsed: list[tuple[int, int] | None] = []
        for receipt in receipts:
            slot_text, _, nonce_text = receipt.token.partition(".")
            try:
                slot, nonce = int(slot_text), int(nonce_text)
            except ValueError:
                parsed.append(None)
                continue
            group = groups.get(nonce)
            if group is None:
                group = groups[nonce] = []
            group.append(slot)
            parsed.append((nonce, slot))
        acked: set[tuple[int, int]] = set()
        if groups:
            conn = self._joined(transaction, self._consumer_level)
            statement = self._sql.ack_group
            try:
                with self._write(conn) if len(groups) > 1 else contextlib.nullcontext():
                    for nonce, slots in groups.items():
                        acked.update(
                            (nonce, row[0])
                            for row in conn.execute(statement, (nonce, json.dumps(slots)))
                        )
            except sqlite3.Error as exc:
                raise _engine_error(exc, self._path) from exc
        if len(acked) == len(receipts):
            return []
        return [
            receipt
            for receipt, entry in zip(receipts, parsed, strict=True)
            if entry is None or entry not in acked
        ]

    def nack(self, message_id: str, token: str, delay: float, error: str | None) -> NackOutcome:
        """Release the delivery; see :meth:`QueueStore.nack`."""
        receipt = _receipt(message_id, token)
        if receipt is None:
            return "stale"
        conn = self._connection(self._consumer_level)
        sql = self._sql
        now = self._now()
        limit = self.max_deliveries

        def requeue() -> int:
            if delay > 0:
                slot = _DELAYED_BASE | _SEQUENCE.take(now)
                return conn.execute(
                    sql.nack_delayed, (slot, now + delay, error, *receipt, limit)
                ).rowcount
            return conn.execute(sql.nack_ready, (now, error, *receipt, limit)).rowcount

        def kill() -> list[tuple[int, str]]:
            slot = _DEAD_BASE | _SEQUENCE.take(now)
            return conn.execute(sql.nack_dead, (slot, now, error, limit, *receipt)).fetchall()

        if self._retrying(requeue):
            if delay <= 0:
                self._doorbell.ring()
            return "requeued"
        dead = self._retrying(kill)
        if not dead:
            return "stale"
        if self.events.active:
            count, reason = dead[0]
            self.events.emit(MessageDeadLettered(self.name, message_id, reason, count))
        return "dead_lettered"

    def extend_visibility(self, message_id: str, token: str, visibility_timeout: float) -> bool:
        """Move the delivery's deadline; see :meth:`QueueStore.extend_visibility`."""
        receipt = _receipt(message_id, token)
        if receipt is None:
            return False
        conn = self._connection(self._consumer_level)
        try:
            deadline = self._now() + visibility_timeout
            return conn.execute(self._sql.extend, (deadline, *receipt)).rowcount == 1
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc

    def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """Move a held message to the dead letters; see :meth:`QueueStore.dead_letter`."""
        receipt = _receipt(message_id, token)
        if receipt is None:
            return False
        conn = self._connection(self._consumer_level)
        now = self._now()

        def kill() -> list[tuple[int]]:
            slot = _DEAD_BASE | _SEQUENCE.take(now)
            return conn.execute(self._sql.dead_letter, (slot, now, reason, *receipt)).fetchall()

        rows = self._retrying(kill)
        if rows and self.events.active:
            self.events.emit(MessageDeadLettered(self.name, message_id, reason, rows[0][0]))
        return bool(rows)

    # -- inspecting ------------------------------------------------------------------------

    def peek(self, limit: int) -> list[QueuedMessage]:
        """The next ready messages; see :meth:`QueueStore.peek`."""
        conn = self._connection(self._consumer_level)
        now = self._now()
        try:
            ready = conn.execute(self._sql.peek_ready, (now, limit)).fetchall()
            due = conn.execute(self._sql.peek_due, (now, limit)).fetchall()
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc
        # Due delayed messages take their place behind the ready ones of their priority.
        ordered = sorted(
            [((MAX_PRIORITY - row[4], 0, row[0]), row) for row in ready]
            + [((MAX_PRIORITY - row[4], 1, row[7], row[1]), row) for row in due],
            key=lambda pair: pair[0],
        )
        return [
            QueuedMessage(
                str(message_id),
                body,
                _loads(headers) if headers else {},
                priority,
                count,
                enqueued_at,
                visible_at,
                last_error,
            )
            for _, (
                _slot,
                message_id,
                body,
                headers,
                priority,
                count,
                enqueued_at,
                visible_at,
                last_error,
            ) in ordered[:limit]
        ]

    def stats(self) -> QueueStats:
        """Counts per state, from one snapshot; see :meth:`QueueStore.stats`."""
        conn = self._connection(self._consumer_level)
        try:
            ready, in_flight, delayed, dead = conn.execute(
                self._sql.stats, (self._now(),)
            ).fetchone()
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc
        return QueueStats(ready, in_flight, delayed, dead)

    def purge(self) -> int:
        """Delete every live message; see :meth:`QueueStore.purge`."""
        conn = self._connection(self._data_level)
        try:
            count: int = conn.execute(self._sql.purge).rowcount
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc
        return count

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The oldest dead letters; see :meth:`QueueStore.dead_letters`."""
        conn = self._connection(self._consumer_level)
        try:
            rows = conn.execute(self._sql.dead_list, (limit,)).fetchall()
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc
        return [_dead_letter(row) for row in rows]

    def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """One dead letter; see :meth:`QueueStore.peek_dead_letter`."""
        try:
            key = int(message_id)
        except ValueError:
            return None
        conn = self._connection(self._consumer_level)
        try:
            row = conn.execute(self._sql.dead_one, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc
        return None if row is None else _dead_letter(row)

    def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Make dead letters ready again; see :meth:`QueueStore.redrive`."""
        conn = self._connection(self._data_level)
        sql = self._sql

        def attempt() -> int:
            with self._write(conn):
                if message_ids is None:
                    dead = conn.execute(sql.dead_slots).fetchall()
                else:
                    numbers = [int(value) for value in message_ids if value.isdigit()]
                    dead = conn.execute(sql.dead_slots_of, (json.dumps(numbers),)).fetchall()
                now = self._now()
                first = _SEQUENCE.take(now, len(dead))
                conn.executemany(
                    sql.redrive,
                    [
                        (_ready_slot(priority, first + offset), now, slot)
                        for offset, (slot, priority) in enumerate(dead)
                    ],
                )
                return len(dead)

        count = self._retrying(attempt)
        if count:
            self._doorbell.ring()
        return count

    def purge_dead_letters(self) -> int:
        """Delete every dead letter; see :meth:`QueueStore.purge_dead_letters`."""
        conn = self._connection(self._data_level)
        try:
            count: int = conn.execute(self._sql.purge_dead).rowcount
        except sqlite3.Error as exc:
            raise _engine_error(exc, self._path) from exc
        return count

    # -- plumbing --------------------------------------------------------------------------

    @property
    def doorbell(self) -> Doorbell:
        """Rung on every send in this process; long-polls wait on it."""
        return self._doorbell

    @property
    def clock(self) -> Clock | None:
        """The injected clock, or None for real time."""
        return self._clock

    def close(self) -> None:
        """Close the connections this store opened (the engine's stay open)."""
        with self._owned_lock:
            for conn in self._owned:
                conn.close()
            self._owned.clear()
        self._local = _Local()

    def __repr__(self) -> str:
        return (
            f"SqliteQueueStore({self.name!r}, path={self._path!r}, "
            f"synchronous={self.synchronous!r}, durable_acks={self.durable_acks})"
        )


def _row(message: OutgoingMessage, number: int, sequence: int, now: float) -> tuple[Any, ...]:
    """The INSERT values of one message: a ready slot, or a delayed one."""
    if message.delay > 0:
        slot, state = _DELAYED_BASE | sequence, _DELAYED
    else:
        slot, state = _ready_slot(message.priority, sequence), _READY
    return (
        slot,
        state,
        now + message.delay,
        number,
        message.priority,
        now,
        message.body,
        _headers_text(message.headers),
    )


def _dead_letter(row: Any) -> DeadLetter:
    message_id, body, headers, priority, count, enqueued_at, dead_at, reason, last_error = row
    return DeadLetter(
        str(message_id),
        body,
        _loads(headers) if headers else {},
        priority,
        count,
        enqueued_at,
        dead_at,
        reason or "",
        last_error,
    )
