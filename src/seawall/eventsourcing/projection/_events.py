"""Typed events a projection runner emits (free when nobody listens).

``source`` is the projection's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = ["ProjectionBatchApplied", "ProjectionReset"]


@dataclass(frozen=True, slots=True)
class ProjectionBatchApplied(Event):
    """A batch of ``count`` events was applied and the checkpoint moved to ``position``."""

    count: int
    position: int


@dataclass(frozen=True, slots=True)
class ProjectionReset(Event):
    """The projection's read model was reset and its checkpoint set back to 0 (a rebuild)."""
