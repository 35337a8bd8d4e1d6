"""The queue users hold: validates, encodes and decodes, and calls a store.

One object serves threads and asyncio: ``send``/``receive``/``ack`` block,
``asend``/``areceive``/``aack`` are awaited. Both flavours share the checks and the
decoding here; only the store call differs.
"""

from __future__ import annotations

import asyncio
import builtins
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.codec import Codec
from seawall.events import EventHub
from seawall.messaging.claim_check._claim import CLAIM_CHECK_HEADER
from seawall.messaging.claim_check._hooks import ClaimHooks
from seawall.messaging.queue._errors import MessageTooLargeError, StaleReceiptError
from seawall.messaging.queue._events import MessageRedelivered, StaleReceiptRejected
from seawall.messaging.queue._model import (
    NO_HEADERS,
    DeadLetter,
    Envelope,
    Message,
    OutgoingMessage,
    QueuedMessage,
    QueueStats,
    Receipt,
    StoredMessage,
)
from seawall.messaging.queue._store import AsyncQueueStore, QueueStore
from seawall.messaging.queue._validate import (
    MAX_BATCH,
    MAX_PRIORITY,
    check_dedup_id,
    check_headers,
    check_max_messages,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_priority,
    error_text,
)

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction
    from seawall.messaging.claim_check import ClaimCheck

__all__ = ["DeadLetters", "Queue"]


class Queue:
    """A durable, at-least-once queue on one engine (open it with ``engine.queue(name)``).

    ``send`` stores a message; ``receive`` claims messages for a visibility timeout;
    ``ack`` removes a message, ``nack`` gives it back; a message delivered
    ``max_deliveries`` times without an ack moves to :attr:`dead_letters`. Every
    method has an asyncio twin prefixed with ``a``.
    """

    def __init__(
        self,
        store: QueueStore,
        *,
        codec: Codec,
        visibility_timeout: float,
        max_message_size: int,
        clock: Clock | None = None,
        async_store: Callable[[], AsyncQueueStore] | None = None,
        claim_check: ClaimCheck | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.name = store.name
        self.store = store
        self.codec = codec
        self.visibility_timeout = check_positive("visibility_timeout", visibility_timeout)
        self.max_message_size = check_positive_int("max_message_size", max_message_size)
        self.events: EventHub = store.events
        self.dead_letters = DeadLetters(self)
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._encode = codec.encode
        self._decode = codec.decode
        self._async_store_factory = async_store
        self._async_store: AsyncQueueStore | None = None
        self.engine = engine
        """The engine the queue lives on (None when built by hand around a store)."""
        self.claim_check = claim_check
        """Where bodies over its threshold go (None: every body travels inline)."""
        self._claims: ClaimHooks | None = None
        self._received: Callable[
            [list[StoredMessage]], tuple[list[Message], list[tuple[StoredMessage, str]]]
        ] = self._messages
        self._size_limit = self.max_message_size
        self._claim_threshold = sys.maxsize
        if claim_check is not None:
            self._claims = ClaimHooks(self, claim_check)
            self._size_limit = sys.maxsize
            self._claim_threshold = claim_check.threshold
            self._received = self._claims.messages

    @property
    def max_deliveries(self) -> int:
        """Deliveries allowed before a message moves to the dead letters."""
        return self.store.max_deliveries

    @property
    def async_store(self) -> AsyncQueueStore:
        """The asyncio flavour of the store, made on first use."""
        store = self._async_store
        if store is None:
            if self._async_store_factory is None:
                raise TypeError(f"queue {self.name!r} has no asyncio store")
            store = self._async_store = self._async_store_factory()
        return store

    # -- shared checks and conversions ------------------------------------------------------

    def _outgoing(
        self,
        body: Any,
        headers: Mapping[str, str] | None,
        priority: int,
        delay: float,
        dedup_id: str | None,
    ) -> OutgoingMessage:
        data = self._encode(body)
        if len(data) > self._size_limit:
            raise MessageTooLargeError(self.name, len(data), self.max_message_size)
        if priority.__class__ is not int or not 0 <= priority <= MAX_PRIORITY:
            check_priority(priority)
        if delay:
            delay = check_non_negative("delay", delay)
        if headers is not None:
            headers = check_headers(headers)
        if dedup_id is not None:
            check_dedup_id(dedup_id)
        return OutgoingMessage(data, headers, priority, delay, dedup_id)

    def _batch(
        self,
        bodies: Iterable[Any],
        headers: Mapping[str, str] | None,
        priority: int,
        delay: float,
    ) -> list[OutgoingMessage]:
        items = list(bodies)
        if any(isinstance(item, Envelope) for item in items):
            outgoing = self._outgoing
            return [
                outgoing(item.body, item.headers, item.priority, item.delay, item.dedup_id)
                if isinstance(item, Envelope)
                else outgoing(item, headers, priority, delay, None)
                for item in items
            ]
        # Plain bodies share their options: check those once, then encode each body.
        if not items:
            return []
        first = self._outgoing(items[0], headers, priority, delay, None)
        headers, delay = first.headers, first.delay
        encode, limit = self._encode, self._size_limit
        batch = [first]
        for item in items[1:]:
            data = encode(item)
            if len(data) > limit:
                raise MessageTooLargeError(self.name, len(data), self.max_message_size)
            batch.append(OutgoingMessage(data, headers, priority, delay, None))
        return batch

    def _receive_options(
        self, max_messages: int, visibility_timeout: float | None, wait: float
    ) -> float:
        if max_messages.__class__ is not int or not 1 <= max_messages <= MAX_BATCH:
            check_max_messages(max_messages)
        if wait:
            check_non_negative("wait", wait)
        if visibility_timeout is None:
            return self.visibility_timeout
        return check_positive("visibility_timeout", visibility_timeout)

    def _messages(
        self, records: list[StoredMessage]
    ) -> tuple[list[Message], list[tuple[StoredMessage, str]]]:
        """Decode claimed records; the undecodable ones come back with the reason."""
        decode = self._decode
        messages: list[Message] = []
        failed: list[tuple[StoredMessage, str]] = []
        for record in records:
            try:
                body = decode(record.body)
            except Exception as exc:  # any codec failure: the message is dead-lettered
                failed.append((record, self._undecodable(record, exc)))
                continue
            messages.append(
                Message(
                    self,
                    record.id,
                    body,
                    record.headers or NO_HEADERS,
                    record.priority,
                    record.delivery_count,
                    record.enqueued_at,
                    record.token,
                )
            )
        if self.events.active:
            for message in messages:
                if message.delivery_count > 1:
                    self.events.emit(
                        MessageRedelivered(self.name, message.id, message.delivery_count)
                    )
        return messages, failed

    def _undecodable(self, record: StoredMessage, error: Exception) -> str:
        if self._claims is None and record.headers and CLAIM_CHECK_HEADER in record.headers:
            return (
                f"body is a claim check reference ({record.headers[CLAIM_CHECK_HEADER]!r}) but "
                "this queue has no claim_check: open it with the producers' claim_check=..."
            )
        return f"body cannot be decoded: {type(error).__name__}: {error}"

    def _peeked(self, records: list[QueuedMessage]) -> list[QueuedMessage]:
        return [
            QueuedMessage(
                record.id,
                self._shown(record.body, record.headers),
                record.headers or NO_HEADERS,
                record.priority,
                record.delivery_count,
                record.enqueued_at,
                record.available_at,
                record.last_error,
            )
            for record in records
        ]

    def _dead(self, record: DeadLetter) -> DeadLetter:
        return DeadLetter(
            record.id,
            self._shown(record.body, record.headers),
            record.headers or NO_HEADERS,
            record.priority,
            record.delivery_count,
            record.enqueued_at,
            record.dead_at,
            record.reason,
            record.last_error,
        )

    def _shown(self, data: bytes, headers: Mapping[str, str] | None) -> Any:
        """A stored body for inspection: claim checks resolved, decoded when possible."""
        if self._claims is not None and headers:
            data = self._claims.shown(data, headers)
        return self._decoded_or_raw(data)

    def _decoded_or_raw(self, data: bytes) -> Any:
        try:
            return self._decode(data)
        except Exception:  # shown as stored: inspecting must work on undecodable messages
            return data

    def _stale(self, operation: str, message_ids: Sequence[str]) -> StaleReceiptError:
        if self.events.active:
            for message_id in message_ids:
                self.events.emit(StaleReceiptRejected(self.name, message_id, operation))
        return StaleReceiptError(self.name, operation, message_ids)

    def _deadline(self, wait: float) -> float:
        return self._clock.now() + wait if wait > 0 else 0.0

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - self._clock.now()) if deadline else 0.0

    # -- sending ---------------------------------------------------------------------------

    def send(
        self,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        priority: int = 0,
        delay: float = 0.0,
        dedup_id: str | None = None,
        transaction: Transaction | None = None,
    ) -> str:
        """Store one message and return its id (the first one's id for a duplicate).

        ``priority`` 0-9 (higher first), ``delay`` seconds before it can be received,
        ``dedup_id`` drops repeats within the queue's deduplication window,
        ``transaction`` joins a caller's database transaction (SQLite, PostgreSQL).
        """
        message = self._outgoing(body, headers, priority, delay, dedup_id)
        if len(message.body) > self._claim_threshold and self._claims is not None:
            return self._claims.send(message, transaction)
        return self.store.send(
            message.body, message.headers, priority, message.delay, dedup_id, transaction
        )

    async def asend(
        self,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        priority: int = 0,
        delay: float = 0.0,
        dedup_id: str | None = None,
        transaction: Transaction | None = None,
    ) -> str:
        """Asyncio twin of :meth:`send`."""
        message = self._outgoing(body, headers, priority, delay, dedup_id)
        if len(message.body) > self._claim_threshold and self._claims is not None:
            return await self._claims.asend(message, transaction)
        return await self.async_store.send(
            message.body, message.headers, priority, message.delay, dedup_id, transaction
        )

    def send_many(
        self,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, str] | None = None,
        priority: int = 0,
        delay: float = 0.0,
        transaction: Transaction | None = None,
    ) -> list[str]:
        """Store many messages atomically (all or none); return their ids in order.

        The options apply to every plain body; wrap a body in :class:`Envelope` to
        give it its own headers, priority, delay or dedup_id.
        """
        batch = self._batch(bodies, headers, priority, delay)
        if self._claims is not None:
            return self._claims.send_many(batch, transaction)
        return self.store.send_many(batch, transaction)

    async def asend_many(
        self,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, str] | None = None,
        priority: int = 0,
        delay: float = 0.0,
        transaction: Transaction | None = None,
    ) -> list[str]:
        """Asyncio twin of :meth:`send_many`."""
        batch = self._batch(bodies, headers, priority, delay)
        if self._claims is not None:
            return await self._claims.asend_many(batch, transaction)
        return await self.async_store.send_many(batch, transaction)

    # -- receiving -------------------------------------------------------------------------

    def receive(
        self,
        max_messages: int = 1,
        *,
        visibility_timeout: float | None = None,
        wait: float = 0.0,
    ) -> list[Message]:
        """Claim up to ``max_messages`` ready messages, hidden from others until settled.

        Each stays invisible for ``visibility_timeout`` seconds (default: the queue's);
        ``wait`` > 0 long-polls that many seconds for the first message. Messages whose
        body cannot be decoded go to the dead letters and are not returned.
        """
        timeout = self._receive_options(max_messages, visibility_timeout, wait)
        if wait:
            _refuse_blocking_in_loop(self.name)
        records = self.store.receive(max_messages, timeout, wait)
        if not records:
            return []
        messages, failed = self._received(records)
        if not failed:
            return messages
        deadline = self._deadline(wait)
        while True:
            for record, reason in failed:
                self.store.dead_letter(record.id, record.token, reason)
            if messages:
                return messages
            records = self.store.receive(max_messages, timeout, self._remaining(deadline))
            if not records:
                return []
            messages, failed = self._received(records)

    async def areceive(
        self,
        max_messages: int = 1,
        *,
        visibility_timeout: float | None = None,
        wait: float = 0.0,
    ) -> list[Message]:
        """Asyncio twin of :meth:`receive`; the long-poll suspends, never blocks the loop."""
        timeout = self._receive_options(max_messages, visibility_timeout, wait)
        store = self.async_store
        deadline = self._deadline(wait)
        records = await store.receive(max_messages, timeout, wait)
        while True:
            if not records:
                return []
            if self._claims is not None:
                records, missing = await self._claims.aresolve(records)
                messages, failed = self._messages(records)
                failed.extend(missing)
            else:
                messages, failed = self._messages(records)
            for record, reason in failed:
                await store.dead_letter(record.id, record.token, reason)
            if messages:
                return messages
            records = await store.receive(max_messages, timeout, self._remaining(deadline))

    # -- settling --------------------------------------------------------------------------

    def ack(self, message: Message | Receipt, *, transaction: Transaction | None = None) -> None:
        """Remove a received message for good; raises :class:`StaleReceiptError` if not held.

        ``transaction`` makes the ack part of a caller's database transaction, so
        business writes and the ack commit together (SQLite, PostgreSQL).
        """
        if not self.store.ack(message.id, message.token, transaction):
            raise self._stale("ack", [message.id])
        if self._claims is not None:
            self._claims.acked([message], transaction)

    async def aack(
        self, message: Message | Receipt, *, transaction: Transaction | None = None
    ) -> None:
        """Asyncio twin of :meth:`ack`."""
        if not await self.async_store.ack(message.id, message.token, transaction):
            raise self._stale("ack", [message.id])
        if self._claims is not None:
            await self._claims.aacked([message], transaction)

    def ack_many(
        self, messages: Iterable[Message | Receipt], *, transaction: Transaction | None = None
    ) -> None:
        """Acknowledge many messages in one round trip.

        Every receipt that still holds its message is acknowledged; if some were
        stale, :class:`StaleReceiptError` then lists them.
        """
        receipts = list(messages)
        stale = self.store.ack_many(receipts, transaction)
        if self._claims is not None:
            self._claims.acked(_settled(receipts, stale), transaction)
        if stale:
            raise self._stale("ack_many", [receipt.id for receipt in stale])

    async def aack_many(
        self, messages: Iterable[Message | Receipt], *, transaction: Transaction | None = None
    ) -> None:
        """Asyncio twin of :meth:`ack_many`."""
        receipts = list(messages)
        stale = await self.async_store.ack_many(receipts, transaction)
        if self._claims is not None:
            await self._claims.aacked(_settled(receipts, stale), transaction)
        if stale:
            raise self._stale("ack_many", [receipt.id for receipt in stale])

    def nack(
        self,
        message: Message | Receipt,
        *,
        delay: float = 0.0,
        error: str | BaseException | None = None,
    ) -> None:
        """Give a message back: receivable again after ``delay`` seconds.

        ``error`` is kept as the message's last error. On its last allowed delivery
        the message moves to the dead letters instead.
        """
        delay = check_non_negative("delay", delay) if delay else 0.0
        outcome = self.store.nack(message.id, message.token, delay, error_text(error))
        if outcome == "stale":
            raise self._stale("nack", [message.id])

    async def anack(
        self,
        message: Message | Receipt,
        *,
        delay: float = 0.0,
        error: str | BaseException | None = None,
    ) -> None:
        """Asyncio twin of :meth:`nack`."""
        delay = check_non_negative("delay", delay) if delay else 0.0
        outcome = await self.async_store.nack(message.id, message.token, delay, error_text(error))
        if outcome == "stale":
            raise self._stale("nack", [message.id])

    def extend_visibility(self, message: Message | Receipt, visibility_timeout: float) -> None:
        """Keep a received message hidden ``visibility_timeout`` more seconds from now (a heartbeat)."""
        visibility_timeout = check_positive("visibility_timeout", visibility_timeout)
        if not self.store.extend_visibility(message.id, message.token, visibility_timeout):
            raise self._stale("extend_visibility", [message.id])

    async def aextend_visibility(
        self, message: Message | Receipt, visibility_timeout: float
    ) -> None:
        """Asyncio twin of :meth:`extend_visibility`."""
        visibility_timeout = check_positive("visibility_timeout", visibility_timeout)
        if not await self.async_store.extend_visibility(
            message.id, message.token, visibility_timeout
        ):
            raise self._stale("extend_visibility", [message.id])

    # -- inspecting ------------------------------------------------------------------------

    def peek(self, limit: int = 10) -> list[QueuedMessage]:
        """The next ``limit`` ready messages in the order ``receive`` would hand them out."""
        return self._peeked(self.store.peek(check_positive_int("limit", limit, MAX_BATCH)))

    async def apeek(self, limit: int = 10) -> list[QueuedMessage]:
        """Asyncio twin of :meth:`peek`."""
        limit = check_positive_int("limit", limit, MAX_BATCH)
        return self._peeked(await self.async_store.peek(limit))

    def stats(self) -> QueueStats:
        """How many messages are ready, in flight, delayed and dead."""
        return self.store.stats()

    async def astats(self) -> QueueStats:
        """Asyncio twin of :meth:`stats`."""
        return await self.async_store.stats()

    def purge(self) -> int:
        """Delete every message (ready, delayed, in flight) but the dead letters; return how many."""
        return self.store.purge()

    async def apurge(self) -> int:
        """Asyncio twin of :meth:`purge`."""
        return await self.async_store.purge()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release the store's own connections (the engine stays open)."""
        self.store.close()

    async def aclose(self) -> None:
        """Asyncio twin of :meth:`close`."""
        if self._async_store is not None:
            await self._async_store.aclose()
        self.store.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, store={self.store!r})"


class DeadLetters:
    """A queue's dead letters: list, peek, redrive (one, some or all) and purge."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, in the order they died."""
        limit = check_positive_int("limit", limit, MAX_BATCH)
        return [self._queue._dead(record) for record in self._queue.store.dead_letters(limit)]

    async def alist(self, limit: int = 100) -> builtins.list[DeadLetter]:
        """Asyncio twin of :meth:`list`."""
        limit = check_positive_int("limit", limit, MAX_BATCH)
        records = await self._queue.async_store.dead_letters(limit)
        return [self._queue._dead(record) for record in records]

    def peek(self, message_id: str) -> DeadLetter | None:
        """One dead letter by id, or None when there is no such dead letter."""
        record = self._queue.store.peek_dead_letter(str(message_id))
        return None if record is None else self._queue._dead(record)

    async def apeek(self, message_id: str) -> DeadLetter | None:
        """Asyncio twin of :meth:`peek`."""
        record = await self._queue.async_store.peek_dead_letter(str(message_id))
        return None if record is None else self._queue._dead(record)

    def redrive(self, message_ids: str | Iterable[str] | None = None) -> int:
        """Send dead letters back to the queue, delivery count reset; None means all.

        Returns how many moved. Redriven messages are ready at once, behind the
        messages already waiting at their priority.
        """
        return self._queue.store.redrive(_ids(message_ids))

    async def aredrive(self, message_ids: str | Iterable[str] | None = None) -> int:
        """Asyncio twin of :meth:`redrive`."""
        return await self._queue.async_store.redrive(_ids(message_ids))

    def purge(self) -> int:
        """Delete every dead letter for good (and their claim-check blobs); return how many."""
        claims = self._queue._claims
        if claims is None:
            return self._queue.store.purge_dead_letters()
        return claims.purge_dead_letters()

    async def apurge(self) -> int:
        """Asyncio twin of :meth:`purge`."""
        claims = self._queue._claims
        if claims is None:
            return await self._queue.async_store.purge_dead_letters()
        return await claims.apurge_dead_letters()

    def count(self) -> int:
        """How many dead letters there are."""
        return self._queue.store.stats().dead

    def __repr__(self) -> str:
        return f"DeadLetters({self._queue.name!r})"


def _settled(receipts: list[Message | Receipt], stale: Sequence[Any]) -> list[Message | Receipt]:
    """The receipts of an ``ack_many`` that were acknowledged (not among the stale ones)."""
    if not stale:
        return receipts
    stale_ids = {(receipt.id, receipt.token) for receipt in stale}
    return [receipt for receipt in receipts if (receipt.id, receipt.token) not in stale_ids]


def _ids(message_ids: str | Iterable[str] | None) -> list[str] | None:
    if message_ids is None:
        return None
    if isinstance(message_ids, str):
        return [message_ids]
    return [str(message_id) for message_id in message_ids]


def _refuse_blocking_in_loop(queue: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    from seawall.messaging.channel import BlockingInEventLoopError

    raise BlockingInEventLoopError(queue, "receive", "areceive")
