"""The storage contract every idempotency-key engine implements (memory, SQLite, PostgreSQL, Redis).

Every method has an asyncio twin prefixed with ``a``. ``claim`` is atomic: of any
number of concurrent claims for a new key exactly one gets ``claimed=True``.
SQL stores take an optional ``transaction`` to write in the caller's commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from seawall.idempotency._model import ClaimResult, IdempotencyRecord

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["IdempotencyStore"]


@runtime_checkable
class IdempotencyStore(Protocol):
    """Keys with their request fingerprint, status, response and expiry."""

    @property
    def kind(self) -> str:
        """The engine kind: ``"memory"``, ``"sqlite"``, ``"postgres"`` or ``"redis"``."""
        ...

    @property
    def supports_transactions(self) -> bool:
        """True when writes can join a caller's database transaction."""
        ...

    def claim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Take the key for ``token`` if :func:`may_take` allows it; the record either way."""
        ...

    def complete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Store the response if ``token`` still holds the key; False if it was lost."""
        ...

    def release(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the in-flight record if ``token`` holds it (so a retry runs afresh)."""
        ...

    def extend(self, key: str, token: str, lease: float) -> bool:
        """Push the holder's lease ``lease`` seconds ahead; False if the key was lost."""
        ...

    def get(self, key: str) -> IdempotencyRecord | None:
        """The key's record, or ``None`` if absent or expired."""
        ...

    def purge_expired(self, limit: int) -> int:
        """Delete up to ``limit`` expired records; how many were deleted."""
        ...

    async def aclaim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Asyncio twin of :meth:`claim`."""
        ...

    async def acomplete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Asyncio twin of :meth:`complete`."""
        ...

    async def arelease(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Asyncio twin of :meth:`release`."""
        ...

    async def aextend(self, key: str, token: str, lease: float) -> bool:
        """Asyncio twin of :meth:`extend`."""
        ...

    async def aget(self, key: str) -> IdempotencyRecord | None:
        """Asyncio twin of :meth:`get`."""
        ...

    async def apurge_expired(self, limit: int) -> int:
        """Asyncio twin of :meth:`purge_expired`."""
        ...

    def create_tables(self) -> None:
        """Create the table if missing (nothing on Redis)."""
        ...

    def drop_tables(self) -> None:
        """Delete every record (tests and teardown)."""
        ...

    def close(self) -> None:
        """Release what the store holds (not the engine)."""
        ...
