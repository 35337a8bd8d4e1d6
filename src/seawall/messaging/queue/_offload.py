"""The asyncio flavour of a synchronous store: one copy of the logic, awaited.

Stores whose calls block (SQLite) run each call in the event loop's default thread
pool, the way aiosqlite does; stores that never block (memory) are called inline.
Long-polls never occupy a thread while they wait: each look at the queue is one
short call, and the pauses between looks are awaited on the loop (woken at once by
a send in this process through the store's doorbell).

A cancelled receive may still claim messages in its worker thread; they are then
delivered again after their visibility timeout (at-least-once).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from seawall.clock import Clock
from seawall.events import EventHub
from seawall.messaging.queue._model import (
    DeadLetter,
    OutgoingMessage,
    QueuedMessage,
    QueueStats,
    ReceiptLike,
    StoredMessage,
)
from seawall.messaging.queue._polling import Doorbell, apoll
from seawall.messaging.queue._store import NackOutcome, QueueStore

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["OffloadedQueueStore", "PollingQueueStore"]

T = TypeVar("T")


class PollingQueueStore(QueueStore, Protocol):
    """A synchronous store that long-polls with a doorbell (memory, SQLite)."""

    @property
    def doorbell(self) -> Doorbell:
        """Rung on every send in this process."""
        ...

    @property
    def clock(self) -> Clock | None:
        """The injected clock, or None for real time."""
        ...


class OffloadedQueueStore:
    """An :class:`~seawall.messaging.queue.AsyncQueueStore` over a synchronous store."""

    def __init__(self, store: PollingQueueStore, *, offload: bool) -> None:
        self.store = store
        self.name = store.name
        self.max_deliveries = store.max_deliveries
        self.events: EventHub = store.events
        self._offload = offload

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        if not self._offload:
            return function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(function, *args))

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
        return await self._call(
            self.store.send, body, headers, priority, delay, dedup_id, transaction
        )

    async def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """See :meth:`QueueStore.send_many`."""
        return await self._call(self.store.send_many, messages, transaction)

    async def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """See :meth:`QueueStore.receive`; waits on the loop, not in a thread."""

        async def look() -> list[StoredMessage]:
            return await self._call(self.store.receive, max_messages, visibility_timeout, 0.0)

        return await apoll(look, wait, self.store.doorbell, self.store.clock)

    async def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """See :meth:`QueueStore.ack`."""
        return await self._call(self.store.ack, message_id, token, transaction)

    async def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """See :meth:`QueueStore.ack_many`."""
        return await self._call(self.store.ack_many, receipts, transaction)

    async def nack(
        self, message_id: str, token: str, delay: float, error: str | None
    ) -> NackOutcome:
        """See :meth:`QueueStore.nack`."""
        return await self._call(self.store.nack, message_id, token, delay, error)

    async def extend_visibility(
        self, message_id: str, token: str, visibility_timeout: float
    ) -> bool:
        """See :meth:`QueueStore.extend_visibility`."""
        return await self._call(self.store.extend_visibility, message_id, token, visibility_timeout)

    async def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """See :meth:`QueueStore.dead_letter`."""
        return await self._call(self.store.dead_letter, message_id, token, reason)

    async def peek(self, limit: int) -> list[QueuedMessage]:
        """See :meth:`QueueStore.peek`."""
        return await self._call(self.store.peek, limit)

    async def stats(self) -> QueueStats:
        """See :meth:`QueueStore.stats`."""
        return await self._call(self.store.stats)

    async def purge(self) -> int:
        """See :meth:`QueueStore.purge`."""
        return await self._call(self.store.purge)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """See :meth:`QueueStore.dead_letters`."""
        return await self._call(self.store.dead_letters, limit)

    async def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """See :meth:`QueueStore.peek_dead_letter`."""
        return await self._call(self.store.peek_dead_letter, message_id)

    async def redrive(self, message_ids: Sequence[str] | None) -> int:
        """See :meth:`QueueStore.redrive`."""
        return await self._call(self.store.redrive, message_ids)

    async def purge_dead_letters(self) -> int:
        """See :meth:`QueueStore.purge_dead_letters`."""
        return await self._call(self.store.purge_dead_letters)

    async def aclose(self) -> None:
        """Close the wrapped store (its own connections)."""
        self.store.close()

    def __repr__(self) -> str:
        return f"OffloadedQueueStore({self.store!r}, offload={self._offload})"
