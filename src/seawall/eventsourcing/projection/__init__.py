"""Projections (the read side of CQRS): event log in, read models out.

A :class:`Projection` updates a SQL read model in the event store's database, with
its checkpoint in the same transaction (exactly once); an
:class:`ExternalProjection` updates anything else (at least once). A
:class:`ProjectionRunner` feeds them from the log, rebuilds them and reports their
lag; :class:`ReadModel` reads SQL read models. See ``docs/eventsourcing/projections.md``.
"""

from __future__ import annotations

from seawall.eventsourcing.projection._async_runner import AsyncProjectionRunner
from seawall.eventsourcing.projection._core import ProjectionLag, RunnerCore
from seawall.eventsourcing.projection._errors import ProjectionError, ProjectionHandlerError
from seawall.eventsourcing.projection._events import ProjectionBatchApplied, ProjectionReset
from seawall.eventsourcing.projection._projection import (
    AsyncExternalProjection,
    AsyncProjection,
    ExternalProjection,
    Projection,
    ProjectionBase,
    handles,
)
from seawall.eventsourcing.projection._read_model import AsyncReadModel, ReadModel
from seawall.eventsourcing.projection._runner import ProjectionRunner

__all__ = [
    "AsyncExternalProjection",
    "AsyncProjection",
    "AsyncProjectionRunner",
    "AsyncReadModel",
    "ExternalProjection",
    "Projection",
    "ProjectionBase",
    "ProjectionBatchApplied",
    "ProjectionError",
    "ProjectionHandlerError",
    "ProjectionLag",
    "ProjectionReset",
    "ProjectionRunner",
    "ReadModel",
    "RunnerCore",
    "handles",
]
