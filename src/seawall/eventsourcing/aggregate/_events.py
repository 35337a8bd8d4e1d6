"""Typed events a repository emits (free when nobody listens).

``source`` is the repository's name (``repository:<AggregateClass>`` by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = ["SnapshotSaved", "UpdateRetried"]


@dataclass(frozen=True, slots=True)
class UpdateRetried(Event):
    """``Repository.update`` lost a race on the stream and runs the command again.

    ``attempt`` is the attempt that failed (1 for the first); ``expected`` and
    ``actual`` are the versions of the refused append.
    """

    stream_id: str
    attempt: int
    expected: int
    actual: int


@dataclass(frozen=True, slots=True)
class SnapshotSaved(Event):
    """The repository stored a snapshot of an aggregate at ``version``."""

    stream_id: str
    version: int
