"""The storage contract every topic engine implements (:class:`TopicStore`).

A store is bound to one topic. It keeps bytes, never decoded bodies: the
:class:`~seawall.messaging.topic.Topic` facade validates, encodes and decodes. The
conformance suite (``tests/conformance/test_topic_stores.py``) runs this contract
against every engine. Each method has an asyncio twin prefixed with ``a``.

**Offsets.** ``publish`` gives each message an integer offset, strictly increasing
within the topic and never reused (1, 2, 3... on every engine; retention only ever
removes the oldest messages). A message is visible to groups once its publish has
committed, and never behind a higher offset a group has already moved past.

**Groups.** A group has a *cursor* (every offset up to it was taken into the group)
and a set of *pending* messages: taken in, not yet acknowledged nor dead. A pending
message is *in flight* (delivered, with a token and a visibility deadline), *ready*
(never delivered, nacked, or its deadline passed), or *blocked* behind an earlier
pending message with the same key. ``receive`` first hands out ready pending
messages in offset order, then takes fresh messages after the cursor. A message
whose key has an earlier pending message in the group is taken in blocked; it
becomes ready when that earlier one is acknowledged or dead-lettered. Messages
without a key are never blocked. So within a group, a message is never delivered
while an earlier message with the same key is unacknowledged (**per-key order**),
and consumers of one group never hold the same message at once (they compete);
every group sees every message after its start. A group holds at most :data:`MAX_PENDING`
pending messages; while it is that full, fresh messages wait after its cursor.

An engine that cannot refuse a superseded receipt (NATS JetStream) says so in its
module docstring, and the conformance suite skips those tests for it.

**Deliveries.** Each delivery raises the message's ``delivery_count`` in that group
and gets a fresh ``token``. ``ack`` and ``nack`` act only when ``(offset, token)``
matches the latest delivery; a receipt stays valid after its deadline until the
message is delivered again. A ready message already delivered ``max_deliveries``
times is not delivered again: ``receive`` moves it to the group's dead letters
(reason: visibility timeout expired on its last allowed delivery); ``nack`` on the
last allowed delivery does the same with the nack's error. ``nack(kill=reason)``
dead-letters at once (the facade uses it for bodies it cannot decode).

**Retention.** ``retention_count`` keeps the newest N messages, ``retention_age``
those published in the last N seconds; older ones are deleted for every group
(applied at publish, and at receive at least once a second). A group whose pending
message was removed by retention simply never sees it again; dead letters keep a
copy of the message.

**Seek.** ``seek(group, offset)`` drops the group's pending messages (their receipts
turn stale) and makes ``offset`` the next message the group takes in (an offset below
the oldest retained means the oldest). ``seek_time`` seeks to the first message
published at or after a time and returns that offset. Dead letters stay.

**Lag** is how many retained messages the group has not yet acknowledged (fresh ones
after the cursor plus pending ones); dead letters do not count.

**Time.** Deadlines and ``published_at`` use the engine's clock (SQLite this host's
wall clock, PostgreSQL ``clock_timestamp()``, Redis ``TIME``, NATS the server's
stream timestamps). A store accepts ``clock=``: when given, ``clock.now()`` is the
time of every timestamp and ``clock.sleep``/``asleep`` pause long-polls, so tests
never sleep.

**Transactions.** Where the engine has them (SQLite, PostgreSQL), ``publish`` and
``ack`` join a caller's :class:`~seawall.engines._base.Transaction`: the write takes
effect only when the caller commits. Other stores refuse one.

**Long-poll.** ``receive(..., wait=seconds)`` returns as soon as a message is ready
for the group, or an empty list after ``wait`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from seawall.events import EventHub
from seawall.messaging.topic._model import (
    NackOutcome,
    OutgoingRecord,
    Start,
    StoredTopicMessage,
    TopicDeadLetter,
)

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["MAX_PENDING", "TopicStore"]

MAX_PENDING = 10_000
"""Most pending messages a group holds: beyond it, receive takes in no fresh ones."""


@runtime_checkable
class TopicStore(Protocol):
    """One topic's storage on one engine (see the module docstring)."""

    name: str
    """The topic's name."""
    events: EventHub
    """Where the store emits TopicMessageDeadLettered."""
    retention_age: float | None
    """Seconds a message is kept, or None."""
    retention_count: int | None
    """Messages kept, or None."""

    def publish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """Store every record atomically (all or none); return their offsets in order."""
        ...

    def declare_group(self, group: str, start: Start, create: bool) -> None:
        """Create the group at ``start`` unless it exists (then ``start`` is ignored).

        Raises UnknownGroupError when it does not exist and ``create`` is False.
        """
        ...

    def receive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """Claim up to ``max_messages`` for ``visibility_timeout`` seconds, in offset order."""
        ...

    def ack(self, group: str, offset: int, token: str, transaction: Transaction | None) -> bool:
        """Settle the delivery for good; False (and no change) if the receipt is stale."""
        ...

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
        """Make the message ready again after ``delay`` (or dead: last delivery, or ``kill``)."""
        ...

    def seek(self, group: str, offset: int) -> None:
        """Drop the group's pending messages; ``offset`` is the next one it takes in."""
        ...

    def seek_time(self, group: str, timestamp: float) -> int:
        """Seek to the first message published at or after ``timestamp``; return its offset."""
        ...

    def lag(self, group: str) -> int:
        """Retained messages the group has not acknowledged."""
        ...

    def dead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """The group's oldest ``limit`` dead letters (bodies as stored bytes)."""
        ...

    def groups(self) -> list[str]:
        """The names of the topic's groups, sorted."""
        ...

    def close(self) -> None:
        """Release what the store holds (connections it opened itself)."""
        ...

    async def apublish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """Asyncio twin of :meth:`publish`."""
        ...

    async def adeclare_group(self, group: str, start: Start, create: bool) -> None:
        """Asyncio twin of :meth:`declare_group`."""
        ...

    async def areceive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """Asyncio twin of :meth:`receive`; a long-poll suspends, never blocks the loop."""
        ...

    async def aack(
        self, group: str, offset: int, token: str, transaction: Transaction | None
    ) -> bool:
        """Asyncio twin of :meth:`ack`."""
        ...

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
        """Asyncio twin of :meth:`nack`."""
        ...

    async def aseek(self, group: str, offset: int) -> None:
        """Asyncio twin of :meth:`seek`."""
        ...

    async def aseek_time(self, group: str, timestamp: float) -> int:
        """Asyncio twin of :meth:`seek_time`."""
        ...

    async def alag(self, group: str) -> int:
        """Asyncio twin of :meth:`lag`."""
        ...

    async def adead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """Asyncio twin of :meth:`dead_letters`."""
        ...

    async def aclose(self) -> None:
        """Asyncio twin of :meth:`close`."""
        ...
