"""The asyncio projection runner: the twin of :class:`~seawall.eventsourcing.ProjectionRunner`.

Each batch of an :class:`AsyncProjection` is one transaction: ``engine.atransaction()``
on PostgreSQL; on SQLite the synchronous ``engine.transaction()`` on the event loop's
thread. An :class:`AsyncExternalProjection` stores its checkpoint after each batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.eventsourcing.projection._core import (
    COUNT_PAGE,
    ProjectionLag,
    RunnerCore,
    check_transactional,
    engine_of,
    utc_now,
)
from seawall.eventsourcing.projection._events import ProjectionBatchApplied, ProjectionReset
from seawall.eventsourcing.projection._projection import AsyncExternalProjection, AsyncProjection
from seawall.eventsourcing.projection._sql import count_query, lock_key, lock_statement

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction
    from seawall.eventsourcing.store._model import RecordedEvent
    from seawall.eventsourcing.store._store import AsyncEventStore

__all__ = ["AsyncProjectionRunner"]


class AsyncProjectionRunner:
    """The asyncio twin of :class:`ProjectionRunner`, for the async projection flavours.

    On PostgreSQL each batch runs in ``engine.atransaction()``. On SQLite the batch's
    transaction runs on the event loop's thread (SQLite calls are short, but they
    block the loop while they run, including waiting for another writer).
    """

    def __init__(
        self,
        store: AsyncEventStore,
        projection: AsyncProjection | AsyncExternalProjection,
        *,
        engine: Engine | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(projection, AsyncProjection | AsyncExternalProjection):
            raise ConfigurationError(
                "AsyncProjectionRunner runs an AsyncProjection or an AsyncExternalProjection, "
                f"got {projection!r} (use ProjectionRunner for the synchronous flavours)"
            )
        self.store = store
        self.projection = projection
        self.engine = engine_of(store, engine)
        self.transactional = isinstance(projection, AsyncProjection)
        if self.transactional:
            check_transactional(store, self.engine, projection)
        self.core = RunnerCore(
            projection, store.types, batch_size=batch_size, poll_interval=poll_interval
        )
        self.clock = clock
        self.name = projection.name
        self.events = EventHub(parent=hub)
        self._lock_key = lock_key(store, projection.name)
        self._stopped = threading.Event()
        self._wakeups: Any = None

    @property
    def position(self) -> int | None:
        """The checkpoint this runner last read or committed (``None`` before the first)."""
        return self.core.position

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Transaction]:
        engine: Any = self.engine
        if engine.kind == "postgres":
            async with engine.atransaction() as tx:
                yield tx
        else:
            with engine.transaction() as tx:
                yield tx

    async def _lock(self, tx: Transaction, *, wait: bool) -> bool:
        statement = lock_statement(self.engine.kind, wait=wait)
        if statement is None:
            return True
        cursor = await tx.connection.execute(statement, (self._lock_key,))
        row = await cursor.fetchone()
        return bool(row and row[0])

    async def setup(self) -> None:
        """Run the projection's ``setup`` (done before the first batch anyway)."""
        projection = self.projection
        if isinstance(projection, AsyncProjection):
            async with self._transaction() as tx:
                await self._lock(tx, wait=True)
                await projection.setup(tx)
        else:
            await projection.setup()
        self.core.ready = True

    async def run_once(self) -> int:
        """Apply one batch after the checkpoint; returns how many events it applied."""
        core = self.core
        if not core.ready:
            await self.setup()
        store = self.store
        position = core.position
        if position is None:
            position = core.position = await store.load_checkpoint(core.name)
        if not self.transactional:
            return await self._external_batch(position)
        if not await store.read_all(after=position, limit=1, types=core.types):
            return 0
        projection = cast("AsyncProjection", self.projection)
        async with self._transaction() as tx:
            if not await self._lock(tx, wait=False):
                return 0
            position = await store.load_checkpoint(core.name, transaction=tx)
            events = await store.read_all(
                after=position, limit=core.batch_size, types=core.types, transaction=tx
            )
            if events:
                await self._apply(projection, events, tx)
                position = events[-1].position
                await store.save_checkpoint(core.name, position, transaction=tx)
        core.position = position
        if events and self.events.active:
            self.events.emit(ProjectionBatchApplied(core.name, len(events), position))
        return len(events)

    async def _apply(
        self, projection: AsyncProjection, events: list[RecordedEvent], tx: Transaction
    ) -> None:
        table = self.core.table
        event = events[0]
        try:
            if table is None:
                handle = projection.handle
                for event in events:
                    await handle(event, tx)
            else:
                for event in events:
                    handler = table.get(event.type)
                    if handler is not None:
                        await handler(event, tx)
        except Exception as exc:
            raise self.core.failure(event, exc, rolled_back=True) from exc

    async def _external_batch(self, position: int) -> int:
        core = self.core
        projection = cast("AsyncExternalProjection", self.projection)
        events = await self.store.read_all(after=position, limit=core.batch_size, types=core.types)
        if not events:
            return 0
        table = core.table
        handled = 0
        try:
            for event in events:
                if table is None:
                    await projection.handle(event)
                else:
                    handler = table.get(event.type)
                    if handler is not None:
                        await handler(event)
                handled += 1
        except Exception as exc:
            raise core.failure(events[handled], exc, rolled_back=False) from exc
        finally:
            if handled:
                last = events[handled - 1].position
                await self.store.save_checkpoint(core.name, last)
                core.position = last
                if self.events.active:
                    self.events.emit(ProjectionBatchApplied(core.name, handled, last))
        return handled

    async def catch_up(self) -> int:
        """Apply batches until one comes back short; returns how many events were applied."""
        total = 0
        while True:
            applied = await self.run_once()
            total += applied
            if applied < self.core.batch_size:
                return total

    async def rebuild(self) -> int:
        """Reset the read model, set the checkpoint to 0 and replay every event."""
        core = self.core
        projection = self.projection
        if isinstance(projection, AsyncProjection):
            async with self._transaction() as tx:
                await self._lock(tx, wait=True)
                await projection.setup(tx)
                await projection.reset(tx)
                await self.store.save_checkpoint(core.name, 0, transaction=tx)
        else:
            await projection.setup()
            await projection.reset()
            await self.store.save_checkpoint(core.name, 0)
        core.ready = True
        core.position = 0
        if self.events.active:
            self.events.emit(ProjectionReset(core.name))
        return await self.catch_up()

    async def run(self, *, stop_when: Callable[[], bool] | None = None) -> None:
        """Follow the log until :meth:`stop` (or ``stop_when()``), or until cancelled."""
        self._stopped.clear()
        wakeups = self._wakeups = await self.store.wakeups(self.clock)
        try:
            woken = False
            while not self._stopped.is_set():
                applied = await self.run_once()
                if stop_when is not None and stop_when():
                    return
                delay = self.core.pacer.next_wait(applied, woken)
                woken = await wakeups.wait(delay) if delay > 0 else False
        finally:
            self._wakeups = None
            await wakeups.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch or wait (thread-safe)."""
        self._stopped.set()
        wakeups = self._wakeups
        if wakeups is not None:
            wakeups.interrupt()

    async def lag(self, *, now: datetime | None = None) -> ProjectionLag:
        """How many events (and seconds) the projection is behind the stored log."""
        core = self.core
        checkpoint = await self.store.load_checkpoint(core.name)
        oldest = await self.store.read_all(after=checkpoint, limit=1, types=core.types)
        count = await self._count(checkpoint) if oldest else 0
        return core.lag(checkpoint, count, oldest[0] if oldest else None, utc_now(now))

    async def _count(self, after: int) -> int:
        engine: Any = self.engine
        query = count_query(self.store, engine.kind, after, self.core.stored_types)
        if query is None:
            count = 0
            while True:
                page = await self.store.read_all(
                    after=after, limit=COUNT_PAGE, types=self.core.types
                )
                count += len(page)
                if len(page) < COUNT_PAGE:
                    return count
                after = page[-1].position
        sql, parameters = query
        if engine.kind == "sqlite":

            def count_rows() -> int:
                return int(engine.connection.execute(sql, parameters).fetchone()[0])

            return await asyncio.to_thread(count_rows)
        pool = await engine.async_pool()
        async with pool.connection() as connection:
            cursor = await connection.execute(sql, parameters)
            row = await cursor.fetchone()
            return int(row[0])

    def __repr__(self) -> str:
        return f"AsyncProjectionRunner({self.name!r}, position={self.core.position})"
