"""What a repository decides, with no I/O: stream ids, rebuilding, appends, snapshots.

:class:`RepositoryCore` is shared by the synchronous and the asyncio repository,
which only add the store calls around it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from seawall.errors import ConfigurationError
from seawall.eventsourcing.aggregate._aggregate import Aggregate, Applier
from seawall.eventsourcing.aggregate._errors import UnhandledEventError
from seawall.eventsourcing.store._errors import CorruptEventError, EventSerializationError
from seawall.eventsourcing.store._model import AppendRequest, AppendResult, NewEvent
from seawall.eventsourcing.store._snapshots import NO_SNAPSHOTS, Snapshot, SnapshotPolicy

if TYPE_CHECKING:
    from seawall.eventsourcing.store._model import RecordedEvent
    from seawall.eventsourcing.store._upcasting import EventTypes

__all__ = ["RepositoryCore", "check_at_version", "check_retries", "snapshot_data"]

_A = TypeVar("_A", bound=Aggregate)
_scan: Callable[[str, int], tuple[Any, int]] = getattr(json.JSONDecoder(), "scan_once")  # noqa: B009
"""json's C scanner, called directly (it is missing from the type stubs)."""


class RepositoryCore(Generic[_A]):
    """What a repository decides, with no I/O: stream ids, rebuilding, appends, snapshots.

    ``types`` is the store's registry (``None``: event classes are found by class
    name among the aggregate's known event classes).
    """

    __slots__ = (
        "_by_name",
        "aggregate_class",
        "aggregate_name",
        "fast",
        "snapshot_policy",
        "snapshots",
        "types",
    )

    def __init__(
        self,
        aggregate_class: type[_A],
        *,
        types: EventTypes | None,
        snapshot_policy: SnapshotPolicy,
    ) -> None:
        if not (isinstance(aggregate_class, type) and issubclass(aggregate_class, Aggregate)):
            raise ConfigurationError(
                f"aggregate_class={aggregate_class!r} must be a subclass of Aggregate"
            )
        if not isinstance(snapshot_policy, SnapshotPolicy):
            raise ConfigurationError(
                f"snapshot_policy={snapshot_policy!r} must be a SnapshotPolicy, e.g. "
                "SnapshotEvery(100), or NO_SNAPSHOTS"
            )
        self.aggregate_class = aggregate_class
        self.aggregate_name = aggregate_class.__name__
        self.types = types
        self.snapshot_policy = snapshot_policy
        self.snapshots = snapshot_policy is not NO_SNAPSHOTS
        """Whether loads start from a snapshot (and saves may write one)."""
        self.fast = types is None and not aggregate_class._applies_overridden
        """Events go straight to their ``@applies`` method (no registry, no custom apply)."""
        self._by_name: dict[str, tuple[type[Any], Applier | None]] = {}
        if types is None and not aggregate_class.known_event_classes():
            raise ConfigurationError(
                f"{self.aggregate_name} knows no event classes: mark apply methods with "
                "@applies(EventClass), or list the classes in event_types when apply() is "
                "overridden (or give the store an EventTypes registry)"
            )
        if types is None:
            for event_class in aggregate_class.known_event_classes():
                name = event_class.__name__
                known = self._by_name.get(name)
                if known is not None and known[0] is not event_class:
                    raise ConfigurationError(
                        f"{self.aggregate_name} knows two event classes named {name!r} "
                        f"({known[0].__qualname__} and {event_class.__qualname__}); register "
                        "them under different names in the store's EventTypes"
                    )
                self._by_name[name] = (event_class, aggregate_class._appliers.get(event_class))

    def stream_id(self, aggregate_id: str) -> str:
        """The stream that holds the aggregate ``aggregate_id``."""
        if not isinstance(aggregate_id, str) or not aggregate_id:
            raise ConfigurationError(
                f"{self.aggregate_name} id={aggregate_id!r} must be a non-empty string"
            )
        return self.aggregate_class.stream_prefix + aggregate_id

    def new(self, aggregate_id: str) -> _A:
        """A fresh aggregate at version 0 (nothing stored yet)."""
        return self.aggregate_class(aggregate_id)

    def build(
        self, aggregate_id: str, snapshot: Snapshot | None, events: Sequence[RecordedEvent]
    ) -> _A | None:
        """The aggregate rebuilt from its snapshot (if any) and the events after it.

        ``None`` when there is neither: the aggregate does not exist.
        """
        if snapshot is None and not events:
            return None
        aggregate = self.aggregate_class(aggregate_id)
        if snapshot is not None:
            aggregate.restore(snapshot.data)
            aggregate._version = aggregate._snapshot_version = snapshot.version
        if events:
            if self.fast:
                self._replay_fast(aggregate, events)
            else:
                self._replay(aggregate, events)
            aggregate._version = events[-1][2]
        aggregate._stored_version = aggregate._version
        return aggregate

    def _replay_fast(self, aggregate: _A, events: Sequence[RecordedEvent]) -> None:
        by_name = self._by_name
        for recorded in events:
            entry = by_name.get(recorded[3])
            if entry is None:
                raise UnhandledEventError(
                    self.aggregate_name, recorded[3], stream_id=recorded.stream_id
                )
            event_class, applier = entry
            text = recorded[5]
            try:  # the C scanner straight away: a third of json.loads' cost for small objects
                data, end = _scan(text, 0)
            except (StopIteration, ValueError, TypeError):
                end = -1
            if end != len(text):
                data = recorded.data  # not plain compact JSON: the store decodes (or reports) it
            try:
                event = event_class(**data) if type(data) is dict else event_class(data)
            except Exception as exc:
                raise _undecodable(recorded, event_class, exc) from exc
            if applier is not None:
                applier(aggregate, event)
            else:  # a class listed in event_types: apply() finds a handler of a base class
                try:
                    aggregate.apply(event)
                except UnhandledEventError as exc:
                    raise UnhandledEventError(
                        self.aggregate_name, exc.event_type, stream_id=recorded.stream_id
                    ) from exc

    def _replay(self, aggregate: _A, events: Sequence[RecordedEvent]) -> None:
        apply = aggregate.apply
        for recorded in events:
            event = self.decode(recorded)
            try:
                apply(event)
            except UnhandledEventError as exc:
                raise UnhandledEventError(
                    self.aggregate_name, exc.event_type, stream_id=recorded.stream_id
                ) from exc

    def decode(self, recorded: RecordedEvent) -> Any:
        """The stored event as an object of its event class."""
        if self.types is not None:
            event = recorded.event
            if isinstance(event, dict | list) or event is None:
                raise UnhandledEventError(
                    self.aggregate_name, recorded.type, stream_id=recorded.stream_id
                )
            return event
        entry = self._by_name.get(recorded[3])
        if entry is None:
            raise UnhandledEventError(
                self.aggregate_name, recorded[3], stream_id=recorded.stream_id
            )
        event_class = entry[0]
        data = recorded.data
        try:
            return event_class(**data) if type(data) is dict else event_class(data)
        except Exception as exc:
            raise _undecodable(recorded, event_class, exc) from exc

    def check(self, aggregate: object) -> _A:
        """``aggregate`` if it is one of this repository's, else a clear error."""
        if not isinstance(aggregate, self.aggregate_class):
            raise ConfigurationError(
                f"this repository saves {self.aggregate_name} aggregates, got {aggregate!r}"
            )
        return aggregate

    def events_to_append(
        self,
        aggregate: _A,
        causation_id: str | None,
        correlation_id: str | None,
        headers: Mapping[str, str] | None,
    ) -> list[Any]:
        """The pending events as the store should append them (wrapped with metadata if given)."""
        pending = aggregate._pending
        if causation_id is None and correlation_id is None and not headers:
            return pending
        types = self.types
        wrapped: list[Any] = []
        for index, event in enumerate(pending):
            named = None if types is None else types.encode_object(event)
            if named is None:
                if types is not None and types.strict:
                    raise EventSerializationError(
                        type(event).__qualname__,
                        index,
                        "its class is not registered in the store's EventTypes "
                        "(it could not be read back)",
                    )
                named = (type(event).__name__, event)
            wrapped.append(
                NewEvent(
                    named[0],
                    named[1],
                    causation_id=causation_id,
                    correlation_id=correlation_id,
                    headers=headers,
                )
            )
        return wrapped

    def snapshot_due(self, aggregate: _A) -> Any:
        """The snapshot data to store once the pending events are saved, or ``None``.

        Computed before the append, so a state that cannot be snapshotted fails the
        save before anything is written.
        """
        if not self.snapshots or not aggregate._pending:
            return None
        if not self.snapshot_policy.should_snapshot(
            aggregate.stream_id, aggregate._version, aggregate._snapshot_version
        ):
            return None
        data = aggregate.snapshot()
        return _NO_DATA if data is None else data

    def saved(self, aggregate: _A, result: AppendResult) -> None:
        """Mark the pending events as stored at the append's version."""
        aggregate._pending = []
        aggregate._stored_version = aggregate._version = result.version

    def batch(
        self,
        aggregates: Sequence[_A],
        causation_id: str | None,
        correlation_id: str | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[list[_A], list[AppendRequest]]:
        """The aggregates with pending events and one append request for each."""
        changed: list[_A] = []
        requests: list[AppendRequest] = []
        for aggregate in aggregates:
            self.check(aggregate)
            if aggregate._pending:
                changed.append(aggregate)
                requests.append(
                    AppendRequest(
                        aggregate.stream_id,
                        self.events_to_append(aggregate, causation_id, correlation_id, headers),
                        aggregate._stored_version,
                    )
                )
        return changed, requests


class _NoData:
    """Marks a snapshot whose data is ``None`` (``None`` itself means "no snapshot due")."""

    __slots__ = ()


_NO_DATA = _NoData()


def snapshot_data(value: Any) -> Any:
    """The data to store for a snapshot that :meth:`RepositoryCore.snapshot_due` returned."""
    return None if value is _NO_DATA else value


def _undecodable(recorded: RecordedEvent, event_class: type[Any], exc: Exception) -> Exception:
    return CorruptEventError(
        f"cannot build {event_class.__qualname__} from its data ({type(exc).__name__}: {exc})",
        stream_id=recorded.stream_id,
        version=recorded.version,
        position=recorded.position,
    )


def check_retries(retries: object) -> int:
    """``retries`` must be an int >= 0."""
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigurationError(f"retries={retries!r} must be an int >= 0")
    return retries


def check_at_version(at_version: object) -> None:
    """``at_version`` must be ``None`` or a stream version >= 1."""
    if at_version is not None and (
        not isinstance(at_version, int) or isinstance(at_version, bool) or at_version < 1
    ):
        raise ConfigurationError(f"at_version={at_version!r} must be a stream version >= 1")
