"""The in-memory idempotency store: process-local; the test double."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, ClassVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.engines.memory import MemoryEngine
from seawall.errors import ConfigurationError
from seawall.idempotency._base import SyncBackedStore
from seawall.idempotency._model import ClaimResult, IdempotencyRecord, KeyStatus, may_take

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["MemoryIdempotencyStore"]


class _Table:
    def __init__(self) -> None:
        self.records: dict[str, IdempotencyRecord] = {}
        self.lock = threading.Lock()


def _no_transaction(transaction: Transaction | None) -> None:
    if transaction is not None:
        raise ConfigurationError(
            "the memory idempotency store cannot join a database transaction; use sqlite:/// "
            "or postgresql:// to store responses with your writes, or pass transaction=None"
        )


class MemoryIdempotencyStore(SyncBackedStore):
    """Keys held in this process (``memory://`` engines with one name share them).

    ``clock`` drives leases and expiry (default: the monotonic clock).
    """

    kind: ClassVar[str] = "memory"
    supports_transactions: ClassVar[bool] = False
    offload: ClassVar[bool] = False

    def __init__(
        self,
        engine: Engine | str = "memory://",
        *,
        table_prefix: str = "seawall_",
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines import connect

        engine = connect(engine)
        if not isinstance(engine, MemoryEngine):
            raise ConfigurationError(
                f"MemoryIdempotencyStore needs a memory:// engine, got {engine!r}"
            )
        self.engine = engine
        self._table: _Table = engine.namespace(f"idempotency:{table_prefix}", _Table)
        self._now = (clock if clock is not None else SYSTEM_CLOCK).now

    def claim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Take the key if the rule allows it, under a lock."""
        _no_transaction(transaction)
        now = self._now()
        records = self._table.records
        with self._table.lock:
            existing = records.get(key)
            if existing is None or may_take(existing, fingerprint, now):
                record = records[key] = IdempotencyRecord(
                    key, fingerprint, KeyStatus.IN_FLIGHT, token, None, now, now + lease, now + ttl
                )
                return ClaimResult(record, True, now)
        return ClaimResult(existing, False, now)

    def _held(self, key: str, token: str) -> IdempotencyRecord | None:
        record = self._table.records.get(key)
        if record is None or record.token != token or record.status is not KeyStatus.IN_FLIGHT:
            return None
        return record

    def complete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Store the response if ``token`` still holds the key."""
        _no_transaction(transaction)
        now = self._now()
        with self._table.lock:
            record = self._held(key, token)
            if record is None:
                return False
            self._table.records[key] = IdempotencyRecord(
                key,
                record.fingerprint,
                KeyStatus.COMPLETED,
                record.token,
                bytes(response),
                record.created_at,
                None,
                now + ttl,
            )
        return True

    def release(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the in-flight record if ``token`` holds it."""
        _no_transaction(transaction)
        with self._table.lock:
            if self._held(key, token) is None:
                return False
            del self._table.records[key]
        return True

    def extend(self, key: str, token: str, lease: float) -> bool:
        """Push the holder's lease ahead."""
        now = self._now()
        with self._table.lock:
            record = self._held(key, token)
            if record is None:
                return False
            self._table.records[key] = IdempotencyRecord(
                key,
                record.fingerprint,
                record.status,
                record.token,
                record.response,
                record.created_at,
                now + lease,
                record.expires_at,
            )
        return True

    def get(self, key: str) -> IdempotencyRecord | None:
        """The key's record unless absent or expired."""
        record = self._table.records.get(key)
        if record is None or record.expires_at <= self._now():
            return None
        return record

    def purge_expired(self, limit: int) -> int:
        """Delete up to ``limit`` expired records."""
        now = self._now()
        with self._table.lock:
            expired = [
                key for key, record in self._table.records.items() if record.expires_at <= now
            ][:limit]
            for key in expired:
                del self._table.records[key]
        return len(expired)

    def create_tables(self) -> None:
        """Nothing to create."""

    def drop_tables(self) -> None:
        """Forget every key."""
        with self._table.lock:
            self._table.records.clear()

    def close(self) -> None:
        """Nothing to release."""
