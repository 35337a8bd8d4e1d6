"""The Redis topic store: one stream per topic, a consumer group per group, Lua bookkeeping.

Keys of topic ``name`` share the hash tag ``{name}`` (one cluster slot) under
``seawall:t:{name}:`` (layout in ``lua/common.lua``). Messages are stream entries
with the id ``<offset>-0``; each seawall group is also a stream consumer group, so
``XINFO GROUPS`` and ``XPENDING`` show it with the usual tools. Every operation is
one Lua script (one round trip, atomic): publish (``INCR`` + ``XADD``, then
``XTRIM MAXLEN``/``MINID`` for retention), receive (redeliver due messages, then
``XREADGROUP`` fresh ones), ack, nack, seek (``XGROUP DESTROY``/``CREATE`` at the
offset), lag.

**Per-key order** is kept by the scripts, not by Redis: a group keeps, per key, the
list of its pending offsets; only the head of a list is ever delivered, and
acknowledging (or dead-lettering) it makes the next one ready. Because every
receive and ack is one atomic script, this holds for any number of consumers.

**Deadlines** live in a sorted set per group scored by visibility deadline (Redis
``TIME`` inside the scripts, or the injected ``clock=``): expired deliveries are
reclaimed by the next receive in their group, and counted towards
``max_deliveries``; the stream's pending list only mirrors what is unacknowledged.

**Long-poll**: a receive that finds nothing waits with ``XREAD BLOCK`` on the
stream from its last entry (any publish wakes it), never past the next deadline and
never longer than a second, then looks again. **Transactions**: Redis has none to
join; ``transaction=`` is refused. **Guarantees**: as durable as the server's
persistence settings (AOF ``everysec`` can lose the last second).
"""

from __future__ import annotations

import json
import random
import threading
import time
import weakref
from collections.abc import Generator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, NamedTuple, TypeVar

from seawall.clock import Clock
from seawall.engines._base import Transaction
from seawall.engines.redis import RedisEngine, redis_errors
from seawall.errors import ConfigurationError, MissingExtraError
from seawall.events import EventHub, hub
from seawall.messaging.queue._polling import Doorbell, apoll, poll
from seawall.messaging.topic._errors import UnknownGroupError, UnknownTopicError
from seawall.messaging.topic._events import TopicMessageDeadLettered
from seawall.messaging.topic._model import (
    NackOutcome,
    OutgoingRecord,
    Start,
    StoredTopicMessage,
    TopicDeadLetter,
)
from seawall.messaging.topic._store import MAX_PENDING

try:
    import redis  # noqa: F401  (the driver must be installed)
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("redis", "redis") from exc

__all__ = [
    "KEY_PREFIX",
    "REGISTRY_KEY",
    "RedisTopicStore",
    "forget_topic",
    "redis_topic_names",
    "topic_key_prefix",
]

T = TypeVar("T")

KEY_PREFIX = "seawall:t:"
"""Every topic key starts with this, then ``{<name>}:``."""
REGISTRY_KEY = "seawall:topics"
"""The set of declared topic names."""
_MAX_BLOCK = 1.0
_MIN_BLOCK = 0.001
_TRIM_INTERVAL = 1.0


def topic_key_prefix(name: str) -> str:
    """The prefix of every key of topic ``name`` (its hash tag is the name)."""
    return f"{KEY_PREFIX}{{{name}}}:"


@cache
def _source(name: str) -> bytes:
    folder = resources.files(__package__).joinpath("lua")
    return folder.joinpath("common.lua").read_bytes() + folder.joinpath(f"{name}.lua").read_bytes()


class _Call(NamedTuple):
    """One script an operation asks its driver to run."""

    script: str
    args: tuple[Any, ...]


Operation = Generator[_Call, Any, T]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _headers(value: Any) -> Mapping[str, str] | None:
    return json.loads(value) if value else None


def redis_topic_names(engine: RedisEngine) -> list[str]:
    """The names of the topics declared on this Redis server."""
    with redis_errors(engine.url):
        names: Any = engine.client.smembers(REGISTRY_KEY)
        return sorted(_text(name) for name in names)


def forget_topic(engine: RedisEngine, name: str) -> None:
    """Delete every key of topic ``name`` and its registration (tests, operators)."""
    client = engine.client
    with redis_errors(engine.url):
        keys = list(client.scan_iter(match=topic_key_prefix(name) + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.srem(REGISTRY_KEY, name)


_doorbells: weakref.WeakValueDictionary[tuple[str, str], Doorbell] = weakref.WeakValueDictionary()
_doorbells_lock = threading.Lock()


def _doorbell_for(url: str, name: str) -> Doorbell:
    with _doorbells_lock:
        bell = _doorbells.get((url, name))
        if bell is None:
            bell = _doorbells[(url, name)] = Doorbell()
        return bell


def _refuse(transaction: object) -> None:
    if transaction is not None:
        raise ConfigurationError(
            "transaction=... is not supported on the Redis engine: Redis has no SQL "
            "transaction to join (each topic operation is one atomic script); use PostgreSQL "
            "or SQLite to publish inside a transaction"
        )


class _Core:
    """Script arguments, replies and events, shared by the sync and asyncio drivers."""

    def __init__(
        self,
        name: str,
        retention_age: float | None,
        retention_count: int | None,
        clock: Clock | None,
        events: EventHub,
    ) -> None:
        self.name = name
        self.keep = "" if retention_count is None else str(retention_count)
        self.age = "" if retention_age is None else repr(float(retention_age))
        self.clock = clock
        self.events = events
        self.next_trim = 0.0

    def now(self) -> str:
        return "" if self.clock is None else f"{self.clock.now():.6f}"

    def publish(self, records: Sequence[OutgoingRecord]) -> Operation[list[int]]:
        args: list[Any] = [self.now(), self.keep, self.age]
        for record in records:
            args.append(record.key or "")
            args.append("1" if record.key is not None else "0")
            args.append(record.body)
            args.append(
                json.dumps(dict(record.headers), separators=(",", ":")) if record.headers else ""
            )
        first = int((yield _Call("publish", tuple(args))))
        return list(range(first, first + len(records)))

    def declare_group(self, group: str, start: Start, create: bool) -> Operation[None]:
        found = yield _Call("declare_group", (group, str(start), "1" if create else "0"))
        if not int(found):
            raise UnknownGroupError(self.name, group, (yield from self.group_names()))

    def group_names(self) -> Operation[list[str]]:
        names = yield _Call("smembers", ())
        return sorted(_text(name) for name in names)

    def receive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        moment: float,
    ) -> Operation[tuple[list[StoredTopicMessage], float | None, int]]:
        """Claim messages; also returns the next due time and the last offset."""
        trim = (self.keep or self.age) and moment >= self.next_trim
        if trim:
            self.next_trim = moment + _TRIM_INTERVAL
        token = str(random.getrandbits(62))
        reply = yield _Call(
            "receive",
            (
                group,
                max_messages,
                repr(float(visibility_timeout)),
                max_deliveries,
                token,
                self.now(),
                self.keep,
                self.age,
                MAX_PENDING,
                "1" if trim else "0",
            ),
        )
        if int(reply[0]) < 0:
            raise UnknownGroupError(self.name, group, (yield from self.group_names()))
        _, due, last, dead, claimed = reply
        if dead and self.events.active:
            for offset, reason, deliveries in dead:
                self.events.emit(
                    TopicMessageDeadLettered(
                        self.name, group, int(offset), _text(reason), int(deliveries)
                    )
                )
        messages = [
            StoredTopicMessage(
                int(offset),
                None if key is None else _text(key),
                body,
                _headers(headers),
                float(published_at),
                int(deliveries),
                token,
            )
            for offset, key, body, headers, published_at, deliveries in claimed
        ]
        messages.sort()
        return messages, None if due is None else float(due), int(last)

    def ack(self, group: str, offset: int, token: str) -> Operation[bool]:
        return bool(int((yield _Call("ack", (group, offset, token)))))

    def nack(
        self,
        group: str,
        offset: int,
        token: str,
        delay: float,
        error: str | None,
        max_deliveries: int,
        kill: str | None,
    ) -> Operation[NackOutcome]:
        reply = yield _Call(
            "nack",
            (
                group,
                offset,
                token,
                repr(float(delay)),
                "0" if error is None else "1",
                error or "",
                max_deliveries,
                kill or "",
                self.now(),
            ),
        )
        outcome = _text(reply[0])
        if outcome == "dead_lettered":
            if self.events.active:
                self.events.emit(
                    TopicMessageDeadLettered(
                        self.name, group, offset, _text(reply[1]), int(reply[2])
                    )
                )
            return "dead_lettered"
        return "requeued" if outcome == "requeued" else "stale"

    def seek(self, group: str, offset: int | None, at: float | None) -> Operation[int]:
        args = (group, "" if offset is None else str(offset), "" if at is None else repr(at))
        found = int((yield _Call("seek", args)))
        if found < 0:
            raise UnknownGroupError(self.name, group, (yield from self.group_names()))
        return found

    def lag(self, group: str) -> Operation[int]:
        found = int((yield _Call("lag", (group,))))
        if found < 0:
            raise UnknownGroupError(self.name, group, (yield from self.group_names()))
        return found

    def dead_letters(self, group: str, limit: int) -> Operation[list[TopicDeadLetter]]:
        entries = yield _Call("dead_letters", (group, limit))
        letters = []
        for _, raw in entries:
            f = {_text(field): value for field, value in raw.items()}
            letters.append(
                TopicDeadLetter(
                    self.name,
                    group,
                    int(f["o"]),
                    _text(f["k"]) if _text(f["hk"]) == "1" else None,
                    f["b"],
                    _headers(f["h"]) or {},
                    float(f["t"]),
                    int(f["d"]),
                    float(f["at"]),
                    _text(f["r"]),
                    _text(f["e"]) if _text(f["he"]) == "1" else None,
                )
            )
        return letters


_SCRIPTS = ("publish", "declare_group", "receive", "ack", "nack", "seek", "lag")


class RedisTopicStore:
    """A :class:`~seawall.messaging.topic.TopicStore` on Redis streams (see the module docstring)."""

    def __init__(
        self,
        engine: RedisEngine,
        name: str,
        *,
        retention_age: float | None = None,
        retention_count: int | None = None,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        if not isinstance(engine, RedisEngine):
            raise ConfigurationError(f"the Redis topic store needs a RedisEngine, got {engine!r}")
        self._engine = engine
        self.name = name
        self.retention_age = retention_age
        self.retention_count = retention_count
        self.events = events if events is not None else EventHub(parent=hub)
        self._clock = clock
        self._core = _Core(name, retention_age, retention_count, clock, self.events)
        self._prefix = topic_key_prefix(name)
        self._stream = self._prefix + "s"
        self._bell = _doorbell_for(engine.url, name)
        self._scripts: dict[str, Any] = {}
        self._async_scripts: dict[str, Any] = {}
        with redis_errors(engine.url):
            client = engine.client
            if create:
                client.sadd(REGISTRY_KEY, name)
            elif not client.sismember(REGISTRY_KEY, name):
                raise UnknownTopicError(name, redis_topic_names(engine))

    def _moment(self) -> float:
        return self._clock.now() if self._clock is not None else time.monotonic()

    # -- drivers ---------------------------------------------------------------------------

    def _call(self, call: _Call) -> Any:
        client = self._engine.client
        if call.script == "smembers":
            return client.smembers(self._prefix + "groups")
        if call.script == "dead_letters":
            group, limit = call.args
            return client.xrange(f"{self._prefix}dl:{group}", count=limit)
        script = self._scripts.get(call.script)
        if script is None:
            script = self._scripts[call.script] = client.register_script(_source(call.script))
        return script(keys=[self._prefix], args=list(call.args))

    async def _acall(self, call: _Call) -> Any:
        client: Any = self._engine.async_client
        if call.script == "smembers":
            return await client.smembers(self._prefix + "groups")
        if call.script == "dead_letters":
            group, limit = call.args
            return await client.xrange(f"{self._prefix}dl:{group}", count=limit)
        script = self._async_scripts.get(call.script)
        if script is None:
            script = self._async_scripts[call.script] = client.register_script(_source(call.script))
        return await script(keys=[self._prefix], args=list(call.args))

    def _run(self, operation: Operation[T]) -> T:
        with redis_errors(self._engine.url):
            try:
                call = next(operation)
                while True:
                    call = operation.send(self._call(call))
            except StopIteration as stop:
                result: T = stop.value
                return result

    async def _arun(self, operation: Operation[T]) -> T:
        with redis_errors(self._engine.url):
            try:
                call = next(operation)
                while True:
                    call = operation.send(await self._acall(call))
            except StopIteration as stop:
                result: T = stop.value
                return result

    # -- the contract ----------------------------------------------------------------------

    def publish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """Append every record in one script; see :meth:`TopicStore.publish`."""
        _refuse(transaction)
        offsets = self._run(self._core.publish(records))
        self._bell.ring()
        return offsets

    def declare_group(self, group: str, start: Start, create: bool) -> None:
        """Create the group unless it exists; see :meth:`TopicStore.declare_group`."""
        self._run(self._core.declare_group(group, start, create))

    def groups(self) -> list[str]:
        """The topic's groups; see :meth:`TopicStore.groups`."""
        return self._run(self._core.group_names())

    def receive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """Claim messages for the group; see :meth:`TopicStore.receive`."""

        def look() -> tuple[list[StoredTopicMessage], float | None, int]:
            operation = self._core.receive(
                group, max_messages, visibility_timeout, max_deliveries, self._moment()
            )
            return self._run(operation)

        if wait <= 0:
            return look()[0]
        if self._clock is not None:
            return poll(lambda: look()[0], wait, self._bell, self._clock)
        deadline = time.monotonic() + wait
        client = self._engine.client
        while True:
            found, due, last = look()
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            block = _block(remaining, due)
            with redis_errors(self._engine.url):
                client.xread({self._stream: f"{last}-0"}, count=1, block=int(block * 1000))

    def ack(self, group: str, offset: int, token: str, transaction: Transaction | None) -> bool:
        """Settle the delivery; see :meth:`TopicStore.ack`."""
        _refuse(transaction)
        done = self._run(self._core.ack(group, offset, token))
        if done:
            self._bell.ring()
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
        outcome = self._run(
            self._core.nack(group, offset, token, delay, error, max_deliveries, kill)
        )
        if outcome != "stale":
            self._bell.ring()
        return outcome

    def seek(self, group: str, offset: int) -> None:
        """Restart the group at ``offset``; see :meth:`TopicStore.seek`."""
        self._run(self._core.seek(group, offset, None))
        self._bell.ring()

    def seek_time(self, group: str, timestamp: float) -> int:
        """Restart the group at a time; see :meth:`TopicStore.seek_time`."""
        offset = self._run(self._core.seek(group, None, timestamp))
        self._bell.ring()
        return offset

    def lag(self, group: str) -> int:
        """Unacknowledged retained messages; see :meth:`TopicStore.lag`."""
        return self._run(self._core.lag(group))

    def dead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """The group's dead letters; see :meth:`TopicStore.dead_letters`."""
        return self._run(self._core.dead_letters(group, limit))

    def close(self) -> None:
        """Nothing of its own to release (the engine's clients stay open)."""

    # -- asyncio twins -----------------------------------------------------------------------

    async def apublish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """See :meth:`publish`."""
        _refuse(transaction)
        offsets = await self._arun(self._core.publish(records))
        self._bell.ring()
        return offsets

    async def adeclare_group(self, group: str, start: Start, create: bool) -> None:
        """See :meth:`declare_group`."""
        await self._arun(self._core.declare_group(group, start, create))

    async def areceive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """See :meth:`receive`; the long-poll blocks on the asyncio client."""

        async def look() -> tuple[list[StoredTopicMessage], float | None, int]:
            operation = self._core.receive(
                group, max_messages, visibility_timeout, max_deliveries, self._moment()
            )
            return await self._arun(operation)

        if wait <= 0:
            return (await look())[0]
        if self._clock is not None:

            async def attempt() -> list[StoredTopicMessage]:
                return (await look())[0]

            return await apoll(attempt, wait, self._bell, self._clock)
        deadline = time.monotonic() + wait
        client = self._engine.async_client
        while True:
            found, due, last = await look()
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            block = _block(remaining, due)
            with redis_errors(self._engine.url):
                await client.xread({self._stream: f"{last}-0"}, count=1, block=int(block * 1000))

    async def aack(
        self, group: str, offset: int, token: str, transaction: Transaction | None
    ) -> bool:
        """See :meth:`ack`."""
        _refuse(transaction)
        done = await self._arun(self._core.ack(group, offset, token))
        if done:
            self._bell.ring()
        return done

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
        outcome = await self._arun(
            self._core.nack(group, offset, token, delay, error, max_deliveries, kill)
        )
        if outcome != "stale":
            self._bell.ring()
        return outcome

    async def aseek(self, group: str, offset: int) -> None:
        """See :meth:`seek`."""
        await self._arun(self._core.seek(group, offset, None))
        self._bell.ring()

    async def aseek_time(self, group: str, timestamp: float) -> int:
        """See :meth:`seek_time`."""
        offset = await self._arun(self._core.seek(group, None, timestamp))
        self._bell.ring()
        return offset

    async def alag(self, group: str) -> int:
        """See :meth:`lag`."""
        return await self._arun(self._core.lag(group))

    async def adead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """See :meth:`dead_letters`."""
        return await self._arun(self._core.dead_letters(group, limit))

    async def aclose(self) -> None:
        """See :meth:`close`."""

    def __repr__(self) -> str:
        return f"RedisTopicStore({self.name!r})"


def _block(remaining: float, due: float | None) -> float:
    """How long an idle receive blocks: never past the wait, the next deadline, or a second."""
    block = min(remaining, _MAX_BLOCK)
    if due is not None:
        block = min(block, max(due - time.time(), _MIN_BLOCK))
    return max(block, _MIN_BLOCK)
