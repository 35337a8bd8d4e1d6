"""The errors idempotency keys raise, each carrying the data a caller needs.

::

    SeawallError
    └── IdempotencyError
        ├── IdempotencyConflictError       the key's first request is still running
        │   (also RejectedError: has retry_after, honoured by Retry)
        ├── IdempotencyKeyMismatchError    the key was used with a different request
        │   (also ValueError)
        └── IdempotencyKeyLostError        completing a claim that was taken over or expired
"""

from __future__ import annotations

from seawall.errors import RejectedError, SeawallError

__all__ = [
    "IdempotencyConflictError",
    "IdempotencyError",
    "IdempotencyKeyLostError",
    "IdempotencyKeyMismatchError",
]


class IdempotencyError(SeawallError):
    """An idempotency key refused an operation."""


class IdempotencyConflictError(IdempotencyError, RejectedError):
    """A request with this key is still in flight; try again after ``retry_after`` seconds.

    ``retry_after`` is when the first request's lease ends: by then it has completed
    (and a retry gets its response) or its holder is presumed dead (and a retry runs).
    """

    def __init__(self, key: str, *, retry_after: float | None) -> None:
        when = f"after {retry_after:.3f}s" if retry_after is not None else "later"
        super().__init__(
            f"idempotency key {key!r} is in use by a request that has not finished; "
            f"retry {when} to get its response (HTTP 409)",
            retry_after=retry_after,
        )
        self.key = key


class IdempotencyKeyMismatchError(IdempotencyError, ValueError):
    """The key was first used with a different request (fingerprint); nothing ran.

    Each distinct operation needs its own key: generate a new one (e.g. a UUID) per
    operation and reuse it only to retry that same operation.
    """

    def __init__(self, key: str, *, stored_fingerprint: str, fingerprint: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for a different request "
            f"(fingerprint {stored_fingerprint[:16]}... vs {fingerprint[:16]}...); use a new key "
            "for a new operation and reuse a key only to retry the same one (HTTP 422)"
        )
        self.key = key
        self.stored_fingerprint = stored_fingerprint
        self.fingerprint = fingerprint


class IdempotencyKeyLostError(IdempotencyError):
    """Completing failed: the claim's lease ran out and another request took the key over
    (or the record expired). Roll back what the request did; the other request owns it now.
    """

    def __init__(self, key: str) -> None:
        super().__init__(
            f"the claim on idempotency key {key!r} was lost before it completed (its lease "
            "expired and another request took the key, or the record expired); roll back, and "
            "raise the lease (or extend() it while working) so a slow request keeps its key"
        )
        self.key = key
