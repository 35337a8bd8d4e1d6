"""``Channel``: a bounded multi-producer, multi-consumer channel for threads and tasks."""

from __future__ import annotations

import asyncio
import enum
import threading
from collections import deque
from collections.abc import Coroutine
from typing import Any, Final, Literal, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.messaging.channel._config import (
    check_capacity,
    check_choice,
    check_seconds,
    default_name,
)
from seawall.messaging.channel._core import BufferCore
from seawall.messaging.channel._errors import (
    BlockingInEventLoopError,
    ChannelClosedError,
    ChannelFullError,
)
from seawall.messaging.channel._events import ItemDropped
from seawall.messaging.channel._waiters import (
    NOT_YET,
    NotYet,
    block_task,
    block_thread,
    discard,
    wake_one,
)

__all__ = ["OVERFLOW_POLICIES", "Channel", "Overflow"]

T = TypeVar("T")

Overflow = Literal["block", "drop_oldest", "drop_newest", "raise"]
"""What a send does when the channel is full."""

OVERFLOW_POLICIES: Final = ("block", "drop_oldest", "drop_newest", "raise")

_BLOCK, _DROP_OLDEST, _DROP_NEWEST, _RAISE = range(4)


class _Outcome(enum.Enum):
    OK = enum.auto()
    FULL = enum.auto()
    CLOSED = enum.auto()
    REJECTED = enum.auto()
    DROPPED_NEWEST = enum.auto()


_OK: Final = _Outcome.OK
_FULL: Final = _Outcome.FULL
_CLOSED: Final = _Outcome.CLOSED
_REJECTED: Final = _Outcome.REJECTED
_DROPPED_NEWEST: Final = _Outcome.DROPPED_NEWEST


class Channel(BufferCore[T]):
    """A bounded FIFO channel: any number of producers and consumers, threads or tasks.

    ``send`` / ``receive`` block the calling thread; ``asend`` / ``areceive`` suspend the
    calling task; both kinds may use the same channel at once. When the channel holds
    ``capacity`` items, ``overflow`` decides: ``"block"`` waits for room (at most
    ``max_wait`` seconds, then :class:`ChannelFullError`), ``"drop_oldest"`` discards
    the oldest buffered item, ``"drop_newest"`` discards the item being sent,
    ``"raise"`` raises :class:`ChannelFullError` at once. With one consumer it is an
    mpsc channel; nothing changes but the use.
    """

    __slots__ = ("_mode", "max_wait", "overflow")

    def __init__(
        self,
        capacity: int,
        *,
        overflow: Overflow = "block",
        max_wait: float | None = None,
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        capacity = check_capacity("Channel", "capacity", capacity)
        check_choice("Channel", "overflow", overflow, OVERFLOW_POLICIES)
        max_wait = check_seconds("Channel", "max_wait", max_wait)
        if max_wait is not None and overflow != "block":
            raise ConfigurationError(
                f"Channel(max_wait={max_wait!r}, overflow={overflow!r}) is invalid: max_wait "
                "only applies to overflow='block'; drop it or use overflow='block'"
            )
        super().__init__(
            capacity, name or default_name("channel"), clock, threading.Lock(), deque()
        )
        self.overflow: Overflow = overflow
        """The policy applied when the channel is full."""
        self.max_wait = max_wait
        """Longest a blocked send waits for room (``None``: for ever)."""
        self._mode = OVERFLOW_POLICIES.index(overflow)

    # -- the core: called with the lock held, never waits -------------------------------

    def _offer(self, item: T) -> T | _Outcome:
        """Put ``item`` in, or say why not: an outcome, or the item evicted for it."""
        if self._closed:
            return _CLOSED
        items = self._items
        if len(items) < self._capacity:
            items.append(item)
            self._received += 1
            if self._receivers:
                wake_one(self._receivers)
            return _OK
        mode = self._mode
        if mode == _DROP_OLDEST:
            evicted = items.popleft()
            items.append(item)
            self._received += 1
            self._dropped += 1
            return evicted
        if mode == _DROP_NEWEST:
            self._received += 1
            self._dropped += 1
            return _DROPPED_NEWEST
        if mode == _RAISE:
            self._rejected += 1
            return _REJECTED
        return _FULL

    def _settle(self, item: T, outcome: T | _Outcome) -> None:
        """Act on an offer that neither succeeded nor needs to wait (outside the lock)."""
        if outcome is _CLOSED:
            raise ChannelClosedError(self.name, sending=True)
        if outcome is _REJECTED:
            raise ChannelFullError(self.name, self._capacity, self.overflow)
        if self.events.active:
            lost = item if outcome is _DROPPED_NEWEST else outcome
            self.events.emit(ItemDropped(self.name, lost, self.overflow))

    # -- sending ------------------------------------------------------------------------

    def send(self, item: T) -> None:
        """Put ``item`` in the channel, applying the overflow policy when it is full.

        Raises :class:`ChannelClosedError` once the channel is closed and
        :class:`ChannelFullError` when the policy refuses the item.
        """
        self._lock.acquire()
        try:
            outcome = self._offer(item)
        finally:
            self._lock.release()
        if outcome is not _OK:
            if outcome is _FULL:
                self._send_wait(item)
            else:
                self._settle(item, outcome)

    async def asend(self, item: T) -> None:
        """Await room for ``item``; the async twin of :meth:`send`, with the same errors.

        The untimed wait is written out here (see ``BufferCore._areceive`` for why).
        """
        lock = self._lock
        lock.acquire()
        try:
            items = self._items  # the room case of _offer() inlined: the async hot path
            if len(items) < self._capacity and not self._closed:
                items.append(item)
                self._received += 1
                if self._receivers:
                    wake_one(self._receivers)
                return
            senders = self._senders
            if self._mode == _BLOCK and self.max_wait is None and not self._closed:
                loop = asyncio.get_running_loop()  # full: wait, registered in this same hold
                future = loop.create_future()
                senders.append(future)
                self._producer_blocked += 1
                outcome: T | _Outcome = _FULL
            else:
                future = None
                outcome = self._offer(item)
        finally:
            lock.release()
        if future is None:
            if outcome is _FULL:
                await self._asend_wait(item)  # a timed wait: the general loop
            elif outcome is not _OK:
                self._settle(item, outcome)
            return
        while True:
            try:
                await future
            except BaseException:
                with lock:
                    discard(senders, future, ready=self._has_room())
                raise
            lock.acquire()
            try:
                outcome = self._offer(item)
                if outcome is _OK:
                    if senders and len(self._items) < self._capacity:
                        wake_one(senders)  # room left: keep the other producers moving
                    return
                if outcome is _CLOSED:
                    break
                future = loop.create_future()
                senders.append(future)
            finally:
                lock.release()
        raise ChannelClosedError(self.name, sending=True)

    def _attempt_send(self, item: T) -> NotYet | None:
        """None once sent, NOT_YET while full; raises when closed. Lock held."""
        outcome = self._offer(item)
        if outcome is _OK:
            return None
        if outcome is _CLOSED:
            raise ChannelClosedError(self.name, sending=True)
        return NOT_YET  # only "block" reaches here: the other policies never wait

    def _has_room(self) -> bool:
        return len(self._items) < self._capacity

    def _full_error(self, max_wait: float) -> BaseException:
        self._rejected += 1
        return ChannelFullError(self.name, self._capacity, self.overflow, max_wait)

    def _refuse_send(self) -> BaseException:
        return BlockingInEventLoopError(self.name, "send", "asend")

    def _blocked(self) -> None:
        self._producer_blocked += 1

    def _send_wait(self, item: T) -> None:
        block_thread(
            self._lock,
            self._senders,
            self._attempt_send,
            item,
            max_wait=self.max_wait,
            clock=self._clock,
            expired=self._full_error,
            ready=self._has_room,
            refuse=self._refuse_send,
            blocked=self._blocked,
        )

    def _asend_wait(self, item: T) -> Coroutine[Any, Any, None]:
        """The async twin of :meth:`_send_wait` (returns the coroutine to await)."""
        return block_task(
            self._lock,
            self._senders,
            self._attempt_send,
            item,
            max_wait=self.max_wait,
            clock=self._clock,
            expired=self._full_error,
            ready=self._has_room,
            blocked=self._blocked,
        )

    # -- a producer's ``with``: closes the channel, with the error if the block raised ---

    def __enter__(self) -> Channel[T]:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        self.close(error)

    async def __aenter__(self) -> Channel[T]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        self.close(error)

    def __repr__(self) -> str:
        return (
            f"Channel(capacity={self._capacity}, overflow={self.overflow!r}, "
            f"name={self.name!r}, size={len(self._items)}, closed={self._closed})"
        )
