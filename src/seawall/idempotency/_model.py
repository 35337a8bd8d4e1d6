"""The records an idempotency store keeps, and the pure decisions made on them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ClaimResult", "Decision", "IdempotencyRecord", "KeyStatus", "decide", "may_take"]


class KeyStatus(enum.IntEnum):
    """Where a key's request is: running (``IN_FLIGHT``) or done (``COMPLETED``)."""

    IN_FLIGHT = 0
    COMPLETED = 1


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """One key's stored state. Times are seconds on the store's clock."""

    key: str
    fingerprint: str
    """What identifies the request (e.g. a hash of method, path and body); ``""``: none."""
    status: KeyStatus
    token: str | None
    """The holder's claim token while in flight."""
    response: bytes | None
    """The encoded response once completed."""
    created_at: float
    locked_until: float | None
    """While in flight: when the holder's lease ends and another request may take over."""
    expires_at: float
    """When the record is forgotten (a later request with the key runs afresh)."""


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What a store's atomic claim found: the record, whether this call took it, the time."""

    record: IdempotencyRecord
    claimed: bool
    now: float


class Decision(enum.Enum):
    """What a request does after claiming its key."""

    PROCEED = "proceed"
    """The key is ours: run the request, then complete (or release) the key."""
    REPLAY = "replay"
    """Done before with the same request: return the stored response."""
    CONFLICT = "conflict"
    """The same request is still running elsewhere: try again later (HTTP 409)."""
    MISMATCH = "mismatch"
    """The key belongs to a different request (HTTP 422)."""


def may_take(existing: IdempotencyRecord | None, fingerprint: str, now: float) -> bool:
    """Whether a claim may (re)write the record: absent, expired, or an abandoned same request.

    Every store applies this rule atomically (SQL ``ON CONFLICT ... WHERE``, a Lua
    script, a lock): an in-flight record whose lease has ended is taken over only by the
    same request (same fingerprint), so a crashed holder's request can be retried.
    """
    if existing is None or existing.expires_at <= now:
        return True
    return (
        existing.status is KeyStatus.IN_FLIGHT
        and existing.locked_until is not None
        and existing.locked_until <= now
        and existing.fingerprint == fingerprint
    )


def decide(result: ClaimResult, fingerprint: str) -> Decision:
    """The decision for a request with ``fingerprint`` given what its claim found."""
    if result.claimed:
        return Decision.PROCEED
    record = result.record
    if record.fingerprint != fingerprint:
        return Decision.MISMATCH
    if record.status is KeyStatus.COMPLETED:
        return Decision.REPLAY
    return Decision.CONFLICT
