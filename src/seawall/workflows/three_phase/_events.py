"""The events of three-phase commit: one per state transition of any node."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = ["ThreePhaseTransitioned"]


@dataclass(frozen=True, slots=True)
class ThreePhaseTransitioned(Event):
    """Node ``node`` moved from ``previous`` to ``state`` in transaction ``txid`` at ``at``."""

    txid: str
    node: str
    previous: str
    state: str
    reason: str
    at: float
