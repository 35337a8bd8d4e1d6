"""What every engine's store shares: argument checks, encoding, decoding, the async shell.

An engine's store subclasses :class:`EventStoreBase` and implements a handful of
row-level methods (``_append``, ``_select_stream``, ...). Validation, JSON encoding
and building :class:`RecordedEvent` objects happen here, once, for every engine.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.events import EventHub, hub
from seawall.eventsourcing.store._errors import (
    ConcurrencyError,
    CorruptEventError,
    EventSerializationError,
)
from seawall.eventsourcing.store._events import AppendConflicted, EventsAppended
from seawall.eventsourcing.store._model import (
    _EPOCH,
    AppendRequest,
    AppendResult,
    EncodedEvent,
    RecordedEvent,
    encode_events,
    encode_json,
)
from seawall.eventsourcing.store._snapshots import LoadedStream, Snapshot
from seawall.eventsourcing.store._store import (
    ANY,
    DEFAULT_PAGE,
    check_checkpoint,
    check_expected,
    check_identifier,
    check_read_all,
    check_read_stream,
    check_requests,
    check_snapshot,
    check_stream_id,
    type_filter,
)
from seawall.eventsourcing.store._subscription import (
    AsyncClockWakeups,
    AsyncSubscription,
    AsyncWakeups,
    ClockWakeups,
    Subscription,
    Wakeups,
)

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction
    from seawall.eventsourcing.store._upcasting import EventTypes

__all__ = ["AsyncEventStoreBase", "EventStoreBase", "ThreadedAsyncEventStore"]

Batch = list[tuple[str, int, list[EncodedEvent]]]
"""Per stream: id, expected version, encoded events."""

SnapshotRow = tuple[int, int, str, "datetime | int"]
"""version, schema version, data JSON, timestamp (datetime or microseconds)."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def encode_batch(requests: Sequence[AppendRequest], types: EventTypes | None) -> Batch:
    """Validate and encode a multi-stream batch; raises before anything is written."""
    check_requests(requests)
    return [
        (request.stream_id, request.expected_version, encode_events(request.events, types))
        for request in requests
    ]


def encode_snapshot(stream_id: str, data: Any) -> str:
    """Snapshot data as JSON, or :class:`EventSerializationError` naming the stream."""
    try:
        return encode_json(data)
    except (TypeError, ValueError) as exc:
        raise EventSerializationError(f"snapshot of {stream_id!r}", 0, f"its data {exc}") from exc


def decode_snapshot(stream_id: str, row: SnapshotRow) -> Snapshot:
    """A :class:`Snapshot` from its stored row."""
    version, schema_version, data_json, timestamp = row
    try:
        data = json.loads(data_json) if isinstance(data_json, str | bytes) else data_json
    except ValueError as exc:
        raise CorruptEventError(
            f"its snapshot data is not valid JSON ({exc})",
            stream_id=stream_id,
            version=version,
            position=0,
        ) from exc
    if isinstance(timestamp, int):
        timestamp = _EPOCH + timedelta(microseconds=timestamp)
    return Snapshot(stream_id, version, data, schema_version, timestamp)


def emit_appended(events: EventHub, source: str, batch: Batch, results: list[AppendResult]) -> None:
    """Tell listeners what an append wrote (called only when someone listens)."""
    for (_, _, encoded), result in zip(batch, results, strict=True):
        if encoded:
            events.emit(
                EventsAppended(
                    source, result.stream_id, len(encoded), result.version, result.position
                )
            )


def emit_conflict(events: EventHub, source: str, error: ConcurrencyError) -> None:
    """Tell listeners an append was refused (called only when someone listens)."""
    events.emit(AppendConflicted(source, error.stream_id, error.expected, error.actual))


def check_types(events: list[RecordedEvent]) -> list[RecordedEvent]:
    """Resolve every event's type now, so an unknown one raises at read time."""
    for event in events:
        event._resolved  # noqa: B018 - computing it raises UnknownEventTypeError early
    return events


class EventStoreBase(ABC):
    """The synchronous store API, built on a few row-level methods per engine."""

    supports_transactions: ClassVar[bool] = True
    kind: ClassVar[str] = ""

    def __init__(self, engine: Engine, *, types: EventTypes | None, table_prefix: str) -> None:
        if engine.kind != self.kind:
            raise ConfigurationError(
                f"{type(self).__name__} needs a {self.kind!r} engine, got {engine!r}"
            )
        self.engine = engine
        self.types = types
        self.table_prefix = check_identifier(table_prefix, "table_prefix")
        self.name = f"eventstore:{table_prefix}"
        self.events = EventHub(parent=hub)
        event_class = RecordedEvent if types is None else types.event_class
        self._make: Callable[[Any], RecordedEvent] = partial(tuple.__new__, event_class)

    # --- engine-specific rows ----------------------------------------------------------

    @abstractmethod
    def _append(self, batch: Batch, transaction: Transaction | None) -> list[AppendResult]: ...

    @abstractmethod
    def _select_stream(
        self,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        transaction: Transaction | None,
    ) -> list[Any]: ...

    @abstractmethod
    def _select_version(self, stream_id: str, transaction: Transaction | None) -> int: ...

    @abstractmethod
    def _select_all(
        self,
        after: int,
        limit: int,
        stored_types: tuple[str, ...] | None,
        transaction: Transaction | None,
    ) -> list[Any]: ...

    @abstractmethod
    def _put_snapshot(
        self,
        stream_id: str,
        version: int,
        schema_version: int,
        data_json: str,
        transaction: Transaction | None,
    ) -> None: ...

    @abstractmethod
    def _get_snapshot(
        self, stream_id: str, transaction: Transaction | None
    ) -> SnapshotRow | None: ...

    @abstractmethod
    def _get_checkpoint(self, name: str, transaction: Transaction | None) -> int | None: ...

    @abstractmethod
    def _put_checkpoint(
        self, name: str, position: int, transaction: Transaction | None
    ) -> None: ...

    @abstractmethod
    def create_tables(self) -> None:
        """Create the store's tables if missing."""

    @abstractmethod
    def drop_tables(self) -> None:
        """Drop the store's tables and everything in them."""

    # --- the public API ------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        events: Sequence[Any],
        *,
        expected_version: int = ANY,
        transaction: Transaction | None = None,
    ) -> AppendResult:
        """Append ``events`` to the stream, or raise ``ConcurrencyError`` writing nothing.

        ``expected_version`` is the version the stream must be at (0: it must not
        exist), or an :class:`ExpectedVersion` constant. With ``transaction`` the
        events commit (or roll back) with the caller's transaction.
        """
        check_stream_id(stream_id)
        check_expected(expected_version)
        batch = [(stream_id, expected_version, encode_events(events, self.types))]
        if transaction is not None:
            self._check_transaction(transaction)
        try:
            results = self._append(batch, transaction)
        except ConcurrencyError as error:
            if self.events.active:
                emit_conflict(self.events, self.name, error)
            raise
        if self.events.active:
            emit_appended(self.events, self.name, batch, results)
        return results[0]

    def append_batch(
        self, requests: Sequence[AppendRequest], *, transaction: Transaction | None = None
    ) -> list[AppendResult]:
        """Append to several streams in one transaction: all requests are written, or none."""
        batch = encode_batch(requests, self.types)
        if transaction is not None:
            self._check_transaction(transaction)
        if not batch:
            return []
        try:
            results = self._append(batch, transaction)
        except ConcurrencyError as error:
            if self.events.active:
                emit_conflict(self.events, self.name, error)
            raise
        if self.events.active:
            emit_appended(self.events, self.name, batch, results)
        return results

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        transaction: Transaction | None = None,
    ) -> list[RecordedEvent]:
        """The stream's events from ``from_version`` up (default: the first), in version order.

        ``backwards=True`` reads down from ``from_version`` (default: the last).
        """
        check_stream_id(stream_id)
        check_read_stream(from_version, limit)
        if transaction is not None:
            self._check_transaction(transaction)
        events = list(
            map(
                self._make,
                self._select_stream(stream_id, from_version, backwards, limit, transaction),
            )
        )
        return events if self.types is None else check_types(events)

    def stream_version(self, stream_id: str, *, transaction: Transaction | None = None) -> int:
        """The stream's current version (0 when it has no events)."""
        check_stream_id(stream_id)
        if transaction is not None:
            self._check_transaction(transaction)
        return self._select_version(stream_id, transaction)

    def read_all(
        self,
        *,
        after: int = 0,
        limit: int = DEFAULT_PAGE,
        types: Collection[str] | None = None,
        transaction: Transaction | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events with a global position above ``after``, in position order.

        ``types`` keeps only events of those type names. The next page starts
        ``after`` the last event's position.
        """
        check_read_all(after, limit)
        stored_types = type_filter(types, self.types)
        if stored_types is not None and not stored_types:
            return []
        if transaction is not None:
            self._check_transaction(transaction)
        events = list(map(self._make, self._select_all(after, limit, stored_types, transaction)))
        return events if self.types is None else check_types(events)

    def save_snapshot(
        self,
        stream_id: str,
        version: int,
        data: Any,
        *,
        schema_version: int = 1,
        transaction: Transaction | None = None,
    ) -> None:
        """Store the stream's state at ``version``; an older snapshot never replaces a newer one."""
        check_stream_id(stream_id)
        check_snapshot(version, schema_version)
        data_json = encode_snapshot(stream_id, data)
        if transaction is not None:
            self._check_transaction(transaction)
        self._put_snapshot(stream_id, version, schema_version, data_json, transaction)

    def load_snapshot(
        self, stream_id: str, *, transaction: Transaction | None = None
    ) -> Snapshot | None:
        """The stream's latest snapshot, or ``None``."""
        check_stream_id(stream_id)
        if transaction is not None:
            self._check_transaction(transaction)
        row = self._get_snapshot(stream_id, transaction)
        return None if row is None else decode_snapshot(stream_id, row)

    def load(
        self,
        stream_id: str,
        *,
        snapshot_schema_version: int | None = None,
        transaction: Transaction | None = None,
    ) -> LoadedStream:
        """The latest snapshot plus the events after it (all events when there is none).

        A snapshot whose ``schema_version`` differs from ``snapshot_schema_version``
        (when given) is ignored, so a changed state shape rebuilds from the events.
        """
        snapshot = self.load_snapshot(stream_id, transaction=transaction)
        if snapshot is not None and snapshot_schema_version not in (None, snapshot.schema_version):
            snapshot = None
        start = 1 if snapshot is None else snapshot.version + 1
        events = self.read_stream(stream_id, from_version=start, transaction=transaction)
        return LoadedStream(stream_id, snapshot, events)

    def load_checkpoint(self, name: str, *, transaction: Transaction | None = None) -> int:
        """The stored position of subscriber ``name`` (0 when it has none)."""
        check_checkpoint(name)
        if transaction is not None:
            self._check_transaction(transaction)
        position = self._get_checkpoint(name, transaction)
        return 0 if position is None else position

    def save_checkpoint(
        self, name: str, position: int, *, transaction: Transaction | None = None
    ) -> None:
        """Store subscriber ``name``'s position (with ``transaction``: atomically with it)."""
        check_checkpoint(name, position)
        if transaction is not None:
            self._check_transaction(transaction)
        self._put_checkpoint(name, position, transaction)

    def subscribe(
        self,
        name: str,
        handler: Callable[[RecordedEvent], object],
        *,
        types: Collection[str] | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Subscription:
        """A catch-up-then-live subscription that stores its checkpoint under ``name``."""
        return Subscription(
            self,
            name,
            handler,
            types=types,
            batch_size=batch_size,
            poll_interval=poll_interval,
            clock=clock,
        )

    def wakeups(self, clock: Clock) -> Wakeups:
        """Plain polling on ``clock`` (PostgreSQL overrides this with LISTEN/NOTIFY)."""
        return ClockWakeups(clock)

    def close(self) -> None:  # noqa: B027 - an optional hook: most stores hold nothing
        """Release what the store holds (the engine stays open)."""

    def _check_transaction(self, transaction: Transaction) -> None:
        if not self.supports_transactions:
            raise UnsupportedEngineError(
                f"the {self.kind} event store has no transactions; call it without transaction="
            )
        if getattr(transaction, "engine", None) is None or transaction.engine.kind != self.kind:
            raise ConfigurationError(
                f"transaction {transaction!r} does not belong to a {self.kind} engine; "
                "open it with this store's engine.transaction()"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine!r}, table_prefix={self.table_prefix!r})"


class AsyncEventStoreBase(ABC):
    """The asyncio store API, built on a few async row-level methods per engine.

    The same checks, encoding and decoding as :class:`EventStoreBase`, awaited.
    """

    def __init__(self, engine: Engine, *, types: EventTypes | None, table_prefix: str) -> None:
        self.engine = engine
        self.types = types
        self.table_prefix = check_identifier(table_prefix, "table_prefix")
        self.name = f"eventstore:{table_prefix}"
        self.events = EventHub(parent=hub)
        event_class = RecordedEvent if types is None else types.event_class
        self._make: Callable[[Any], RecordedEvent] = partial(tuple.__new__, event_class)

    @property
    @abstractmethod
    def supports_transactions(self) -> bool:
        """True when writes can join a caller's transaction."""

    @abstractmethod
    def _check_transaction(self, transaction: Transaction) -> None: ...

    @abstractmethod
    async def _append(
        self, batch: Batch, transaction: Transaction | None
    ) -> list[AppendResult]: ...

    @abstractmethod
    async def _select_stream(
        self,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        transaction: Transaction | None,
    ) -> list[Any]: ...

    @abstractmethod
    async def _select_version(self, stream_id: str, transaction: Transaction | None) -> int: ...

    @abstractmethod
    async def _select_all(
        self,
        after: int,
        limit: int,
        stored_types: tuple[str, ...] | None,
        transaction: Transaction | None,
    ) -> list[Any]: ...

    @abstractmethod
    async def _put_snapshot(
        self,
        stream_id: str,
        version: int,
        schema_version: int,
        data_json: str,
        transaction: Transaction | None,
    ) -> None: ...

    @abstractmethod
    async def _get_snapshot(
        self, stream_id: str, transaction: Transaction | None
    ) -> SnapshotRow | None: ...

    @abstractmethod
    async def _get_checkpoint(self, name: str, transaction: Transaction | None) -> int | None: ...

    @abstractmethod
    async def _put_checkpoint(
        self, name: str, position: int, transaction: Transaction | None
    ) -> None: ...

    @abstractmethod
    async def create_tables(self) -> None:
        """Create the store's tables if missing."""

    @abstractmethod
    async def drop_tables(self) -> None:
        """Drop the store's tables and everything in them."""

    async def append(
        self,
        stream_id: str,
        events: Sequence[Any],
        *,
        expected_version: int = ANY,
        transaction: Transaction | None = None,
    ) -> AppendResult:
        """Append ``events`` to the stream, or raise ``ConcurrencyError`` writing nothing."""
        check_stream_id(stream_id)
        check_expected(expected_version)
        batch = [(stream_id, expected_version, encode_events(events, self.types))]
        if transaction is not None:
            self._check_transaction(transaction)
        try:
            results = await self._append(batch, transaction)
        except ConcurrencyError as error:
            if self.events.active:
                emit_conflict(self.events, self.name, error)
            raise
        if self.events.active:
            emit_appended(self.events, self.name, batch, results)
        return results[0]

    async def append_batch(
        self, requests: Sequence[AppendRequest], *, transaction: Transaction | None = None
    ) -> list[AppendResult]:
        """Append to several streams in one transaction: all requests are written, or none."""
        batch = encode_batch(requests, self.types)
        if transaction is not None:
            self._check_transaction(transaction)
        if not batch:
            return []
        try:
            results = await self._append(batch, transaction)
        except ConcurrencyError as error:
            if self.events.active:
                emit_conflict(self.events, self.name, error)
            raise
        if self.events.active:
            emit_appended(self.events, self.name, batch, results)
        return results

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        transaction: Transaction | None = None,
    ) -> list[RecordedEvent]:
        """The stream's events from ``from_version`` on (or down from it, backwards)."""
        check_stream_id(stream_id)
        check_read_stream(from_version, limit)
        if transaction is not None:
            self._check_transaction(transaction)
        rows = await self._select_stream(stream_id, from_version, backwards, limit, transaction)
        events = list(map(self._make, rows))
        return events if self.types is None else check_types(events)

    async def stream_version(
        self, stream_id: str, *, transaction: Transaction | None = None
    ) -> int:
        """The stream's current version (0 when it has no events)."""
        check_stream_id(stream_id)
        if transaction is not None:
            self._check_transaction(transaction)
        return await self._select_version(stream_id, transaction)

    async def read_all(
        self,
        *,
        after: int = 0,
        limit: int = DEFAULT_PAGE,
        types: Collection[str] | None = None,
        transaction: Transaction | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events with a global position above ``after``, in position order."""
        check_read_all(after, limit)
        stored_types = type_filter(types, self.types)
        if stored_types is not None and not stored_types:
            return []
        if transaction is not None:
            self._check_transaction(transaction)
        rows = await self._select_all(after, limit, stored_types, transaction)
        events = list(map(self._make, rows))
        return events if self.types is None else check_types(events)

    async def save_snapshot(
        self,
        stream_id: str,
        version: int,
        data: Any,
        *,
        schema_version: int = 1,
        transaction: Transaction | None = None,
    ) -> None:
        """Store the stream's state at ``version``; an older snapshot never replaces a newer one."""
        check_stream_id(stream_id)
        check_snapshot(version, schema_version)
        data_json = encode_snapshot(stream_id, data)
        if transaction is not None:
            self._check_transaction(transaction)
        await self._put_snapshot(stream_id, version, schema_version, data_json, transaction)

    async def load_snapshot(
        self, stream_id: str, *, transaction: Transaction | None = None
    ) -> Snapshot | None:
        """The stream's latest snapshot, or ``None``."""
        check_stream_id(stream_id)
        if transaction is not None:
            self._check_transaction(transaction)
        row = await self._get_snapshot(stream_id, transaction)
        return None if row is None else decode_snapshot(stream_id, row)

    async def load(
        self,
        stream_id: str,
        *,
        snapshot_schema_version: int | None = None,
        transaction: Transaction | None = None,
    ) -> LoadedStream:
        """The latest snapshot (of that schema version, if given) plus the events after it."""
        snapshot = await self.load_snapshot(stream_id, transaction=transaction)
        if snapshot is not None and snapshot_schema_version not in (None, snapshot.schema_version):
            snapshot = None
        start = 1 if snapshot is None else snapshot.version + 1
        events = await self.read_stream(stream_id, from_version=start, transaction=transaction)
        return LoadedStream(stream_id, snapshot, events)

    async def load_checkpoint(self, name: str, *, transaction: Transaction | None = None) -> int:
        """The stored position of subscriber ``name`` (0 when it has none)."""
        check_checkpoint(name)
        if transaction is not None:
            self._check_transaction(transaction)
        position = await self._get_checkpoint(name, transaction)
        return 0 if position is None else position

    async def save_checkpoint(
        self, name: str, position: int, *, transaction: Transaction | None = None
    ) -> None:
        """Store subscriber ``name``'s position (with ``transaction``: atomically with it)."""
        check_checkpoint(name, position)
        if transaction is not None:
            self._check_transaction(transaction)
        await self._put_checkpoint(name, position, transaction)

    def subscribe(
        self,
        name: str,
        handler: Callable[[RecordedEvent], Awaitable[object]],
        *,
        types: Collection[str] | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> AsyncSubscription:
        """A catch-up-then-live subscription that stores its checkpoint under ``name``."""
        return AsyncSubscription(
            self,
            name,
            handler,
            types=types,
            batch_size=batch_size,
            poll_interval=poll_interval,
            clock=clock,
        )

    async def wakeups(self, clock: Clock) -> AsyncWakeups:
        """Plain polling on ``clock`` (PostgreSQL overrides this with LISTEN/NOTIFY)."""
        return AsyncClockWakeups(clock)

    async def close(self) -> None:  # noqa: B027 - an optional hook: most stores hold nothing
        """Release what the store holds (the engine stays open)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine!r}, table_prefix={self.table_prefix!r})"


class ThreadedAsyncEventStore(AsyncEventStoreBase):
    """The asyncio API over a synchronous store's rows.

    With ``offload=True`` (SQLite) each row-level call without a caller transaction
    runs in a worker thread; calls that join a transaction run inline on its
    connection, which belongs to the calling thread.
    """

    def __init__(self, store: EventStoreBase, *, offload: bool) -> None:
        super().__init__(store.engine, types=store.types, table_prefix=store.table_prefix)
        self.sync = store
        self.offload = offload

    @property
    def supports_transactions(self) -> bool:
        """True when writes can join a caller's transaction."""
        return self.sync.supports_transactions

    def _check_transaction(self, transaction: Transaction) -> None:
        self.sync._check_transaction(transaction)

    async def _run(
        self,
        transaction: Transaction | None,
        function: Callable[_P, _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        if self.offload and transaction is None:
            return await asyncio.to_thread(function, *args, **kwargs)
        return function(*args, **kwargs)

    async def _append(self, batch: Batch, transaction: Transaction | None) -> list[AppendResult]:
        return await self._run(transaction, self.sync._append, batch, transaction)

    async def _select_stream(
        self,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        return await self._run(
            transaction,
            self.sync._select_stream,
            stream_id,
            from_version,
            backwards,
            limit,
            transaction,
        )

    async def _select_version(self, stream_id: str, transaction: Transaction | None) -> int:
        return await self._run(transaction, self.sync._select_version, stream_id, transaction)

    async def _select_all(
        self,
        after: int,
        limit: int,
        stored_types: tuple[str, ...] | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        return await self._run(
            transaction, self.sync._select_all, after, limit, stored_types, transaction
        )

    async def _put_snapshot(
        self,
        stream_id: str,
        version: int,
        schema_version: int,
        data_json: str,
        transaction: Transaction | None,
    ) -> None:
        await self._run(
            transaction,
            self.sync._put_snapshot,
            stream_id,
            version,
            schema_version,
            data_json,
            transaction,
        )

    async def _get_snapshot(
        self, stream_id: str, transaction: Transaction | None
    ) -> SnapshotRow | None:
        return await self._run(transaction, self.sync._get_snapshot, stream_id, transaction)

    async def _get_checkpoint(self, name: str, transaction: Transaction | None) -> int | None:
        return await self._run(transaction, self.sync._get_checkpoint, name, transaction)

    async def _put_checkpoint(
        self, name: str, position: int, transaction: Transaction | None
    ) -> None:
        await self._run(transaction, self.sync._put_checkpoint, name, position, transaction)

    async def create_tables(self) -> None:
        """Create the store's tables if missing."""
        await self._run(None, self.sync.create_tables)

    async def drop_tables(self) -> None:
        """Drop the store's tables and everything in them."""
        await self._run(None, self.sync.drop_tables)

    async def close(self) -> None:
        """Release what the store holds (the engine stays open)."""
        self.sync.close()

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"
