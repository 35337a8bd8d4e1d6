"""Projection runners: feed the event log to a projection, batch by batch, from its checkpoint.

For a transactional :class:`Projection` one batch is one database transaction: the
runner reads the stored checkpoint, the events after it, calls the handlers and
stores the new checkpoint, then commits. A crash anywhere rolls all of it back, so
no event is applied twice or skipped. On PostgreSQL the transaction also takes an
advisory lock per projection, so a second runner (another process) stands by
instead of applying the same batch; on SQLite ``BEGIN IMMEDIATE`` admits one
writer at a time anyway.

For an :class:`ExternalProjection` the runner stores the checkpoint after the
batch's handlers ran (at-least-once).

:class:`RunnerCore` (``_core.py``) holds what both the synchronous and the asyncio
runner decide (names, type filter, dispatch table, cached position, pacing); the
runners do the I/O. The asyncio twin is in ``_async_runner.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.eventsourcing.projection._core import (
    ProjectionLag,
    RunnerCore,
    check_transactional,
    count_pages,
    engine_of,
    utc_now,
)
from seawall.eventsourcing.projection._events import ProjectionBatchApplied, ProjectionReset
from seawall.eventsourcing.projection._projection import ExternalProjection, Projection
from seawall.eventsourcing.projection._sql import count_query, lock_key, lock_statement

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction
    from seawall.eventsourcing.store._model import RecordedEvent
    from seawall.eventsourcing.store._store import EventStore

__all__ = ["ProjectionRunner"]


class _SyncTransactions(Protocol):
    def transaction(self) -> AbstractContextManager[Transaction]: ...


class ProjectionRunner:
    """Feeds the event log to a :class:`Projection` or :class:`ExternalProjection` (synchronous).

    ``run_once()`` applies one batch; ``catch_up()`` applies batches until the log is
    exhausted; ``run()`` keeps following new events until :meth:`stop`;
    ``rebuild()`` resets the read model and replays every event; ``lag()`` says how
    far behind it is. ``engine`` defaults to the store's.
    """

    def __init__(
        self,
        store: EventStore,
        projection: Projection | ExternalProjection,
        *,
        engine: Engine | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(projection, Projection | ExternalProjection):
            raise ConfigurationError(
                f"ProjectionRunner runs a Projection or an ExternalProjection, got {projection!r} "
                "(use AsyncProjectionRunner for the async flavours)"
            )
        self.store = store
        self.projection = projection
        self.engine = engine_of(store, engine)
        self.transactional = isinstance(projection, Projection)
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

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        with cast("_SyncTransactions", self.engine).transaction() as tx:
            yield tx

    def _lock(self, tx: Transaction, *, wait: bool) -> bool:
        statement = lock_statement(self.engine.kind, wait=wait)
        if statement is None:
            return True
        row = tx.execute(statement, (self._lock_key,)).fetchone()
        return bool(row and row[0])

    def setup(self) -> None:
        """Run the projection's ``setup`` (done before the first batch anyway)."""
        projection = self.projection
        if isinstance(projection, Projection):
            with self._transaction() as tx:
                self._lock(tx, wait=True)  # concurrent CREATE TABLE IF NOT EXISTS can clash
                projection.setup(tx)
        else:
            projection.setup()
        self.core.ready = True

    def run_once(self) -> int:
        """Apply one batch after the checkpoint; returns how many events it applied."""
        core = self.core
        if not core.ready:
            self.setup()
        store = self.store
        position = core.position
        if position is None:
            position = core.position = store.load_checkpoint(core.name)
        if not self.transactional:
            return self._external_batch(position)
        # A cheap look outside any transaction: nothing new means no write lock taken.
        if not store.read_all(after=position, limit=1, types=core.types):
            return 0
        projection = cast("Projection", self.projection)
        with self._transaction() as tx:
            if not self._lock(tx, wait=False):
                return 0  # another runner is applying this projection's batch
            position = store.load_checkpoint(core.name, transaction=tx)
            events = store.read_all(
                after=position, limit=core.batch_size, types=core.types, transaction=tx
            )
            if events:
                self._apply(projection, events, tx)
                position = events[-1].position
                store.save_checkpoint(core.name, position, transaction=tx)
        core.position = position
        if events and self.events.active:
            self.events.emit(ProjectionBatchApplied(core.name, len(events), position))
        return len(events)

    def _apply(self, projection: Projection, events: list[RecordedEvent], tx: Transaction) -> None:
        table = self.core.table
        event = events[0]
        try:
            if table is None:
                handle = projection.handle
                for event in events:
                    handle(event, tx)
            else:
                for event in events:
                    handler = table.get(event.type)
                    if handler is not None:
                        handler(event, tx)
        except Exception as exc:
            raise self.core.failure(event, exc, rolled_back=True) from exc

    def _external_batch(self, position: int) -> int:
        core = self.core
        projection = cast("ExternalProjection", self.projection)
        events = self.store.read_all(after=position, limit=core.batch_size, types=core.types)
        if not events:
            return 0
        table = core.table
        handled = 0
        try:
            for event in events:
                if table is None:
                    projection.handle(event)
                else:
                    handler = table.get(event.type)
                    if handler is not None:
                        handler(event)
                handled += 1
        except Exception as exc:
            raise core.failure(events[handled], exc, rolled_back=False) from exc
        finally:
            if handled:
                last = events[handled - 1].position
                self.store.save_checkpoint(core.name, last)
                core.position = last
                if self.events.active:
                    self.events.emit(ProjectionBatchApplied(core.name, handled, last))
        return handled

    def catch_up(self) -> int:
        """Apply batches until one comes back short; returns how many events were applied."""
        total = 0
        while True:
            applied = self.run_once()
            total += applied
            if applied < self.core.batch_size:
                return total

    def rebuild(self) -> int:
        """Reset the read model, set the checkpoint to 0 and replay every event.

        The reset and the checkpoint commit together; readers see the read model
        refill batch by batch. Returns how many events were applied.
        """
        core = self.core
        projection = self.projection
        if isinstance(projection, Projection):
            with self._transaction() as tx:
                self._lock(tx, wait=True)
                projection.setup(tx)
                projection.reset(tx)
                self.store.save_checkpoint(core.name, 0, transaction=tx)
        else:
            projection.setup()
            projection.reset()
            self.store.save_checkpoint(core.name, 0)
        core.ready = True
        core.position = 0
        if self.events.active:
            self.events.emit(ProjectionReset(core.name))
        return self.catch_up()

    def run(self, *, stop_when: Callable[[], bool] | None = None) -> None:
        """Follow the log until :meth:`stop` is called (or ``stop_when()`` returns True)."""
        self._stopped.clear()
        wakeups = self._wakeups = self.store.wakeups(self.clock)
        try:
            woken = False
            while not self._stopped.is_set():
                applied = self.run_once()
                if stop_when is not None and stop_when():
                    return
                delay = self.core.pacer.next_wait(applied, woken)
                woken = wakeups.wait(delay) if delay > 0 else False
        finally:
            self._wakeups = None
            wakeups.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch or wait (thread-safe)."""
        self._stopped.set()
        wakeups = self._wakeups
        if wakeups is not None:
            wakeups.interrupt()

    def lag(self, *, now: datetime | None = None) -> ProjectionLag:
        """How many events (and seconds) the projection is behind the stored log."""
        core = self.core
        checkpoint = self.store.load_checkpoint(core.name)
        oldest = self.store.read_all(after=checkpoint, limit=1, types=core.types)
        count = self._count(checkpoint) if oldest else 0
        return core.lag(checkpoint, count, oldest[0] if oldest else None, utc_now(now))

    def _count(self, after: int) -> int:
        engine: Any = self.engine
        query = count_query(self.store, engine.kind, after, self.core.stored_types)
        if query is None:
            return count_pages(self.store.read_all, after, self.core.types)
        sql, parameters = query
        if engine.kind == "sqlite":
            return int(engine.connection.execute(sql, parameters).fetchone()[0])
        with engine.connection() as connection:
            return int(connection.execute(sql, parameters).fetchone()[0])

    def __repr__(self) -> str:
        return f"ProjectionRunner({self.name!r}, position={self.core.position})"
