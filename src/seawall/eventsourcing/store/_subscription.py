"""Subscriptions: catch up from a stored checkpoint, then follow new events as they commit.

A subscription reads ``read_all(after=checkpoint)`` in batches, hands each event to
its handler, and stores the new checkpoint after each batch (at-least-once delivery:
after a crash the last batch may be handled again). Between polls it waits on the
store's :class:`Wakeups`: PostgreSQL's LISTEN/NOTIFY, or the clock (SQLite, memory).

When to poll next is decided by :class:`Pacer`, a plain object with no I/O: a full
batch means "read again now"; a notification that brought nothing visible (on
PostgreSQL an older transaction can still hide it) means "retry soon, backing off";
otherwise wait up to ``poll_interval`` for the next wake-up.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Protocol

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.eventsourcing.store._events import BatchHandled

if TYPE_CHECKING:
    from seawall.eventsourcing.store._model import RecordedEvent
    from seawall.eventsourcing.store._store import AsyncEventStore, EventStore

__all__ = [
    "AsyncClockWakeups",
    "AsyncSubscription",
    "AsyncWakeups",
    "ClockWakeups",
    "Pacer",
    "Subscription",
    "Wakeups",
]


class Wakeups(Protocol):
    """What a subscription waits on between polls."""

    def wait(self, seconds: float) -> bool:
        """Block until woken or ``seconds`` pass; True when a notification woke it."""
        ...

    def interrupt(self) -> None:
        """Make a blocked (or the next) ``wait`` return soon; called from another thread."""
        ...

    def close(self) -> None:
        """Release the wake-up source (a LISTEN connection, ...)."""
        ...


class AsyncWakeups(Protocol):
    """The asyncio twin of :class:`Wakeups`."""

    async def wait(self, seconds: float) -> bool:
        """Wait until woken or ``seconds`` pass; True when a notification woke it."""
        ...

    def interrupt(self) -> None:
        """Make a pending ``wait`` return soon (thread-safe)."""
        ...

    async def close(self) -> None:
        """Release the wake-up source."""
        ...


class ClockWakeups:
    """Plain polling: sleep on the clock, never notified (SQLite, memory)."""

    __slots__ = ("clock",)

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the clock."""
        self.clock.sleep(seconds)
        return False

    def interrupt(self) -> None:
        """A clock sleep cannot be cut short: ``stop`` takes effect after it."""

    def close(self) -> None:
        """Nothing to release."""


class AsyncClockWakeups:
    """Plain polling for asyncio: ``await clock.asleep(seconds)``."""

    __slots__ = ("clock",)

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the clock."""
        await self.clock.asleep(seconds)
        return False

    def interrupt(self) -> None:
        """A clock sleep cannot be cut short: ``stop`` takes effect after it."""

    async def close(self) -> None:
        """Nothing to release."""


class Pacer:
    """Decides how long a subscription waits before its next poll (no I/O, no clock).

    ``next_wait(handled, woken)`` gets how many events the last poll handled and
    whether the wait before it ended with a notification.
    """

    __slots__ = ("_retry", "batch_size", "first_retry", "poll_interval")

    def __init__(self, batch_size: int, poll_interval: float, first_retry: float = 0.005) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigurationError(f"batch_size={batch_size!r} must be an int >= 1")
        if not isinstance(poll_interval, int | float) or not poll_interval > 0:
            raise ConfigurationError(f"poll_interval={poll_interval!r} must be seconds > 0")
        self.batch_size = batch_size
        self.poll_interval = float(poll_interval)
        self.first_retry = min(first_retry, self.poll_interval)
        self._retry = 0.0

    def next_wait(self, handled: int, woken: bool) -> float:
        """Seconds to wait before the next poll (0.0: poll again at once)."""
        if handled >= self.batch_size:
            self._retry = 0.0
            return 0.0
        if handled > 0:
            self._retry = 0.0
            return self.poll_interval
        if woken:
            self._retry = self.first_retry
            return self._retry
        if self._retry:
            self._retry = min(self._retry * 2, self.poll_interval)
            if self._retry >= self.poll_interval:
                self._retry = 0.0
                return self.poll_interval
            return self._retry
        return self.poll_interval


class _SubscriptionBase:
    __slots__ = ("_position", "_stopped", "_wakeups", "clock", "events", "name", "pacer", "types")

    def __init__(
        self,
        name: str,
        *,
        types: Collection[str] | None,
        batch_size: int,
        poll_interval: float,
        clock: Clock,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"subscription name={name!r} must be a non-empty string")
        if isinstance(types, str):
            raise ConfigurationError(f"types={types!r} must be a collection of names")
        self.name = name
        self.types = None if types is None else tuple(types)
        self.pacer = Pacer(batch_size, poll_interval)
        self.clock = clock
        self._position: int | None = None
        self._stopped = threading.Event()
        self._wakeups: Wakeups | AsyncWakeups | None = None
        self.events = EventHub(parent=hub)

    @property
    def batch_size(self) -> int:
        """Events read (and handled) per poll."""
        return self.pacer.batch_size

    @property
    def position(self) -> int | None:
        """The global position of the last handled event (``None`` before the first poll)."""
        return self._position

    def stop(self) -> None:
        """Ask ``run`` to return after the current poll or wait (thread-safe)."""
        self._stopped.set()
        wakeups = self._wakeups
        if wakeups is not None:
            wakeups.interrupt()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, position={self._position})"


class Subscription(_SubscriptionBase):
    """Catch up from the stored checkpoint, then follow new events (synchronous).

    ``poll()`` handles one batch; ``catch_up()`` polls until the store has nothing
    newer; ``run()`` keeps following until :meth:`stop`. The handler's exception
    propagates after the checkpoint of the events handled before it was stored.
    """

    __slots__ = ("handler", "store")

    def __init__(
        self,
        store: EventStore,
        name: str,
        handler: Callable[[RecordedEvent], object],
        *,
        types: Collection[str] | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            name, types=types, batch_size=batch_size, poll_interval=poll_interval, clock=clock
        )
        self.store = store
        self.handler = handler

    def poll(self) -> int:
        """Read one batch after the checkpoint, handle it, store the checkpoint; returns the count."""
        position = self._position
        if position is None:
            position = self._position = self.store.load_checkpoint(self.name)
        events = self.store.read_all(after=position, limit=self.pacer.batch_size, types=self.types)
        if not events:
            return 0
        handler = self.handler
        handled = 0
        try:
            for event in events:
                handler(event)
                handled += 1
        finally:
            if handled:
                last = events[handled - 1].position
                self.store.save_checkpoint(self.name, last)
                self._position = last
                if self.events.active:
                    self.events.emit(BatchHandled(self.name, handled, last))
        return handled

    def catch_up(self) -> int:
        """Poll until a batch comes back short; returns how many events were handled."""
        total = 0
        while True:
            handled = self.poll()
            total += handled
            if handled < self.pacer.batch_size:
                return total

    def run(self, *, stop_when: Callable[[], bool] | None = None) -> None:
        """Follow the store until :meth:`stop` is called (or ``stop_when()`` returns True)."""
        self._stopped.clear()
        wakeups = self._wakeups = self.store.wakeups(self.clock)
        try:
            woken = False
            while not self._stopped.is_set():
                handled = self.poll()
                if stop_when is not None and stop_when():
                    return
                delay = self.pacer.next_wait(handled, woken)
                woken = wakeups.wait(delay) if delay > 0 else False
        finally:
            self._wakeups = None
            wakeups.close()


class AsyncSubscription(_SubscriptionBase):
    """The asyncio twin of :class:`Subscription`; the handler is a coroutine function."""

    __slots__ = ("handler", "store")

    def __init__(
        self,
        store: AsyncEventStore,
        name: str,
        handler: Callable[[RecordedEvent], Awaitable[object]],
        *,
        types: Collection[str] | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            name, types=types, batch_size=batch_size, poll_interval=poll_interval, clock=clock
        )
        self.store = store
        self.handler = handler

    async def poll(self) -> int:
        """Read one batch after the checkpoint, handle it, store the checkpoint; returns the count."""
        position = self._position
        if position is None:
            position = self._position = await self.store.load_checkpoint(self.name)
        events = await self.store.read_all(
            after=position, limit=self.pacer.batch_size, types=self.types
        )
        if not events:
            return 0
        handler = self.handler
        handled = 0
        try:
            for event in events:
                await handler(event)
                handled += 1
        finally:
            if handled:
                last = events[handled - 1].position
                await self.store.save_checkpoint(self.name, last)
                self._position = last
                if self.events.active:
                    self.events.emit(BatchHandled(self.name, handled, last))
        return handled

    async def catch_up(self) -> int:
        """Poll until a batch comes back short; returns how many events were handled."""
        total = 0
        while True:
            handled = await self.poll()
            total += handled
            if handled < self.pacer.batch_size:
                return total

    async def run(self, *, stop_when: Callable[[], bool] | None = None) -> None:
        """Follow the store until :meth:`stop` (or ``stop_when()``), or until cancelled."""
        self._stopped.clear()
        wakeups = self._wakeups = await self.store.wakeups(self.clock)
        try:
            woken = False
            while not self._stopped.is_set():
                handled = await self.poll()
                if stop_when is not None and stop_when():
                    return
                delay = self.pacer.next_wait(handled, woken)
                woken = await wakeups.wait(delay) if delay > 0 else False
        finally:
            self._wakeups = None
            await wakeups.close()
