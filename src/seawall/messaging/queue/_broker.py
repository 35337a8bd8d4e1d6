"""What the broker queue stores (RabbitMQ, NATS JetStream) share.

Both drivers are asyncio only, so each broker has one asyncio core per event loop: the
native async store awaits it on the caller's loop, and the sync store runs a core of its
own on the engine's private loop thread (``engine.run``). Seawall's own message data
travels in headers named here.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from seawall.clock import Clock
from seawall.engines._base import Transaction
from seawall.errors import ConfigurationError
from seawall.events import EventHub
from seawall.messaging.queue._model import (
    DeadLetter,
    OutgoingMessage,
    QueuedMessage,
    QueueStats,
    ReceiptLike,
    StoredMessage,
)
from seawall.messaging.queue._polling import Doorbell
from seawall.messaging.queue._store import NackOutcome

__all__ = [
    "HEADER_DEAD_AT",
    "HEADER_DELIVERIES",
    "HEADER_ENQUEUED_AT",
    "HEADER_HEADERS",
    "HEADER_ID",
    "HEADER_LAST_ERROR",
    "HEADER_NOT_BEFORE",
    "HEADER_PRIORITY",
    "HEADER_REASON",
    "AsyncCore",
    "SyncStore",
    "decode_error",
    "decode_headers",
    "doorbell_for",
    "encode_error",
    "encode_headers",
    "expired_reason",
    "nacked_reason",
    "now",
    "refuse_transaction",
]

T = TypeVar("T")

HEADER_ID = "Seawall-Id"
HEADER_PRIORITY = "Seawall-Priority"
HEADER_ENQUEUED_AT = "Seawall-Enqueued-At"
HEADER_HEADERS = "Seawall-Headers"
HEADER_DELIVERIES = "Seawall-Deliveries"
"""Deliveries of earlier copies of the message (it is republished on nack with an error)."""
HEADER_LAST_ERROR = "Seawall-Last-Error"
HEADER_NOT_BEFORE = "Seawall-Not-Before"
HEADER_REASON = "Seawall-Reason"
HEADER_DEAD_AT = "Seawall-Dead-At"

_doorbells: dict[tuple[str, str], Doorbell] = {}
_doorbells_lock = threading.Lock()


def doorbell_for(url: str, name: str) -> Doorbell:
    """The doorbell every store of queue ``name`` on ``url`` in this process shares."""
    with _doorbells_lock:
        bell = _doorbells.get((url, name))
        if bell is None:
            bell = _doorbells[(url, name)] = Doorbell()
        return bell


def now(clock: Clock | None) -> float:
    """The injected clock's time, or the host's wall clock (epoch seconds)."""
    return clock.now() if clock is not None else time.time()


def encode_headers(headers: Mapping[str, str] | None) -> str | None:
    """The caller's headers as one JSON header value (any text survives the transport)."""
    return json.dumps(dict(headers), separators=(",", ":")) if headers else None


def decode_headers(value: str | None) -> Mapping[str, str] | None:
    """The caller's headers back from :func:`encode_headers`."""
    return json.loads(value) if value else None


def encode_error(error: str) -> str:
    """A last error as a header value (JSON: newlines and any character survive)."""
    return json.dumps(error)


def decode_error(value: str | None) -> str | None:
    """The last error back from :func:`encode_error`."""
    return str(json.loads(value)) if value else None


def expired_reason(deliveries: int, max_deliveries: int) -> str:
    """Why a message whose last allowed delivery was never settled is dead."""
    return (
        f"visibility timeout expired on its last allowed delivery "
        f"({deliveries} of max_deliveries={max_deliveries})"
    )


def nacked_reason(deliveries: int, max_deliveries: int) -> str:
    """Why a message nacked on its last allowed delivery is dead."""
    return (
        f"negatively acknowledged on its last allowed delivery "
        f"({deliveries} of max_deliveries={max_deliveries})"
    )


def refuse_transaction(transaction: object, broker: str) -> None:
    """Brokers have no SQL transaction to join: refuse one, naming what to use instead."""
    if transaction is not None:
        raise ConfigurationError(
            f"transaction=... is not supported on the {broker} engine: a broker has no SQL "
            "transaction to join; write to an outbox on PostgreSQL or SQLite in your "
            "transaction and relay it to the broker"
        )


class AsyncCore(Protocol):
    """The asyncio operations of one broker queue (one instance per event loop)."""

    name: str
    max_deliveries: int
    events: EventHub

    async def declare(self) -> None: ...
    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]: ...
    async def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]: ...
    async def ack_many(self, receipts: Sequence[ReceiptLike]) -> list[ReceiptLike]: ...
    async def nack(
        self, message_id: str, token: str, delay: float, error: str | None
    ) -> NackOutcome: ...
    async def extend_visibility(
        self, message_id: str, token: str, visibility_timeout: float
    ) -> bool: ...
    async def dead_letter(self, message_id: str, token: str, reason: str) -> bool: ...
    async def peek(self, limit: int) -> list[QueuedMessage]: ...
    async def stats(self) -> QueueStats: ...
    async def purge(self) -> int: ...
    async def dead_letters(self, limit: int, message_id: str | None = None) -> list[DeadLetter]: ...
    async def redrive(self, message_ids: Sequence[str] | None) -> int: ...
    async def purge_dead_letters(self) -> int: ...
    async def close(self) -> None: ...


class _Receipt:
    __slots__ = ("id", "token")

    def __init__(self, message_id: str, token: str) -> None:
        self.id = message_id
        self.token = token


class _Runs(Protocol):
    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T: ...


class SyncStore:
    """A :class:`~seawall.messaging.queue.QueueStore` running an :class:`AsyncCore` on the
    engine's private event loop thread."""

    broker = ""

    def __init__(self, engine: _Runs, core: AsyncCore) -> None:
        self._engine = engine
        self._core = core
        self.name = core.name
        self.max_deliveries = core.max_deliveries
        self.events = core.events
        self._run(core.declare())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._engine.run(coroutine)

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
        refuse_transaction(transaction, self.broker)
        message = OutgoingMessage(body, headers, priority, delay, dedup_id)
        return self._run(self._core.send_many((message,)))[0]

    def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """Store messages; see :meth:`QueueStore.send_many`."""
        refuse_transaction(transaction, self.broker)
        if not messages:
            return []
        return self._run(self._core.send_many(messages))

    def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """Claim messages; see :meth:`QueueStore.receive`."""
        return self._run(self._core.receive(max_messages, visibility_timeout, wait))

    def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """Acknowledge one delivery; see :meth:`QueueStore.ack`."""
        refuse_transaction(transaction, self.broker)
        return not self._run(self._core.ack_many((_Receipt(message_id, token),)))

    def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """Acknowledge deliveries; see :meth:`QueueStore.ack_many`."""
        refuse_transaction(transaction, self.broker)
        return self._run(self._core.ack_many(receipts))

    def nack(self, message_id: str, token: str, delay: float, error: str | None) -> NackOutcome:
        """Release a delivery; see :meth:`QueueStore.nack`."""
        return self._run(self._core.nack(message_id, token, delay, error))

    def extend_visibility(self, message_id: str, token: str, visibility_timeout: float) -> bool:
        """Keep a delivery hidden longer; see :meth:`QueueStore.extend_visibility`."""
        return self._run(self._core.extend_visibility(message_id, token, visibility_timeout))

    def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """Dead-letter a held message; see :meth:`QueueStore.dead_letter`."""
        return self._run(self._core.dead_letter(message_id, token, reason))

    def peek(self, limit: int) -> list[QueuedMessage]:
        """The next ready messages; see :meth:`QueueStore.peek`."""
        return self._run(self._core.peek(limit))

    def stats(self) -> QueueStats:
        """Counts per state; see :meth:`QueueStore.stats`."""
        return self._run(self._core.stats())

    def purge(self) -> int:
        """Delete live messages; see :meth:`QueueStore.purge`."""
        return self._run(self._core.purge())

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The oldest dead letters; see :meth:`QueueStore.dead_letters`."""
        return self._run(self._core.dead_letters(limit))

    def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """One dead letter; see :meth:`QueueStore.peek_dead_letter`."""
        found = self._run(self._core.dead_letters(1, message_id))
        return found[0] if found else None

    def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Dead letters back in line; see :meth:`QueueStore.redrive`."""
        return self._run(self._core.redrive(message_ids))

    def purge_dead_letters(self) -> int:
        """Delete every dead letter; see :meth:`QueueStore.purge_dead_letters`."""
        return self._run(self._core.purge_dead_letters())

    def close(self) -> None:
        """Release what this store holds on the engine's loop (the engine stays open)."""
        self._run(self._core.close())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AsyncStore:
    """An :class:`~seawall.messaging.queue.AsyncQueueStore` awaiting an :class:`AsyncCore`
    on the caller's event loop (declared on first use)."""

    broker = ""

    def __init__(self, core: AsyncCore) -> None:
        self._core = core
        self.name = core.name
        self.max_deliveries = core.max_deliveries
        self.events = core.events
        self._declared = False

    async def _ready(self) -> AsyncCore:
        if not self._declared:
            await self._core.declare()
            self._declared = True
        return self._core

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
        refuse_transaction(transaction, self.broker)
        message = OutgoingMessage(body, headers, priority, delay, dedup_id)
        return (await (await self._ready()).send_many((message,)))[0]

    async def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """See :meth:`QueueStore.send_many`."""
        refuse_transaction(transaction, self.broker)
        if not messages:
            return []
        return await (await self._ready()).send_many(messages)

    async def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """See :meth:`QueueStore.receive`."""
        return await (await self._ready()).receive(max_messages, visibility_timeout, wait)

    async def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """See :meth:`QueueStore.ack`."""
        refuse_transaction(transaction, self.broker)
        return not await (await self._ready()).ack_many((_Receipt(message_id, token),))

    async def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """See :meth:`QueueStore.ack_many`."""
        refuse_transaction(transaction, self.broker)
        return await (await self._ready()).ack_many(receipts)

    async def nack(
        self, message_id: str, token: str, delay: float, error: str | None
    ) -> NackOutcome:
        """See :meth:`QueueStore.nack`."""
        return await (await self._ready()).nack(message_id, token, delay, error)

    async def extend_visibility(
        self, message_id: str, token: str, visibility_timeout: float
    ) -> bool:
        """See :meth:`QueueStore.extend_visibility`."""
        core = await self._ready()
        return await core.extend_visibility(message_id, token, visibility_timeout)

    async def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """See :meth:`QueueStore.dead_letter`."""
        return await (await self._ready()).dead_letter(message_id, token, reason)

    async def peek(self, limit: int) -> list[QueuedMessage]:
        """See :meth:`QueueStore.peek`."""
        return await (await self._ready()).peek(limit)

    async def stats(self) -> QueueStats:
        """See :meth:`QueueStore.stats`."""
        return await (await self._ready()).stats()

    async def purge(self) -> int:
        """See :meth:`QueueStore.purge`."""
        return await (await self._ready()).purge()

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """See :meth:`QueueStore.dead_letters`."""
        return await (await self._ready()).dead_letters(limit)

    async def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """See :meth:`QueueStore.peek_dead_letter`."""
        found = await (await self._ready()).dead_letters(1, message_id)
        return found[0] if found else None

    async def redrive(self, message_ids: Sequence[str] | None) -> int:
        """See :meth:`QueueStore.redrive`."""
        return await (await self._ready()).redrive(message_ids)

    async def purge_dead_letters(self) -> int:
        """See :meth:`QueueStore.purge_dead_letters`."""
        return await (await self._ready()).purge_dead_letters()

    async def aclose(self) -> None:
        """Release what this store holds on the running loop (the engine stays open)."""
        await self._core.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
