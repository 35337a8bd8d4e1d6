"""Events channels emit, only while someone listens (``channel.events.active``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seawall.events import Event

__all__ = ["ItemDropped", "SubscriberDisconnected"]


@dataclass(frozen=True, slots=True)
class ItemDropped(Event):
    """An item was discarded by an overflow policy because a buffer was full.

    ``policy`` is ``"drop_oldest"`` (``item`` was the oldest buffered item) or
    ``"drop_newest"`` (``item`` was the one being sent). ``subscriber`` names the
    broadcast subscription that lost it, or is ``None`` for a plain channel.
    """

    item: Any
    policy: str
    subscriber: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriberDisconnected(Event):
    """A broadcast cut off a subscriber whose buffer of ``capacity`` messages was full."""

    subscriber: str
    capacity: int
