"""Typed events idempotency keys emit to their ``events`` hub (only when someone listens)."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = [
    "IdempotencyKeyClaimed",
    "IdempotencyKeyCompleted",
    "IdempotencyKeyConflicted",
    "IdempotencyKeyMismatched",
    "IdempotencyKeyReleased",
    "IdempotentReplayed",
]


@dataclass(frozen=True, slots=True)
class IdempotencyKeyClaimed(Event):
    """A key was claimed: its request runs now."""

    key: str


@dataclass(frozen=True, slots=True)
class IdempotentReplayed(Event):
    """A completed key was used again: its stored response was returned."""

    key: str


@dataclass(frozen=True, slots=True)
class IdempotencyKeyConflicted(Event):
    """A key was used while its first request was still running."""

    key: str
    retry_after: float


@dataclass(frozen=True, slots=True)
class IdempotencyKeyMismatched(Event):
    """A key was used with a request other than the one it was first used for."""

    key: str


@dataclass(frozen=True, slots=True)
class IdempotencyKeyCompleted(Event):
    """A claimed key's response was stored."""

    key: str


@dataclass(frozen=True, slots=True)
class IdempotencyKeyReleased(Event):
    """A claimed key was given up (its request failed), so a retry can run."""

    key: str
