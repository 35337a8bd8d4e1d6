"""The storage contract every inbox engine implements (memory, SQLite, PostgreSQL).

A store remembers which message ids each consumer has processed. ``mark`` inserts
the pair if it is new and says whether it was, in the caller's transaction when
given: on PostgreSQL a concurrent ``mark`` of the same pair waits for the first
transaction and then reports a duplicate, so exactly one of them proceeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["InboxStore"]


@runtime_checkable
class InboxStore(Protocol):
    """The processed-message ids of every consumer on one engine."""

    @property
    def engine(self) -> Engine:
        """The engine the ids live in."""
        ...

    @property
    def kind(self) -> str:
        """The engine kind: ``"memory"``, ``"sqlite"`` or ``"postgres"``."""
        ...

    @property
    def supports_transactions(self) -> bool:
        """True when ``mark`` can join a caller's database transaction."""
        ...

    def mark(self, consumer: str, message_id: str, transaction: Transaction | None) -> bool:
        """Record the id as processed; True the first time, False for a duplicate."""
        ...

    async def amark(self, consumer: str, message_id: str, transaction: Transaction | None) -> bool:
        """Asyncio twin of :meth:`mark` (for ``engine.atransaction()`` on PostgreSQL)."""
        ...

    def seen(self, consumer: str, message_id: str) -> bool:
        """True when the id is recorded as processed."""
        ...

    def forget(self, consumer: str, message_id: str) -> bool:
        """Remove the record so the message would be processed again; True if it existed."""
        ...

    def count(self, consumer: str) -> int:
        """How many ids the consumer has recorded."""
        ...

    def purge(self, older_than: float, limit: int) -> int:
        """Forget up to ``limit`` ids (any consumer) recorded more than ``older_than`` s ago."""
        ...

    def create_tables(self) -> None:
        """Create the table if missing."""
        ...

    def drop_tables(self) -> None:
        """Drop the table and everything in it."""
        ...

    def close(self) -> None:
        """Release what the store holds (not the engine)."""
        ...
