"""The in-memory queue store: process-local, nothing to install, and the users' test double.

State lives in the :class:`~seawall.engines.memory.MemoryEngine`, so every queue
opened with the same name on the same engine (or on ``memory://name`` engines of the
same name) shares it. Nothing survives the process. Two heaps keep every operation
O(log n): ready messages by (priority, place in line), waiting ones (delayed, or in
flight) by the time they become available; entries made obsolete by a state change
are skipped lazily. The order is the SQLite store's: a message takes its place in
line when it is sent, when its delay ends or when it is redriven, and keeps it when
it is delivered again.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seawall.clock import Clock
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.messaging.queue._errors import UnknownQueueError
from seawall.messaging.queue._events import MessageDeadLettered, MessageDeduplicated
from seawall.messaging.queue._model import (
    DeadLetter,
    OutgoingMessage,
    QueuedMessage,
    QueueStats,
    ReceiptLike,
    StoredMessage,
)
from seawall.messaging.queue._polling import Doorbell, poll
from seawall.messaging.queue._store import NackOutcome

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.engines.memory import MemoryEngine

__all__ = ["MemoryQueueStore", "memory_queue_names"]

_READY = 0
_WAITING = 1
_DEAD = 2
_NAMESPACE_PREFIX = "seawall.queue:"


class _Record:
    """One stored message and its delivery state."""

    __slots__ = (
        "body",
        "dead_reason",
        "delivery_count",
        "enqueued_at",
        "headers",
        "id",
        "last_error",
        "priority",
        "sequence",
        "state",
        "token",
        "version",
        "visible_at",
    )

    def __init__(
        self,
        message_id: int,
        body: bytes,
        headers: Mapping[str, str] | None,
        priority: int,
        visible_at: float,
        enqueued_at: float,
    ) -> None:
        self.id = message_id
        self.body = body
        self.headers = dict(headers) if headers else None
        self.priority = priority
        self.sequence = 0
        self.state = _READY
        self.visible_at = visible_at
        self.enqueued_at = enqueued_at
        self.token: str | None = None
        self.delivery_count = 0
        self.last_error: str | None = None
        self.dead_reason: str | None = None
        self.version = 0


class _QueueState:
    """Everything one in-memory queue holds, shared by every store opened on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[int, _Record] = {}
        self.dead: dict[int, _Record] = {}  # in the order they died
        self.ready: list[tuple[int, int, int, int]] = []  # (-priority, sequence, id, version)
        self.waiting: list[tuple[float, int, int]] = []  # (visible_at, id, version)
        self.dedup: dict[str, tuple[float, int]] = {}  # dedup_id -> (expires_at, message id)
        self.dedup_sweep_at = 1024
        self.ids = itertools.count(1)
        self.sequence = itertools.count(1)
        self.tokens = itertools.count(1)
        self.doorbell = Doorbell()


def memory_queue_names(engine: MemoryEngine) -> list[str]:
    """The names of the queues declared on this memory engine."""
    with engine.lock:
        names = list(engine.namespaces)
    return sorted(
        name[len(_NAMESPACE_PREFIX) :] for name in names if name.startswith(_NAMESPACE_PREFIX)
    )


class MemoryQueueStore:
    """A :class:`~seawall.messaging.queue.QueueStore` in this process's memory."""

    def __init__(
        self,
        engine: MemoryEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        key = _NAMESPACE_PREFIX + name
        if not create and key not in engine.namespaces:
            raise UnknownQueueError(name, memory_queue_names(engine))
        self.name = name
        self.max_deliveries = max_deliveries
        self.events = events if events is not None else EventHub(parent=hub)
        self._state: _QueueState = engine.namespace(key, _QueueState)
        self._dedup_window = dedup_window
        self._clock = clock
        self._now: Callable[[], float] = clock.now if clock is not None else time.time

    # -- sending ---------------------------------------------------------------------------

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
        _refuse_transaction(transaction)
        state = self._state
        with state.lock:
            message_id = self._insert(state, self._now(), body, headers, priority, delay, dedup_id)
        state.doorbell.ring()
        return str(message_id)

    def send_many(
        self, messages: Sequence[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """Store every message at once; see :meth:`QueueStore.send_many`."""
        _refuse_transaction(transaction)
        state = self._state
        with state.lock:
            now = self._now()
            ids = [
                str(self._insert(state, now, m.body, m.headers, m.priority, m.delay, m.dedup_id))
                for m in messages
            ]
        state.doorbell.ring()
        return ids

    def _insert(
        self,
        state: _QueueState,
        now: float,
        body: bytes,
        headers: Mapping[str, str] | None,
        priority: int,
        delay: float,
        dedup_id: str | None,
    ) -> int:
        if dedup_id is not None:
            seen = state.dedup.get(dedup_id)
            if seen is not None and seen[0] > now:
                if self.events.active:
                    self.events.emit(MessageDeduplicated(self.name, str(seen[1]), dedup_id))
                return seen[1]
        message_id = next(state.ids)
        record = _Record(message_id, body, headers, priority, now + delay, now)
        state.live[message_id] = record
        if delay > 0:
            record.state = _WAITING
            heapq.heappush(state.waiting, (record.visible_at, message_id, 0))
        else:
            self._enter_line(state, record, now)
        if dedup_id is not None:
            if len(state.dedup) >= state.dedup_sweep_at:
                self._forget_expired_dedup(state, now)
            state.dedup[dedup_id] = (now + self._dedup_window, message_id)
        return message_id

    @staticmethod
    def _forget_expired_dedup(state: _QueueState, now: float) -> None:
        """Drop expired dedup ids; the next sweep waits until the table doubles (amortised O(1))."""
        for dedup_id in [key for key, (expires, _) in state.dedup.items() if expires <= now]:
            del state.dedup[dedup_id]
        state.dedup_sweep_at = max(1024, 2 * len(state.dedup))

    # -- receiving -------------------------------------------------------------------------

    def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """Claim up to ``max_messages``; see :meth:`QueueStore.receive`."""
        if wait <= 0:
            return self._claim(max_messages, visibility_timeout)
        return poll(
            lambda: self._claim(max_messages, visibility_timeout),
            wait,
            self._state.doorbell,
            self._clock,
        )

    def _claim(self, max_messages: int, visibility_timeout: float) -> list[StoredMessage]:
        state = self._state
        claimed: list[StoredMessage] = []
        expired: list[_Record] = []
        with state.lock:
            now = self._now()
            self._promote_due(state, now)
            ready = state.ready
            live = state.live
            deadline = now + visibility_timeout
            while ready and len(claimed) < max_messages:
                _, _, message_id, version = heapq.heappop(ready)
                record = live.get(message_id)
                if record is None or record.version != version or record.state != _READY:
                    continue
                if record.delivery_count >= self.max_deliveries:
                    self._kill(
                        state,
                        record,
                        now,
                        f"visibility timeout expired on its last allowed delivery "
                        f"({record.delivery_count} of max_deliveries={self.max_deliveries})",
                    )
                    expired.append(record)
                    continue
                token = str(next(state.tokens))
                record.token = token
                record.delivery_count += 1
                self._wait_until(state, record, deadline)
                claimed.append(
                    StoredMessage(
                        str(message_id),
                        record.body,
                        record.headers,
                        record.priority,
                        record.delivery_count,
                        record.enqueued_at,
                        token,
                    )
                )
        if expired and self.events.active:
            for record in expired:
                self._emit_dead(record)
        return claimed

    @staticmethod
    def _promote_due(state: _QueueState, now: float) -> None:
        waiting = state.waiting
        live = state.live
        while waiting and waiting[0][0] <= now:
            _, message_id, version = heapq.heappop(waiting)
            record = live.get(message_id)
            if record is None or record.version != version or record.state != _WAITING:
                continue
            if record.token is None:  # a delay ended: take a place at the back of the line
                record.sequence = next(state.sequence)
            record.state = _READY  # an expired delivery keeps its place
            record.version += 1
            heapq.heappush(
                state.ready, (-record.priority, record.sequence, message_id, record.version)
            )

    @staticmethod
    def _wait_until(state: _QueueState, record: _Record, visible_at: float) -> None:
        record.state = _WAITING
        record.visible_at = visible_at
        record.version += 1
        heapq.heappush(state.waiting, (visible_at, record.id, record.version))

    @staticmethod
    def _make_ready(state: _QueueState, record: _Record, now: float) -> None:
        """Ready again in the place it had (a nack without delay)."""
        record.state = _READY
        record.visible_at = now
        record.version += 1
        heapq.heappush(state.ready, (-record.priority, record.sequence, record.id, record.version))

    @staticmethod
    def _enter_line(state: _QueueState, record: _Record, now: float) -> None:
        """Ready at the back of the line of its priority (a send, a redrive)."""
        record.sequence = next(state.sequence)
        MemoryQueueStore._make_ready(state, record, now)

    def _held(self, message_id: str, token: str) -> _Record | None:
        """The live record this receipt holds (caller holds the lock), or None."""
        try:
            record = self._state.live.get(int(message_id))
        except ValueError:
            return None
        if record is None or record.token is None or record.token != token:
            return None
        return record

    # -- settling --------------------------------------------------------------------------

    def ack(self, message_id: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the held message; see :meth:`QueueStore.ack`."""
        _refuse_transaction(transaction)
        with self._state.lock:
            record = self._held(message_id, token)
            if record is None:
                return False
            del self._state.live[record.id]
            record.version += 1
            return True

    def ack_many(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> list[ReceiptLike]:
        """Acknowledge each receipt; see :meth:`QueueStore.ack_many`."""
        _refuse_transaction(transaction)
        stale: list[ReceiptLike] = []
        with self._state.lock:
            live = self._state.live
            for receipt in receipts:
                record = self._held(receipt.id, receipt.token)
                if record is None:
                    stale.append(receipt)
                    continue
                del live[record.id]
                record.version += 1
        return stale

    def nack(self, message_id: str, token: str, delay: float, error: str | None) -> NackOutcome:
        """Release the delivery; see :meth:`QueueStore.nack`."""
        state = self._state
        with state.lock:
            record = self._held(message_id, token)
            if record is None:
                return "stale"
            now = self._now()
            if error is not None:
                record.last_error = error
            if record.delivery_count >= self.max_deliveries:
                self._kill(
                    state,
                    record,
                    now,
                    f"negatively acknowledged on its last allowed delivery "
                    f"({record.delivery_count} of max_deliveries={self.max_deliveries})",
                )
                outcome: NackOutcome = "dead_lettered"
            else:
                record.token = None
                if delay > 0:
                    self._wait_until(state, record, now + delay)
                else:
                    self._make_ready(state, record, now)
                outcome = "requeued"
        if outcome == "dead_lettered" and self.events.active:
            self._emit_dead(record)
        elif outcome == "requeued" and delay <= 0:
            state.doorbell.ring()
        return outcome

    def extend_visibility(self, message_id: str, token: str, visibility_timeout: float) -> bool:
        """Move the delivery's deadline; see :meth:`QueueStore.extend_visibility`."""
        state = self._state
        with state.lock:
            record = self._held(message_id, token)
            if record is None:
                return False
            self._wait_until(state, record, self._now() + visibility_timeout)
            return True

    def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """Move a held message to the dead letters; see :meth:`QueueStore.dead_letter`."""
        state = self._state
        with state.lock:
            record = self._held(message_id, token)
            if record is None:
                return False
            self._kill(state, record, self._now(), reason)
        if self.events.active:
            self._emit_dead(record)
        return True

    @staticmethod
    def _kill(state: _QueueState, record: _Record, now: float, reason: str) -> None:
        del state.live[record.id]
        record.state = _DEAD
        record.token = None
        record.visible_at = now
        record.dead_reason = reason
        record.version += 1
        state.dead[record.id] = record

    def _emit_dead(self, record: _Record) -> None:
        self.events.emit(
            MessageDeadLettered(
                self.name, str(record.id), record.dead_reason or "", record.delivery_count
            )
        )

    # -- inspecting ------------------------------------------------------------------------

    def peek(self, limit: int) -> list[QueuedMessage]:
        """The next ready messages; see :meth:`QueueStore.peek`."""
        with self._state.lock:
            now = self._now()
            # Ready ones in their place; due delayed ones join the back of their priority.
            keyed = [
                (
                    (-record.priority, 0, record.sequence, 0.0)
                    if record.state == _READY or record.token is not None
                    else (-record.priority, 1, record.visible_at, record.id),
                    record,
                )
                for record in self._state.live.values()
                if record.state == _READY or record.visible_at <= now
            ]
        keyed.sort(key=lambda pair: pair[0])
        return [
            QueuedMessage(
                str(record.id),
                record.body,
                record.headers or {},
                record.priority,
                record.delivery_count,
                record.enqueued_at,
                record.visible_at,
                record.last_error,
            )
            for _, record in keyed[:limit]
        ]

    def stats(self) -> QueueStats:
        """Counts per state; see :meth:`QueueStore.stats`."""
        ready = in_flight = delayed = 0
        with self._state.lock:
            now = self._now()
            for record in self._state.live.values():
                if record.state == _READY or record.visible_at <= now:
                    ready += 1
                elif record.token is not None:
                    in_flight += 1
                else:
                    delayed += 1
            dead = len(self._state.dead)
        return QueueStats(ready, in_flight, delayed, dead)

    def purge(self) -> int:
        """Delete every live message; see :meth:`QueueStore.purge`."""
        state = self._state
        with state.lock:
            count = len(state.live)
            state.live.clear()
            state.ready.clear()
            state.waiting.clear()
        return count

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The oldest dead letters; see :meth:`QueueStore.dead_letters`."""
        with self._state.lock:
            records = list(itertools.islice(self._state.dead.values(), limit))
        return [_dead_letter(record) for record in records]

    def peek_dead_letter(self, message_id: str) -> DeadLetter | None:
        """One dead letter; see :meth:`QueueStore.peek_dead_letter`."""
        try:
            key = int(message_id)
        except ValueError:
            return None
        with self._state.lock:
            record = self._state.dead.get(key)
        return None if record is None else _dead_letter(record)

    def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Make dead letters ready again; see :meth:`QueueStore.redrive`."""
        state = self._state
        with state.lock:
            now = self._now()
            if message_ids is None:
                chosen = list(state.dead.values())
            else:
                chosen = []
                for message_id in message_ids:
                    try:
                        record = state.dead.get(int(message_id))
                    except ValueError:
                        continue
                    if record is not None:
                        chosen.append(record)
            for record in chosen:
                del state.dead[record.id]
                record.delivery_count = 0
                record.last_error = None
                record.dead_reason = None
                state.live[record.id] = record
                self._enter_line(state, record, now)
        if chosen:
            state.doorbell.ring()
        return len(chosen)

    def purge_dead_letters(self) -> int:
        """Delete every dead letter; see :meth:`QueueStore.purge_dead_letters`."""
        with self._state.lock:
            count = len(self._state.dead)
            self._state.dead.clear()
        return count

    @property
    def doorbell(self) -> Doorbell:
        """Rung on every send in this process; long-polls wait on it."""
        return self._state.doorbell

    @property
    def clock(self) -> Clock | None:
        """The injected clock, or None for real time."""
        return self._clock

    def close(self) -> None:
        """Nothing to release: the state belongs to the engine."""

    def __repr__(self) -> str:
        return f"MemoryQueueStore({self.name!r})"


def _dead_letter(record: _Record) -> DeadLetter:
    return DeadLetter(
        str(record.id),
        record.body,
        record.headers or {},
        record.priority,
        record.delivery_count,
        record.enqueued_at,
        record.visible_at,
        record.dead_reason or "",
        record.last_error,
    )


def _refuse_transaction(transaction: Any) -> None:
    if transaction is not None:
        raise ConfigurationError(
            "transaction=... is not supported on the memory engine (it has no transactions); "
            "use SQLite or PostgreSQL to send or acknowledge inside a transaction"
        )
