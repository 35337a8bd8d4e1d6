"""Aggregates and repositories: commands emit events, ``apply`` methods change state.

An :class:`Aggregate` decides (commands) and changes state only by applying events;
a :class:`Repository` rebuilds it from its stream (snapshot + events) and saves its
pending events with optimistic concurrency. See ``docs/eventsourcing/aggregates.md``.
"""

from __future__ import annotations

from seawall.eventsourcing.aggregate._aggregate import Aggregate, applies
from seawall.eventsourcing.aggregate._core import RepositoryCore
from seawall.eventsourcing.aggregate._errors import (
    AggregateError,
    AggregateNotFoundError,
    SnapshotStateError,
    UnhandledEventError,
)
from seawall.eventsourcing.aggregate._events import SnapshotSaved, UpdateRetried
from seawall.eventsourcing.aggregate._repository import AsyncRepository, Repository

__all__ = [
    "Aggregate",
    "AggregateError",
    "AggregateNotFoundError",
    "AsyncRepository",
    "Repository",
    "RepositoryCore",
    "SnapshotSaved",
    "SnapshotStateError",
    "UnhandledEventError",
    "UpdateRetried",
    "applies",
]
