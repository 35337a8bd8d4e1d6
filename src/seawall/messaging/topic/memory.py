"""The in-memory topic store: process-local, nothing to install, and the users' test double.

State lives in the :class:`~seawall.engines.memory.MemoryEngine`, so every handle on
the same topic of the same engine (or of ``memory://name`` engines of one name)
shares it. Nothing survives the process. Messages sit in a deque indexed by offset
(retention only removes the oldest); each group keeps its pending messages in offset
order and, per key, the line of its pending offsets (only the head of a line can be
delivered).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from seawall.clock import Clock
from seawall.errors import ConfigurationError
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

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.engines.memory import MemoryEngine

__all__ = ["MemoryTopicStore", "memory_topic_names"]

_NAMESPACE_PREFIX = "seawall.topic:"
_TRIM_INTERVAL = 1.0


class _Message:
    __slots__ = ("body", "headers", "key", "offset", "published_at")

    def __init__(
        self,
        offset: int,
        key: str | None,
        body: bytes,
        headers: Mapping[str, str] | None,
        published_at: float,
    ) -> None:
        self.offset = offset
        self.key = key
        self.body = body
        self.headers = headers
        self.published_at = published_at


class _Pending:
    __slots__ = ("blocked", "deliveries", "key", "last_error", "token", "visible_at")

    def __init__(self, key: str | None, blocked: bool) -> None:
        self.key = key
        self.blocked = blocked
        self.visible_at = 0.0
        self.token: str | None = None
        self.deliveries = 0
        self.last_error: str | None = None


class _Group:
    __slots__ = ("cursor", "dead", "lines", "pending")

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.pending: dict[int, _Pending] = {}
        self.lines: dict[str, deque[int]] = {}
        self.dead: list[TopicDeadLetter] = []


class _TopicState:
    """One topic's messages and groups, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: deque[_Message] = deque()
        self.last = 0
        self.groups: dict[str, _Group] = {}
        self.doorbell = Doorbell()

    def first(self) -> int:
        return self.messages[0].offset if self.messages else self.last + 1

    def message(self, offset: int) -> _Message | None:
        index = offset - self.first()
        if 0 <= index < len(self.messages):
            return self.messages[index]
        return None


def memory_topic_names(engine: MemoryEngine) -> list[str]:
    """The names of the topics declared on this memory engine."""
    with engine.lock:
        names = list(engine.namespaces)
    return sorted(
        name[len(_NAMESPACE_PREFIX) :] for name in names if name.startswith(_NAMESPACE_PREFIX)
    )


class MemoryTopicStore:
    """A :class:`~seawall.messaging.topic.TopicStore` in this process's memory."""

    def __init__(
        self,
        engine: MemoryEngine,
        name: str,
        *,
        retention_age: float | None = None,
        retention_count: int | None = None,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        self.name = name
        self.retention_age = retention_age
        self.retention_count = retention_count
        self.events = events if events is not None else EventHub(parent=hub)
        self._clock = clock
        self._now: Callable[[], float] = clock.now if clock is not None else time.time
        self._next_trim = 0.0
        key = _NAMESPACE_PREFIX + name
        if not create and key not in engine.namespaces:
            raise UnknownTopicError(name, memory_topic_names(engine))
        self._state: _TopicState = engine.namespace(key, _TopicState)

    # -- publishing ------------------------------------------------------------------------

    def publish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """Store every record; see :meth:`TopicStore.publish`."""
        if transaction is not None:
            raise ConfigurationError(
                "transaction=... is not supported on the memory engine: it has no "
                "transactions; use SQLite or PostgreSQL to publish inside a transaction"
            )
        state = self._state
        now = self._now()
        with state.lock:
            offsets = []
            for record in records:
                state.last += 1
                state.messages.append(
                    _Message(state.last, record.key, record.body, record.headers, now)
                )
                offsets.append(state.last)
            self._trim(now)
        if offsets:
            state.doorbell.ring()
        return offsets

    def _trim(self, now: float) -> None:
        """Apply retention (the lock is held)."""
        messages = self._state.messages
        if self.retention_count is not None:
            while len(messages) > self.retention_count:
                messages.popleft()
        if self.retention_age is not None:
            cutoff = now - self.retention_age
            while messages and messages[0].published_at < cutoff:
                messages.popleft()
        self._next_trim = now + _TRIM_INTERVAL

    # -- groups ----------------------------------------------------------------------------

    def declare_group(self, group: str, start: Start, create: bool) -> None:
        """Create the group unless it exists; see :meth:`TopicStore.declare_group`."""
        state = self._state
        with state.lock:
            if group in state.groups:
                return
            if not create:
                raise UnknownGroupError(self.name, group, sorted(state.groups))
            if start == "earliest":
                cursor = 0
            elif start == "latest":
                cursor = state.last
            else:
                cursor = max(start - 1, 0)
            state.groups[group] = _Group(cursor)

    def _group(self, group: str) -> _Group:
        found = self._state.groups.get(group)
        if found is None:
            raise UnknownGroupError(self.name, group, sorted(self._state.groups))
        return found

    def groups(self) -> list[str]:
        """The topic's groups; see :meth:`TopicStore.groups`."""
        with self._state.lock:
            return sorted(self._state.groups)

    # -- receiving -------------------------------------------------------------------------

    def receive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """Claim messages for the group; see :meth:`TopicStore.receive`."""

        def attempt() -> list[StoredTopicMessage]:
            return self._claim(group, max_messages, visibility_timeout, max_deliveries)

        if wait <= 0:
            return attempt()
        return poll(attempt, wait, self._state.doorbell, self._clock)

    def _claim(
        self, group: str, max_messages: int, visibility_timeout: float, max_deliveries: int
    ) -> list[StoredTopicMessage]:
        state = self._state
        now = self._now()
        token = str(random.getrandbits(63))
        deadline = now + visibility_timeout
        dead: list[TopicDeadLetter] = []
        claimed: list[StoredTopicMessage] = []
        with state.lock:
            if (self.retention_age is not None or self.retention_count is not None) and (
                now >= self._next_trim
            ):
                self._trim(now)
            entry = self._group(group)
            # Ready pending messages first, in offset order; settling some may unblock others.
            again = True
            while again and len(claimed) < max_messages:
                again = False
                for offset, pending in list(entry.pending.items()):
                    if len(claimed) >= max_messages:
                        break
                    if pending.blocked or pending.visible_at > now:
                        continue
                    message = state.message(offset)
                    if message is None:  # removed by retention
                        self._drop(entry, offset)
                        again = True
                        continue
                    if pending.deliveries >= max_deliveries:
                        reason = (
                            "visibility timeout expired on its last allowed delivery "
                            f"({pending.deliveries} of max_deliveries={max_deliveries})"
                        )
                        dead.append(self._bury(entry, group, message, pending, now, reason))
                        again = True
                        continue
                    claimed.append(self._deliver(message, pending, token, deadline))
            # Then fresh messages after the cursor.
            entry.cursor = max(entry.cursor, state.first() - 1)  # skip what retention removed
            while len(claimed) < max_messages and entry.cursor < state.last:
                if len(entry.pending) >= MAX_PENDING:
                    break
                offset = entry.cursor = entry.cursor + 1
                message = state.messages[offset - state.first()]
                line = entry.lines.get(message.key) if message.key is not None else None
                pending = _Pending(message.key, bool(line))
                entry.pending[offset] = pending
                if message.key is not None:
                    if line is None:
                        line = entry.lines[message.key] = deque()
                    line.append(offset)
                if not pending.blocked:
                    claimed.append(self._deliver(message, pending, token, deadline))
        self._emit_dead(group, dead)
        claimed.sort()
        return claimed

    @staticmethod
    def _deliver(
        message: _Message, pending: _Pending, token: str, deadline: float
    ) -> StoredTopicMessage:
        pending.token = token
        pending.deliveries += 1
        pending.visible_at = deadline
        return StoredTopicMessage(
            message.offset,
            message.key,
            message.body,
            message.headers,
            message.published_at,
            pending.deliveries,
            token,
        )

    @staticmethod
    def _drop(entry: _Group, offset: int) -> None:
        """Remove a pending message (acked, dead or gone) and unblock the next of its key."""
        pending = entry.pending.pop(offset)
        if pending.key is None:
            return
        line = entry.lines[pending.key]
        line.remove(offset)
        if line:
            entry.pending[line[0]].blocked = False
        else:
            del entry.lines[pending.key]

    def _bury(
        self,
        entry: _Group,
        group: str,
        message: _Message,
        pending: _Pending,
        now: float,
        reason: str,
    ) -> TopicDeadLetter:
        letter = TopicDeadLetter(
            self.name,
            group,
            message.offset,
            message.key,
            message.body,
            message.headers or {},
            message.published_at,
            pending.deliveries,
            now,
            reason,
            pending.last_error,
        )
        entry.dead.append(letter)
        self._drop(entry, message.offset)
        return letter

    def _emit_dead(self, group: str, dead: list[TopicDeadLetter]) -> None:
        if dead and self.events.active:
            for letter in dead:
                self.events.emit(
                    TopicMessageDeadLettered(
                        self.name, group, letter.offset, letter.reason, letter.delivery_count
                    )
                )

    # -- settling --------------------------------------------------------------------------

    def _held(self, entry: _Group, offset: int, token: str) -> _Pending | None:
        pending = entry.pending.get(offset)
        if pending is None or pending.token is None or pending.token != token:
            return None
        return pending

    def ack(self, group: str, offset: int, token: str, transaction: Transaction | None) -> bool:
        """Settle the delivery; see :meth:`TopicStore.ack`."""
        if transaction is not None:
            raise ConfigurationError(
                "transaction=... is not supported on the memory engine: it has no transactions"
            )
        state = self._state
        with state.lock:
            entry = self._group(group)
            if self._held(entry, offset, token) is None:
                return False
            self._drop(entry, offset)
        state.doorbell.ring()
        return True

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
        state = self._state
        now = self._now()
        dead: list[TopicDeadLetter] = []
        with state.lock:
            entry = self._group(group)
            pending = self._held(entry, offset, token)
            if pending is None:
                return "stale"
            if error is not None:
                pending.last_error = error
            message = state.message(offset)
            if message is None:
                self._drop(entry, offset)
                outcome: NackOutcome = "requeued"
            elif kill is not None or pending.deliveries >= max_deliveries:
                reason = kill or (
                    "negatively acknowledged on its last allowed delivery "
                    f"({pending.deliveries} of max_deliveries={max_deliveries})"
                )
                dead.append(self._bury(entry, group, message, pending, now, reason))
                outcome = "dead_lettered"
            else:
                pending.token = None
                pending.visible_at = now + delay
                outcome = "requeued"
        self._emit_dead(group, dead)
        state.doorbell.ring()
        return outcome

    # -- replay and inspection -------------------------------------------------------------

    def seek(self, group: str, offset: int) -> None:
        """Restart the group at ``offset``; see :meth:`TopicStore.seek`."""
        state = self._state
        with state.lock:
            entry = self._group(group)
            entry.pending.clear()
            entry.lines.clear()
            entry.cursor = max(offset - 1, 0)
        state.doorbell.ring()

    def seek_time(self, group: str, timestamp: float) -> int:
        """Restart the group at a time; see :meth:`TopicStore.seek_time`."""
        state = self._state
        with state.lock:
            self._group(group)
            offset = next(
                (m.offset for m in state.messages if m.published_at >= timestamp), state.last + 1
            )
        self.seek(group, offset)
        return offset

    def lag(self, group: str) -> int:
        """Unacknowledged retained messages; see :meth:`TopicStore.lag`."""
        state = self._state
        with state.lock:
            entry = self._group(group)
            fresh = state.last - max(entry.cursor, state.first() - 1)
            first = state.first()
            return fresh + sum(1 for offset in entry.pending if offset >= first)

    def dead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """The group's dead letters; see :meth:`TopicStore.dead_letters`."""
        with self._state.lock:
            return list(self._group(group).dead[:limit])

    def close(self) -> None:
        """Nothing to release."""

    # -- asyncio twins (nothing here blocks) -------------------------------------------------

    async def apublish(
        self, records: Sequence[OutgoingRecord], transaction: Transaction | None
    ) -> list[int]:
        """See :meth:`publish`."""
        return self.publish(records, transaction)

    async def adeclare_group(self, group: str, start: Start, create: bool) -> None:
        """See :meth:`declare_group`."""
        self.declare_group(group, start, create)

    async def areceive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        wait: float,
    ) -> list[StoredTopicMessage]:
        """See :meth:`receive`; the long-poll suspends on the topic's doorbell."""

        async def attempt() -> list[StoredTopicMessage]:
            return self._claim(group, max_messages, visibility_timeout, max_deliveries)

        return await apoll(attempt, wait, self._state.doorbell, self._clock)

    async def aack(
        self, group: str, offset: int, token: str, transaction: Transaction | None
    ) -> bool:
        """See :meth:`ack`."""
        return self.ack(group, offset, token, transaction)

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
        return self.nack(group, offset, token, delay, error, max_deliveries, kill)

    async def aseek(self, group: str, offset: int) -> None:
        """See :meth:`seek`."""
        self.seek(group, offset)

    async def aseek_time(self, group: str, timestamp: float) -> int:
        """See :meth:`seek_time`."""
        return self.seek_time(group, timestamp)

    async def alag(self, group: str) -> int:
        """See :meth:`lag`."""
        return self.lag(group)

    async def adead_letters(self, group: str, limit: int) -> list[TopicDeadLetter]:
        """See :meth:`dead_letters`."""
        return self.dead_letters(group, limit)

    async def aclose(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryTopicStore({self.name!r})"
