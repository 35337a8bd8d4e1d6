"""Idempotency keys: run an operation once per key, replay its response to retries.

::

    keys = IdempotencyKeys(seawall.connect("sqlite:///shop.db"))

    @idempotent(keys, key=lambda order_id, **_: f"charge:{order_id}")
    def charge(order_id: str, cents: int) -> dict: ...

    app.add_middleware(IdempotencyMiddleware, keys=keys)   # HTTP Idempotency-Key header

A store keeps (key, request fingerprint, status, response, expiry) with an atomic
claim; a second request while the first runs gets a conflict, a different request
with a used key a mismatch error, and a completed key its stored response.
Engines: memory, SQLite, PostgreSQL (completing in your transaction), Redis.
See ``docs/idempotency.md``.
"""

from __future__ import annotations

from seawall.idempotency._asgi import IdempotencyMiddleware
from seawall.idempotency._decorator import fingerprint_of, idempotent
from seawall.idempotency._errors import (
    IdempotencyConflictError,
    IdempotencyError,
    IdempotencyKeyLostError,
    IdempotencyKeyMismatchError,
)
from seawall.idempotency._events import (
    IdempotencyKeyClaimed,
    IdempotencyKeyCompleted,
    IdempotencyKeyConflicted,
    IdempotencyKeyMismatched,
    IdempotencyKeyReleased,
    IdempotentReplayed,
)
from seawall.idempotency._keys import Claim, IdempotencyKeys, open_idempotency_store
from seawall.idempotency._model import (
    ClaimResult,
    Decision,
    IdempotencyRecord,
    KeyStatus,
    decide,
    may_take,
)
from seawall.idempotency._store import IdempotencyStore

__all__ = [
    "Claim",
    "ClaimResult",
    "Decision",
    "IdempotencyConflictError",
    "IdempotencyError",
    "IdempotencyKeyClaimed",
    "IdempotencyKeyCompleted",
    "IdempotencyKeyConflicted",
    "IdempotencyKeyLostError",
    "IdempotencyKeyMismatchError",
    "IdempotencyKeyMismatched",
    "IdempotencyKeyReleased",
    "IdempotencyKeys",
    "IdempotencyMiddleware",
    "IdempotencyRecord",
    "IdempotencyStore",
    "IdempotentReplayed",
    "KeyStatus",
    "decide",
    "fingerprint_of",
    "idempotent",
    "may_take",
    "open_idempotency_store",
]
