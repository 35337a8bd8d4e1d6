"""The PostgreSQL queue store: ``FOR UPDATE SKIP LOCKED`` claims, LISTEN/NOTIFY wake-ups.

All queues share one table, ``seawall_queue_messages``, indexed by place in line
``(queue, priority DESC, place, id)``; dead letters live in ``seawall_queue_dead``,
deduplication ids in ``seawall_queue_dedup``, declared names in ``seawall_queues``
(SQL in ``sql/postgres.sql``; the tables are found through the connection's
``search_path``, so a schema per tenant or per test works). Every operation is one
statement and one round trip:

* send: ``INSERT`` + ``pg_notify`` in one statement;
* receive: ``UPDATE ... FROM (SELECT ... ORDER BY priority DESC, place, id LIMIT n FOR
  UPDATE SKIP LOCKED) RETURNING``, which also moves messages whose last allowed
  delivery expired to the dead letters; concurrent consumers never wait on each
  other's rows;
* ack: ``DELETE ... WHERE id AND token``; nack, extend and dead-letter likewise.

**Combining.** A receive (or ack) that starts while another of the same store is
waiting for the server does not take a connection of its own: it waits, and all
that arrived meanwhile go to the server together in one statement (one claim of
their total, split in arrival order; one ``ack_many``), like a group commit. A lone
caller pays nothing extra; concurrent one-at-a-time consumers (worker threads,
asyncio tasks) share round trips and commits. Each caller still gets its own answer.

**Time** is the server's: ``clock_timestamp()`` in epoch seconds, so hosts with
skewed clocks share deadlines safely. ``clock=`` replaces it (tests).

**Durability.** Sends, purges and redrives commit durably. Receives, acks, nacks and
extensions commit with ``synchronous_commit = off`` set for their own transaction
only: they are visible at once, and a crash of the *server* can undo the last few
hundred milliseconds of them, which means those messages are delivered again
(at-least-once delivery allows exactly that; nothing sent is lost).
``durable_acks=True`` makes them wait for the WAL flush too. A write that joins a
caller's ``transaction=`` follows that transaction's durability.

**Long-poll.** A waiting receive sleeps on a doorbell rung by one ``LISTEN``
connection per engine and process (a background thread); senders ``NOTIFY``. While
idle it looks again only when a delayed or in-flight message comes due, or after a
safety interval of one second: no polling storm. The listener reconnects by itself
when its connection drops and then wakes every waiter. Pooled connections the server
dropped (restart, ``pg_terminate_backend``) are replaced and the operation is tried
once more.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from seawall.clock import Clock
from seawall.engines._base import Transaction
from seawall.engines.postgres import PostgresEngine, postgres_errors
from seawall.errors import ConfigurationError, EngineError, MissingExtraError
from seawall.events import EventHub, hub
from seawall.messaging.queue._errors import UnknownQueueError
from seawall.messaging.queue._events import MessageDeadLettered, MessageDeduplicated
from seawall.messaging.queue._model import (
    DeadLetter,
    OutgoingMessage,
    QueuedMessage,
    QueueStats,
    Receipt,
    ReceiptLike,
    StoredMessage,
)
from seawall.messaging.queue._polling import Doorbell, apoll, poll
from seawall.messaging.queue._store import NackOutcome

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("postgres", "psycopg") from exc

if TYPE_CHECKING:
    import psycopg_pool

__all__ = [
    "CHANNEL",
    "SAFETY_POLL",
    "AsyncPostgresQueueStore",
    "PostgresQueueStore",
    "postgres_queue_names",
]

T = TypeVar("T")
R = TypeVar("R")

CHANNEL = "seawall_queue"
"""The NOTIFY channel; the payload is the queue name."""
SAFETY_POLL = 1.0
"""Longest idle wait between two looks at the queue while the listener is connected."""
_UNREADY_POLL = 0.05
"""Pause between looks while the listener is (re)connecting."""
_LOCKED_PAUSE = 0.05
"""Pause when a due message is locked by someone else (it is theirs for now)."""
_MIN_PAUSE = 0.002
_DEDUP_ATTEMPTS = 3
_SCHEMA_LOCK = 0x5EA3A11_0001
_ENGINE_CLOCK = "extract(epoch FROM clock_timestamp())::float8"
_RELAX = ", set_config('synchronous_commit', 'off', true)"
_RECONNECT_FIRST, _RECONNECT_CAP = 0.05, 2.0
_LITERAL_LIMITS = 100
"""Claims of up to this many messages carry their LIMIT as a literal, one prepared
statement per limit: with ``LIMIT $n`` the server re-plans the claim on every run
(its generic plan looks costlier than a custom one), which costs more than running it."""


# -- SQL --------------------------------------------------------------------------------------


@cache
def _blocks() -> dict[str, str]:
    text = resources.files(__package__).joinpath("sql", "postgres.sql").read_text()
    blocks: dict[str, str] = {}
    for block in text.split("-- name: ")[1:]:
        name, _, body = block.partition("\n")
        blocks[name.strip()] = body.strip()
    return blocks


class _Statements:
    """The statements of one variant: engine clock or injected, relaxed commits or not."""

    def __init__(self, injected_clock: bool, relaxed: bool) -> None:
        now = "%(now)s::float8" if injected_clock else _ENGINE_CLOCK
        relax = _RELAX if relaxed else ""
        sql = {
            name: body.replace("{now}", now).replace("{relax}", relax)
            for name, body in _blocks().items()
        }
        self.send = sql["send"]
        self.send_deduplicated = sql["send_deduplicated"]
        self.dedup_sweep = sql["dedup_sweep"]
        self.send_many = sql["send_many"]
        self.claim = sql["claim"]
        self._claims: dict[int, str] = {}
        self.next_due = sql["next_due"]
        self.ack = sql["ack"]
        self.ack_many = sql["ack_many"]
        self.nack = sql["nack"]
        self.extend = sql["extend"]
        self.dead_letter = sql["dead_letter"]
        self.peek = sql["peek"]
        self.stats = sql["stats"]
        self.purge = sql["purge"]
        self.dead_letters = sql["dead_letters"]
        self.dead_letter_one = sql["dead_letter_one"]
        self.redrive = sql["redrive"]
        self.purge_dead = sql["purge_dead"]

    def claim_for(self, limit: int) -> str:
        """The claim with its LIMIT written in for small limits (see :data:`_LITERAL_LIMITS`)."""
        if limit > _LITERAL_LIMITS:
            return self.claim
        sql = self._claims.get(limit)
        if sql is None:
            sql = self._claims[limit] = self.claim.replace("%(limit)s", str(int(limit)))
        return sql


@cache
def _statements(injected_clock: bool, relaxed: bool) -> _Statements:
    return _Statements(injected_clock, relaxed)


# -- schema and names -------------------------------------------------------------------------

_schema_ready: weakref.WeakSet[PostgresEngine] = weakref.WeakSet()


def _ensure_schema(engine: PostgresEngine) -> None:
    """Create the queue tables once per engine (an advisory lock serialises processes)."""
    if engine in _schema_ready:
        return
    blocks = _blocks()
    with engine.connection() as conn:
        if not conn.execute(blocks["schema_ready"]).fetchall()[0][0]:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(blocks["schema"].encode())
    _schema_ready.add(engine)


def postgres_queue_names(engine: PostgresEngine) -> list[str]:
    """The names of the queues declared in this database (on the engine's search_path)."""
    blocks = _blocks()
    with engine.connection() as conn:
        if not conn.execute(blocks["schema_ready"]).fetchall()[0][0]:
            return []
        return [row[0] for row in conn.execute(blocks["names"]).fetchall()]


def _declare(engine: PostgresEngine, name: str, create: bool) -> None:
    if create:
        _ensure_schema(engine)
        with engine.connection() as conn:
            conn.execute(_blocks()["declare"], {"queue": name})
        return
    names = postgres_queue_names(engine)
    if name not in names:
        raise UnknownQueueError(name, names)


# -- the listener -----------------------------------------------------------------------------


class _Session:
    """One run of the listener thread: told to stop, and whether its LISTEN is in place."""

    __slots__ = ("ready", "stop", "thread")

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None

    def running(self) -> bool:
        return not self.stop.is_set() and self.thread is not None and self.thread.is_alive()


class _Listener:
    """One ``LISTEN`` connection per engine in this process, ringing queue doorbells.

    Runs in a daemon thread while some store long-polls (stores ``acquire`` it and
    ``release`` it on close), reconnects with backoff when its connection drops, and
    rings every doorbell after each (re)connect since notifications sent meanwhile are
    lost. Holds no reference to the engine, so the engine can be collected; the thread
    then stops within a second. A forked child starts a thread of its own on its first
    long-poll.
    """

    def __init__(self, url: str, connect_timeout: float) -> None:
        self._url = url
        self._connect_timeout = max(1, int(connect_timeout))
        self._bells: weakref.WeakValueDictionary[str, Doorbell] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._users = 0
        self._session = _Session()
        self._session.stop.set()
        self.backend_pid: int | None = None
        """The server process of the current LISTEN connection (for operators and tests)."""
        self.connects = 0
        """How many times the listener has connected."""

    @property
    def ready(self) -> threading.Event:
        """Set while the LISTEN is in place."""
        return self._session.ready

    def doorbell(self, name: str) -> Doorbell:
        """The doorbell of queue ``name``, rung on every NOTIFY for it."""
        with self._lock:
            bell = self._bells.get(name)
            if bell is None:
                bell = self._bells[name] = Doorbell()
            return bell

    def acquire(self) -> None:
        """Count one more user and make sure the thread runs."""
        with self._lock:
            self._users += 1
            self._run_locked()

    def ensure_running(self) -> None:
        """Restart the thread if it is gone (after a fork) while someone uses it."""
        if not self._session.running():
            with self._lock:
                if self._users:
                    self._run_locked()

    def release(self) -> None:
        """Count one user less; the last one stops the thread."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._session.stop.set()

    def stop(self) -> None:
        """Stop the thread whoever still uses it (the engine is gone)."""
        with self._lock:
            self._users = 0
            self._session.stop.set()

    def _run_locked(self) -> None:
        if self._session.running():
            return
        session = self._session = _Session()
        session.thread = threading.Thread(
            target=self._run, args=(session,), name="seawall-queue-listener", daemon=True
        )
        session.thread.start()

    def _ring_all(self) -> None:
        with self._lock:
            bells = list(self._bells.values())
        for bell in bells:
            bell.ring()

    def _run(self, session: _Session) -> None:
        stop = session.stop
        pause = _RECONNECT_FIRST
        while not stop.is_set():
            try:
                conn = psycopg.Connection.connect(
                    self._url, autocommit=True, connect_timeout=self._connect_timeout
                )
            except psycopg.Error:
                stop.wait(pause)
                pause = min(pause * 2, _RECONNECT_CAP)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                self.backend_pid = conn.info.backend_pid
                self.connects += 1
                session.ready.set()
                self._ring_all()  # whatever was sent while nobody listened
                pause = _RECONNECT_FIRST
                bells = self._bells
                while not stop.is_set():
                    for notify in conn.notifies(timeout=1.0):
                        bell = bells.get(notify.payload)
                        if bell is not None:
                            bell.ring()
            except psycopg.Error:
                pass
            finally:
                session.ready.clear()
                conn.close()
            if not stop.is_set():
                self._ring_all()  # waiters fall back to short polls until we are back
                stop.wait(pause)
                pause = min(pause * 2, _RECONNECT_CAP)


_listeners: weakref.WeakKeyDictionary[PostgresEngine, _Listener] = weakref.WeakKeyDictionary()
_listeners_lock = threading.Lock()


def _listener_for(engine: PostgresEngine) -> _Listener:
    with _listeners_lock:
        listener = _listeners.get(engine)
        if listener is None:
            listener = _listeners[engine] = _Listener(engine.url, engine.timeout)
            weakref.finalize(engine, listener.stop)
        return listener


def _pause(remaining: float, due_in: float | None, listening: bool) -> float:
    """How long an idle receive waits before looking again (sans-I/O).

    Never past the caller's ``remaining`` wait, the next message's due time (a delay
    or a visibility deadline), or the safety interval; short polls while the listener
    is not connected.
    """
    pause = min(remaining, SAFETY_POLL if listening else _UNREADY_POLL)
    if due_in is not None:
        pause = min(pause, max(due_in, _MIN_PAUSE) if due_in > 0 else _LOCKED_PAUSE)
    return pause


# -- the shared operations --------------------------------------------------------------------


class _Query(NamedTuple):
    """One statement an operation asks its driver to run: rows back, or the row count."""

    sql: str | bytes
    params: dict[str, Any]
    rows: bool


Operation = Generator[_Query, Any, T]
"""An operation written once: yields statements, receives their results, returns a value."""


def _headers_json(headers: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(headers), separators=(",", ":")) if headers else None


def _as_int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 else None


def _dead(row: Sequence[Any]) -> DeadLetter:
    message_id, body, headers, priority, count, enqueued_at, dead_at, reason, last_error = row
    return DeadLetter(
        str(message_id),
        bytes(body),
        headers or {},
        priority,
        count,
        enqueued_at,
        dead_at,
        reason,
        last_error,
    )


def _queued(row: Sequence[Any]) -> QueuedMessage:
    message_id, body, headers, priority, count, enqueued_at, visible_at, last_error = row
    return QueuedMessage(
        str(message_id),
        bytes(body),
        headers or {},
        priority,
        count,
        enqueued_at,
        visible_at,
        last_error,
    )


def _claim_order(row: Sequence[Any]) -> tuple[int, float, int]:
    return (-row[3], row[6], row[0])


class _Core:
    """What both flavours share: parameters, results, events. No I/O happens here."""

    def __init__(
        self,
        name: str,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None,
        events: EventHub,
        durable_acks: bool,
    ) -> None:
        self.name = name
        self.max_deliveries = max_deliveries
        self.dedup_window = dedup_window
        self.clock = clock
        self.events = events
        self.data = _statements(clock is not None, False)
        self.consumer = _statements(clock is not None, not durable_acks)
        self.joined = self.data  # inside a caller's transaction: its durability, not ours
        self._next_dedup_sweep = 0.0

    def params(self, **values: Any) -> dict[str, Any]:
        """Statement parameters with the queue name (and the injected time, if any)."""
        values["queue"] = self.name
        if self.clock is not None:
            values["now"] = self.clock.now()
        return values

    # sending

    def send(
        self,
        body: bytes,
        headers: Mapping[str, str] | None,
        priority: int,
        delay: float,
        dedup_id: str | None,
    ) -> Operation[str]:
        """Store one message; see :meth:`QueueStore.send`."""
        params = self.params(
            priority=priority, delay=float(delay), body=body, headers=_headers_json(headers)
        )
        if dedup_id is None:
            rows = yield _Query(self.data.send, params, True)
            return str(rows[0][0])
        monotonic = time.monotonic()
        if monotonic >= self._next_dedup_sweep:
            self._next_dedup_sweep = monotonic + self.dedup_window / 2
            yield _Query(self.data.dedup_sweep, self.params(), False)
        params["dedup_id"] = dedup_id
        params["window"] = float(self.dedup_window)
        for _ in range(_DEDUP_ATTEMPTS):
            # Empty only when a concurrent send of the same dedup_id committed meanwhile.
            rows = yield _Query(self.data.send_deduplicated, params, True)
            if rows:
                message_id, duplicate = rows[0][0], rows[0][1]
                if duplicate and self.events.active:
                    self.events.emit(MessageDeduplicated(self.name, str(message_id), dedup_id))
                return str(message_id)
            if self.clock is not None:
                params["now"] = self.clock.now()
        raise EngineError(
            f"queue {self.name!r}: could not settle dedup_id {dedup_id!r} against concurrent "
            f"sends in {_DEDUP_ATTEMPTS} attempts; send again"
        )

    def send_many(self, messages: Sequence[OutgoingMessage]) -> Operation[list[str]]:
        """Store every message (the driver runs this in one transaction)."""
        if not messages:
            return []
        if any(message.dedup_id is not None for message in messages):
            ids: list[str] = []
            for m in messages:
                ids.append(
                    (yield from self.send(m.body, m.headers, m.priority, m.delay, m.dedup_id))
                )
            return ids
        params = self.params(
            priorities=[m.priority for m in messages],
            delays=[float(m.delay) for m in messages],
            bodies=[m.body for m in messages],
            headers=[_headers_json(m.headers) for m in messages],
        )
        rows = yield _Query(self.data.send_many, params, True)
        return [str(message_id) for message_id in rows[0][0]]

    # receiving

    def claim(self, max_messages: int, visibility_timeout: float) -> Operation[list[StoredMessage]]:
        """Claim up to ``max_messages`` ready messages in one statement."""
        token = random.getrandbits(63)
        params = self.params(
            limit=max_messages,
            token=token,
            visibility=float(visibility_timeout),
            max_deliveries=self.max_deliveries,
        )
        rows = yield _Query(self.consumer.claim_for(max_messages), params, True)
        if not rows:
            return []
        claimed = [row for row in rows if row[7] is None]
        if len(claimed) != len(rows):
            if self.events.active:
                for row in rows:
                    if row[7] is not None:
                        self.events.emit(
                            MessageDeadLettered(self.name, str(row[0]), row[7], row[4])
                        )
            if len(claimed) < max_messages:  # spent messages do not count: look again
                more = yield from self.claim(max_messages - len(claimed), visibility_timeout)
                return self._stored(claimed, str(token)) + more
        return self._stored(claimed, str(token))

    @staticmethod
    def _stored(rows: list[Any], token: str) -> list[StoredMessage]:
        if len(rows) > 1:
            rows.sort(key=_claim_order)
        return [
            StoredMessage(str(row[0]), row[1], row[2], row[3], row[4], row[5], token)
            for row in rows
        ]

    def next_due(self) -> Operation[float | None]:
        """Seconds until the next delayed or in-flight message is due (None: queue empty)."""
        rows = yield _Query(self.data.next_due, self.params(), True)
        value = rows[0][0] if rows else None
        return None if value is None else float(value)

    # settling

    def ack(self, message_id: str, token: str, joined: bool) -> Operation[bool]:
        """Delete the held message; see :meth:`QueueStore.ack`."""
        number, nonce = _as_int(message_id), _as_int(token)
        if number is None or nonce is None:
            return False
        sql = (self.joined if joined else self.consumer).ack
        count = yield _Query(sql, self.params(id=number, token=nonce), False)
        return bool(count == 1)

    def ack_many(
        self, receipts: Sequence[ReceiptLike], joined: bool
    ) -> Operation[list[ReceiptLike]]:
        """Acknowledge each receipt in one statement; see :meth:`QueueStore.ack_many`."""
        ids: list[int] = []
        tokens: list[int] = []
        for receipt in receipts:
            number, nonce = _as_int(receipt.id), _as_int(receipt.token)
            if number is not None and nonce is not None:
                ids.append(number)
                tokens.append(nonce)
        acked: set[tuple[int, int]] = set()
        if ids:
            sql = (self.joined if joined else self.consumer).ack_many
            rows = yield _Query(sql, self.params(ids=ids, tokens=tokens), True)
            acked = {(row[0], row[1]) for row in rows}
        if len(acked) == len(receipts):
            return []
        return [
            receipt
            for receipt in receipts
            if (_as_int(receipt.id), _as_int(receipt.token)) not in acked
        ]

    def nack(
        self, message_id: str, token: str, delay: float, error: str | None
    ) -> Operation[NackOutcome]:
        """Release the delivery; see :meth:`QueueStore.nack`."""
        number, nonce = _as_int(message_id), _as_int(token)
        if number is None or nonce is None:
            return "stale"
        params = self.params(
            id=number,
            token=nonce,
            delay=float(delay),
            error=error,
            max_deliveries=self.max_deliveries,
        )
        rows = yield _Query(self.consumer.nack, params, True)
        if not rows:
            return "stale"
        outcome, count, reason = rows[0][0], rows[0][1], rows[0][2]
        if outcome == "dead_lettered":
            if self.events.active:
                self.events.emit(MessageDeadLettered(self.name, message_id, reason, count))
            return "dead_lettered"
        return "requeued"

    def extend(self, message_id: str, token: str, visibility_timeout: float) -> Operation[bool]:
        """Move the delivery's deadline; see :meth:`QueueStore.extend_visibility`."""
        number, nonce = _as_int(message_id), _as_int(token)
        if number is None or nonce is None:
            return False
        params = self.params(id=number, token=nonce, visibility=float(visibility_timeout))
        count = yield _Query(self.consumer.extend, params, False)
        return bool(count == 1)

    def dead_letter(self, message_id: str, token: str, reason: str) -> Operation[bool]:
        """Move a held message to the dead letters; see :meth:`QueueStore.dead_letter`."""
        number, nonce = _as_int(message_id), _as_int(token)
        if number is None or nonce is None:
            return False
        params = self.params(id=number, token=nonce, reason=reason)
        rows = yield _Query(self.consumer.dead_letter, params, True)
        if rows and self.events.active:
            self.events.emit(MessageDeadLettered(self.name, message_id, reason, rows[0][0]))
        return bool(rows)

    # inspecting

    def peek(self, limit: int) -> Operation[list[QueuedMessage]]:
        """The next ready messages; see :meth:`QueueStore.peek`."""
        rows = yield _Query(self.data.peek, self.params(limit=limit), True)
        return [_queued(row) for row in rows]

    def stats(self) -> Operation[QueueStats]:
        """Counts per state from one snapshot; see :meth:`QueueStore.stats`."""
        rows = yield _Query(self.data.stats, self.params(), True)
        ready, in_flight, delayed, dead = rows[0]
        return QueueStats(ready, in_flight, delayed, dead)

    def purge(self) -> Operation[int]:
        """Delete every live message; see :meth:`QueueStore.purge`."""
        count = yield _Query(self.data.purge, self.params(), False)
        return int(count)

    def dead_letters(self, limit: int) -> Operation[list[DeadLetter]]:
        """The oldest dead letters; see :meth:`QueueStore.dead_letters`."""
        rows = yield _Query(self.data.dead_letters, self.params(limit=limit), True)
        return [_dead(row) for row in rows]

    def peek_dead_letter(self, message_id: str) -> Operation[DeadLetter | None]:
        """One dead letter; see :meth:`QueueStore.peek_dead_letter`."""
        number = _as_int(message_id)
        if number is None:
            return None
        rows = yield _Query(self.data.dead_letter_one, self.params(id=number), True)
        return _dead(rows[0]) if rows else None

    def redrive(self, message_ids: Sequence[str] | None) -> Operation[int]:
        """Make dead letters ready again; see :meth:`QueueStore.redrive`."""
        numbers = [] if message_ids is None else [_as_int(value) for value in message_ids]
        params = self.params(
            every=message_ids is None, ids=[number for number in numbers if number is not None]
        )
        rows = yield _Query(self.data.redrive, params, True)
        return int(rows[0][0])

    def purge_dead_letters(self) -> Operation[int]:
        """Delete every dead letter; see :meth:`QueueStore.purge_dead_letters`."""
        count = yield _Query(self.data.purge_dead, self.params(), False)
        return int(count)


# -- combining concurrent calls ---------------------------------------------------------------


class _Waiter(Generic[R, T]):
    """One caller waiting for a combined round trip (threads)."""

    __slots__ = ("batch", "error", "event", "request", "result")

    def __init__(self, request: R) -> None:
        self.request = request
        self.event = threading.Event()
        self.batch: list[_Waiter[R, T]] | None = None
        self.result: T | None = None
        self.error: BaseException | None = None


class _Combiner(Generic[R, T]):
    """Runs one request at a time; requests arriving meanwhile run next, all in one call.

    The first caller runs ``one`` at once (no added latency). Callers that arrive while
    it runs wait; when it is done, the first of them runs ``many`` for all of them on
    its own thread and hands each its answer (no helper thread).
    """

    def __init__(self, one: Callable[[R], T], many: Callable[[list[R]], list[T]]) -> None:
        self._one = one
        self._many = many
        self._lock = threading.Lock()
        self._busy = False
        self._waiting: list[_Waiter[R, T]] = []

    def __call__(self, request: R) -> T:
        with self._lock:
            if not self._busy:
                self._busy = True
                waiter = None
            else:
                waiter = _Waiter[R, T](request)
                self._waiting.append(waiter)
        if waiter is None:
            try:
                return self._one(request)
            finally:
                self._hand_off()
        waiter.event.wait()
        batch = waiter.batch
        if batch is not None:  # our turn to run everyone's requests
            try:
                results = self._many([member.request for member in batch])
            except BaseException as exc:
                for member in batch:
                    member.error = exc
            else:
                for member, result in zip(batch, results, strict=True):
                    member.result = result
            finally:
                self._hand_off()
                for member in batch[1:]:
                    member.event.set()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]

    def _hand_off(self) -> None:
        with self._lock:
            if not self._waiting:
                self._busy = False
                return
            batch, self._waiting = self._waiting, []
        batch[0].batch = batch
        batch[0].event.set()


class _AsyncCombiner(Generic[R, T]):
    """The asyncio twin of :class:`_Combiner` (one event loop): the batch runs as a task."""

    def __init__(
        self,
        one: Callable[[R], Coroutine[Any, Any, T]],
        many: Callable[[list[R]], Coroutine[Any, Any, list[T]]],
    ) -> None:
        self._one = one
        self._many = many
        self._busy = False
        self._waiting: list[tuple[R, asyncio.Future[T]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, request: R) -> T:
        if self._busy:
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            self._waiting.append((request, future))
            return await future
        self._busy = True
        try:
            return await self._one(request)
        finally:
            self._hand_off()

    def _hand_off(self) -> None:
        if not self._waiting:
            self._busy = False
            return
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[R, asyncio.Future[T]]]) -> None:
        try:
            results = await self._many([request for request, _ in batch])
        except BaseException as exc:  # every waiter gets the error (a cancelled one ignores it)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._hand_off()


class _ClaimRequest(NamedTuple):
    max_messages: int
    visibility_timeout: float


def _split_claims(
    requests: list[_ClaimRequest], claim: Callable[[int, float], list[StoredMessage]]
) -> list[list[StoredMessage]]:
    """Serve several claims with one claim per visibility timeout, in arrival order."""
    results: list[list[StoredMessage]] = [[] for _ in requests]
    for visibility in dict.fromkeys(request.visibility_timeout for request in requests):
        members = [i for i, r in enumerate(requests) if r.visibility_timeout == visibility]
        found = claim(sum(requests[i].max_messages for i in members), visibility)
        start = 0
        for i in members:
            results[i] = found[start : start + requests[i].max_messages]
            start += requests[i].max_messages
    return results


def _ack_results(receipts: list[Receipt], stale: Sequence[ReceiptLike]) -> list[bool]:
    """Which receipts of one combined ``ack_many`` were acked (a repeated receipt: once)."""
    missed = {(receipt.id, receipt.token) for receipt in stale}
    seen: set[tuple[str, str]] = set()
    results = []
    for receipt in receipts:
        key = (receipt.id, receipt.token)
        results.append(key not in missed and key not in seen)
        seen.add(key)
    return results


def _drive(conn: psycopg.Connection[Any], operation: Operation[T]) -> T:
    """Run an operation's statements on ``conn``, feeding each result back."""
    try:
        query = next(operation)
        while True:
            cursor = conn.execute(query.sql, query.params)
            query = operation.send(cursor.fetchall() if query.rows else cursor.rowcount)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def _adrive(conn: psycopg.AsyncConnection[Any], operation: Operation[T]) -> T:
    """Asyncio twin of :func:`_drive`."""
    try:
        query = next(operation)
        while True:
            cursor = await conn.execute(query.sql, query.params)
            result = await cursor.fetchall() if query.rows else cursor.rowcount
            query = operation.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def _lost(conn: Any) -> bool:
    """True when the error came from a connection the server had dropped."""
    return conn is not None and bool(conn.closed)


def _check_options(durable_acks: object) -> bool:
    if not isinstance(durable_acks, bool):
        raise ConfigurationError(f"durable_acks={durable_acks!r} must be True or False")
    return durable_acks


def _check_engine(engine: object) -> PostgresEngine:
    if not isinstance(engine, PostgresEngine):
        raise ConfigurationError(
            f"the PostgreSQL queue store needs a PostgresEngine, got {engine!r}"
        )
    return engine


def _wrong_transaction(transaction: Transaction, flavour: str) -> ConfigurationError:
    return ConfigurationError(
        f"transaction={transaction!r} is not a {flavour} PostgreSQL transaction; open it with "
        f"engine.{'transaction' if flavour == 'synchronous' else 'atransaction'}() on a "
        "PostgreSQL engine (the sync queue methods take engine.transaction(), the asyncio "
        "ones engine.atransaction())"
    )


# -- the stores -------------------------------------------------------------------------------


class PostgresQueueStore:
    """A :class:`~seawall.messaging.queue.QueueStore` in PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        engine: PostgresEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
        durable_acks: bool = False,
    ) -> None:
        self._engine = _check_engine(engine)
        self.name = name
        self.max_deliveries = max_deliveries
        self.durable_acks = _check_options(durable_acks)
        self.events = events if events is not None else EventHub(parent=hub)
        self._core = _Core(name, max_deliveries, dedup_window, clock, self.events, durable_acks)
        self._clock = clock
        self._listener = _listener_for(engine)
        self._bell = self._listener.doorbell(name)
        self._listening = False
        self._listening_lock = threading.Lock()
        self._claims = _Combiner(self._claim_one, self._claim_many)
        self._acks = _Combiner(self._ack_one, self._ack_many)
        _declare(engine, name, create)

    # plumbing

    def _run(
        self,
        make: Callable[..., Operation[T]],
        *args: Any,
        transaction: Transaction | None = None,
        atomic: bool = False,
    ) -> T:
        """Run one operation on a pooled connection (or the caller's), retrying a dropped one."""
        url = self._engine.url
        if transaction is not None:
            conn = transaction.connection
            if not isinstance(conn, psycopg.Connection) or not isinstance(
                transaction.engine, PostgresEngine
            ):
                raise _wrong_transaction(transaction, "synchronous")
            with postgres_errors(url):
                if atomic:
                    with conn.transaction():
                        return _drive(conn, make(*args))
                return _drive(conn, make(*args))
        with postgres_errors(url):
            pool = self._engine.pool
            used: psycopg.Connection[Any] | None = None
            try:
                with pool.connection() as used:
                    if atomic:
                        with used.transaction():
                            return _drive(used, make(*args))
                    return _drive(used, make(*args))
            except psycopg.OperationalError:
                if not _lost(used):
                    raise
            # The server dropped that connection (a restart, pg_terminate_backend) before
            # our statement ran: replace the dead idle ones and try once more.
            pool.check()
            with pool.connection() as conn:
                if atomic:
                    with conn.transaction():
                        return _drive(conn, make(*args))
                return _drive(conn, make(*args))

    def _claim_one(self, request: _ClaimRequest) -> list[StoredMessage]:
        return self._run(self._core.claim, request.max_messages, request.visibility_timeout)

    def _claim_many(self, requests: list[_ClaimRequest]) -> list[list[StoredMessage]]:
        return _split_claims(requests, lambda count, visibility: self._run(
            self._core.claim, count, visibility))  # fmt: skip

    def _ack_one(self, receipt: Receipt) -> bool:
        return self._run(self._core.ack, receipt.id, receipt.token, False)

    def _ack_many(self, receipts: list[Receipt]) -> list[bool]:
        return _ack_results(receipts, self._run(self._core.ack_many, receipts, False))

    def _listen(self) -> None:
        with self._listening_lock:
            if not self._listening:
                self._listening = True
                self._listener.acquire()
                return
        self._listener.ensure_running()

    @property
    def listener(self) -> _Listener:
        """The engine's LISTEN connection this store's long-polls wait on."""
        return self._listener

    @property
    def doorbell(self) -> Doorbell:
        """Rung by every NOTIFY for this queue and every send from this process."""
        return self._bell

    @property
    def clock(self) -> Clock | None:
        """The injected clock, or None for the server's time."""
        return self._clock

    # sending

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
        message_id = self._run(
            self._core.send, body, headers, priority, delay, dedup_id, transaction=transaction
        )
        self._bell.ring()
        return message_id

    def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """Store every message atomically; see :meth:`QueueStore.send_many`."""
        if not messages:
            return []
        ids = self._run(self._core.send_many, messages, transaction=transaction, atomic=True)
        self._bell.ring()
        return ids

    # receiving

    def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """Claim up to ``max_messages``; see :meth:`QueueStore.receive`."""
        request = _ClaimRequest(max_messages, visibility_timeout)
        claim = self._claims
        if wait <= 0:
            return claim(request)
        if self._clock is not None:
            return poll(
                lambda: claim(request),
                wait,
                self._bell,
                self._clock,
            )
        deadline = time.monotonic() + wait
        listener = self._listener
        self._listen()
        # LISTEN must be in place before the first look, or a send between the look and
        # the LISTEN would go unnoticed until the next safety poll.
        listener.ready.wait(min(wait, 1.0))
        bell = self._bell
        while True:
            seen = bell.generation
            found = claim(request)
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return found
            due_in = self._run(self._core.next_due)
            bell.wait(seen, _pause(remaining, due_in, listener.ready.is_set()))
            if deadline - time.monotonic() <= 0:
                return claim(request)

    # settling

    def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the held message; see :meth:`QueueStore.ack`."""
        if transaction is None:
            return self._acks(Receipt(message_id, token))
        return self._run(
            self._core.ack, message_id, token, transaction is not None, transaction=transaction
        )

    def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """Acknowledge each receipt in one statement; see :meth:`QueueStore.ack_many`."""
        return self._run(
            self._core.ack_many, receipts, transaction is not None, transaction=transaction
        )

    def nack(self, message_id: str, token: str, delay: float, error: str | None) -> NackOutcome:
        """Release the delivery; see :meth:`QueueStore.nack`."""
        outcome = self._run(self._core.nack, message_id, token, delay, error)
        if outcome == "requeued":
            self._bell.ring()
        return outcome

    def extend_visibility(self, message_id: str, token: str, visibility_timeout: float) -> bool:
        """Move the delivery's deadline; see :meth:`QueueStore.extend_visibility`."""
        return self._run(self._core.extend, message_id, token, visibility_timeout)

    def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """Move a held message to the dead letters; see :meth:`QueueStore.dead_letter`."""
        return self._run(self._core.dead_letter, message_id, token, reason)

    # inspecting

    def peek(self, limit: int) -> list[QueuedMessage]:
        """The next ready messages; see :meth:`QueueStore.peek`."""
        return self._run(self._core.peek, limit)

    def stats(self) -> QueueStats:
        """Counts per state; see :meth:`QueueStore.stats`."""
        return self._run(self._core.stats)

    def purge(self) -> int:
        """Delete every live message; see :meth:`QueueStore.purge`."""
        return self._run(self._core.purge)

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The oldest dead letters; see :meth:`QueueStore.dead_letters`."""
        return self._run(self._core.dead_letters, limit)

    def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """One dead letter; see :meth:`QueueStore.peek_dead_letter`."""
        return self._run(self._core.peek_dead_letter, message_id)

    def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Make dead letters ready again; see :meth:`QueueStore.redrive`."""
        count = self._run(self._core.redrive, message_ids)
        if count:
            self._bell.ring()
        return count

    def purge_dead_letters(self) -> int:
        """Delete every dead letter; see :meth:`QueueStore.purge_dead_letters`."""
        return self._run(self._core.purge_dead_letters)

    def close(self) -> None:
        """Stop using the engine's listener (the engine's pools stay open)."""
        with self._listening_lock:
            if self._listening:
                self._listening = False
                self._listener.release()

    def __repr__(self) -> str:
        return f"PostgresQueueStore({self.name!r}, durable_acks={self.durable_acks})"


class AsyncPostgresQueueStore:
    """The native asyncio twin of :class:`PostgresQueueStore` (psycopg's async pool)."""

    def __init__(
        self,
        engine: PostgresEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
        durable_acks: bool = False,
    ) -> None:
        self._engine = _check_engine(engine)
        self.name = name
        self.max_deliveries = max_deliveries
        self.durable_acks = _check_options(durable_acks)
        self.events = events if events is not None else EventHub(parent=hub)
        self._core = _Core(name, max_deliveries, dedup_window, clock, self.events, durable_acks)
        self._clock = clock
        self._create = create
        self._declared = False
        self._listener = _listener_for(engine)
        self._bell = self._listener.doorbell(name)
        self._listening = False
        self._listening_lock = threading.Lock()
        self._claims = _AsyncCombiner(self._claim_one, self._claim_many)
        self._acks = _AsyncCombiner(self._ack_one, self._ack_many)

    async def _pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        pool = await self._engine.async_pool()
        if not self._declared:
            await self._declare(pool)
        return pool

    async def _declare(
        self, pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    ) -> None:
        blocks = _blocks()
        with postgres_errors(self._engine.url):
            async with pool.connection() as conn:
                cursor = await conn.execute(blocks["schema_ready"])
                ready = (await cursor.fetchall())[0][0]
                if self._create:
                    if not ready:
                        async with conn.transaction():
                            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                            await conn.execute(blocks["schema"].encode())
                    await conn.execute(blocks["declare"], {"queue": self.name})
                else:
                    names: list[str] = []
                    if ready:
                        cursor = await conn.execute(blocks["names"])
                        names = [row[0] for row in await cursor.fetchall()]
                    if self.name not in names:
                        raise UnknownQueueError(self.name, names)
        self._declared = True

    async def _run(
        self,
        make: Callable[..., Operation[T]],
        *args: Any,
        transaction: Transaction | None = None,
        atomic: bool = False,
    ) -> T:
        """Run one operation on a pooled connection (or the caller's), retrying a dropped one."""
        url = self._engine.url
        if transaction is not None:
            conn = transaction.connection
            if not isinstance(conn, psycopg.AsyncConnection) or not isinstance(
                transaction.engine, PostgresEngine
            ):
                raise _wrong_transaction(transaction, "asyncio")
            with postgres_errors(url):
                if atomic:
                    async with conn.transaction():
                        return await _adrive(conn, make(*args))
                return await _adrive(conn, make(*args))
        with postgres_errors(url):
            pool = await self._pool()
            used: psycopg.AsyncConnection[Any] | None = None
            try:
                async with pool.connection() as used:
                    if atomic:
                        async with used.transaction():
                            return await _adrive(used, make(*args))
                    return await _adrive(used, make(*args))
            except psycopg.OperationalError:
                if not _lost(used):
                    raise
            await pool.check()
            async with pool.connection() as conn:
                if atomic:
                    async with conn.transaction():
                        return await _adrive(conn, make(*args))
                return await _adrive(conn, make(*args))

    async def _claim_one(self, request: _ClaimRequest) -> list[StoredMessage]:
        return await self._run(self._core.claim, request.max_messages, request.visibility_timeout)

    async def _claim_many(self, requests: list[_ClaimRequest]) -> list[list[StoredMessage]]:
        found: dict[float, list[StoredMessage]] = {}
        for visibility in dict.fromkeys(request.visibility_timeout for request in requests):
            total = sum(r.max_messages for r in requests if r.visibility_timeout == visibility)
            found[visibility] = await self._run(self._core.claim, total, visibility)
        return _split_claims(requests, lambda _, visibility: found[visibility])

    async def _ack_one(self, receipt: Receipt) -> bool:
        return await self._run(self._core.ack, receipt.id, receipt.token, False)

    async def _ack_many(self, receipts: list[Receipt]) -> list[bool]:
        return _ack_results(receipts, await self._run(self._core.ack_many, receipts, False))

    def _listen(self) -> None:
        with self._listening_lock:
            if not self._listening:
                self._listening = True
                self._listener.acquire()
                return
        self._listener.ensure_running()

    # sending

    async def send(
        self,
        body: bytes,
        headers: Mapping[str, str] | None,
        priority: int,
        delay: float,
        dedup_id: str | None,
        transaction: Transaction | None,
    ) -> str:
        """See :meth:`QueueStore.send`."""
        message_id = await self._run(
            self._core.send, body, headers, priority, delay, dedup_id, transaction=transaction
        )
        self._bell.ring()
        return message_id

    async def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """See :meth:`QueueStore.send_many`."""
        if not messages:
            return []
        ids = await self._run(self._core.send_many, messages, transaction=transaction, atomic=True)
        self._bell.ring()
        return ids

    # receiving

    async def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """See :meth:`QueueStore.receive`; the long-poll suspends on the listener's doorbell."""
        request = _ClaimRequest(max_messages, visibility_timeout)
        claim = self._claims
        if wait <= 0:
            return await claim(request)
        if self._clock is not None:

            async def look() -> list[StoredMessage]:
                return await claim(request)

            return await apoll(look, wait, self._bell, self._clock)
        deadline = time.monotonic() + wait
        listener = self._listener
        self._listen()
        bell = self._bell
        while True:
            seen = bell.generation
            found = await claim(request)
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return found
            due_in = await self._run(self._core.next_due)
            await bell.await_ring(seen, _pause(remaining, due_in, listener.ready.is_set()))
            if deadline - time.monotonic() <= 0:
                return await claim(request)

    # settling

    async def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """See :meth:`QueueStore.ack`."""
        if transaction is None:
            return await self._acks(Receipt(message_id, token))
        return await self._run(
            self._core.ack, message_id, token, transaction is not None, transaction=transaction
        )

    async def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """See :meth:`QueueStore.ack_many`."""
        return await self._run(
            self._core.ack_many, receipts, transaction is not None, transaction=transaction
        )

    async def nack(
        self, message_id: str, token: str, delay: float, error: str | None
    ) -> NackOutcome:
        """See :meth:`QueueStore.nack`."""
        outcome = await self._run(self._core.nack, message_id, token, delay, error)
        if outcome == "requeued":
            self._bell.ring()
        return outcome

    async def extend_visibility(
        self, message_id: str, token: str, visibility_timeout: float
    ) -> bool:
        """See :meth:`QueueStore.extend_visibility`."""
        return await self._run(self._core.extend, message_id, token, visibility_timeout)

    async def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """See :meth:`QueueStore.dead_letter`."""
        return await self._run(self._core.dead_letter, message_id, token, reason)

    # inspecting

    async def peek(self, limit: int) -> list[QueuedMessage]:
        """See :meth:`QueueStore.peek`."""
        return await self._run(self._core.peek, limit)

    async def stats(self) -> QueueStats:
        """See :meth:`QueueStore.stats`."""
        return await self._run(self._core.stats)

    async def purge(self) -> int:
        """See :meth:`QueueStore.purge`."""
        return await self._run(self._core.purge)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """See :meth:`QueueStore.dead_letters`."""
        return await self._run(self._core.dead_letters, limit)

    async def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """See :meth:`QueueStore.peek_dead_letter`."""
        return await self._run(self._core.peek_dead_letter, message_id)

    async def redrive(self, message_ids: Sequence[str] | None) -> int:
        """See :meth:`QueueStore.redrive`."""
        count = await self._run(self._core.redrive, message_ids)
        if count:
            self._bell.ring()
        return count

    async def purge_dead_letters(self) -> int:
        """See :meth:`QueueStore.purge_dead_letters`."""
        return await self._run(self._core.purge_dead_letters)

    async def aclose(self) -> None:
        """Stop using the engine's listener (the engine's pools stay open)."""
        with self._listening_lock:
            if self._listening:
                self._listening = False
                self._listener.release()

    def __repr__(self) -> str:
        return f"AsyncPostgresQueueStore({self.name!r}, durable_acks={self.durable_acks})"
