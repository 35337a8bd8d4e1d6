"""The topic and consumer group users hold: validate, encode and decode, call a store.

One object serves threads and asyncio: ``publish``/``receive``/``ack`` block,
``apublish``/``areceive``/``aack`` are awaited; both share the checks and the decoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from seawall.codec import Codec
from seawall.errors import ConfigurationError
from seawall.events import EventHub
from seawall.messaging.queue._validate import (
    check_headers,
    check_max_messages,
    check_non_negative,
    check_positive,
    check_positive_int,
    error_text,
)
from seawall.messaging.topic._errors import StaleTopicReceiptError
from seawall.messaging.topic._events import TopicMessageRedelivered
from seawall.messaging.topic._model import (
    NO_HEADERS,
    OutgoingRecord,
    Start,
    StoredTopicMessage,
    TopicDeadLetter,
    TopicMessage,
    TopicReceipt,
    TopicRecord,
)
from seawall.messaging.topic._store import TopicStore
from seawall.messaging.topic._validate import (
    check_key,
    check_name,
    check_offset,
    check_start,
    check_time,
)

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["ConsumerGroup", "Topic"]

DEFAULT_VISIBILITY_TIMEOUT = 30.0
DEFAULT_MAX_DELIVERIES = 5


class Topic:
    """A durable pub/sub topic: every consumer group gets every message (open with ``open_topic``).

    ``publish`` appends a message and returns its offset; :meth:`group` opens a
    consumer group, whose consumers compete for the messages. Every method has an
    asyncio twin prefixed with ``a``.
    """

    def __init__(self, store: TopicStore, *, codec: Codec) -> None:
        self.name = store.name
        self.store = store
        self.codec = codec
        self.events: EventHub = store.events
        self._encode = codec.encode

    @property
    def retention_age(self) -> float | None:
        """Seconds a message is kept (None: no age limit)."""
        return self.store.retention_age

    @property
    def retention_count(self) -> int | None:
        """How many of the newest messages are kept (None: no count limit)."""
        return self.store.retention_count

    # -- publishing ------------------------------------------------------------------------

    def _record(
        self, body: Any, key: str | None, headers: Mapping[str, str] | None
    ) -> OutgoingRecord:
        data = self._encode(body)
        if key is not None:
            check_key(key)
        if headers is not None:
            headers = check_headers(headers)
        return OutgoingRecord(data, key, headers)

    def _records(self, records: Iterable[TopicRecord | Any]) -> list[OutgoingRecord]:
        return [
            self._record(item.body, item.key, item.headers)
            if isinstance(item, TopicRecord)
            else self._record(item, None, None)
            for item in records
        ]

    def publish(
        self,
        body: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        transaction: Transaction | None = None,
    ) -> int:
        """Append one message and return its offset.

        ``key`` orders it after earlier messages of the same key in every group;
        ``transaction`` joins a caller's database transaction (SQLite, PostgreSQL).
        """
        record = self._record(body, key, headers)
        return self.store.publish([record], transaction)[0]

    async def apublish(
        self,
        body: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        transaction: Transaction | None = None,
    ) -> int:
        """Asyncio twin of :meth:`publish`."""
        record = self._record(body, key, headers)
        return (await self.store.apublish([record], transaction))[0]

    def publish_many(
        self, records: Iterable[TopicRecord | Any], *, transaction: Transaction | None = None
    ) -> list[int]:
        """Append many messages atomically (all or none); return their offsets in order.

        Wrap a body in :class:`TopicRecord` to give it a key or headers.
        """
        batch = self._records(records)
        return self.store.publish(batch, transaction) if batch else []

    async def apublish_many(
        self, records: Iterable[TopicRecord | Any], *, transaction: Transaction | None = None
    ) -> list[int]:
        """Asyncio twin of :meth:`publish_many`."""
        batch = self._records(records)
        return await self.store.apublish(batch, transaction) if batch else []

    # -- groups ----------------------------------------------------------------------------

    def group(
        self,
        name: str,
        *,
        start: Start = "earliest",
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        create: bool = True,
    ) -> ConsumerGroup:
        """The consumer group ``name``, created at ``start`` unless it exists.

        ``start``: ``"earliest"`` (every retained message), ``"latest"`` (messages
        published from now on) or an offset; an existing group keeps its position.
        ``create=False`` raises :class:`UnknownGroupError` for a group never declared.
        """
        group = ConsumerGroup(self, name, start, visibility_timeout, max_deliveries)
        self.store.declare_group(group.name, group.start, bool(create))
        return group

    async def agroup(
        self,
        name: str,
        *,
        start: Start = "earliest",
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        create: bool = True,
    ) -> ConsumerGroup:
        """Asyncio twin of :meth:`group`."""
        group = ConsumerGroup(self, name, start, visibility_timeout, max_deliveries)
        await self.store.adeclare_group(group.name, group.start, bool(create))
        return group

    def groups(self) -> list[str]:
        """The names of the topic's consumer groups, sorted."""
        return self.store.groups()

    def close(self) -> None:
        """Release what the topic's store holds (not the engine)."""
        self.store.close()

    async def aclose(self) -> None:
        """Asyncio twin of :meth:`close`."""
        await self.store.aclose()

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, store={self.store!r})"


class ConsumerGroup:
    """One consumer group of a topic: its consumers compete, each message goes to one of them.

    ``receive`` claims messages for ``visibility_timeout`` seconds; ``ack`` settles
    one, ``nack`` gives it back. A message whose key has an earlier unacknowledged
    message in the group waits for it. After ``max_deliveries`` deliveries a message
    moves to the group's :meth:`dead_letters`. ``seek``/``seek_time`` replay.
    """

    def __init__(
        self,
        topic: Topic,
        name: str,
        start: Start,
        visibility_timeout: float,
        max_deliveries: int,
    ) -> None:
        self.topic = topic
        self.name = check_name("group", name)
        self.start: Start = check_start(start)
        self.visibility_timeout = check_positive("visibility_timeout", visibility_timeout)
        self.max_deliveries = check_positive_int("max_deliveries", max_deliveries)
        self._store = topic.store
        self._decode = topic.codec.decode

    # -- receiving -------------------------------------------------------------------------

    def _check_receive(self, max_messages: int, wait: float) -> None:
        check_max_messages(max_messages)
        if wait:
            check_non_negative("wait", wait)

    def _messages(
        self, records: list[StoredTopicMessage]
    ) -> tuple[list[TopicMessage], list[tuple[StoredTopicMessage, str]]]:
        decode = self._decode
        topic, group = self.topic.name, self.name
        messages: list[TopicMessage] = []
        failed: list[tuple[StoredTopicMessage, str]] = []
        for record in records:
            try:
                body = decode(record.body)
            except Exception as exc:  # any codec failure: dead-lettered, never blocks the group
                failed.append((record, f"body cannot be decoded: {type(exc).__name__}: {exc}"))
                continue
            messages.append(
                TopicMessage(
                    topic,
                    group,
                    record.offset,
                    record.key,
                    body,
                    record.headers or NO_HEADERS,
                    record.published_at,
                    record.delivery_count,
                    record.token,
                )
            )
        events = self.topic.events
        if events.active:
            for message in messages:
                if message.delivery_count > 1:
                    events.emit(
                        TopicMessageRedelivered(
                            topic, group, message.offset, message.delivery_count
                        )
                    )
        return messages, failed

    def receive(self, max_messages: int = 10, *, wait: float = 0.0) -> list[TopicMessage]:
        """Claim up to ``max_messages`` messages for this group, in offset order.

        ``wait`` > 0 long-polls that many seconds for the first one. Messages whose
        body cannot be decoded go to the group's dead letters and are not returned.
        """
        self._check_receive(max_messages, wait)
        if wait:
            _refuse_blocking_in_loop(self.topic.name)
        store = self._store
        while True:
            records = store.receive(
                self.name, max_messages, self.visibility_timeout, self.max_deliveries, wait
            )
            if not records:
                return []
            messages, failed = self._messages(records)
            for record, reason in failed:
                store.nack(
                    self.name, record.offset, record.token, 0.0, None, self.max_deliveries, reason
                )
            if messages:
                return messages
            wait = 0.0

    async def areceive(self, max_messages: int = 10, *, wait: float = 0.0) -> list[TopicMessage]:
        """Asyncio twin of :meth:`receive`; the long-poll suspends, never blocks the loop."""
        self._check_receive(max_messages, wait)
        store = self._store
        while True:
            records = await store.areceive(
                self.name, max_messages, self.visibility_timeout, self.max_deliveries, wait
            )
            if not records:
                return []
            messages, failed = self._messages(records)
            for record, reason in failed:
                await store.anack(
                    self.name, record.offset, record.token, 0.0, None, self.max_deliveries, reason
                )
            if messages:
                return messages
            wait = 0.0

    # -- settling --------------------------------------------------------------------------

    def _receipt(self, message: TopicMessage | TopicReceipt) -> TopicReceipt:
        receipt = message.receipt if isinstance(message, TopicMessage) else message
        if not isinstance(receipt, TopicReceipt):
            raise TypeError(
                f"expected a TopicMessage or TopicReceipt, got {type(message).__name__}"
            )
        if receipt.group != self.name:
            raise ConfigurationError(
                f"the receipt of offset {receipt.offset} belongs to group {receipt.group!r}, "
                f"not {self.name!r}; settle it with that group"
            )
        return receipt

    def ack(
        self, message: TopicMessage | TopicReceipt, *, transaction: Transaction | None = None
    ) -> None:
        """Settle a received message for this group; raises :class:`StaleTopicReceiptError`.

        ``transaction`` makes the ack part of a caller's database transaction, so
        business writes and the ack commit together (SQLite, PostgreSQL).
        """
        receipt = self._receipt(message)
        if not self._store.ack(self.name, receipt.offset, receipt.token, transaction):
            raise StaleTopicReceiptError(self.topic.name, self.name, "ack", receipt.offset)

    async def aack(
        self, message: TopicMessage | TopicReceipt, *, transaction: Transaction | None = None
    ) -> None:
        """Asyncio twin of :meth:`ack`."""
        receipt = self._receipt(message)
        if not await self._store.aack(self.name, receipt.offset, receipt.token, transaction):
            raise StaleTopicReceiptError(self.topic.name, self.name, "ack", receipt.offset)

    def nack(
        self,
        message: TopicMessage | TopicReceipt,
        delay: float = 0.0,
        *,
        error: str | BaseException | None = None,
    ) -> None:
        """Give the message back to the group, deliverable again after ``delay`` seconds.

        On its last allowed delivery it moves to the group's dead letters instead,
        with ``error`` as the last error. Later messages of its key keep waiting.
        """
        receipt = self._receipt(message)
        if delay:
            delay = check_non_negative("delay", delay)
        outcome = self._store.nack(
            self.name,
            receipt.offset,
            receipt.token,
            delay,
            error_text(error),
            self.max_deliveries,
            None,
        )
        if outcome == "stale":
            raise StaleTopicReceiptError(self.topic.name, self.name, "nack", receipt.offset)

    async def anack(
        self,
        message: TopicMessage | TopicReceipt,
        delay: float = 0.0,
        *,
        error: str | BaseException | None = None,
    ) -> None:
        """Asyncio twin of :meth:`nack`."""
        receipt = self._receipt(message)
        if delay:
            delay = check_non_negative("delay", delay)
        outcome = await self._store.anack(
            self.name,
            receipt.offset,
            receipt.token,
            delay,
            error_text(error),
            self.max_deliveries,
            None,
        )
        if outcome == "stale":
            raise StaleTopicReceiptError(self.topic.name, self.name, "nack", receipt.offset)

    # -- replay and inspection -------------------------------------------------------------

    def seek(self, offset: int) -> None:
        """Replay from ``offset``: the group's next message is the first at or after it.

        Messages the group holds unacknowledged are dropped (their receipts turn stale).
        """
        self._store.seek(self.name, check_offset("offset", offset))

    async def aseek(self, offset: int) -> None:
        """Asyncio twin of :meth:`seek`."""
        await self._store.aseek(self.name, check_offset("offset", offset))

    def seek_time(self, epoch_seconds: float) -> int:
        """Replay from the first message published at or after a time; return its offset."""
        return self._store.seek_time(self.name, check_time("epoch_seconds", epoch_seconds))

    async def aseek_time(self, epoch_seconds: float) -> int:
        """Asyncio twin of :meth:`seek_time`."""
        return await self._store.aseek_time(self.name, check_time("epoch_seconds", epoch_seconds))

    def lag(self) -> int:
        """How many retained messages this group has not acknowledged yet."""
        return self._store.lag(self.name)

    async def alag(self) -> int:
        """Asyncio twin of :meth:`lag`."""
        return await self._store.alag(self.name)

    def _dead(self, letters: list[TopicDeadLetter]) -> list[TopicDeadLetter]:
        return [
            TopicDeadLetter(
                letter.topic,
                letter.group,
                letter.offset,
                letter.key,
                self._decoded_or_raw(letter.body),
                letter.headers or NO_HEADERS,
                letter.published_at,
                letter.delivery_count,
                letter.dead_at,
                letter.reason,
                letter.last_error,
            )
            for letter in letters
        ]

    def _decoded_or_raw(self, data: bytes) -> Any:
        try:
            return self._decode(data)
        except Exception:  # shown as stored: inspecting must work on undecodable messages
            return data

    def dead_letters(self, limit: int = 100) -> list[TopicDeadLetter]:
        """The messages this group gave up on, oldest first."""
        limit = check_positive_int("limit", limit)
        return self._dead(self._store.dead_letters(self.name, limit))

    async def adead_letters(self, limit: int = 100) -> list[TopicDeadLetter]:
        """Asyncio twin of :meth:`dead_letters`."""
        limit = check_positive_int("limit", limit)
        return self._dead(await self._store.adead_letters(self.name, limit))

    def __repr__(self) -> str:
        return f"ConsumerGroup({self.name!r}, topic={self.topic.name!r})"


def _refuse_blocking_in_loop(topic: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    from seawall.messaging.channel import BlockingInEventLoopError

    raise BlockingInEventLoopError(topic, "receive", "areceive")
