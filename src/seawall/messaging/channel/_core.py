"""The buffer core every channel shares: items, counters, waiters and the receive side.

A core is a bounded deque guarded by one lock, with the blocked parties kept in two
deques of waiters (see :mod:`._waiters`). Its decisions (``_take``, and ``_offer`` in
the sending subclasses) run with the lock held and never wait; the public methods
are thin shells that take the lock, ask the core, and only when told "not now" wait
the way their caller can: a thread on a private lock, a task on a future. The same
object therefore serves threads and tasks at once, and the logic exists once.

Hot paths take the lock with ``acquire()`` / ``try`` / ``finally`` rather than ``with``:
on CPython 3.11 that halves the cost of the critical section (about 90 ns against
180 ns here), which is most of what a channel costs beyond ``asyncio.Queue``. Rare
paths (close, stats, a cancelled waiter) keep the plainer ``with``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from seawall.clock import Clock
from seawall.errors import ConfigurationError, TimeoutExceededError
from seawall.events import EventHub, hub
from seawall.messaging.channel._errors import (
    BlockingInEventLoopError,
    ChannelClosedError,
    ChannelFailedError,
)
from seawall.messaging.channel._waiters import (
    NOT_YET,
    NotYet,
    Waiter,
    block_task,
    block_thread,
    discard,
    wake_all,
    wake_one,
)

__all__ = ["BufferCore", "ChannelStats", "check_timeout"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """A snapshot of one channel's counters, taken under its lock.

    ``received = delivered + dropped + size`` always holds; ``rejected`` counts sends
    that raised :class:`ChannelFullError` and never entered the buffer.
    """

    received: int
    """Items that entered the channel (including those an overflow policy dropped)."""
    delivered: int
    """Items a receiver took."""
    dropped: int
    """Items discarded by a ``drop_oldest`` / ``drop_newest`` policy."""
    rejected: int
    """Sends refused with ChannelFullError (``raise``, or ``block`` past ``max_wait``)."""
    producer_blocked: int
    """Sends that found the channel full and had to wait."""
    size: int
    """Items buffered now."""
    capacity: int
    """The bound on ``size``."""
    fill_ratio: float
    """``size / capacity``: 1.0 means producers are being held back (or dropped)."""


def check_timeout(timeout: float | None) -> float | None:
    """A receive timeout: ``None`` waits forever, ``0`` never waits."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ConfigurationError(
            f"timeout={timeout!r} is invalid: it must be None (wait for ever) or seconds >= 0"
        )
    return float(timeout)


class BufferCore(Generic[T]):
    """A bounded buffer with a receive side; subclasses add the sending side.

    Iterate it (``for`` or ``async for``) to receive until the end of the stream: the
    loop ends when the channel is closed and drained, and raises
    :class:`ChannelFailedError` if the producer closed it with an error.
    """

    __slots__ = (
        "_capacity",
        "_clock",
        "_closed",
        "_delivered",
        "_dropped",
        "_failure",
        "_items",
        "_lock",
        "_producer_blocked",
        "_received",
        "_receivers",
        "_rejected",
        "_senders",
        "events",
        "name",
    )

    def __init__(
        self,
        capacity: int,
        name: str,
        clock: Clock,
        lock: threading.Lock,
        senders: deque[Waiter],
        parent_events: EventHub = hub,
    ) -> None:
        self.name = name
        """Names the channel in errors and events."""
        self.events = EventHub(parent=parent_events)
        """Listeners for this channel's events."""
        self._capacity = capacity
        self._clock = clock
        self._lock = lock
        self._items: deque[T] = deque()
        self._receivers: deque[Waiter] = deque()
        self._senders = senders
        self._closed = False
        self._failure: tuple[str, BaseException] | None = None
        self._received = 0
        self._delivered = 0
        self._dropped = 0
        self._rejected = 0
        self._producer_blocked = 0

    # -- the core: called with the lock held, never waits -------------------------------

    def _take(self) -> T | NotYet:
        """The oldest item (waking one blocked sender), or NOT_YET when empty."""
        items = self._items
        if items:
            item = items.popleft()
            self._delivered += 1
            if self._senders:
                wake_one(self._senders)
            return item
        return NOT_YET

    def _close_locked(self, error: BaseException | None) -> None:
        """Mark closed (the first close wins) and wake everyone so they see it."""
        if self._closed:
            return
        self._closed = True
        if error is not None:
            if isinstance(error, ChannelFailedError):  # relayed: keep the original origin
                self._failure = (error.channel, error.error)
            else:
                self._failure = (self.name, error)
        wake_all(self._receivers)
        wake_all(self._senders)

    def _end_error(self) -> Exception:
        """What a receiver gets once the channel is closed and drained."""
        if self._failure is None:
            return ChannelClosedError(self.name, sending=False)
        channel, error = self._failure
        failed = ChannelFailedError(channel, error)
        failed.__cause__ = error
        failed.__suppress_context__ = True
        return failed

    # -- receiving ----------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> T:
        """Take the oldest item, waiting up to ``timeout`` seconds (``None``: for ever).

        Raises :class:`ChannelClosedError` at the end of the stream,
        :class:`ChannelFailedError` if the producer failed, and
        :class:`~seawall.errors.TimeoutExceededError` when ``timeout`` passes first.
        """
        self._lock.acquire()
        try:
            item = self._take()
        finally:
            self._lock.release()
        if item is not NOT_YET:
            return item
        return self._receive_wait(timeout)

    def areceive(self, timeout: float | None = None) -> Coroutine[Any, Any, T]:
        """Await the oldest item: ``await channel.areceive()``; the async twin of :meth:`receive`.

        Same errors as :meth:`receive`; ``timeout`` runs on the channel's clock.
        """
        return self._areceive(timeout, False)

    def __iter__(self) -> BufferCore[T]:
        return self

    def __next__(self) -> T:
        self._lock.acquire()
        try:
            item = self._take()
        finally:
            self._lock.release()
        if item is not NOT_YET:
            return item
        try:
            return self._receive_wait(None)
        except ChannelClosedError:
            raise StopIteration from None

    def __aiter__(self) -> BufferCore[T]:
        return self

    def __anext__(self) -> Coroutine[Any, Any, T]:
        return self._areceive(None, True)

    async def _areceive(self, timeout: float | None, iterating: bool) -> T:  # noqa: ASYNC109 - timed on the injected clock, which asyncio.timeout cannot use
        """areceive() and async iteration: one coroutine, no extra frame on any path.

        The untimed wait is written out here rather than through :func:`block_task`:
        it is the path of every async consumer that keeps up with its producers, and
        registering the waiter in the same critical section as the failed take saves
        a lock round, a coroutine frame and a second attempt per wait.
        """
        lock = self._lock
        lock.acquire()
        try:
            items = self._items
            if items:  # _take() inlined: the hot path of every async consumer
                item = items.popleft()
                self._delivered += 1
                if self._senders:
                    wake_one(self._senders)
                return item
            closed = self._closed
            receivers = self._receivers
            if closed or timeout is not None:
                future = None
            else:
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                receivers.append(future)
        finally:
            lock.release()
        if future is None:
            if closed:
                raise self._end_of_stream(iterating)
            return await self._areceive_wait(timeout)  # a timed wait: the general loop
        while True:
            try:
                await future
            except BaseException:
                with lock:
                    discard(receivers, future, ready=self._can_take())
                raise
            lock.acquire()
            try:
                taken = self._take()
                if taken is not NOT_YET:
                    if receivers and self._items:
                        wake_one(receivers)  # more to take: keep the other receivers moving
                    return taken
                if self._closed:
                    break
                future = loop.create_future()
                receivers.append(future)
            finally:
                lock.release()
        raise self._end_of_stream(iterating)

    def _end_of_stream(self, iterating: bool) -> BaseException:
        """What an async receiver raises once closed and drained (the channel is closed)."""
        error = self._end_error()
        if iterating and isinstance(error, ChannelClosedError):
            return StopAsyncIteration()  # a clean end: the ``async for`` just stops
        return error

    def _attempt_take(self, _: object) -> T | NotYet:
        """An item, NOT_YET (wait), or the end-of-stream error; lock held."""
        item = self._take()
        if item is NOT_YET and self._closed:
            raise self._end_error()
        return item

    def _can_take(self) -> bool:
        return bool(self._items) or self._closed

    def _receive_expired(self, timeout: float) -> BaseException:
        return TimeoutExceededError(timeout, what=f"receive from channel {self.name!r}")

    def _refuse_receive(self) -> BaseException:
        return BlockingInEventLoopError(self.name, "receive", "areceive")

    def _receive_wait(self, timeout: float | None, clock: Clock | None = None) -> T:
        """Receive, waiting up to ``timeout`` seconds of ``clock`` (default: the channel's)."""
        return block_thread(
            self._lock,
            self._receivers,
            self._attempt_take,
            None,
            max_wait=check_timeout(timeout),
            clock=clock or self._clock,
            expired=self._receive_expired,
            ready=self._can_take,
            refuse=self._refuse_receive,
        )

    def _areceive_wait(
        self, timeout: float | None, clock: Clock | None = None
    ) -> Coroutine[Any, Any, T]:
        """The async twin of :meth:`_receive_wait` (returns the coroutine to await)."""
        return block_task(
            self._lock,
            self._receivers,
            self._attempt_take,
            None,
            max_wait=check_timeout(timeout),
            clock=clock or self._clock,
            expired=self._receive_expired,
            ready=self._can_take,
        )

    # -- lifecycle and introspection ----------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Close the channel: sends now fail, receivers drain what is buffered, then end.

        With ``error``, receivers get :class:`ChannelFailedError` (caused by ``error``)
        instead of a quiet end once drained: how a failed producer tells its consumers.
        Closing again does nothing; the first close decides.
        """
        with self._lock:
            self._close_locked(error)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (items may still be buffered)."""
        return self._closed

    @property
    def capacity(self) -> int:
        """The most items the channel buffers."""
        return self._capacity

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> ChannelStats:
        """A consistent snapshot of the counters, size and fill ratio."""
        with self._lock:
            size = len(self._items)
            return ChannelStats(
                received=self._received,
                delivered=self._delivered,
                dropped=self._dropped,
                rejected=self._rejected,
                producer_blocked=self._producer_blocked,
                size=size,
                capacity=self._capacity,
                fill_ratio=size / self._capacity,
            )
