"""Snapshots: a stream's state stored at a version, so loading replays only later events.

The store keeps the latest snapshot per stream (an older one never replaces a newer
one). :meth:`EventStore.load` returns that snapshot plus the events after it. A
:class:`SnapshotPolicy` decides when a writer should save a new one; the store does
not compute state itself (the aggregate or projection does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from seawall.errors import ConfigurationError
from seawall.eventsourcing.store._model import RecordedEvent

__all__ = ["LoadedStream", "NO_SNAPSHOTS", "Snapshot", "SnapshotEvery", "SnapshotPolicy"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stream's state (JSON-compatible ``data``) as of stream ``version``.

    ``schema_version`` describes the shape of ``data``; bump it when the state's
    shape changes, and loads asking for the new version ignore older snapshots.
    """

    stream_id: str
    version: int
    data: Any
    schema_version: int = 1
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class LoadedStream:
    """What :meth:`EventStore.load` returns: the latest usable snapshot and the events after it."""

    stream_id: str
    snapshot: Snapshot | None
    events: list[RecordedEvent]

    @property
    def version(self) -> int:
        """The stream's version: the last event's, else the snapshot's, else 0."""
        if self.events:
            return self.events[-1].version
        return 0 if self.snapshot is None else self.snapshot.version


@runtime_checkable
class SnapshotPolicy(Protocol):
    """Decides whether to save a snapshot after the stream reached ``version``."""

    def should_snapshot(self, stream_id: str, version: int, snapshot_version: int) -> bool:
        """True to snapshot now; ``snapshot_version`` is the latest snapshot's (0 if none)."""
        ...


class SnapshotEvery:
    """Snapshot once ``events`` events have been appended since the latest snapshot."""

    __slots__ = ("events",)

    def __init__(self, events: int) -> None:
        if not isinstance(events, int) or isinstance(events, bool) or events < 1:
            raise ConfigurationError(f"SnapshotEvery(events={events!r}) must be an int >= 1")
        self.events = events

    def should_snapshot(self, stream_id: str, version: int, snapshot_version: int) -> bool:
        """True when at least ``events`` events followed the latest snapshot."""
        return version - snapshot_version >= self.events

    def __repr__(self) -> str:
        return f"SnapshotEvery({self.events})"


class _NoSnapshots:
    __slots__ = ()

    def should_snapshot(self, stream_id: str, version: int, snapshot_version: int) -> bool:
        """Never."""
        return False

    def __repr__(self) -> str:
        return "NO_SNAPSHOTS"


NO_SNAPSHOTS: SnapshotPolicy = _NoSnapshots()
"""The policy that never snapshots (the default)."""
