"""The Redis queue store: streams with a consumer group per priority, one Lua script per call.

Keys of queue ``name`` share the hash tag ``{name}`` (one cluster slot), under
``seawall:q:{name}:`` (layout in ``lua/common.lua``):

* ``s0`` ... ``s9``: one stream per priority, each with the consumer group ``seawall``.
  A ready message is an entry not yet delivered to the group; a message in flight is an
  entry in the group's pending list (``XPENDING`` shows it with its delivery counter
  and idle time);
* ``m:<id>``: a hash per message (body, headers, delivery count, the current
  delivery's token, last error, ...);
* ``inflight`` and ``delayed``: sorted sets of visibility deadlines and delays;
* ``dead``: a stream of dead letters in the order they died.

Every operation is one ``EVALSHA`` (one round trip, atomic): send (``INCR`` id,
``XADD``), receive (move due delayed messages into their streams, reclaim deliveries
whose deadline passed with ``XCLAIM`` in their old place or dead-letter them when
spent, read new entries with ``XREADGROUP`` from the highest priority down, stamp
tokens and deadlines), ack (check the token, ``XACK`` + ``XDEL``), nack, extend,
dead-letter. Deadlines and delays use Redis ``TIME`` inside the scripts, never a
client's clock (``clock=`` replaces it in tests). Deduplication keys carry a TTL of
the window.

**Long-poll.** A receive that finds nothing waits with ``XREAD BLOCK`` on the ten
streams (and a ``wake`` stream touched by delayed sends and nacks) from where they
ended, on a connection of its own, so any new entry wakes it at once; the block never
outlasts the next delay or deadline, so due messages are served on time. It claims
only through the receive script, so a waiter that dies never holds a message.

**Transactions.** Redis has no SQL transaction to join: ``transaction=`` is refused.
**Guarantees**: as durable as the Redis persistence settings (AOF ``everysec`` can lose
the last second); run with ``maxmemory-policy noeviction``. Message ids are unique
within a queue (each queue counts its own, so a queue lives in one cluster slot).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, NamedTuple, TypeVar

from seawall.clock import Clock
from seawall.engines._base import Transaction
from seawall.engines.redis import RedisEngine, redis_errors
from seawall.errors import ConfigurationError, MissingExtraError
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
from seawall.messaging.queue._polling import Doorbell, apoll, poll
from seawall.messaging.queue._store import NackOutcome

try:
    import redis
    import redis.asyncio
    import redis.exceptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("redis", "redis") from exc

__all__ = [
    "KEY_PREFIX",
    "MAX_BLOCK",
    "REGISTRY_KEY",
    "AsyncRedisQueueStore",
    "RedisQueueStore",
    "queue_key_prefix",
    "queue_keys_pattern",
    "redis_queue_names",
]

T = TypeVar("T")

KEY_PREFIX = "seawall:q:"
"""Every queue key starts with this, then ``{<name>}:``."""
REGISTRY_KEY = "seawall:queues"
"""The set of declared queue names."""
MAX_BLOCK = 5.0
"""Longest single ``XREAD BLOCK`` of a waiting receive (it then looks again)."""
_MIN_BLOCK = 0.001
_CHUNK = 1000
"""Messages a purge or redrive script handles per call, so Redis never stalls long."""
_RECOVERY_PAUSE = 0.05
"""Pause after a blocking read lost its connection, before looking again."""


def queue_key_prefix(name: str) -> str:
    """The prefix of every key of queue ``name`` (its hash tag is the name)."""
    return f"{KEY_PREFIX}{{{name}}}:"


def queue_keys_pattern(name: str) -> str:
    """A ``SCAN MATCH`` pattern for every key of queue ``name``."""
    return queue_key_prefix(name) + "*"


class _Script:
    """One queue script: ``common.lua`` followed by its own body, with its SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        folder = resources.files(__package__).joinpath("lua")
        self.name = name
        self.source = (
            folder.joinpath("common.lua").read_bytes() + folder.joinpath(f"{name}.lua").read_bytes()
        )
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest()


@cache
def _script(name: str) -> _Script:
    return _Script(name)


class _Call(NamedTuple):
    """One script an operation asks its driver to run."""

    script: _Script
    args: tuple[Any, ...]


Operation = Generator[_Call, Any, T]
"""An operation written once: yields script calls, receives replies, returns a value."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _headers(value: bytes) -> Mapping[str, str] | None:
    return json.loads(value) if value else None


def _error(value: list[Any]) -> str | None:
    return _text(value[0]) if value else None


def _dead_letter(
    number: bytes,
    body: bytes,
    headers: bytes,
    priority: int,
    deliveries: int,
    enqueued_at: bytes,
    dead_at: bytes,
    reason: bytes,
    error: list[Any],
) -> DeadLetter:
    return DeadLetter(
        _text(number),
        body,
        _headers(headers) or {},
        priority,
        deliveries,
        float(enqueued_at),
        float(dead_at),
        _text(reason),
        _error(error),
    )


def _is_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) < 20


def _refuse_transaction(transaction: object) -> None:
    if transaction is not None:
        raise ConfigurationError(
            "transaction=... is not supported on the Redis engine: Redis has no SQL "
            "transaction to join (each queue operation is one atomic script); use "
            "PostgreSQL or SQLite to send or acknowledge inside a transaction"
        )


class _Core:
    """What both flavours share: script arguments, replies, events. No I/O happens here."""

    def __init__(
        self,
        name: str,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None,
        events: EventHub,
    ) -> None:
        self.name = name
        self.prefix = queue_key_prefix(name)
        self.max_deliveries = max_deliveries
        self.dedup_window = dedup_window
        self.clock = clock
        self.events = events
        self._max_text = str(max_deliveries)
        self._window_text = repr(float(dedup_window))

    def now(self) -> str:
        """The injected time for a script, or '' for Redis ``TIME``."""
        return "" if self.clock is None else repr(self.clock.now())

    def send_many(self, messages: Sequence[OutgoingMessage]) -> Operation[list[str]]:
        """Store messages in one script; see :meth:`QueueStore.send_many`."""
        args: list[Any] = [self.now(), self._window_text]
        for m in messages:
            args += (
                m.body,
                json.dumps(dict(m.headers), separators=(",", ":")) if m.headers else "",
                str(m.priority),
                repr(float(m.delay)),
                m.dedup_id or "",
            )
        reply = yield _Call(_script("send"), tuple(args))
        ids = [_text(value) for value in reply[0::2]]
        if self.events.active:
            for message, message_id, duplicate in zip(messages, ids, reply[1::2], strict=True):
                if duplicate and message.dedup_id is not None:
                    self.events.emit(MessageDeduplicated(self.name, message_id, message.dedup_id))
        return ids

    def claim(
        self, max_messages: int, visibility_timeout: float, hints: bool
    ) -> Operation[tuple[list[StoredMessage], float | None, list[bytes]]]:
        """Claim ready messages; with ``hints``, also when to look again if none were."""
        token = str(random.getrandbits(63))
        reply = yield _Call(
            _script("receive"),
            (
                max_messages,
                repr(float(visibility_timeout)),
                self._max_text,
                token,
                self.now(),
                "1" if hints else "0",
            ),
        )
        claimed = [
            StoredMessage(
                _text(message_id),
                body,
                _headers(headers),
                priority,
                deliveries,
                float(enqueued_at),
                token,
            )
            for message_id, body, headers, priority, deliveries, enqueued_at in reply[0]
        ]
        if reply[1] and self.events.active:
            for message_id, deliveries, reason in reply[1]:
                self.events.emit(
                    MessageDeadLettered(self.name, _text(message_id), _text(reason), deliveries)
                )
        if len(reply) < 4:
            return claimed, None, []
        due_in = float(reply[2]) if reply[2] else None
        return claimed, due_in, reply[3]

    def ack_many(self, receipts: Sequence[ReceiptLike]) -> Operation[list[ReceiptLike]]:
        """Acknowledge receipts in one script; returns the stale ones."""
        valid = [receipt for receipt in receipts if _is_id(receipt.id)]
        stale = [receipt for receipt in receipts if not _is_id(receipt.id)]
        if valid:
            args: list[str] = []
            for receipt in valid:
                args += (receipt.id, receipt.token)
            positions = yield _Call(_script("ack"), tuple(args))
            stale += [valid[position - 1] for position in positions]
        return stale

    def nack(
        self, message_id: str, token: str, delay: float, error: str | None
    ) -> Operation[NackOutcome]:
        """Release a delivery; see :meth:`QueueStore.nack`."""
        if not _is_id(message_id):
            return "stale"
        reply = yield _Call(
            _script("nack"),
            (
                message_id,
                token,
                repr(float(delay)),
                error or "",
                "0" if error is None else "1",
                self._max_text,
                self.now(),
            ),
        )
        outcome = _text(reply[0])
        if outcome == "dead_lettered":
            if self.events.active:
                self.events.emit(
                    MessageDeadLettered(self.name, message_id, _text(reply[2]), reply[1])
                )
            return "dead_lettered"
        return "requeued" if outcome == "requeued" else "stale"

    def extend(self, message_id: str, token: str, visibility_timeout: float) -> Operation[bool]:
        """Move a delivery's deadline; see :meth:`QueueStore.extend_visibility`."""
        if not _is_id(message_id):
            return False
        reply = yield _Call(
            _script("extend"), (message_id, token, repr(float(visibility_timeout)), self.now())
        )
        return bool(reply == 1)

    def dead_letter(self, message_id: str, token: str, reason: str) -> Operation[bool]:
        """Dead-letter a held message; see :meth:`QueueStore.dead_letter`."""
        if not _is_id(message_id):
            return False
        deliveries = yield _Call(_script("dead_letter"), (message_id, token, reason, self.now()))
        if deliveries < 0:
            return False
        if self.events.active:
            self.events.emit(MessageDeadLettered(self.name, message_id, reason, deliveries))
        return True

    def peek(self, limit: int) -> Operation[list[QueuedMessage]]:
        """The next ready messages; see :meth:`QueueStore.peek`."""
        rows = yield _Call(_script("peek"), (limit, self.now()))
        return [
            QueuedMessage(
                _text(message_id),
                body,
                _headers(headers) or {},
                priority,
                deliveries,
                float(enqueued_at),
                float(available_at),
                _error(error),
            )
            for (
                message_id,
                body,
                headers,
                priority,
                deliveries,
                enqueued_at,
                available_at,
                error,
            ) in rows
        ]

    def stats(self) -> Operation[QueueStats]:
        """Counts per state; see :meth:`QueueStore.stats`."""
        ready, in_flight, delayed, dead = yield _Call(_script("stats"), (self.now(),))
        return QueueStats(ready, in_flight, delayed, dead)

    def dead_letters(self, limit: int, message_id: str = "") -> Operation[list[DeadLetter]]:
        """The oldest ``limit`` dead letters, or the one with ``message_id``."""
        rows = yield _Call(_script("dead_letters"), ("" if message_id else limit, message_id))
        return [_dead_letter(*row) for row in rows]

    def redrive(self, message_ids: Sequence[str] | None) -> Operation[int]:
        """Dead letters back in line, a chunk per script; see :meth:`QueueStore.redrive`."""
        moved = 0
        if message_ids is None:
            while True:
                count = yield _Call(_script("redrive"), (self.now(), "1", _CHUNK))
                moved += int(count)
                if count < _CHUNK:
                    return moved
        ids = [value for value in message_ids if _is_id(value)]
        for start in range(0, len(ids), _CHUNK):
            count = yield _Call(_script("redrive"), (self.now(), "0", *ids[start : start + _CHUNK]))
            moved += int(count)
        return moved

    def chunked(self, script: str) -> Operation[int]:
        """Run a purge script until it removes less than a chunk; the total removed."""
        total = 0
        while True:
            count = yield _Call(_script(script), (_CHUNK,))
            total += int(count)
            if count < _CHUNK:
                return total


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _packed(call: _Call, prefix: bytes) -> bytes:
    """``EVALSHA sha 1 <prefix> args...`` in RESP, ready for the socket."""
    parts = [
        b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n%s"
        % (
            4 + len(call.args),
            call.script.sha.encode(),
            prefix,
        )
    ]
    for arg in call.args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _connection_kwargs(pool: Any) -> dict[str, Any]:
    # Bodies are bytes: never let a decode_responses=True engine turn them into text.
    return {**pool.connection_kwargs, "decode_responses": False}


class _Links:
    """This store's own connections: each call is one write and one read on a socket.

    Skips the client's per-command machinery (the hot path is one ``EVALSHA``). An idle
    connection the server dropped (restart, ``CLIENT KILL``, idle timeout) fails on
    reuse before the script runs; the call is then sent once more on a fresh one.
    """

    def __init__(self, engine: RedisEngine) -> None:
        self._engine = engine
        self._idle: deque[Any] = deque()
        self._pid = os.getpid()

    def _new(self) -> Any:
        pool = self._engine.client.connection_pool
        return pool.connection_class(**_connection_kwargs(pool))

    def call(self, command: bytes, source: bytes) -> Any:
        """Send one packed ``EVALSHA`` and return the reply (loading the script if needed)."""
        if self._pid != os.getpid():  # forked: the parent's sockets are not ours
            self._idle = deque()
            self._pid = os.getpid()
        try:
            connection, reused = self._idle.pop(), True
        except IndexError:
            connection, reused = self._new(), False
        try:
            reply = _round_trip(connection, command, source)
        except redis.ConnectionError:
            connection.disconnect()
            if not reused:
                raise
            connection = self._new()
            try:
                reply = _round_trip(connection, command, source)
            except BaseException:
                connection.disconnect()
                raise
        except redis.ResponseError:  # an error reply: the connection itself is fine
            self._idle.append(connection)
            raise
        except BaseException:  # interrupted mid round trip: the reply may still come
            connection.disconnect()
            raise
        self._idle.append(connection)
        return reply

    def close(self) -> None:
        """Close the idle connections."""
        while self._idle:
            self._idle.pop().disconnect()


class _AsyncLinks:
    """Asyncio twin of :class:`_Links` on the engine's asyncio pool.

    Borrowing from the engine's pool (a few microseconds more than keeping sockets of
    our own) means ``engine.aclose()`` closes them on their own event loop.
    """

    def __init__(self, engine: RedisEngine) -> None:
        self._engine = engine

    async def call(self, command: bytes, source: bytes) -> Any:
        """See :meth:`_Links.call`."""
        pool: Any = self._engine.async_client.connection_pool  # redis-py leaves it untyped
        connection = await pool.get_connection()
        try:
            try:
                return await _around_trip(connection, command, source)
            except redis.ConnectionError:
                # A connection the server dropped before the script ran: once more.
                await connection.disconnect(nowait=True)
                await pool.release(connection)
                connection = await pool.get_connection()
                return await _around_trip(connection, command, source)
        except redis.ResponseError:  # an error reply: the connection itself is fine
            raise
        except BaseException:  # interrupted mid round trip: the reply may still come
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)


def _round_trip(connection: Any, command: bytes, source: bytes) -> Any:
    connection.send_packed_command((command,), False)
    try:
        return connection.read_response()
    except redis.exceptions.NoScriptError:
        connection.send_command("SCRIPT", "LOAD", source)
        connection.read_response()
        connection.send_packed_command((command,), False)
        return connection.read_response()


async def _around_trip(connection: Any, command: bytes, source: bytes) -> Any:
    await connection.send_packed_command((command,), False)
    try:
        return await connection.read_response()
    except redis.exceptions.NoScriptError:
        await connection.send_command("SCRIPT", "LOAD", source)
        await connection.read_response()
        await connection.send_packed_command((command,), False)
        return await connection.read_response()


def _drive(links: _Links, prefix: bytes, operation: Operation[T]) -> T:
    """Run an operation's scripts, feeding each reply back."""
    try:
        call = next(operation)
        while True:
            call = operation.send(links.call(_packed(call, prefix), call.script.source))
    except StopIteration as stop:
        result: T = stop.value
        return result


async def _adrive(links: _AsyncLinks, prefix: bytes, operation: Operation[T]) -> T:
    """Asyncio twin of :func:`_drive`."""
    try:
        call = next(operation)
        while True:
            reply = await links.call(_packed(call, prefix), call.script.source)
            call = operation.send(reply)
    except StopIteration as stop:
        result: T = stop.value
        return result


def _block_for(remaining: float, due_in: float | None) -> float:
    """How long an idle receive blocks (sans-I/O): never past its wait or the next due time."""
    pause = min(remaining, MAX_BLOCK)
    if due_in is not None:
        pause = min(pause, max(due_in, _MIN_BLOCK))
    return pause


def _streams(prefix: str, tails: list[bytes]) -> dict[str, bytes]:
    """The keys a waiting receive blocks on, each from where it ended."""
    keys = [f"{prefix}s{priority}" for priority in range(10)] + [f"{prefix}wake"]
    return dict(zip(keys, tails, strict=True))


_doorbells: weakref.WeakValueDictionary[tuple[str, str], Doorbell] = weakref.WeakValueDictionary()
_doorbells_lock = threading.Lock()


def _doorbell_for(url: str, name: str) -> Doorbell:
    """Rung by every send of this process to the queue (tests' manual-clock long-polls)."""
    with _doorbells_lock:
        bell = _doorbells.get((url, name))
        if bell is None:
            bell = _doorbells[(url, name)] = Doorbell()
        return bell


def _blocking_options(engine: RedisEngine) -> dict[str, Any]:
    """The engine's options with a socket timeout that outlasts the longest block."""
    options = dict(engine.options)
    timeout = options.get("socket_timeout")
    options["socket_timeout"] = MAX_BLOCK + (timeout if timeout else 5.0)
    return options


def redis_queue_names(engine: RedisEngine) -> list[str]:
    """The names of the queues declared on this Redis."""
    with redis_errors(engine.url):
        # redis-py types every reply as "Awaitable | value", even on the sync client.
        names: set[Any] = engine.client.smembers(REGISTRY_KEY)  # type: ignore[assignment]
        return sorted(_text(name) for name in names)


def _check_engine(engine: object) -> RedisEngine:
    if not isinstance(engine, RedisEngine):
        raise ConfigurationError(f"the Redis queue store needs a RedisEngine, got {engine!r}")
    if engine.options.get("decode_responses"):
        raise ConfigurationError(
            "the Redis queue store needs an engine with decode_responses=False (the default): "
            "message bodies are bytes"
        )
    return engine


class RedisQueueStore:
    """A :class:`~seawall.messaging.queue.QueueStore` on Redis streams (see the module doc)."""

    def __init__(
        self,
        engine: RedisEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        self._engine = _check_engine(engine)
        self.name = name
        self.max_deliveries = max_deliveries
        self.events = events if events is not None else EventHub(parent=hub)
        self._core = _Core(name, max_deliveries, dedup_window, clock, self.events)
        self._prefix = self._core.prefix
        self._prefix_bulk = _bulk(self._prefix.encode())
        self._links = _Links(engine)
        self._clock = clock
        self._bell = _doorbell_for(engine.url, name)
        self._blocking_client: redis.Redis | None = None
        self._blocking_lock = threading.Lock()
        with redis_errors(engine.url):
            client = engine.client
            if create:
                client.sadd(REGISTRY_KEY, name)
            elif not client.sismember(REGISTRY_KEY, name):
                raise UnknownQueueError(name, redis_queue_names(engine))

    def _run(self, make: Callable[..., Operation[T]], *args: Any) -> T:
        with redis_errors(self._engine.url):
            return _drive(self._links, self._prefix_bulk, make(*args))

    def _blocking(self) -> redis.Redis:
        """A client of this store's own for ``XREAD BLOCK`` (never holds a shared connection)."""
        with self._blocking_lock:
            if self._blocking_client is None:
                self._blocking_client = redis.Redis.from_url(
                    self._engine.url, **_blocking_options(self._engine)
                )
            return self._blocking_client

    @property
    def doorbell(self) -> Doorbell:
        """Rung on every send of this process to this queue."""
        return self._bell

    @property
    def clock(self) -> Clock | None:
        """The injected clock, or None for Redis ``TIME``."""
        return self._clock

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
        _refuse_transaction(transaction)
        message = OutgoingMessage(body, headers, priority, delay, dedup_id)
        message_id = self._run(self._core.send_many, (message,))[0]
        self._bell.ring()
        return message_id

    def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """Store every message in one atomic script; see :meth:`QueueStore.send_many`."""
        _refuse_transaction(transaction)
        if not messages:
            return []
        ids = self._run(self._core.send_many, messages)
        self._bell.ring()
        return ids

    def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """Claim up to ``max_messages``; see :meth:`QueueStore.receive`."""
        claim = self._core.claim
        if wait <= 0:
            return self._run(claim, max_messages, visibility_timeout, False)[0]
        if self._clock is not None:
            return poll(
                lambda: self._run(claim, max_messages, visibility_timeout, False)[0],
                wait,
                self._bell,
                self._clock,
            )
        deadline = time.monotonic() + wait
        while True:
            found, due_in, tails = self._run(claim, max_messages, visibility_timeout, True)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            block = _block_for(remaining, due_in)
            try:
                self._blocking().xread(
                    _streams(self._prefix, tails),  # type: ignore[arg-type]  # dict is invariant
                    count=1,
                    block=max(1, int(block * 1000)),
                )
            except (redis.ConnectionError, redis.TimeoutError):
                # Our waiting connection dropped (CLIENT KILL, a restart): look again
                # shortly; the next look reconnects, or reports Redis unreachable.
                time.sleep(min(_RECOVERY_PAUSE, block))

    def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the held message; see :meth:`QueueStore.ack`."""
        _refuse_transaction(transaction)
        return not self.ack_many((_Receipt(message_id, token),), None)

    def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """Acknowledge each receipt in one script; see :meth:`QueueStore.ack_many`."""
        _refuse_transaction(transaction)
        return self._run(self._core.ack_many, receipts)

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

    def peek(self, limit: int) -> list[QueuedMessage]:
        """The next ready messages; see :meth:`QueueStore.peek`."""
        return self._run(self._core.peek, limit)

    def stats(self) -> QueueStats:
        """Counts per state; see :meth:`QueueStore.stats`."""
        return self._run(self._core.stats)

    def purge(self) -> int:
        """Delete every live message; see :meth:`QueueStore.purge`."""
        return self._run(self._core.chunked, "purge")

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The oldest dead letters; see :meth:`QueueStore.dead_letters`."""
        return self._run(self._core.dead_letters, limit)

    def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """One dead letter; see :meth:`QueueStore.peek_dead_letter`."""
        if not _is_id(message_id):
            return None
        found = self._run(self._core.dead_letters, 1, message_id)
        return found[0] if found else None

    def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Make dead letters ready again; see :meth:`QueueStore.redrive`."""
        count = self._run(self._core.redrive, message_ids)
        if count:
            self._bell.ring()
        return count

    def purge_dead_letters(self) -> int:
        """Delete every dead letter; see :meth:`QueueStore.purge_dead_letters`."""
        return self._run(self._core.chunked, "purge_dead")

    def close(self) -> None:
        """Close this store's connections (the engine's client stays open)."""
        self._links.close()
        with self._blocking_lock:
            if self._blocking_client is not None:
                self._blocking_client.close()
                self._blocking_client = None

    def __repr__(self) -> str:
        return f"RedisQueueStore({self.name!r})"


class _Receipt(NamedTuple):
    id: str
    token: str


class AsyncRedisQueueStore:
    """The native asyncio twin of :class:`RedisQueueStore` (redis-py's asyncio client).

    Its connections belong to the event loop that first uses it.
    """

    def __init__(
        self,
        engine: RedisEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        self._engine = _check_engine(engine)
        self.name = name
        self.max_deliveries = max_deliveries
        self.events = events if events is not None else EventHub(parent=hub)
        self._core = _Core(name, max_deliveries, dedup_window, clock, self.events)
        self._prefix = self._core.prefix
        self._prefix_bulk = _bulk(self._prefix.encode())
        self._links = _AsyncLinks(engine)
        self._clock = clock
        self._bell = _doorbell_for(engine.url, name)
        self._create = create
        self._declared = False
        self._blocking_client: redis.asyncio.Redis | None = None

    async def _run(self, make: Callable[..., Operation[T]], *args: Any) -> T:
        client = self._engine.async_client
        with redis_errors(self._engine.url):
            if not self._declared:
                await self._declare(client)
            return await _adrive(self._links, self._prefix_bulk, make(*args))

    async def _declare(self, client: redis.asyncio.Redis) -> None:
        # redis-py types every reply as "Awaitable | value": mypy cannot tell it is awaitable.
        if self._create:
            await client.sadd(REGISTRY_KEY, self.name)  # type: ignore[misc]
        elif not await client.sismember(REGISTRY_KEY, self.name):  # type: ignore[misc]
            names: set[Any] = await client.smembers(REGISTRY_KEY)  # type: ignore[misc]
            raise UnknownQueueError(self.name, sorted(_text(name) for name in names))
        self._declared = True

    def _blocking(self) -> redis.asyncio.Redis:
        if self._blocking_client is None:
            self._blocking_client = redis.asyncio.Redis.from_url(
                self._engine.url, **_blocking_options(self._engine)
            )
        return self._blocking_client

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
        _refuse_transaction(transaction)
        message = OutgoingMessage(body, headers, priority, delay, dedup_id)
        message_id = (await self._run(self._core.send_many, (message,)))[0]
        self._bell.ring()
        return message_id

    async def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """See :meth:`QueueStore.send_many`."""
        _refuse_transaction(transaction)
        if not messages:
            return []
        ids = await self._run(self._core.send_many, messages)
        self._bell.ring()
        return ids

    async def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """See :meth:`QueueStore.receive`; the long-poll suspends in ``XREAD BLOCK``."""
        claim = self._core.claim
        if wait <= 0:
            return (await self._run(claim, max_messages, visibility_timeout, False))[0]
        if self._clock is not None:

            async def look() -> list[StoredMessage]:
                return (await self._run(claim, max_messages, visibility_timeout, False))[0]

            return await apoll(look, wait, self._bell, self._clock)
        deadline = time.monotonic() + wait
        while True:
            found, due_in, tails = await self._run(claim, max_messages, visibility_timeout, True)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            block = _block_for(remaining, due_in)
            try:
                await self._blocking().xread(
                    _streams(self._prefix, tails),  # type: ignore[arg-type]  # dict is invariant
                    count=1,
                    block=max(1, int(block * 1000)),
                )
            except (redis.ConnectionError, redis.TimeoutError):
                await asyncio.sleep(min(_RECOVERY_PAUSE, block))

    async def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """See :meth:`QueueStore.ack`."""
        _refuse_transaction(transaction)
        return not await self._run(self._core.ack_many, (_Receipt(message_id, token),))

    async def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """See :meth:`QueueStore.ack_many`."""
        _refuse_transaction(transaction)
        return await self._run(self._core.ack_many, receipts)

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

    async def peek(self, limit: int) -> list[QueuedMessage]:
        """See :meth:`QueueStore.peek`."""
        return await self._run(self._core.peek, limit)

    async def stats(self) -> QueueStats:
        """See :meth:`QueueStore.stats`."""
        return await self._run(self._core.stats)

    async def purge(self) -> int:
        """See :meth:`QueueStore.purge`."""
        return await self._run(self._core.chunked, "purge")

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """See :meth:`QueueStore.dead_letters`."""
        return await self._run(self._core.dead_letters, limit)

    async def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """See :meth:`QueueStore.peek_dead_letter`."""
        if not _is_id(message_id):
            return None
        found = await self._run(self._core.dead_letters, 1, message_id)
        return found[0] if found else None

    async def redrive(self, message_ids: Sequence[str] | None) -> int:
        """See :meth:`QueueStore.redrive`."""
        count = await self._run(self._core.redrive, message_ids)
        if count:
            self._bell.ring()
        return count

    async def purge_dead_letters(self) -> int:
        """See :meth:`QueueStore.purge_dead_letters`."""
        return await self._run(self._core.chunked, "purge_dead")

    async def aclose(self) -> None:
        """Close this store's connections (the engine's clients stay open)."""
        if self._blocking_client is not None:
            await self._blocking_client.aclose()
            self._blocking_client = None

    def __repr__(self) -> str:
        return f"AsyncRedisQueueStore({self.name!r})"
