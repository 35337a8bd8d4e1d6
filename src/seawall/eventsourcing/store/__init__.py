"""The event store: streams of events on memory, SQLite or PostgreSQL.

``open_event_store(engine)`` (or ``open_async_event_store``) picks the engine's
store; every store passes the same conformance suite. See
``docs/eventsourcing/event-store.md``.
"""

from __future__ import annotations

from seawall.eventsourcing.store._errors import (
    ConcurrencyError,
    CorruptEventError,
    EventDecodingError,
    EventSerializationError,
    EventStoreError,
    UnknownEventTypeError,
)
from seawall.eventsourcing.store._events import AppendConflicted, BatchHandled, EventsAppended
from seawall.eventsourcing.store._model import (
    AppendRequest,
    AppendResult,
    NewEvent,
    RecordedEvent,
)
from seawall.eventsourcing.store._snapshots import (
    NO_SNAPSHOTS,
    LoadedStream,
    Snapshot,
    SnapshotEvery,
    SnapshotPolicy,
)
from seawall.eventsourcing.store._store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AsyncEventStore,
    EventStore,
    ExpectedVersion,
    open_async_event_store,
    open_event_store,
)
from seawall.eventsourcing.store._subscription import (
    AsyncSubscription,
    AsyncWakeups,
    Pacer,
    Subscription,
    Wakeups,
)
from seawall.eventsourcing.store._upcasting import EventTypes, Upcaster

__all__ = [
    "ANY",
    "NO_SNAPSHOTS",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendConflicted",
    "AppendRequest",
    "AppendResult",
    "AsyncEventStore",
    "AsyncSubscription",
    "AsyncWakeups",
    "BatchHandled",
    "ConcurrencyError",
    "CorruptEventError",
    "EventDecodingError",
    "EventSerializationError",
    "EventStore",
    "EventStoreError",
    "EventTypes",
    "EventsAppended",
    "ExpectedVersion",
    "LoadedStream",
    "NewEvent",
    "Pacer",
    "RecordedEvent",
    "Snapshot",
    "SnapshotEvery",
    "SnapshotPolicy",
    "Subscription",
    "UnknownEventTypeError",
    "Upcaster",
    "Wakeups",
    "open_async_event_store",
    "open_event_store",
]
