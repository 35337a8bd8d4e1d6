"""Repositories: load aggregates from their streams and save their pending events.

A repository loads an aggregate by replaying its stream (from the latest snapshot
when a :class:`~seawall.eventsourcing.SnapshotPolicy` is set) and saves it by
appending its pending events with ``expected_version`` set to the version it was
loaded at, so a concurrent writer makes the save fail with
:class:`~seawall.eventsourcing.ConcurrencyError` instead of losing an update.
``update(id, command)`` reloads and runs the command again on such a conflict.

The decisions (stream ids, rebuilding state from a snapshot and events, what to
append, when to snapshot) live in :class:`RepositoryCore` (``_core.py``), with no I/O; the
synchronous :class:`Repository` and the asyncio :class:`AsyncRepository` are thin
shells that call the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from seawall.events import EventHub, hub
from seawall.eventsourcing.aggregate._aggregate import Aggregate
from seawall.eventsourcing.aggregate._core import (
    RepositoryCore,
    check_at_version,
    check_retries,
    snapshot_data,
)
from seawall.eventsourcing.aggregate._errors import AggregateNotFoundError
from seawall.eventsourcing.aggregate._events import SnapshotSaved, UpdateRetried
from seawall.eventsourcing.store._errors import ConcurrencyError
from seawall.eventsourcing.store._model import AppendResult
from seawall.eventsourcing.store._snapshots import NO_SNAPSHOTS, SnapshotPolicy

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.eventsourcing.store._store import AsyncEventStore, EventStore
    from seawall.resilience import Retry

__all__ = ["AsyncRepository", "Repository"]

_A = TypeVar("_A", bound=Aggregate)
_T = TypeVar("_T")


class Repository(Generic[_A]):
    """Loads and saves aggregates of one class through an :class:`EventStore` (synchronous).

    ``snapshot_policy`` (default: never) decides when a save also stores a snapshot;
    with one set, loads start from the latest snapshot of the aggregate's
    ``snapshot_schema_version``. Every method takes ``transaction=`` to join the
    caller's database transaction.
    """

    def __init__(
        self,
        store: EventStore,
        aggregate_class: type[_A],
        *,
        snapshot_policy: SnapshotPolicy = NO_SNAPSHOTS,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.core: RepositoryCore[_A] = RepositoryCore(
            aggregate_class, types=store.types, snapshot_policy=snapshot_policy
        )
        self.name = name or f"repository:{aggregate_class.__name__}"
        self.events = EventHub(parent=hub)

    @property
    def aggregate_class(self) -> type[_A]:
        """The class of the aggregates this repository loads and saves."""
        return self.core.aggregate_class

    def new(self, id: str) -> _A:
        """A new aggregate with this id at version 0; ``save`` creates its stream."""
        self.core.stream_id(id)
        return self.core.new(id)

    def find(
        self, id: str, *, at_version: int | None = None, transaction: Transaction | None = None
    ) -> _A | None:
        """The aggregate rebuilt from its stream, or ``None`` when it has no events.

        ``at_version`` rebuilds the state as it was at that version (from the events
        alone, ignoring snapshots).
        """
        core = self.core
        stream_id = core.stream_id(id)
        check_at_version(at_version)
        if at_version is not None:
            events = self.store.read_stream(stream_id, limit=at_version, transaction=transaction)
            return core.build(id, None, events)
        if core.snapshots:
            loaded = self.store.load(
                stream_id,
                snapshot_schema_version=core.aggregate_class.snapshot_schema_version,
                transaction=transaction,
            )
            return core.build(id, loaded.snapshot, loaded.events)
        return core.build(id, None, self.store.read_stream(stream_id, transaction=transaction))

    def get(
        self, id: str, *, at_version: int | None = None, transaction: Transaction | None = None
    ) -> _A:
        """The aggregate rebuilt from its stream; :class:`AggregateNotFoundError` if none."""
        aggregate = self.find(id, at_version=at_version, transaction=transaction)
        if aggregate is None:
            raise AggregateNotFoundError(self.core.aggregate_name, id, self.core.stream_id(id))
        return aggregate

    def get_or_new(self, id: str, *, transaction: Transaction | None = None) -> _A:
        """The stored aggregate, or a new one at version 0 when the stream has no events."""
        aggregate = self.find(id, transaction=transaction)
        return self.core.new(id) if aggregate is None else aggregate

    def save(
        self,
        aggregate: _A,
        *,
        transaction: Transaction | None = None,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AppendResult:
        """Append the aggregate's pending events, expecting the version it was loaded at.

        Raises :class:`ConcurrencyError` (writing nothing, keeping the pending events)
        when another writer got there first: reload and decide again, or use
        :meth:`update`. The metadata arguments are recorded on every event. With no
        pending events nothing is written (the result's ``position`` is 0).
        """
        core = self.core
        core.check(aggregate)
        if not aggregate._pending:
            return AppendResult(aggregate.stream_id, aggregate._version, 0)
        snapshot = core.snapshot_due(aggregate)
        result = self.store.append(
            aggregate.stream_id,
            core.events_to_append(aggregate, causation_id, correlation_id, headers),
            expected_version=aggregate._stored_version,
            transaction=transaction,
        )
        core.saved(aggregate, result)
        if snapshot is not None:
            self._snapshot(aggregate, snapshot, transaction)
        return result

    def save_all(
        self,
        aggregates: Sequence[_A],
        *,
        transaction: Transaction | None = None,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[AppendResult]:
        """Save several aggregates in one append: all of them are written, or none.

        Returns one result per aggregate that had pending events, in order.
        """
        core = self.core
        changed, requests = core.batch(aggregates, causation_id, correlation_id, headers)
        if not requests:
            return []
        snapshots = [core.snapshot_due(aggregate) for aggregate in changed]
        results = self.store.append_batch(requests, transaction=transaction)
        for aggregate, result in zip(changed, results, strict=True):
            core.saved(aggregate, result)
        for aggregate, snapshot in zip(changed, snapshots, strict=True):
            if snapshot is not None:
                self._snapshot(aggregate, snapshot, transaction)
        return results

    def update(
        self,
        id: str,
        command: Callable[[_A], _T],
        *,
        retries: int = 3,
        retry: Retry | None = None,
        create: bool = False,
        transaction: Transaction | None = None,
    ) -> _T:
        """Load the aggregate, run ``command(aggregate)``, save; returns the command's result.

        On a :class:`ConcurrencyError` it reloads and runs the command again, up to
        ``retries`` more times (at once), or as the ``retry`` policy says (its waits,
        attempts and ``on=`` filter, which must include ``ConcurrencyError``). The
        command must only decide and emit (no I/O): it may run more than once.
        ``create=True`` starts from a new aggregate when none exists. Inside a
        caller's ``transaction`` a conflict is not retried (the transaction must be
        retried as a whole).
        """
        check_retries(retries)
        if retry is not None and transaction is None:
            return retry.call(self._update_once, id, command, create, None)
        attempt = 1
        while True:
            try:
                return self._update_once(id, command, create, transaction)
            except ConcurrencyError as error:
                if transaction is not None or attempt > retries:
                    raise
                if self.events.active:
                    self.events.emit(
                        UpdateRetried(
                            self.name, error.stream_id, attempt, error.expected, error.actual
                        )
                    )
                attempt += 1

    def _update_once(
        self,
        id: str,
        command: Callable[[_A], _T],
        create: bool,
        transaction: Transaction | None,
    ) -> _T:
        aggregate = (
            self.get_or_new(id, transaction=transaction)
            if create
            else self.get(id, transaction=transaction)
        )
        result = command(aggregate)
        self.save(aggregate, transaction=transaction)
        return result

    def _snapshot(self, aggregate: _A, data: Any, transaction: Transaction | None) -> None:
        version = aggregate._version
        self.store.save_snapshot(
            aggregate.stream_id,
            version,
            snapshot_data(data),
            schema_version=aggregate.snapshot_schema_version,
            transaction=transaction,
        )
        aggregate._snapshot_version = version
        if self.events.active:
            self.events.emit(SnapshotSaved(self.name, aggregate.stream_id, version))

    def __repr__(self) -> str:
        return f"Repository({self.core.aggregate_name}, {self.store!r})"


class AsyncRepository(Generic[_A]):
    """The asyncio twin of :class:`Repository` over an :class:`AsyncEventStore`.

    The same options and methods, awaited. Commands given to :meth:`update` stay
    synchronous: an aggregate decides without I/O.
    """

    def __init__(
        self,
        store: AsyncEventStore,
        aggregate_class: type[_A],
        *,
        snapshot_policy: SnapshotPolicy = NO_SNAPSHOTS,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.core: RepositoryCore[_A] = RepositoryCore(
            aggregate_class, types=store.types, snapshot_policy=snapshot_policy
        )
        self.name = name or f"repository:{aggregate_class.__name__}"
        self.events = EventHub(parent=hub)

    @property
    def aggregate_class(self) -> type[_A]:
        """The class of the aggregates this repository loads and saves."""
        return self.core.aggregate_class

    def new(self, id: str) -> _A:
        """A new aggregate with this id at version 0; ``save`` creates its stream."""
        self.core.stream_id(id)
        return self.core.new(id)

    async def find(
        self, id: str, *, at_version: int | None = None, transaction: Transaction | None = None
    ) -> _A | None:
        """The aggregate rebuilt from its stream, or ``None`` when it has no events."""
        core = self.core
        stream_id = core.stream_id(id)
        check_at_version(at_version)
        if at_version is not None:
            events = await self.store.read_stream(
                stream_id, limit=at_version, transaction=transaction
            )
            return core.build(id, None, events)
        if core.snapshots:
            loaded = await self.store.load(
                stream_id,
                snapshot_schema_version=core.aggregate_class.snapshot_schema_version,
                transaction=transaction,
            )
            return core.build(id, loaded.snapshot, loaded.events)
        events = await self.store.read_stream(stream_id, transaction=transaction)
        return core.build(id, None, events)

    async def get(
        self, id: str, *, at_version: int | None = None, transaction: Transaction | None = None
    ) -> _A:
        """The aggregate rebuilt from its stream; :class:`AggregateNotFoundError` if none."""
        aggregate = await self.find(id, at_version=at_version, transaction=transaction)
        if aggregate is None:
            raise AggregateNotFoundError(self.core.aggregate_name, id, self.core.stream_id(id))
        return aggregate

    async def get_or_new(self, id: str, *, transaction: Transaction | None = None) -> _A:
        """The stored aggregate, or a new one at version 0 when the stream has no events."""
        aggregate = await self.find(id, transaction=transaction)
        return self.core.new(id) if aggregate is None else aggregate

    async def save(
        self,
        aggregate: _A,
        *,
        transaction: Transaction | None = None,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AppendResult:
        """Append the pending events, expecting the loaded version (see :meth:`Repository.save`)."""
        core = self.core
        core.check(aggregate)
        if not aggregate._pending:
            return AppendResult(aggregate.stream_id, aggregate._version, 0)
        snapshot = core.snapshot_due(aggregate)
        result = await self.store.append(
            aggregate.stream_id,
            core.events_to_append(aggregate, causation_id, correlation_id, headers),
            expected_version=aggregate._stored_version,
            transaction=transaction,
        )
        core.saved(aggregate, result)
        if snapshot is not None:
            await self._snapshot(aggregate, snapshot, transaction)
        return result

    async def save_all(
        self,
        aggregates: Sequence[_A],
        *,
        transaction: Transaction | None = None,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[AppendResult]:
        """Save several aggregates in one append: all of them are written, or none."""
        core = self.core
        changed, requests = core.batch(aggregates, causation_id, correlation_id, headers)
        if not requests:
            return []
        snapshots = [core.snapshot_due(aggregate) for aggregate in changed]
        results = await self.store.append_batch(requests, transaction=transaction)
        for aggregate, result in zip(changed, results, strict=True):
            core.saved(aggregate, result)
        for aggregate, snapshot in zip(changed, snapshots, strict=True):
            if snapshot is not None:
                await self._snapshot(aggregate, snapshot, transaction)
        return results

    async def update(
        self,
        id: str,
        command: Callable[[_A], _T],
        *,
        retries: int = 3,
        retry: Retry | None = None,
        create: bool = False,
        transaction: Transaction | None = None,
    ) -> _T:
        """Load, run ``command(aggregate)``, save, retrying on conflict (see :meth:`Repository.update`)."""
        check_retries(retries)
        if retry is not None and transaction is None:
            return await retry.acall(self._update_once, id, command, create, None)
        attempt = 1
        while True:
            try:
                return await self._update_once(id, command, create, transaction)
            except ConcurrencyError as error:
                if transaction is not None or attempt > retries:
                    raise
                if self.events.active:
                    self.events.emit(
                        UpdateRetried(
                            self.name, error.stream_id, attempt, error.expected, error.actual
                        )
                    )
                attempt += 1

    async def _update_once(
        self,
        id: str,
        command: Callable[[_A], _T],
        create: bool,
        transaction: Transaction | None,
    ) -> _T:
        aggregate = (
            await self.get_or_new(id, transaction=transaction)
            if create
            else await self.get(id, transaction=transaction)
        )
        result = command(aggregate)
        await self.save(aggregate, transaction=transaction)
        return result

    async def _snapshot(self, aggregate: _A, data: Any, transaction: Transaction | None) -> None:
        version = aggregate._version
        await self.store.save_snapshot(
            aggregate.stream_id,
            version,
            snapshot_data(data),
            schema_version=aggregate.snapshot_schema_version,
            transaction=transaction,
        )
        aggregate._snapshot_version = version
        if self.events.active:
            self.events.emit(SnapshotSaved(self.name, aggregate.stream_id, version))

    def __repr__(self) -> str:
        return f"AsyncRepository({self.core.aggregate_name}, {self.store!r})"
