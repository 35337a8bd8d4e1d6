"""The storage contract every queue engine implements (``QueueStore`` / ``AsyncQueueStore``).

A store is bound to one queue name. It keeps bytes, never decoded bodies: the
:class:`~seawall.messaging.queue.Queue` facade validates, encodes and decodes, and
calls the store with plain values. The conformance suite
(``tests/conformance/test_queue_stores.py``) runs this contract against every engine.

**States.** A stored message is *ready* (receivable now), *in flight* (delivered,
invisible until its visibility deadline), *delayed* (invisible until a send or nack
delay ends) or *dead* (in the dead letters). An in-flight message whose deadline
passed is ready again; so is a delayed one whose delay ended (SQLite notices the
latter lazily: at once when a claim comes back short, otherwise within 50 ms).

**Order.** ``receive`` hands out ready messages by priority (higher first, 0-9),
then by place in line. A message takes its place when it is sent, when its delay
ends, or when it is redriven; a redelivery (visibility timeout expired, or nack
without delay) keeps its place, so it is retried before newer messages of its
priority, as RabbitMQ requeues. A batch holds the first messages in that order and
returns them in it. (Memory and SQLite keep this exactly; an engine that cannot keep
a redelivery's place may put it at the back: the conformance suite checks priority
and FIFO of fresh messages only.)

**Bodies.** Stores keep and return bytes: ``StoredMessage.body``, and the ``body`` of
the ``QueuedMessage`` and ``DeadLetter`` records they return, are the stored bytes;
the facade decodes them.

**Receipts.** Every delivery gets a fresh, unguessable ``token``. ``ack``, ``nack``,
``extend_visibility`` and ``dead_letter`` act only when ``(message_id, token)``
matches the latest delivery; otherwise they change nothing and report it
(``False`` / ``"stale"`` / the stale receipts). A receipt stays valid after its
visibility deadline until the message is delivered again (acknowledging late is
fine as long as nobody else took the message).

**Deliveries.** ``receive`` increments ``delivery_count``. A ready message that was
already delivered ``max_deliveries`` times (its consumer never settled it) is not
delivered again: ``receive`` moves it to the dead letters (reason: visibility
timeout expired on the last allowed delivery) and emits ``MessageDeadLettered``.
``nack`` on the last allowed delivery also dead-letters, with the nack's error.

**Time.** Deadlines and delays use the engine's clock: SQLite uses the host's wall
clock (one machine), PostgreSQL ``now()``/``clock_timestamp()``, Redis ``TIME``. A
store accepts ``clock=`` for tests: when given, ``clock.now()`` is the time used
for every timestamp and ``clock.sleep``/``asleep`` for long-poll pauses, so tests
never sleep. All timestamps it returns are on that same scale (epoch seconds by
default).

**Deduplication.** A send with a ``dedup_id`` seen (on this queue) within the last
``dedup_window`` seconds stores nothing and returns the first message's id; the
window runs from the first send and is not extended by duplicates.

**Transactions.** Where the engine has transactions (SQLite, PostgreSQL), ``send``,
``send_many``, ``ack`` and ``ack_many`` accept the caller's
:class:`~seawall.engines._base.Transaction`: the write joins it and takes effect
only when the caller commits (a transactional outbox, or exactly-once processing
of business writes plus the ack). Stores without transactions reject one.

**Long-poll.** ``receive(..., wait=seconds)`` returns as soon as at least one
message is ready, or an empty list after ``wait`` seconds. Engines use what they
have: in-process wake-ups plus capped polling (memory, SQLite), LISTEN/NOTIFY
(PostgreSQL), ``XREADGROUP BLOCK`` (Redis).

How later engines map it (see docs/messaging/queue.md for the full sketch):
PostgreSQL claims with ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED
LIMIT n) RETURNING``; Redis keeps ready messages in per-priority streams read with
``XREADGROUP`` and reclaims expired deliveries with ``XAUTOCLAIM``, the token and
delivery count living in a hash updated by a Lua script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from seawall.events import EventHub
from seawall.messaging.queue._model import (
    DeadLetter,
    OutgoingMessage,
    QueuedMessage,
    QueueStats,
    ReceiptLike,
    StoredMessage,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from seawall.engines._base import Transaction

__all__ = ["AsyncQueueStore", "NackOutcome", "QueueStore"]

NackOutcome = Literal["requeued", "dead_lettered", "stale"]
"""What a nack did: put the message back, moved it to the dead letters, or nothing."""


@runtime_checkable
class QueueStore(Protocol):
    """One queue's storage on one engine, synchronous flavour (see the module docstring)."""

    name: str
    """The queue's name."""
    max_deliveries: int
    """Deliveries allowed before a message is dead-lettered (at least 1)."""
    events: EventHub
    """Where the store emits MessageDeadLettered and MessageDeduplicated."""

    def send(
        self,
        body: bytes,
        headers: Mapping[str, str] | None,
        priority: int,
        delay: float,
        dedup_id: str | None,
        transaction: Transaction | None,
    ) -> str:
        """Store one message (ready now, or waiting ``delay`` seconds); return its id."""
        ...

    def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """Store every message atomically (all or none); return their ids in order."""
        ...

    def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """Claim up to ``max_messages`` ready messages for ``visibility_timeout`` seconds.

        Waits up to ``wait`` seconds for the first one when none is ready.
        """
        ...

    def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the message if the receipt holds it; False (and no change) if stale."""
        ...

    def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """Acknowledge every receipt that holds its message; return the stale ones."""
        ...

    def nack(self, message_id: str, token: str, delay: float, error: str | None) -> NackOutcome:
        """Release the delivery: ready again after ``delay`` (or dead on the last delivery)."""
        ...

    def extend_visibility(self, message_id: str, token: str, visibility_timeout: float) -> bool:
        """Make the delivery's deadline ``now + visibility_timeout``; False if the receipt is stale."""
        ...

    def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """Move a held message to the dead letters with ``reason``; False if stale."""
        ...

    def peek(self, limit: int) -> list[QueuedMessage]:
        """The next ``limit`` ready messages in receive order, without claiming them."""
        ...

    def stats(self) -> QueueStats:
        """Counts of ready, in-flight, delayed and dead messages."""
        ...

    def purge(self) -> int:
        """Delete every message that is not dead (in flight ones too); return how many."""
        ...

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, in the order they died."""
        ...

    def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """One dead letter by id, or None."""
        ...

    def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Make dead letters ready again (delivery count reset); None means all."""
        ...

    def purge_dead_letters(self) -> int:
        """Delete every dead letter; return how many."""
        ...

    def close(self) -> None:
        """Release what the store holds (connections it opened itself)."""
        ...


@runtime_checkable
class AsyncQueueStore(Protocol):
    """The asyncio flavour of :class:`QueueStore`: the same contract, awaited."""

    name: str
    max_deliveries: int
    events: EventHub

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
        ...

    async def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """See :meth:`QueueStore.send_many`."""
        ...

    async def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """See :meth:`QueueStore.receive`."""
        ...

    async def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """See :meth:`QueueStore.ack`."""
        ...

    async def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """See :meth:`QueueStore.ack_many`."""
        ...

    async def nack(
        self, message_id: str, token: str, delay: float, error: str | None
    ) -> NackOutcome:
        """See :meth:`QueueStore.nack`."""
        ...

    async def extend_visibility(
        self, message_id: str, token: str, visibility_timeout: float
    ) -> bool:
        """See :meth:`QueueStore.extend_visibility`."""
        ...

    async def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """See :meth:`QueueStore.dead_letter`."""
        ...

    async def peek(self, limit: int) -> list[QueuedMessage]:
        """See :meth:`QueueStore.peek`."""
        ...

    async def stats(self) -> QueueStats:
        """See :meth:`QueueStore.stats`."""
        ...

    async def purge(self) -> int:
        """See :meth:`QueueStore.purge`."""
        ...

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """See :meth:`QueueStore.dead_letters`."""
        ...

    async def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """See :meth:`QueueStore.peek_dead_letter`."""
        ...

    async def redrive(self, message_ids: Sequence[str] | None) -> int:
        """See :meth:`QueueStore.redrive`."""
        ...

    async def purge_dead_letters(self) -> int:
        """See :meth:`QueueStore.purge_dead_letters`."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds."""
        ...
