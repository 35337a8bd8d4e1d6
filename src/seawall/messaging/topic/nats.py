"""The NATS JetStream topic store: one stream per topic, one durable pull consumer per group.

Topic ``name`` is the stream ``seawall_topic_<name>`` on the subject
``seawall.topic.<name>``; a message's offset is its stream sequence (1, 2, 3...).
Its key travels in the ``Seawall-Key`` header. Each group is a durable pull
consumer named after the group (explicit acks, ``ack_wait`` = the group's
visibility timeout, unlimited server redeliveries: seawall counts them against
``max_deliveries`` itself). Dead letters go to the stream
``seawall_topic_dead_<name>`` (subject ``seawall.topic_dead.<name>.<group>``).
Retention is the stream's ``max_age`` and ``max_msgs``; a replay recreates the
group's consumer with ``deliver_policy`` by start sequence or by start time.

**Limits** (honest ones; the conformance suite skips what NATS does not claim):

* **No per-key order.** JetStream hands a group's messages to any waiting consumer,
  key or not. Open the topic with ``key_order=True`` to make each group strictly
  sequential (``max_ack_pending=1``: one message in flight per group, so keys stay
  in order, and consumers only take over from each other), or use PostgreSQL,
  SQLite or Redis, which keep per-key order with parallel consumers.
* **Time is the server's.** ``published_at``, visibility deadlines (``ack_wait``)
  and ``retention_age`` use the server clock; an injected ``clock=`` is ignored.
* **Receipts.** The token is the delivery's ack subject. Acknowledging after the
  visibility timeout expired still acknowledges the message if it is pending, even
  when it was redelivered meanwhile (JetStream acknowledges by stream sequence).
* ``publish_many`` publishes one message after another: not atomic.
* A nack's error is kept only when that nack dead-letters the message.
* Transactions: NATS has none to join; ``transaction=`` is refused.

Everything runs on nats-py (asyncio); the synchronous methods run the same
coroutines on the engine's private loop (:meth:`NatsEngine.run`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
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
    "KEY_HEADER",
    "NatsTopicStore",
    "dead_stream_name",
    "forget_topic",
    "nats_topic_names",
    "stream_name",
]

T = TypeVar("T")

KEY_HEADER = "Seawall-Key"
"""The header that carries a message's key."""
_DEAD_HEADER = "Seawall-Dead"
_STREAM_PREFIX = "seawall_topic_"
_DEAD_PREFIX = "seawall_topic_dead_"
_REQUEST_TIMEOUT = 5.0


def stream_name(topic: str) -> str:
    """The JetStream stream of topic ``topic``."""
    return f"{_STREAM_PREFIX}{topic}"


def dead_stream_name(topic: str) -> str:
    """The JetStream stream of topic ``topic``'s dead letters (every group)."""
    return f"{_DEAD_PREFIX}{topic}"


def _subject(topic: str) -> str:
    return f"seawall.topic.{topic}"


def _dead_subject(topic: str, group: str) -> str:
    return f"seawall.topic_dead.{topic}.{group}"


def _refuse(transaction: object) -> None:
    if transaction is not None:
        raise ConfigurationError(
            "transaction=... is not supported on the NATS engine: JetStream has no "
            "transaction to join; use PostgreSQL or SQLite to publish inside a transaction"
        )


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
        key_order: bool = False,
    ) -> None:
        if not isinstance(engine, NatsEngine):
            raise ConfigurationError(f"the NATS topic store needs a NatsEngine, got {engine!r}")
        if not isinstance(key_order, bool):
            raise ConfigurationError(f"key_order={key_order!r} must be True or False")
        self._engine = engine
        self.name = name
        self.retention_age = retention_age
        self.retention_count = retention_count
        self.key_order = key_order
        self.events = events if events is not None else EventHub(parent=hub)
        self._stream = stream_name(name)
        self._dead = dead_stream_name(name)
        self._subject = _subject(name)
        self._ack_waits: dict[str, float] = {}
        self._run(self._declare(create))

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

    async def _declare(self, create: bool) -> None:
        js = await self._engine.jetstream()
        try:
            await js.stream_info(self._stream)
            return
        except nats.js.errors.NotFoundError:
            if not create:
                raise UnknownTopicError(self.name, await _topic_names(self._engine)) from None
        await js.add_stream(
            name=self._stream,
            subjects=[self._subject],
            max_age=self.retention_age,
            max_msgs=self.retention_count or -1,
            storage=nats.js.api.StorageType.FILE,
        )
        await js.add_stream(name=self._dead, subjects=[f"seawall.topic_dead.{self.name}.*"])

    # -- publishing ------------------------------------------------------------------------

    async def _publish(self, records: Sequence[OutgoingRecord]) -> list[int]:
        js = await self._engine.jetstream()
        offsets = []
        for record in records:
            headers = dict(record.headers) if record.headers else {}
            if record.key is not None:
                headers[KEY_HEADER] = record.key
            ack = await js.publish(self._subject, record.body, headers=headers or None)
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

    async def _group_names(self) -> list[str]:
        js = await self._engine.jetstream()
        return sorted(info.name for info in await js.consumers_info(self._stream))

    def _consumer_config(
        self, group: str, start: Start, visibility_timeout: float
    ) -> nats.js.api.ConsumerConfig:
        policy = nats.js.api.DeliverPolicy
        options: dict[str, Any] = {"deliver_policy": policy.ALL}
        if start == "latest":
            options = {"deliver_policy": policy.NEW}
        elif isinstance(start, int) and start > 1:
            options = {"deliver_policy": policy.BY_START_SEQUENCE, "opt_start_seq": start}
        return nats.js.api.ConsumerConfig(
            durable_name=group,
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            ack_wait=visibility_timeout,
            max_deliver=-1,
            max_ack_pending=1 if self.key_order else MAX_PENDING,
            filter_subject=self._subject,
            **options,
        )

    async def _declare_group(
        self, group: str, start: Start, create: bool, visibility_timeout: float = 30.0
    ) -> None:
        js = await self._engine.jetstream()
        try:
            await js.consumer_info(self._stream, group)
            return
        except nats.js.errors.NotFoundError:
            if not create:
                raise UnknownGroupError(self.name, group, await self._group_names()) from None
        await js.add_consumer(self._stream, self._consumer_config(group, start, visibility_timeout))

    def declare_group(self, group: str, start: Start, create: bool) -> None:
        """Create the group's consumer unless it exists; see :meth:`TopicStore.declare_group`."""
        self._run(self._declare_group(group, start, create))

    async def adeclare_group(self, group: str, start: Start, create: bool) -> None:
        """See :meth:`declare_group`."""
        await self._translated(self._declare_group(group, start, create))

    def groups(self) -> list[str]:
        """The topic's groups; see :meth:`TopicStore.groups`."""
        return self._run(self._group_names())

    # -- receiving -------------------------------------------------------------------------

    async def _next(self, subscription: Any, seconds: float) -> Msg | None:
        """The next message of a pull, or None at its end (a status reply or a timeout)."""
        while True:
            try:
                msg: Msg = await subscription.next_msg(timeout=seconds)
            except nats.errors.TimeoutError:
                return None
            status = msg.headers.get("Status") if msg.headers else None
            if status == "100":  # an idle heartbeat
                continue
            if status:
                return None
            return msg

    async def _pull(self, group: str, count: int, wait: float) -> list[Msg]:
        """Pull up to ``count`` messages; a wait lingers for the first one only.

        Asking for one message with an expiry, then for the rest without waiting,
        leaves no open pull request behind that could take messages nobody reads.
        """
        connection = await self._engine.connection()
        js = await self._engine.jetstream()
        inbox = connection.new_inbox()
        subscription = await connection.subscribe(inbox)
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{group}"
        taken: list[Msg] = []
        try:
            if wait > 0:
                request = {"batch": 1, "expires": int(wait * 1e9)}
                await connection.publish(subject, json.dumps(request).encode(), reply=inbox)
                first = await self._next(subscription, wait + _REQUEST_TIMEOUT)
                if first is None:
                    await self._check_group(js, group)
                    return []
                taken.append(first)
            if len(taken) < count:
                request = {"batch": count - len(taken), "no_wait": True}
                await connection.publish(subject, json.dumps(request).encode(), reply=inbox)
                while len(taken) < count:
                    msg = await self._next(subscription, _REQUEST_TIMEOUT)
                    if msg is None:
                        break
                    taken.append(msg)
        finally:
            await subscription.unsubscribe()
        if not taken:
            await self._check_group(js, group)
        return taken

    async def _check_group(self, js: Any, group: str) -> None:
        try:
            await js.consumer_info(self._stream, group)
        except nats.js.errors.NotFoundError:
            raise UnknownGroupError(self.name, group, await self._group_names()) from None

    async def _ensure_ack_wait(self, group: str, visibility_timeout: float) -> None:
        """Make the consumer's ``ack_wait`` the group's visibility timeout (checked once)."""
        if self._ack_waits.get(group) == visibility_timeout:
            return
        js = await self._engine.jetstream()
        try:
            info = await js.consumer_info(self._stream, group)
        except nats.js.errors.NotFoundError:
            raise UnknownGroupError(self.name, group, await self._group_names()) from None
        if abs((info.config.ack_wait or 0.0) - visibility_timeout) > 1e-6:
            info.config.ack_wait = visibility_timeout  # an editable field: this updates it
            await js.add_consumer(self._stream, info.config)
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
            messages = await self._pull(group, max_messages, wait)
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
                    await msg.term()
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
            wait = deadline - time.monotonic()
            if claimed or not messages or wait <= 0:
                claimed.sort()
                return claimed

    def receive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """Fetch messages from the group's consumer; see :meth:`TopicStore.receive`."""
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

    async def _ack(self, group: str, offset: int, token: str) -> bool:
        metadata = _metadata(token)
        if metadata is None or metadata.sequence.stream != offset or metadata.consumer != group:
            return False
        connection = await self._engine.connection()
        try:
            await connection.request(token, b"+ACK", timeout=_REQUEST_TIMEOUT)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return False  # the group's consumer was recreated (seek) or is gone
        return True

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
        metadata = _metadata(token)
        if metadata is None or metadata.sequence.stream != offset or metadata.consumer != group:
            return "stale"
        connection = await self._engine.connection()
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
            await connection.publish(token, b"+TERM")
            return "dead_lettered"
        payload = b"-NAK"
        if delay > 0:
            payload += json.dumps({"delay": int(delay * 1e9)}).encode()
        await connection.publish(token, payload)
        await connection.flush()
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

    async def _restart(self, group: str, offset: int | None, at: float | None) -> int:
        js = await self._engine.jetstream()
        try:
            info = await js.consumer_info(self._stream, group)
        except nats.js.errors.NotFoundError:
            raise UnknownGroupError(self.name, group, await self._group_names()) from None
        config = self._consumer_config(group, "earliest", info.config.ack_wait or 30.0)
        stream = await js.stream_info(self._stream)
        last = stream.state.last_seq
        if at is not None:
            config.deliver_policy = nats.js.api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = datetime.datetime.fromtimestamp(at, datetime.UTC)
        elif offset is not None and offset > 1:
            config.deliver_policy = nats.js.api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = offset
        await js.delete_consumer(self._stream, group)
        created = await js.add_consumer(self._stream, config)
        self._ack_waits.pop(group, None)
        if at is None:
            return offset or 0
        return last - int(created.num_pending or 0) + 1

    def seek(self, group: str, offset: int) -> None:
        """Recreate the group's consumer at ``offset``; see :meth:`TopicStore.seek`."""
        self._run(self._restart(group, offset, None))

    async def aseek(self, group: str, offset: int) -> None:
        """See :meth:`seek`."""
        await self._translated(self._restart(group, offset, None))

    def seek_time(self, group: str, timestamp: float) -> int:
        """Recreate the group's consumer at a time; see :meth:`TopicStore.seek_time`."""
        return self._run(self._restart(group, None, timestamp))

    async def aseek_time(self, group: str, timestamp: float) -> int:
        """See :meth:`seek_time`."""
        return await self._translated(self._restart(group, None, timestamp))

    async def _lag(self, group: str) -> int:
        js = await self._engine.jetstream()
        try:
            info = await js.consumer_info(self._stream, group)
        except nats.js.errors.NotFoundError:
            raise UnknownGroupError(self.name, group, await self._group_names()) from None
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    def lag(self, group: str) -> int:
        """Pending plus unacknowledged messages of the consumer; see :meth:`TopicStore.lag`."""
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
        return f"NatsTopicStore({self.name!r}, key_order={self.key_order})"
