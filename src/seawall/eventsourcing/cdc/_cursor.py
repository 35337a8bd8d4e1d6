"""The bookkeeping of a capture, with no I/O: what was read, handed out and confirmed.

:class:`StreamTracker` holds the transactions decoded from a PostgreSQL slot until the
consumer confirms them, and answers the one question that matters for resuming: how
far may the slot advance? A slot moves by whole transactions, so a confirmed position
in the middle of a transaction keeps that transaction in the slot (it is delivered
again after a restart: at-least-once).

:class:`SnapshotProgress` follows the initial snapshot from its first row to the
consumer's confirmation of its last one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import replace

from seawall.errors import ConfigurationError
from seawall.eventsourcing.cdc._decoding import DecodedTransaction
from seawall.eventsourcing.cdc._model import ChangeEvent, ChangePosition

__all__ = ["SnapshotProgress", "StreamTracker", "check_max_events", "check_position"]

MAX_EVENTS = 100_000
"""The most events one poll may return."""


def check_max_events(max_events: object) -> int:
    """``max_events`` when it is an int in 1..MAX_EVENTS; ConfigurationError otherwise."""
    if (
        not isinstance(max_events, int)
        or isinstance(max_events, bool)
        or not 1 <= max_events <= MAX_EVENTS
    ):
        raise ConfigurationError(f"max_events={max_events!r} must be an int from 1 to {MAX_EVENTS}")
    return max_events


def check_position(position: object) -> ChangePosition:
    """A :class:`ChangePosition` from a position or a :class:`ChangeEvent` (its position)."""
    if isinstance(position, ChangeEvent):
        return position.position
    if (
        isinstance(position, tuple)
        and len(position) == 2
        and all(isinstance(part, int) and not isinstance(part, bool) for part in position)
    ):
        return position if isinstance(position, ChangePosition) else ChangePosition(*position)
    raise ConfigurationError(
        f"position={position!r} must be a ChangePosition (event.position) or a ChangeEvent"
    )


class _Pending:
    __slots__ = ("end", "rows", "size", "xid")

    def __init__(self, end: int, xid: int, size: int, rows: int) -> None:
        self.end = end
        self.xid = xid
        self.size = size
        self.rows = rows


class StreamTracker:
    """Decoded transactions between the slot's position and the consumer's confirmation.

    ``accept`` takes the transactions of a peek (skipping those it already holds,
    since every peek starts again at the slot's position); ``take`` hands out
    buffered events; ``advance_target`` says where the slot may move once a position
    is confirmed, and ``advanced`` records that it moved.
    """

    __slots__ = ("_buffer", "_pending", "_pending_rows", "delivered", "last_accepted")

    def __init__(self) -> None:
        self._pending: deque[_Pending] = deque()
        self._buffer: deque[ChangeEvent] = deque()
        self._pending_rows = 0
        self.delivered: ChangePosition | None = None
        self.last_accepted = 0

    @property
    def pending_rows(self) -> int:
        """Rows a peek returns before reaching anything new (held, not yet advanced past)."""
        return self._pending_rows

    def held_xids(self) -> set[int]:
        """The ids of the transactions held: a peek returns them again, already decoded."""
        return {pending.xid for pending in self._pending}

    @property
    def buffered(self) -> int:
        """Events decoded but not handed out yet."""
        return len(self._buffer)

    def accept(self, transactions: Iterable[DecodedTransaction]) -> int:
        """Hold the transactions not seen before; returns how many new events they bring."""
        added = 0
        for transaction in transactions:
            if transaction.end_lsn <= self.last_accepted:
                continue
            self._pending.append(
                _Pending(
                    transaction.end_lsn, transaction.xid, len(transaction.events), transaction.rows
                )
            )
            self._pending_rows += transaction.rows
            self._buffer.extend(transaction.events)
            self.last_accepted = transaction.end_lsn
            added += len(transaction.events)
        return added

    def take(self, count: int) -> list[ChangeEvent]:
        """Hand out up to ``count`` buffered events, oldest first."""
        buffer = self._buffer
        if not buffer:
            return []
        if count >= len(buffer):
            events = list(buffer)
            buffer.clear()
        else:
            popleft = buffer.popleft
            events = [popleft() for _ in range(count)]
        self.delivered = events[-1].position
        return events

    def unread(self, events: list[ChangeEvent], last_handled: ChangePosition | None) -> None:
        """Put events handed out but not handled back in front, to hand out again."""
        self._buffer.extendleft(reversed(events))
        self.delivered = last_handled

    def advance_target(self, position: ChangePosition) -> int | None:
        """The slot offset covering everything up to ``position`` (None: cannot move yet).

        Raises :class:`ConfigurationError` for a position that was never handed out:
        confirming it would skip changes nobody has seen.
        """
        delivered = self.delivered
        if delivered is None or position > delivered:
            raise ConfigurationError(
                f"position {tuple(position)} has not been delivered by this capture yet "
                f"(last delivered: {None if delivered is None else tuple(delivered)}); confirm "
                "only positions of events poll() returned"
            )
        return self._target(position)

    def idle_target(self) -> int | None:
        """Where the slot may move without any confirmation: past leading empty transactions."""
        return self._target(ChangePosition(0, 0))

    def _target(self, position: ChangePosition) -> int | None:
        target: int | None = None
        offset, sequence = position
        for pending in self._pending:
            if (
                pending.end < offset
                or (pending.end == offset and sequence >= pending.size - 1)
                or pending.size == 0
            ):
                target = pending.end
                continue
            break
        return target

    def advanced(self, offset: int) -> None:
        """The slot now sits at ``offset``: forget the transactions that ended at or before it."""
        pending = self._pending
        while pending and pending[0].end <= offset:
            self._pending_rows -= pending.popleft().rows
        if offset > self.last_accepted:
            self.last_accepted = offset

    def reset(self) -> None:
        """Forget everything (the slot was dropped and created again)."""
        self._pending.clear()
        self._buffer.clear()
        self._pending_rows = 0
        self.delivered = None
        self.last_accepted = 0


class SnapshotProgress:
    """The initial snapshot from its first row to the confirmation of its last one.

    ``active`` while rows remain to be handed out or confirmed. Rows read from the
    tables wait in ``buffer`` (one ahead, so the last row handed out can be marked
    ``snapshot="last"``); they are numbered from 1 (``ChangePosition(0, n)``).
    ``total`` is set once the last row has been handed out.
    """

    __slots__ = ("active", "buffer", "exhausted", "rows_read", "total")

    def __init__(self, active: bool = False) -> None:
        self.active = active
        self.buffer: deque[ChangeEvent] = deque()
        self.exhausted = False
        self.rows_read = 0
        self.total: int | None = None

    @property
    def reading(self) -> bool:
        """True while the snapshot still has rows to hand out."""
        return self.active and self.total is None

    @property
    def empty(self) -> bool:
        """True when the tables held no row at all (nothing to confirm)."""
        return self.exhausted and self.rows_read == 0

    def wanted(self, count: int) -> int:
        """How many more rows to read so that ``count`` can be handed out, plus one ahead."""
        if self.exhausted:
            return 0
        return max(0, count + 1 - len(self.buffer))

    def next_sequence(self) -> int:
        """The sequence number of the next row read."""
        self.rows_read += 1
        return self.rows_read

    def take(self, count: int) -> list[ChangeEvent]:
        """Hand out up to ``count`` rows; the final row of the snapshot says ``"last"``."""
        buffer = self.buffer
        events = [buffer.popleft() for _ in range(min(count, len(buffer)))]
        if events and self.exhausted and not buffer:
            last = events[-1]
            events[-1] = replace(last, source=last.source._replace(snapshot="last"))
            self.total = last.position.sequence
        return events

    def unread(self, events: list[ChangeEvent]) -> None:
        """Put rows handed out but not handled back in front, to hand out again."""
        self.buffer.extendleft(reversed(events))
        self.total = None

    def confirm(self, position: ChangePosition) -> bool:
        """True when confirming ``position`` completes the snapshot (its last row, or later)."""
        if not self.active or self.total is None:
            return False
        if position.offset > 0 or position.sequence >= self.total:
            self.active = False
            return True
        return False
