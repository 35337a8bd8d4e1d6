"""The events a lock emits (only while someone listens: ``lock.events.active``).

``source`` is the lock's name. Every event carries the lease's fencing token so a log
line ties a holder's actions to the writes a fenced resource accepted or refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = [
    "LockAcquired",
    "LockLost",
    "LockReleased",
    "LockRenewalFailed",
    "LockRenewed",
]


@dataclass(frozen=True, slots=True)
class LockAcquired(Event):
    """A holder acquired the lock after ``attempts`` tries and ``waited`` seconds."""

    fencing_token: int
    attempts: int
    waited: float


@dataclass(frozen=True, slots=True)
class LockReleased(Event):
    """A holder released its lease after holding it ``held_for`` seconds."""

    fencing_token: int
    held_for: float


@dataclass(frozen=True, slots=True)
class LockRenewed(Event):
    """The lease was extended to ``ttl`` seconds from now (by the heartbeat or ``extend``)."""

    fencing_token: int
    ttl: float


@dataclass(frozen=True, slots=True)
class LockRenewalFailed(Event):
    """A heartbeat renewal failed on an engine error; it retries until the lease ends."""

    fencing_token: int
    error: str
    expires_in: float


@dataclass(frozen=True, slots=True)
class LockLost(Event):
    """The holder lost the lock: renewal refused or failing past the end, or found gone at release."""

    fencing_token: int
    reason: str
