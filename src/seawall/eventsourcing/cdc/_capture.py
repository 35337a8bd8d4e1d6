"""What every change capture offers, and the loop that feeds a handler.

A capture reads row changes of chosen tables, oldest first: ``poll`` hands out a
batch, ``confirm`` marks everything up to a position as handled so it is never
delivered again (even after a restart), and ``run`` does both in a loop around a
handler. Delivery is at-least-once: a change handed out but not confirmed before a
crash is delivered again. The engine files (``postgres.py``, ``sqlite.py``) implement
the I/O; the loop lives here once for threads and once for asyncio.
"""

from __future__ import annotations

import inspect
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.eventsourcing.cdc._events import ChangesHandled
from seawall.eventsourcing.cdc._model import ChangeEvent, ChangePosition
from seawall.eventsourcing.store import Pacer

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.eventsourcing.cdc._consumers import (
        AsyncChangeHandler,
        ChangeHandler,
    )

__all__ = ["AsyncChangeCapture", "ChangeCapture"]

_logger = logging.getLogger("seawall.cdc")

DEFAULT_BATCH = 100
DEFAULT_POLL_INTERVAL = 0.5


class _CaptureBase:
    """Configuration and state both flavours share."""

    def __init__(self, *, slot: str, tables: Sequence[str], name: str | None, clock: Clock) -> None:
        self.slot = slot
        self.tables = tuple(tables)
        self.name = name or f"cdc:{slot}"
        self.clock = clock
        self.events = EventHub(parent=hub)
        self._confirmed: ChangePosition | None = None
        self._stopped = threading.Event()

    @property
    def position(self) -> ChangePosition | None:
        """The last position confirmed through this object (``None`` before the first)."""
        return self._confirmed

    def stop(self) -> None:
        """Ask ``run`` to return after the current batch or wait (thread-safe)."""
        self._stopped.set()

    def _handled(self, count: int, position: ChangePosition) -> None:
        if self.events.active:
            self.events.emit(ChangesHandled(self.name, self.slot, count, position))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(slot={self.slot!r}, tables={list(self.tables)!r})"


class ChangeCapture(_CaptureBase, ABC):
    """Row changes of chosen tables as Debezium-format events (synchronous).

    Open one with :func:`~seawall.eventsourcing.cdc.capture`. ``poll`` hands out
    the initial snapshot (op ``"r"``) first, then every committed change in commit
    order; ``confirm`` makes the position durable; ``run`` loops around a handler.
    Not thread-safe: one capture per slot, used from one thread at a time.
    """

    def __init__(
        self,
        *,
        slot: str,
        tables: Sequence[str],
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(slot=slot, tables=tables, name=name, clock=clock)

    @abstractmethod
    def open(self) -> None:
        """Check the tables, create the slot (or triggers) if missing; done on first use too."""

    @abstractmethod
    def poll(self, max_events: int = DEFAULT_BATCH) -> list[ChangeEvent]:
        """Up to ``max_events`` changes not handed out yet, oldest first (may be empty)."""

    @abstractmethod
    def confirm(
        self, position: ChangePosition | ChangeEvent, *, transaction: Transaction | None = None
    ) -> None:
        """Everything up to ``position`` is handled: never deliver it again.

        ``transaction`` (SQLite only) makes the confirmation part of the caller's
        transaction, so a read model written in it and the position commit together.
        """

    def flush(self) -> None:
        """Make every confirmation durable now (PostgreSQL batches slot moves; SQLite needs not)."""

    @abstractmethod
    def drop(self) -> None:
        """Remove the slot (or triggers) and every captured change not yet confirmed."""

    @abstractmethod
    def close(self) -> None:
        """Release the connections this capture holds (the slot stays, ready to resume)."""

    @abstractmethod
    def _unread(self, events: list[ChangeEvent], last_handled: ChangePosition | None) -> None:
        """Hand ``events`` out again on the next poll (their handler failed)."""

    supports_transactions: bool = False
    """True when ``confirm`` can join a caller's transaction (SQLite)."""

    def _transaction(self) -> AbstractContextManager[Transaction]:
        raise ConfigurationError(
            f"transactional=True needs a capture whose confirmation can join a database "
            f"transaction (SQLite); {type(self).__name__} confirms outside any transaction"
        )

    def run(
        self,
        handler: ChangeHandler,
        *,
        batch_size: int = DEFAULT_BATCH,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        stop_when: Callable[[], bool] | None = None,
        transactional: bool = False,
    ) -> int:
        """Poll, hand each batch to ``handler``, confirm it; until :meth:`stop` or ``stop_when()``.

        ``handler`` is called with each event, or, if it has ``handle_batch``, once per
        batch. When it raises, the events before the failing one are confirmed, the
        rest will be delivered again, and the error propagates. ``transactional=True``
        (SQLite) runs each batch and its confirmation in one database transaction.
        Returns how many events were handled.
        """
        pacer = Pacer(batch_size, poll_interval)
        if transactional and not self.supports_transactions:
            self._transaction()  # raises, naming the reason
        self._stopped.clear()
        total = 0
        try:
            while not self._stopped.is_set():
                events = self.poll(batch_size)
                if events:
                    total += self._handle(handler, events, transactional)
                if stop_when is not None and stop_when():
                    break
                delay = pacer.next_wait(len(events), False)
                if delay > 0 and not self._stopped.is_set():
                    self.flush()  # caught up: make the confirmations durable while idle
                    self.clock.sleep(delay)
        except BaseException:
            try:
                self.flush()
            except Exception:  # the handler's error matters more; log this one
                _logger.exception("flushing %s after a failed batch failed", self.name)
            raise
        self.flush()
        return total

    def _handle(
        self, handler: ChangeHandler, events: list[ChangeEvent], transactional: bool
    ) -> int:
        handle_batch: Callable[[Sequence[ChangeEvent]], object] | None = getattr(
            handler, "handle_batch", None
        )
        last = events[-1].position
        if transactional:
            try:
                with self._transaction() as transaction:
                    if handle_batch is not None:
                        handle_batch(events)
                    else:
                        for event in events:
                            handler(event)
                    self.confirm(last, transaction=transaction)
            except BaseException:
                self._unread(events, self._confirmed)
                raise
        elif handle_batch is not None:
            try:
                handle_batch(events)
            except BaseException:
                self._unread(events, self._confirmed)
                raise
            self.confirm(last)
        else:
            handled = 0
            try:
                for event in events:
                    handler(event)
                    handled += 1
            except BaseException:
                previous = events[handled - 1].position if handled else self._confirmed
                self._unread(events[handled:], previous)
                if handled:
                    self.confirm(events[handled - 1].position)
                    self._handled(handled, events[handled - 1].position)
                raise
            self.confirm(last)
        self._handled(len(events), last)
        return len(events)

    def __enter__(self) -> ChangeCapture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncChangeCapture(_CaptureBase, ABC):
    """The asyncio twin of :class:`ChangeCapture`: the same methods, awaited.

    Open one with :func:`~seawall.eventsourcing.cdc.acapture`.
    """

    def __init__(
        self,
        *,
        slot: str,
        tables: Sequence[str],
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(slot=slot, tables=tables, name=name, clock=clock)

    @abstractmethod
    async def open(self) -> None:
        """Check the tables, create the slot (or triggers) if missing; done on first use too."""

    @abstractmethod
    async def poll(self, max_events: int = DEFAULT_BATCH) -> list[ChangeEvent]:
        """Up to ``max_events`` changes not handed out yet, oldest first (may be empty)."""

    @abstractmethod
    async def confirm(self, position: ChangePosition | ChangeEvent) -> None:
        """Everything up to ``position`` is handled: never deliver it again."""

    async def flush(self) -> None:
        """Make every confirmation durable now (PostgreSQL batches slot moves; SQLite needs not)."""

    @abstractmethod
    async def drop(self) -> None:
        """Remove the slot (or triggers) and every captured change not yet confirmed."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connections this capture holds (the slot stays, ready to resume)."""

    @abstractmethod
    def _unread(self, events: list[ChangeEvent], last_handled: ChangePosition | None) -> None:
        """Hand ``events`` out again on the next poll (their handler failed)."""

    async def run(
        self,
        handler: AsyncChangeHandler | ChangeHandler,
        *,
        batch_size: int = DEFAULT_BATCH,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        stop_when: Callable[[], bool] | None = None,
    ) -> int:
        """Poll, hand each batch to ``handler``, confirm it; until :meth:`stop`, ``stop_when()``
        or cancellation.

        ``handler`` may be a coroutine function or a plain callable taking one event, or
        an object with ``ahandle_batch`` (awaited) or ``handle_batch``. Failures behave
        as in :meth:`ChangeCapture.run`. Returns how many events were handled.
        """
        pacer = Pacer(batch_size, poll_interval)
        self._stopped.clear()
        total = 0
        try:
            while not self._stopped.is_set():
                events = await self.poll(batch_size)
                if events:
                    total += await self._handle(handler, events)
                if stop_when is not None and stop_when():
                    break
                delay = pacer.next_wait(len(events), False)
                if delay > 0 and not self._stopped.is_set():
                    await self.flush()  # caught up: make the confirmations durable while idle
                    await self.clock.asleep(delay)
        except BaseException:
            try:
                await self.flush()
            except Exception:  # the handler's error matters more; log this one
                _logger.exception("flushing %s after a failed batch failed", self.name)
            raise
        await self.flush()
        return total

    async def _handle(
        self, handler: AsyncChangeHandler | ChangeHandler, events: list[ChangeEvent]
    ) -> int:
        batch: Callable[[Sequence[ChangeEvent]], Any] | None = getattr(
            handler, "ahandle_batch", None
        ) or getattr(handler, "handle_batch", None)
        last = events[-1].position
        if batch is not None:
            try:
                result = batch(events)
                if inspect.isawaitable(result):
                    await result
            except BaseException:
                self._unread(events, self._confirmed)
                raise
            await self.confirm(last)
        else:
            call: Callable[[ChangeEvent], Awaitable[object] | object] = handler
            handled = 0
            try:
                for event in events:
                    result = call(event)
                    if inspect.isawaitable(result):
                        await result
                    handled += 1
            except BaseException:
                previous = events[handled - 1].position if handled else self._confirmed
                self._unread(events[handled:], previous)
                if handled:
                    await self.confirm(events[handled - 1].position)
                    self._handled(handled, events[handled - 1].position)
                raise
            await self.confirm(last)
        self._handled(len(events), last)
        return len(events)

    async def __aenter__(self) -> AsyncChangeCapture:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
