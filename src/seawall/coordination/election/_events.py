"""The events an election emits (only while someone listens: ``election.events.active``).

``source`` is the election's group; every event carries the term number, so log lines
tie a leader's actions to the writes a fenced resource accepted or refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = ["LeaderDemoted", "LeaderElected", "LeadershipRenewalFailed", "LeadershipRenewed"]


@dataclass(frozen=True, slots=True)
class LeaderElected(Event):
    """This candidate won ``term`` after ``attempts`` tries and ``waited`` seconds."""

    term: int
    identity: str
    attempts: int
    waited: float


@dataclass(frozen=True, slots=True)
class LeadershipRenewed(Event):
    """The leader's lease was renewed; it trusts its term for ``trusted_for`` more seconds."""

    term: int
    trusted_for: float


@dataclass(frozen=True, slots=True)
class LeadershipRenewalFailed(Event):
    """A renewal failed on an engine error; it retries until the term's trusted end."""

    term: int
    error: str
    trusted_for: float


@dataclass(frozen=True, slots=True)
class LeaderDemoted(Event):
    """This candidate stopped leading ``term``: resigned, refused, or its lease ran out."""

    term: int
    identity: str
    reason: str
