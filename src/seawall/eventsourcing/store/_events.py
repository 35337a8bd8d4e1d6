"""Typed events an event store and its subscriptions emit (free when nobody listens).

Subscribe on a store's or subscription's ``events`` hub, or on ``seawall.events.hub``
for everything. ``source`` names the store (``eventstore:<table prefix>``) or the
subscription.
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = ["AppendConflicted", "BatchHandled", "EventsAppended"]


@dataclass(frozen=True, slots=True)
class EventsAppended(Event):
    """Events were appended to a stream (in the caller's transaction, if one was given)."""

    stream_id: str
    count: int
    version: int
    position: int


@dataclass(frozen=True, slots=True)
class AppendConflicted(Event):
    """An append was refused because the stream was not at the expected version."""

    stream_id: str
    expected: int
    actual: int


@dataclass(frozen=True, slots=True)
class BatchHandled(Event):
    """A subscription handled a batch and stored its checkpoint at ``position``."""

    count: int
    position: int
