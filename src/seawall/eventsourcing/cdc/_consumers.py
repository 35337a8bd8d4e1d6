"""Where captured changes go: the handler protocols and ready-made consumers.

A handler is any callable taking one :class:`ChangeEvent`; an object with
``handle_batch(events)`` (or ``ahandle_batch`` for asyncio) gets each batch at once,
which lets a consumer write the whole batch in one round trip. Three consumers ship:

* :class:`QueueSink` sends each change to a seawall durable queue, deduplicated by
  the change's stable id, so a change delivered twice is queued once.
* :class:`CacheInvalidator` calls ``invalidate(key)`` for every row that changed.
* :class:`EventStoreFeed` appends changes to an event store, where projections and
  subscriptions consume them.

Topics (publish/subscribe) plug in the same way once they exist: a handler that calls
``topic.publish(event.to_debezium(), key=event.id)``.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from seawall.eventsourcing.cdc._model import OP_NAMES, ChangeEvent

if TYPE_CHECKING:
    from seawall.eventsourcing.store import AppendRequest, AsyncEventStore, EventStore
    from seawall.messaging.queue import Envelope, Queue
    from seawall.messaging.topic import Topic, TopicRecord

__all__ = [
    "AsyncChangeHandler",
    "BatchChangeHandler",
    "CacheInvalidator",
    "ChangeHandler",
    "EventStoreFeed",
    "QueueSink",
    "TopicSink",
    "cache_key",
    "change_headers",
]

CDC_NAMESPACE = uuid.UUID("6f1c2a7e-3b7d-5c1e-9a43-2d7c0f6b1e55")
"""The uuid5 namespace of event ids made from change ids (stable across redeliveries)."""


@runtime_checkable
class ChangeHandler(Protocol):
    """Handles one change; ``run`` confirms it once the call returns."""

    def __call__(self, event: ChangeEvent, /) -> object:
        """Handle ``event``; raise to stop ``run`` (the event is delivered again later)."""
        ...


@runtime_checkable
class BatchChangeHandler(Protocol):
    """Handles a batch of changes at once (``run`` prefers this to one call per event)."""

    def handle_batch(self, events: Sequence[ChangeEvent], /) -> object:
        """Handle every event of the batch, or raise (the whole batch is delivered again)."""
        ...


@runtime_checkable
class AsyncChangeHandler(Protocol):
    """The asyncio handler of one change: a coroutine function."""

    def __call__(self, event: ChangeEvent, /) -> Awaitable[object]:
        """Handle ``event``; raise to stop ``run`` (the event is delivered again later)."""
        ...


def change_headers(event: ChangeEvent) -> dict[str, str]:
    """Message headers naming a change: its table, operation and stable id."""
    return {
        "cdc-table": f"{event.source.schema}.{event.source.table}",
        "cdc-op": event.op,
        "cdc-id": event.id,
    }


def _debezium(event: ChangeEvent) -> Any:
    return event.to_debezium()


class QueueSink:
    """Sends every change to a seawall durable queue (body: the Debezium envelope).

    Each message carries :func:`change_headers` and, unless ``deduplicate=False``,
    the change's stable id as its ``dedup_id``: a change delivered again within the
    queue's dedup window is not queued twice. ``body`` turns an event into the body.
    """

    def __init__(
        self,
        queue: Queue,
        *,
        body: Callable[[ChangeEvent], Any] = _debezium,
        deduplicate: bool = True,
    ) -> None:
        self.queue = queue
        self.body = body
        self.deduplicate = deduplicate

    def _envelopes(self, events: Sequence[ChangeEvent]) -> list[Envelope]:
        from seawall.messaging.queue import Envelope

        body, deduplicate = self.body, self.deduplicate
        return [
            Envelope(
                body(event),
                headers=change_headers(event),
                dedup_id=event.id if deduplicate else None,
            )
            for event in events
        ]

    def __call__(self, event: ChangeEvent) -> None:
        """Send one change."""
        self.queue.send(
            self.body(event),
            headers=change_headers(event),
            dedup_id=event.id if self.deduplicate else None,
        )

    def handle_batch(self, events: Sequence[ChangeEvent]) -> None:
        """Send a batch of changes in one call."""
        self.queue.send_many(self._envelopes(events))

    async def ahandle_batch(self, events: Sequence[ChangeEvent]) -> None:
        """Asyncio twin of :meth:`handle_batch`."""
        await self.queue.asend_many(self._envelopes(events))


class TopicSink:
    """Publishes every change to a seawall topic (body: the Debezium envelope).

    The message key is the changed row's table and primary key (the table alone for a
    table without one), so every consumer group sees the changes of one row in commit
    order; :func:`change_headers` carry the
    change's stable id (``cdc-id``) for an inbox to drop a change delivered twice.
    ``body`` turns an event into the body.
    """

    def __init__(self, topic: Topic, *, body: Callable[[ChangeEvent], Any] = _debezium) -> None:
        self.topic = topic
        self.body = body

    def _records(self, events: Sequence[ChangeEvent]) -> list[TopicRecord]:
        from seawall.messaging.topic import TopicRecord

        body = self.body
        return [
            TopicRecord(body(event), key=_row_key(event), headers=change_headers(event))
            for event in events
        ]

    def __call__(self, event: ChangeEvent) -> None:
        """Publish one change."""
        self.topic.publish(self.body(event), key=_row_key(event), headers=change_headers(event))

    def handle_batch(self, events: Sequence[ChangeEvent]) -> None:
        """Publish a batch of changes atomically, in order."""
        self.topic.publish_many(self._records(events))

    async def ahandle_batch(self, events: Sequence[ChangeEvent]) -> None:
        """Asyncio twin of :meth:`handle_batch`."""
        await self.topic.apublish_many(self._records(events))


def _row_key(event: ChangeEvent) -> str:
    """The row's table and primary key; the table alone when it has no primary key."""
    table = f"{event.source.schema}.{event.source.table}"
    return table if event.key is None else cache_key(table, event.key)


def cache_key(table: str, key: Mapping[str, Any]) -> str:
    """The default cache key of a row: ``table:value`` (``table:v1:v2`` for a compound key)."""
    return table + ":" + ":".join(str(value) for value in key.values())


class CacheInvalidator:
    """Calls ``invalidate(key)`` for each row a change touches (both keys if the key changed).

    ``key(table, primary_key_values)`` builds the cache key (default :func:`cache_key`).
    Snapshot rows invalidate nothing unless ``include_snapshot``; a truncate calls
    ``on_truncate(table)`` when given. Rows of tables without a primary key are skipped.
    ``invalidate`` may be a coroutine function when the capture runs on asyncio.
    """

    def __init__(
        self,
        invalidate: Callable[[str], object],
        *,
        key: Callable[[str, Mapping[str, Any]], str] = cache_key,
        on_truncate: Callable[[str], object] | None = None,
        include_snapshot: bool = False,
    ) -> None:
        self.invalidate = invalidate
        self.key = key
        self.on_truncate = on_truncate
        self.include_snapshot = include_snapshot

    def keys(self, event: ChangeEvent) -> list[str]:
        """The cache keys ``event`` makes stale (empty for snapshot rows and keyless tables)."""
        if event.key is None or (event.op == "r" and not self.include_snapshot):
            return []
        keys = [self.key(event.source.table, event.key)]
        before = event.before
        if event.op == "u" and before is not None:
            try:
                old = {column: before[column] for column in event.key}
            except KeyError:
                return keys
            if old != event.key:
                keys.append(self.key(event.source.table, old))
        return keys

    def _calls(self, event: ChangeEvent) -> list[object]:
        if event.op == "t":
            return [self.on_truncate(event.source.table)] if self.on_truncate is not None else []
        invalidate = self.invalidate
        return [invalidate(key) for key in self.keys(event)]

    def __call__(self, event: ChangeEvent) -> None:
        """Invalidate the keys of one change."""
        self._calls(event)

    def handle_batch(self, events: Sequence[ChangeEvent]) -> None:
        """Invalidate the keys of every change of a batch."""
        for event in events:
            self._calls(event)

    async def ahandle_batch(self, events: Sequence[ChangeEvent]) -> None:
        """Asyncio twin of :meth:`handle_batch`: awaits ``invalidate`` when it is async."""
        for event in events:
            for result in self._calls(event):
                if inspect.isawaitable(result):
                    await result


def _capture_stream(event: ChangeEvent) -> str:
    return f"cdc-{event.source.name}"


def _event_type(event: ChangeEvent) -> str:
    return f"{event.source.table}.{OP_NAMES.get(event.op, event.op)}"


class EventStoreFeed:
    """Appends every change to an event store, for projections and subscriptions to read.

    By default all changes of one capture go to the stream ``cdc-<slot>`` in order,
    with the type ``<table>.created|updated|deleted|read|truncated`` and the Debezium
    envelope as data. Event ids are derived from the change ids, so a change
    delivered twice gets the same id (an inbox or an idempotent projection drops the
    copy). On SQLite, ``capture.run(feed, transactional=True)`` with the store on the
    same engine appends and confirms in one transaction: each change exactly once.
    """

    def __init__(
        self,
        store: EventStore | AsyncEventStore,
        *,
        stream: Callable[[ChangeEvent], str] = _capture_stream,
        event_type: Callable[[ChangeEvent], str] = _event_type,
    ) -> None:
        self.store = store
        self.stream = stream
        self.event_type = event_type

    def requests(self, events: Sequence[ChangeEvent]) -> list[AppendRequest]:
        """The appends for a batch: one per stream, each stream's changes in order."""
        from seawall.eventsourcing.store import AppendRequest, NewEvent

        grouped: dict[str, list[NewEvent]] = {}
        stream, event_type = self.stream, self.event_type
        for event in events:
            grouped.setdefault(stream(event), []).append(
                NewEvent(
                    event_type(event),
                    event.to_debezium(),
                    id=uuid.uuid5(CDC_NAMESPACE, event.id),
                    headers=change_headers(event),
                )
            )
        return [AppendRequest(name, batch) for name, batch in grouped.items()]

    def __call__(self, event: ChangeEvent) -> None:
        """Append one change (synchronous store)."""
        self.handle_batch([event])

    def handle_batch(self, events: Sequence[ChangeEvent]) -> None:
        """Append a batch of changes in one call (synchronous store)."""
        result = self.store.append_batch(self.requests(events))
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                "EventStoreFeed was given an asyncio event store: run the capture with "
                "acapture(...) so that ahandle_batch is used"
            )

    async def ahandle_batch(self, events: Sequence[ChangeEvent]) -> None:
        """Append a batch of changes in one call (asyncio or synchronous store)."""
        result = self.store.append_batch(self.requests(events))
        if inspect.isawaitable(result):
            await result
