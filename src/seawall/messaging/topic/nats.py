"""The NATS JetStream topic store: one stream per topic, partitioned by key.

Topic ``name`` is the stream ``seawall_topic_<name>`` on the subjects
``seawall.topic.<name>.>``; a message's offset is its stream sequence (1, 2, 3...).
A keyed message goes to the subject ``seawall.topic.<name>.k.<partition>``, where
the partition is ``zlib.crc32`` of the UTF-8 key modulo the topic's ``partitions``
(default 8, fixed when the stream is created and kept in its description); a
message without key goes to ``seawall.topic.<name>.u``. The key also travels in
the ``Seawall-Key`` header.

A group is a set of durable pull consumers, all with explicit acks, ``ack_wait`` =
the group's visibility timeout and unlimited server redeliveries (seawall counts
them against ``max_deliveries`` itself): ``<group>~<i>`` for partition ``i`` with
``max_ack_pending=1``, so a partition hands out one message at a time and a key's
next message waits until the previous one is acknowledged or dead; and ``<group>``
for the messages without key, created last (the group exists once it does).
Consumers of one group therefore compete for messages and partitions while every
key stays in order. A receive pulls from the group's consumers in a rotating
order, with pull requests that do not wait (a full partition answers after a short
expiry), and polls until its ``wait`` ends: no pull request is left open to take a
message nobody reads. Dead letters go to the stream ``seawall_topic_dead_<name>``
(subject ``seawall.topic_dead.<name>.<group>``). Retention is the stream's
``max_age`` and ``max_msgs``; a replay recreates every consumer of the group at
the start sequence.

**Limits** (honest ones; the conformance suite skips what NATS does not claim):

* **Keys share partitions.** Two keys hashed to the same partition wait for each
  other (one message in flight per partition and group): at most ``partitions``
  keyed messages of a group are in flight at once. Open the topic with a higher
  ``partitions=`` for more parallel keys. Across partitions, a batch is in offset
  order, but successive receives are not.
* **Time is the server's.** ``published_at``, visibility deadlines (``ack_wait``)
  and ``retention_age`` use the server clock; an injected ``clock=`` is ignored.
* **Receipts.** The token is the delivery's ack subject. Acknowledging after the
  visibility timeout expired still acknowledges the message if it is pending, even
  when it was redelivered meanwhile (JetStream acknowledges by stream sequence).
* ``publish_many`` publishes one message after another: not atomic.
* A nack's error is kept only when that nack dead-letters the message.
* Transactions: NATS has none to join; ``transaction=`` is refused.
* Streams made by seawall versions before partitioning (one subject) are refused:
  delete the topic (:func:`forget_topic`) and open it again.

Everything runs on nats-py (asyncio); the synchronous methods run the same
coroutines on the engine's private loop (:meth:`NatsEngine.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import time
import zlib
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.clock import Clock
from seawall.engines.nats import NatsEngine
from seawall.errors import ConfigurationError, EngineError, MissingExtraError
from seawall.events import EventHub, hub
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
    import nats.errors
    import nats.js.api
    import nats.js.errors
    from nats.aio.msg import Msg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("nats", "nats-py") from exc

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = [
    "DEFAULT_PARTITIONS",
    "KEY_HEADER",
    "NatsTopicStore",
    "dead_stream_name",
    "forget_topic",
    "nats_topic_names",
    "partition_of",
    "stream_name",
]

T = TypeVar("T")

KEY_HEADER = "Seawall-Key"
"""The header that carries a message's key."""
DEFAULT_PARTITIONS = 8
"""Partitions of a new topic when ``partitions=`` is not given."""
MAX_PARTITIONS = 256
_DEAD_HEADER = "Seawall-Dead"
_STREAM_PREFIX = "seawall_topic_"
_DEAD_PREFIX = "seawall_topic_dead_"
_PARTITION_SEPARATOR = "~"  # never in a group name, so the group is the part before it
_PARTITIONS_NOTE = re.compile(r"partitions=(\d+)")
_REQUEST_TIMEOUT = 5.0
_FULL_EXPIRY = 0.02
"""How long a pull waits on a partition whose one message is in flight before giving up."""
_EXPIRY_GRACE = 0.25
"""How long past its expiry a pull request is still awaited (server and network latency)."""
_POLL_PAUSE = 0.05
"""Pause between two looks of a waiting receive that found nothing."""


def stream_name(topic: str) -> str:
    """The JetStream stream of topic ``topic``."""
    return f"{_STREAM_PREFIX}{topic}"


def dead_stream_name(topic: str) -> str:
    """The JetStream stream of topic ``topic``'s dead letters (every group)."""
    return f"{_DEAD_PREFIX}{topic}"


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key``: a hash that every process and version agrees on."""
    return zlib.crc32(key.encode()) % partitions


def _subjects(topic: str) -> str:
    return f"seawall.topic.{topic}.>"


def _keyless_subject(topic: str) -> str:
    return f"seawall.topic.{topic}.u"


def _partition_subject(topic: str, partition: int) -> str:
    return f"seawall.topic.{topic}.k.{partition}"


def _dead_subject(topic: str, group: str) -> str:
    return f"seawall.topic_dead.{topic}.{group}"


def _group_of(consumer: str) -> str:
    return consumer.split(_PARTITION_SEPARATOR, 1)[0]


def _refuse(transaction: object) -> None:
    if transaction is not None:
        raise ConfigurationError(
            "transaction=... is not supported on the NATS engine: JetStream has no "
            "transaction to join; use PostgreSQL or SQLite to publish inside a transaction"
        )


def _check_partitions(partitions: object) -> int | None:
    if partitions is None:
        return None
    if (
        not isinstance(partitions, int)
        or isinstance(partitions, bool)
        or not 1 <= partitions <= MAX_PARTITIONS
    ):
        raise ConfigurationError(
            f"partitions={partitions!r} must be an integer from 1 to {MAX_PARTITIONS} "
            f"(default {DEFAULT_PARTITIONS}): how many keys of a group can be in flight at once"
        )
    return partitions


async def _topic_names(engine: NatsEngine) -> list[str]:
    js = await engine.jetstream()
    names = []
    for info in await js.streams_info():
        name = info.config.name or ""
        if name.startswith(_STREAM_PREFIX) and not name.startswith(_DEAD_PREFIX):
            names.append(name[len(_STREAM_PREFIX) :])
    return sorted(names)


def nats_topic_names(engine: NatsEngine) -> list[str]:
    """The names of the topics declared on this NATS server."""
    return engine.run(_topic_names(engine), _REQUEST_TIMEOUT * 2)


def forget_topic(engine: NatsEngine, name: str) -> None:
    """Delete topic ``name``'s streams (its messages, groups and dead letters)."""

    async def forget() -> None:
        js = await engine.jetstream()
        for stream in (stream_name(name), dead_stream_name(name)):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)

    engine.run(forget(), _REQUEST_TIMEOUT * 2)


def _metadata(token: str) -> Msg.Metadata | None:
    try:
        return Msg.Metadata._from_reply(token)
    except Exception:  # not an ack subject of ours: a stale or forged receipt
        return None


class NatsTopicStore:
    """A :class:`~seawall.messaging.topic.TopicStore` on NATS JetStream (see the module docstring)."""

    def __init__(
        self,
        engine: NatsEngine,
        name: str,
        *,
        retention_age: float | None = None,
        retention_count: int | None = None,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
        partitions: int | None = None,
    ) -> None:
        if not isinstance(engine, NatsEngine):
            raise ConfigurationError(f"the NATS topic store needs a NatsEngine, got {engine!r}")
        self._engine = engine
        self.name = name
        self.retention_age = retention_age
        self.retention_count = retention_count
        self.partitions = _check_partitions(partitions) or DEFAULT_PARTITIONS
        """Partitions of the topic's keys (read from the stream when it exists)."""
        self.events = events if events is not None else EventHub(parent=hub)
        self._stream = stream_name(name)
        self._dead = dead_stream_name(name)
        self._ack_waits: dict[str, float] = {}
        self._turns: dict[str, int] = {}
        self._run(self._declare(create, partitions))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._engine.run(self._translated(coroutine), _REQUEST_TIMEOUT * 4 + 600)

    async def _translated(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            return await coroutine
        except nats.errors.Error as exc:
            raise EngineError(
                f"NATS topic {self.name!r} failed: {type(exc).__name__}: {exc}",
                url=self._engine.url,
            ) from exc

    async def _declare(self, create: bool, partitions: int | None) -> None:
        js = await self._engine.jetstream()
        try:
            info = await js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            if not create:
                raise UnknownTopicError(self.name, await _topic_names(self._engine)) from None
        else:
            self._adopt(info.config, partitions)
            return
        await js.add_stream(
            name=self._stream,
            description=f"seawall topic {self.name}: partitions={self.partitions}",
            subjects=[_subjects(self.name)],
            max_age=self.retention_age,
            max_msgs=self.retention_count or -1,
            storage=nats.js.api.StorageType.FILE,
        )
        await js.add_stream(name=self._dead, subjects=[f"seawall.topic_dead.{self.name}.*"])

    def _adopt(self, config: nats.js.api.StreamConfig, partitions: int | None) -> None:
        """Take the partitions of an existing stream; refuse another layout or count."""
        note = _PARTITIONS_NOTE.search(config.description or "")
        if note is None or list(config.subjects or []) != [_subjects(self.name)]:
            raise ConfigurationError(
                f"NATS topic {self.name!r}: the stream {self._stream!r} has the layout of an "
                "earlier seawall (one subject, no key partitions); delete it with "
                "seawall.messaging.topic.nats.forget_topic(engine, name) (this drops its "
                "messages and groups) and open the topic again"
            )
        existing = int(note.group(1))
        if partitions is not None and partitions != existing:
            raise ConfigurationError(
                f"NATS topic {self.name!r} has partitions={existing}, fixed when it was "
                f"created; open it with partitions={existing} (or leave partitions out), or "
                "delete it with forget_topic(engine, name) and recreate it to change the count"
            )
        self.partitions = existing

    # -- publishing ------------------------------------------------------------------------

    def _subject_of(self, key: str | None) -> str:
        if key is None:
            return _keyless_subject(self.name)
        return _partition_subject(self.name, partition_of(key, self.partitions))

    async def _publish(self, records: Sequence[OutgoingRecord]) -> list[int]:
        js = await self._engine.jetstream()
        offsets = []
        for record in records:
            headers = dict(record.headers) if record.headers else {}
            if record.key is not None:
                headers[KEY_HEADER] = record.key
            ack = await js.publish(
                self._subject_of(record.key), record.body, headers=headers or None
            )
            offsets.append(ack.seq)
        return offsets

    def publish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """Publish each record; see :meth:`TopicStore.publish` (not atomic on NATS)."""
        _refuse(transaction)
        return self._run(self._publish(records))

    async def apublish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """See :meth:`publish`."""
        _refuse(transaction)
        return await self._translated(self._publish(records))

    # -- groups ----------------------------------------------------------------------------

    def _consumers(self, group: str) -> list[str]:
        """The group's consumers: the keyless one first, then one per partition."""
        partitions = [f"{group}{_PARTITION_SEPARATOR}{i}" for i in range(self.partitions)]
        return [group, *partitions]

    async def _group_names(self) -> list[str]:
        js = await self._engine.jetstream()
        return sorted(
            info.name
            for info in await js.consumers_info(self._stream)
            if _PARTITION_SEPARATOR not in info.name and info.config.durable_name
        )

    def _consumer_config(
        self, consumer: str, start_sequence: int | None, visibility_timeout: float
    ) -> nats.js.api.ConsumerConfig:
        """Consumer ``consumer`` from ``start_sequence`` (None: the oldest retained message)."""
        policy = nats.js.api.DeliverPolicy
        options: dict[str, Any] = {"deliver_policy": policy.ALL}
        if start_sequence is not None and start_sequence > 1:
            options = {"deliver_policy": policy.BY_START_SEQUENCE, "opt_start_seq": start_sequence}
        if _PARTITION_SEPARATOR in consumer:
            partition = int(consumer.rsplit(_PARTITION_SEPARATOR, 1)[1])
            options["filter_subject"] = _partition_subject(self.name, partition)
            options["max_ack_pending"] = 1
        else:
            options["filter_subject"] = _keyless_subject(self.name)
            options["max_ack_pending"] = MAX_PENDING
        return nats.js.api.ConsumerConfig(
            durable_name=consumer,
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            ack_wait=visibility_timeout,
            max_deliver=-1,
            **options,
        )

    async def _info(self, js: Any, consumer: str) -> nats.js.api.ConsumerInfo | None:
        try:
            info: nats.js.api.ConsumerInfo = await js.consumer_info(self._stream, consumer)
        except nats.js.errors.NotFoundError:
            return None
        return info

    async def _infos(self, group: str) -> list[nats.js.api.ConsumerInfo]:
        """Every consumer of the group (raises UnknownGroupError when one is missing)."""
        js = await self._engine.jetstream()
        infos = await asyncio.gather(*(self._info(js, name) for name in self._consumers(group)))
        found = [info for info in infos if info is not None]
        if len(found) < len(infos):
            raise UnknownGroupError(self.name, group, await self._group_names())
        return found

    async def _check_group(self, group: str) -> None:
        js = await self._engine.jetstream()
        if await self._info(js, group) is None:
            raise UnknownGroupError(self.name, group, await self._group_names())

    async def _start_sequence(self, js: Any, start: Start) -> int | None:
        if start == "latest":
            stream = await js.stream_info(self._stream)
            return int(stream.state.last_seq) + 1
        if isinstance(start, int):
            return start
        return None

    async def _create(
        self, group: str, start_sequence: int | None, visibility_timeout: float
    ) -> None:
        """Create the group's missing consumers; the keyless one (the group's mark) last."""
        js = await self._engine.jetstream()
        keyless, *partitions = self._consumers(group)
        infos = await asyncio.gather(*(self._info(js, name) for name in partitions))
        await asyncio.gather(
            *(
                js.add_consumer(
                    self._stream, self._consumer_config(name, start_sequence, visibility_timeout)
                )
                for name, info in zip(partitions, infos, strict=True)
                if info is None
            )
        )
        await js.add_consumer(
            self._stream, self._consumer_config(keyless, start_sequence, visibility_timeout)
        )

    async def _declare_group(
        self, group: str, start: Start, create: bool, visibility_timeout: float = 30.0
    ) -> None:
        js = await self._engine.jetstream()
        if await self._info(js, group) is not None:
            return
        if not create:
            raise UnknownGroupError(self.name, group, await self._group_names())
        await self._create(group, await self._start_sequence(js, start), visibility_timeout)

    def declare_group(self, group: str, start: Start, create: bool) -> None:
        """Create the group's consumers unless it exists; see :meth:`TopicStore.declare_group`."""
        self._run(self._declare_group(group, start, create))

    async def adeclare_group(self, group: str, start: Start, create: bool) -> None:
        """See :meth:`declare_group`."""
        await self._translated(self._declare_group(group, start, create))

    def groups(self) -> list[str]:
        """The topic's groups; see :meth:`TopicStore.groups`."""
        return self._run(self._group_names())

    # -- receiving -------------------------------------------------------------------------

    async def _pull(self, consumer: str, count: int, expires: bool) -> list[Msg]:
        """Up to ``count`` messages of one consumer, without waiting for more.

        A request to a partition ``expires`` after :data:`_FULL_EXPIRY` (with its one
        message in flight it would otherwise wait for the next one); each request is
        read to its end, so none outlives the call to hand a message to nobody.
        """
        connection = await self._engine.connection()
        inbox = connection.new_inbox()
        subscription = await connection.subscribe(inbox)
        request: dict[str, Any] = {"batch": count, "no_wait": True}
        if expires:
            request["expires"] = int(_FULL_EXPIRY * 1e9)
        taken: list[Msg] = []
        try:
            await connection.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{consumer}",
                json.dumps(request).encode(),
                reply=inbox,
            )
            # Past its expiry the server hands a request nothing more, even when the
            # closing 408 status never comes (it sometimes does not, on NATS 2.9).
            patience = _FULL_EXPIRY + _EXPIRY_GRACE if expires else _REQUEST_TIMEOUT
            while len(taken) < count:
                try:
                    msg: Msg = await subscription.next_msg(timeout=patience)
                except nats.errors.TimeoutError:
                    break  # expired without a word, or no answer at all: the consumer is gone
                status = msg.headers.get("Status") if msg.headers else None
                if status == "100":  # an idle heartbeat
                    continue
                if status:
                    break
                taken.append(msg)
        finally:
            await subscription.unsubscribe()
        return taken

    async def _sweep(self, group: str, max_messages: int) -> list[Msg]:
        """Up to ``max_messages`` from the group's consumers, looked at in a rotating order.

        Each round asks at most as many consumers as the budget left (a partition gives
        at most one message, the keyless consumer what remains), so nothing is taken
        beyond it. A consumer that gave less than asked (or a partition, now full) is
        done for this sweep.
        """
        consumers = self._consumers(group)
        turn = self._turns.get(group, 0) % len(consumers)
        self._turns[group] = turn + 1
        js = await self._engine.jetstream()
        infos = await asyncio.gather(*(self._info(js, name) for name in consumers[1:]))
        busy = {  # partitions with nothing at all are not asked (they would wait the expiry)
            info.name
            for info in infos
            if info is not None and (info.num_pending or info.num_ack_pending)
        }
        candidates = [
            name for name in consumers[turn:] + consumers[:turn] if name == group or name in busy
        ]
        taken: list[Msg] = []
        while candidates and len(taken) < max_messages:
            budget = max_messages - len(taken)
            chunk = candidates[:budget]
            counts = [1] * len(chunk)
            if group in chunk:
                counts[chunk.index(group)] += budget - len(chunk)
            pulled = await asyncio.gather(
                *(
                    self._pull(name, count, expires=name != group)
                    for name, count in zip(chunk, counts, strict=True)
                )
            )
            for name, count, messages in zip(chunk, counts, pulled, strict=True):
                taken.extend(messages)
                if name != group or len(messages) < count:
                    candidates.remove(name)
        return taken

    async def _ensure_ack_wait(self, group: str, visibility_timeout: float) -> None:
        """Make every consumer's ``ack_wait`` the group's visibility timeout (checked once)."""
        if self._ack_waits.get(group) == visibility_timeout:
            return
        js = await self._engine.jetstream()
        updates = []
        for info in await self._infos(group):
            if abs((info.config.ack_wait or 0.0) - visibility_timeout) > 1e-6:
                info.config.ack_wait = visibility_timeout  # an editable field: this updates it
                updates.append(js.add_consumer(self._stream, info.config))
        await asyncio.gather(*updates)
        self._ack_waits[group] = visibility_timeout

    async def _receive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        await self._ensure_ack_wait(group, visibility_timeout)
        deadline = time.monotonic() + wait
        while True:
            messages = await self._sweep(group, max_messages)
            claimed: list[StoredTopicMessage] = []
            for msg in messages:
                metadata = msg.metadata
                offset = metadata.sequence.stream
                headers = dict(msg.headers or {})
                key = headers.pop(KEY_HEADER, None)
                if metadata.num_delivered > max_deliveries:
                    reason = (
                        "visibility timeout expired on its last allowed delivery "
                        f"({metadata.num_delivered - 1} of max_deliveries={max_deliveries})"
                    )
                    await self._bury(group, offset, key, msg.data, headers, metadata, reason, None)
                    await self._settle(msg.reply, b"+TERM")
                    continue
                claimed.append(
                    StoredTopicMessage(
                        offset,
                        key,
                        msg.data,
                        headers or None,
                        metadata.timestamp.timestamp(),
                        metadata.num_delivered,
                        msg.reply,
                    )
                )
            if claimed:
                claimed.sort()
                return claimed
            if messages:
                continue  # every one was dead: look again at once
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self._check_group(group)  # a group deleted meanwhile is an error
                return []
            await asyncio.sleep(min(_POLL_PAUSE, remaining))

    def receive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """Fetch messages from the group's consumers; see :meth:`TopicStore.receive`."""
        return self._run(
            self._receive(group, max_messages, visibility_timeout, max_deliveries, wait)
        )

    async def areceive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """See :meth:`receive`."""
        return await self._translated(
            self._receive(group, max_messages, visibility_timeout, max_deliveries, wait)
        )

    # -- settling --------------------------------------------------------------------------

    async def _bury(
        self,
        group: str,
        offset: int,
        key: str | None,
        body: bytes,
        headers: Mapping[str, str],
        metadata: Msg.Metadata,
        reason: str,
        error: str | None,
    ) -> None:
        js = await self._engine.jetstream()
        deliveries = metadata.num_delivered
        if reason.startswith("visibility timeout"):  # found on the delivery after the last
            deliveries -= 1
        record = {
            "offset": offset,
            "key": key,
            "headers": dict(headers),
            "published_at": metadata.timestamp.timestamp(),
            "deliveries": deliveries,
            "dead_at": time.time(),
            "reason": reason,
            "error": error,
        }
        await js.publish(
            _dead_subject(self.name, group),
            body,
            headers={_DEAD_HEADER: json.dumps(record, separators=(",", ":"))},
        )
        if self.events.active:
            self.events.emit(TopicMessageDeadLettered(self.name, group, offset, reason, deliveries))

    async def _settle(self, token: str, payload: bytes) -> bool:
        """Send an ack, nak or term and wait until the server applied it.

        Waiting matters: a partition hands out a key's next message only once the
        previous one is settled, and the next receive must see that.
        """
        connection = await self._engine.connection()
        try:
            await connection.request(token, payload, timeout=_REQUEST_TIMEOUT)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return False  # the group's consumer was recreated (seek) or is gone
        return True

    def _owned(self, group: str, offset: int, token: str) -> Msg.Metadata | None:
        metadata = _metadata(token)
        if metadata is None or metadata.sequence.stream != offset:
            return None
        if _group_of(metadata.consumer or "") != group:
            return None
        return metadata

    async def _ack(self, group: str, offset: int, token: str) -> bool:
        if self._owned(group, offset, token) is None:
            return False
        return await self._settle(token, b"+ACK")

    def ack(self, group: str, offset: int, token: str, transaction: Transaction | None) -> bool:
        """Acknowledge on the delivery's ack subject; see :meth:`TopicStore.ack`."""
        _refuse(transaction)
        return self._run(self._ack(group, offset, token))

    async def aack(
        self, group: str, offset: int, token: str, transaction: Transaction | None
    ) -> bool:
        """See :meth:`ack`."""
        _refuse(transaction)
        return await self._translated(self._ack(group, offset, token))

    async def _nack(
        self,
        group: str,
        offset: int,
        token: str,
        delay: float,
        error: str | None,
        max_deliveries: int,
        kill: str | None,
    ) -> NackOutcome:
        metadata = self._owned(group, offset, token)
        if metadata is None:
            return "stale"
        if kill is not None or metadata.num_delivered >= max_deliveries:
            js = await self._engine.jetstream()
            try:
                stored = await js.get_msg(self._stream, offset)
            except nats.js.errors.NotFoundError:
                stored = None
            reason = kill or (
                "negatively acknowledged on its last allowed delivery "
                f"({metadata.num_delivered} of max_deliveries={max_deliveries})"
            )
            if stored is not None:
                headers = dict(stored.headers or {})
                key = headers.pop(KEY_HEADER, None)
                await self._bury(
                    group, offset, key, stored.data or b"", headers, metadata, reason, error
                )
            await self._settle(token, b"+TERM")
            return "dead_lettered"
        payload = b"-NAK"
        if delay > 0:
            payload += json.dumps({"delay": int(delay * 1e9)}).encode()
        await self._settle(token, payload)
        return "requeued"

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
        """Negatively acknowledge (with a delay); see :meth:`TopicStore.nack`."""
        return self._run(self._nack(group, offset, token, delay, error, max_deliveries, kill))

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
        return await self._translated(
            self._nack(group, offset, token, delay, error, max_deliveries, kill)
        )

    # -- replay and inspection -------------------------------------------------------------

    async def _first_at(self, js: Any, at: float) -> int:
        """The offset of the first message published at or after ``at`` (or the next one)."""
        stream = await js.stream_info(self._stream)
        probe = await js.add_consumer(
            self._stream,
            nats.js.api.ConsumerConfig(
                ack_policy=nats.js.api.AckPolicy.NONE,
                deliver_policy=nats.js.api.DeliverPolicy.BY_START_TIME,
                opt_start_time=datetime.datetime.fromtimestamp(at, datetime.UTC),
                inactive_threshold=_REQUEST_TIMEOUT,
            ),
        )
        try:
            found = await self._pull(probe.name, 1, expires=False)
        finally:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(self._stream, probe.name)
        if found:
            return int(found[0].metadata.sequence.stream)
        return int(stream.state.last_seq) + 1

    async def _restart(self, group: str, offset: int | None, at: float | None) -> int:
        """Recreate every consumer of the group at ``offset`` (or the first one at ``at``)."""
        js = await self._engine.jetstream()
        infos = await self._infos(group)
        ack_wait = infos[0].config.ack_wait or 30.0
        if at is not None:
            offset = await self._first_at(js, at)
        keyless, *partitions = self._consumers(group)
        await js.delete_consumer(self._stream, keyless)  # the group is gone until recreated
        await asyncio.gather(*(js.delete_consumer(self._stream, name) for name in partitions))
        await self._create(group, offset, ack_wait)
        self._ack_waits.pop(group, None)
        return offset or 0

    def seek(self, group: str, offset: int) -> None:
        """Recreate the group's consumers at ``offset``; see :meth:`TopicStore.seek`."""
        self._run(self._restart(group, offset, None))

    async def aseek(self, group: str, offset: int) -> None:
        """See :meth:`seek`."""
        await self._translated(self._restart(group, offset, None))

    def seek_time(self, group: str, timestamp: float) -> int:
        """Recreate the group's consumers at a time; see :meth:`TopicStore.seek_time`."""
        return self._run(self._restart(group, None, timestamp))

    async def aseek_time(self, group: str, timestamp: float) -> int:
        """See :meth:`seek_time`."""
        return await self._translated(self._restart(group, None, timestamp))

    async def _lag(self, group: str) -> int:
        return sum(
            int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            for info in await self._infos(group)
        )

    def lag(self, group: str) -> int:
        """Pending plus unacknowledged messages of the group's consumers; see :meth:`TopicStore.lag`."""
        return self._run(self._lag(group))

    async def alag(self, group: str) -> int:
        """See :meth:`lag`."""
        return await self._translated(self._lag(group))

    async def _dead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        js = await self._engine.jetstream()
        letters: list[TopicDeadLetter] = []
        sequence = 1
        subject = _dead_subject(self.name, group)
        while len(letters) < limit:
            try:
                stored = await js.get_msg(self._dead, sequence, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                break
            record = json.loads((stored.headers or {})[_DEAD_HEADER])
            letters.append(
                TopicDeadLetter(
                    self.name,
                    group,
                    int(record["offset"]),
                    record["key"],
                    stored.data or b"",
                    record["headers"],
                    float(record["published_at"]),
                    int(record["deliveries"]),
                    float(record["dead_at"]),
                    record["reason"],
                    record["error"],
                )
            )
            sequence = int(stored.seq or sequence) + 1
        return letters

    def dead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """The group's dead letters; see :meth:`TopicStore.dead_letters`."""
        return self._run(self._dead_letters(group, limit))

    async def adead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """See :meth:`dead_letters`."""
        return await self._translated(self._dead_letters(group, limit))

    def close(self) -> None:
        """Nothing of its own to release (the engine keeps the connections)."""

    async def aclose(self) -> None:
        """See :meth:`close`."""

    def __repr__(self) -> str:
        return f"NatsTopicStore({self.name!r}, partitions={self.partitions})"
