"""The asyncio methods of stores whose I/O is synchronous: inline (memory) or in a thread (SQLite)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.idempotency._model import ClaimResult, IdempotencyRecord

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["SyncBackedStore"]


class SyncBackedStore(ABC):
    """Implements the ``a``-methods over the sync ones; ``offload`` runs them in a thread."""

    offload: ClassVar[bool] = True

    @abstractmethod
    def claim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Take the key if allowed; the record either way."""

    @abstractmethod
    def complete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Store the response if ``token`` still holds the key."""

    @abstractmethod
    def release(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the in-flight record if ``token`` holds it."""

    @abstractmethod
    def extend(self, key: str, token: str, lease: float) -> bool:
        """Push the holder's lease ahead."""

    @abstractmethod
    def get(self, key: str) -> IdempotencyRecord | None:
        """The key's record unless absent or expired."""

    @abstractmethod
    def purge_expired(self, limit: int) -> int:
        """Delete up to ``limit`` expired records."""

    async def _call(self, method: Any, *args: Any) -> Any:
        if self.offload:
            return await asyncio.to_thread(method, *args)
        return method(*args)

    async def aclaim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Asyncio twin of ``claim``."""
        result: ClaimResult = await self._call(
            self.claim, key, fingerprint, token, lease, ttl, transaction
        )
        return result

    async def acomplete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Asyncio twin of ``complete``."""
        return bool(await self._call(self.complete, key, token, response, ttl, transaction))

    async def arelease(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Asyncio twin of ``release``."""
        return bool(await self._call(self.release, key, token, transaction))

    async def aextend(self, key: str, token: str, lease: float) -> bool:
        """Asyncio twin of ``extend``."""
        return bool(await self._call(self.extend, key, token, lease))

    async def aget(self, key: str) -> IdempotencyRecord | None:
        """Asyncio twin of ``get``."""
        record: IdempotencyRecord | None = await self._call(self.get, key)
        return record

    async def apurge_expired(self, limit: int) -> int:
        """Asyncio twin of ``purge_expired``."""
        return int(await self._call(self.purge_expired, limit))
