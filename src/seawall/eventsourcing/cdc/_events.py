"""Typed events a change capture emits (free when nobody listens).

Subscribe on a capture's ``events`` hub, or on ``seawall.events.hub`` for everything;
``source`` is the capture's name (``cdc:<slot>`` unless given).
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event
from seawall.eventsourcing.cdc._model import ChangePosition

__all__ = ["CaptureOpened", "ChangesHandled", "SnapshotCompleted"]


@dataclass(frozen=True, slots=True)
class CaptureOpened(Event):
    """A capture connected: ``created`` when its slot (or triggers) were made just now."""

    slot: str
    created: bool
    snapshot_pending: bool


@dataclass(frozen=True, slots=True)
class SnapshotCompleted(Event):
    """The consumer confirmed the last row of the initial snapshot (``rows`` in all)."""

    slot: str
    rows: int


@dataclass(frozen=True, slots=True)
class ChangesHandled(Event):
    """``run`` handled a batch of ``count`` changes and confirmed up to ``position``."""

    slot: str
    count: int
    position: ChangePosition
