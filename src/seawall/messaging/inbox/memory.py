"""The in-memory inbox: process-local, no transactions; the test double."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, ClassVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.engines.memory import MemoryEngine
from seawall.errors import ConfigurationError

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["MemoryInboxStore"]


class _Table:
    def __init__(self) -> None:
        self.marks: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()


class MemoryInboxStore:
    """Processed ids held in this process (``memory://`` engines with one name share them)."""

    kind: ClassVar[str] = "memory"
    supports_transactions: ClassVar[bool] = False

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
            raise ConfigurationError(f"MemoryInboxStore needs a memory:// engine, got {engine!r}")
        self.engine = engine
        self.table = f"{table_prefix}inbox"
        self._table: _Table = engine.namespace(f"inbox:{self.table}", _Table)
        self._now = (clock if clock is not None else SYSTEM_CLOCK).now

    def mark(self, consumer: str, message_id: str, transaction: Transaction | None) -> bool:
        """Record the id; memory has no transactions to join."""
        if transaction is not None:
            raise ConfigurationError(
                "the memory inbox cannot join a database transaction; use sqlite:/// or "
                "postgresql:// to record ids with your state change, or pass transaction=None"
            )
        pair = (consumer, message_id)
        with self._table.lock:
            if pair in self._table.marks:
                return False
            self._table.marks[pair] = self._now()
            return True

    async def amark(self, consumer: str, message_id: str, transaction: Transaction | None) -> bool:
        """Same as :meth:`mark` (nothing blocks)."""
        return self.mark(consumer, message_id, transaction)

    def seen(self, consumer: str, message_id: str) -> bool:
        """True when the id is recorded."""
        return (consumer, message_id) in self._table.marks

    def forget(self, consumer: str, message_id: str) -> bool:
        """Remove the record; True if it existed."""
        with self._table.lock:
            return self._table.marks.pop((consumer, message_id), None) is not None

    def count(self, consumer: str) -> int:
        """How many ids the consumer has recorded."""
        with self._table.lock:
            return sum(1 for owner, _ in self._table.marks if owner == consumer)

    def purge(self, older_than: float, limit: int) -> int:
        """Forget up to ``limit`` ids recorded more than ``older_than`` seconds ago."""
        cutoff = self._now() - older_than
        with self._table.lock:
            old = [pair for pair, at in self._table.marks.items() if at <= cutoff][:limit]
            for pair in old:
                del self._table.marks[pair]
        return len(old)

    def create_tables(self) -> None:
        """Nothing to create."""

    def drop_tables(self) -> None:
        """Forget every id."""
        with self._table.lock:
            self._table.marks.clear()

    def close(self) -> None:
        """Nothing to release."""
