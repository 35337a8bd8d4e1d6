"""The in-memory outbox: process-local, no transactions; the test double for relays.

It keeps the SQL stores' contract (claims, leases, per-key order, retention) so code
written against it behaves the same on SQLite or PostgreSQL, except that ``add``
cannot join a database transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.engines.memory import MemoryEngine
from seawall.errors import ConfigurationError
from seawall.messaging.outbox._model import (
    NewMessage,
    OutboxStats,
    StoredDead,
    StoredMessage,
)
from seawall.messaging.outbox._store import Listening

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["MemoryOutboxStore"]

_PENDING, _SENT, _DEAD = 0, 1, 2


@dataclass(slots=True)
class _Row:
    position: int
    id: str
    topic: str
    key: str | None
    body: bytes
    headers: str | None
    created_at: float
    available_at: float
    attempts: int = 0
    status: int = _PENDING
    lease_owner: str | None = None
    lease_until: float | None = None
    done_at: float | None = None
    last_error: str | None = None

    def stored(self) -> StoredMessage:
        return StoredMessage(
            self.position,
            self.id,
            self.topic,
            self.key,
            self.body,
            self.headers,
            self.created_at,
            self.attempts,
        )

    def leased(self, now: float) -> bool:
        return self.lease_until is not None and self.lease_until > now


class _Table:
    """The rows of one outbox, shared by every store opened on the same engine."""

    def __init__(self) -> None:
        self.rows: dict[int, _Row] = {}
        self.next_position = 1
        self.lock = threading.Lock()


class MemoryOutboxStore:
    """An outbox held in this process (``memory://`` engines with the same name share it).

    ``clock`` drives leases, delays and retention (default: the monotonic clock).
    """

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
            raise ConfigurationError(f"MemoryOutboxStore needs a memory:// engine, got {engine!r}")
        self.engine = engine
        self.table = f"{table_prefix}outbox"
        self._table: _Table = engine.namespace(f"outbox:{self.table}", _Table)
        self._now = (clock if clock is not None else SYSTEM_CLOCK).now

    def add(self, messages: Sequence[NewMessage], transaction: Transaction | None) -> None:
        """Insert messages at once; memory has no transactions to join."""
        if transaction is not None:
            raise ConfigurationError(
                "the memory outbox cannot join a database transaction; use sqlite:/// or "
                "postgresql:// for transactional writes, or pass transaction=None"
            )
        now = self._now()
        table = self._table
        with table.lock:
            for message in messages:
                position = table.next_position
                table.next_position += 1
                table.rows[position] = _Row(
                    position,
                    message.id,
                    message.topic,
                    message.key,
                    message.body,
                    message.headers,
                    now,
                    now + message.delay,
                )

    async def aadd(self, messages: Sequence[NewMessage], transaction: Transaction | None) -> None:
        """Same as :meth:`add` (nothing blocks)."""
        self.add(messages, transaction)

    def claim(self, owner: str, limit: int, lease: float) -> list[StoredMessage]:
        """Lease up to ``limit`` claimable messages, keeping per-key order."""
        now = self._now()
        claimed: list[StoredMessage] = []
        blocked: set[str] = set()
        with self._table.lock:
            for position in sorted(self._table.rows):
                if len(claimed) >= limit:
                    break
                row = self._table.rows[position]
                if row.status != _PENDING:
                    continue
                waiting = row.leased(now) or row.available_at > now
                if row.key is not None and row.key in blocked:
                    continue
                if waiting:
                    if row.key is not None:
                        blocked.add(row.key)
                    continue
                row.lease_owner = owner
                row.lease_until = now + lease
                row.attempts += 1
                claimed.append(row.stored())
        return claimed

    def _held(self, owner: str, positions: Sequence[int]) -> list[_Row]:
        rows = self._table.rows
        return [
            row
            for row in (rows.get(position) for position in positions)
            if row is not None and row.status == _PENDING and row.lease_owner == owner
        ]

    def extend(self, owner: str, positions: Sequence[int], lease: float) -> int:
        """Renew ``owner``'s leases on ``positions``."""
        now = self._now()
        with self._table.lock:
            held = self._held(owner, positions)
            for row in held:
                row.lease_until = now + lease
        return len(held)

    def mark_sent(self, positions: Sequence[int], keep: bool) -> int:
        """Mark messages published, or delete them."""
        now = self._now()
        count = 0
        with self._table.lock:
            for position in positions:
                row = self._table.rows.get(position)
                if row is None or row.status != _PENDING:
                    continue
                count += 1
                if keep:
                    row.status, row.done_at = _SENT, now
                    row.lease_owner = row.lease_until = None
                else:
                    del self._table.rows[position]
        return count

    def fail(self, owner: str, position: int, delay: float, error: str, dead: bool) -> bool:
        """Hand a failed message back for a retry, or set it aside."""
        now = self._now()
        with self._table.lock:
            held = self._held(owner, [position])
            for row in held:
                row.lease_owner = row.lease_until = None
                row.available_at = now + delay
                row.last_error = error
                if dead:
                    row.status, row.done_at = _DEAD, now
        return bool(held)

    def unclaim(self, owner: str, positions: Sequence[int]) -> int:
        """Give untried messages back without counting an attempt."""
        with self._table.lock:
            held = self._held(owner, positions)
            for row in held:
                row.lease_owner = row.lease_until = None
                row.attempts = max(row.attempts - 1, 0)
        return len(held)

    def purge_sent(self, older_than: float, limit: int) -> int:
        """Delete up to ``limit`` messages sent more than ``older_than`` seconds ago."""
        cutoff = self._now() - older_than
        with self._table.lock:
            old = [
                position
                for position, row in self._table.rows.items()
                if row.status == _SENT and row.done_at is not None and row.done_at <= cutoff
            ][:limit]
            for position in old:
                del self._table.rows[position]
        return len(old)

    def dead(self, limit: int) -> list[StoredDead]:
        """The dead messages, oldest first."""
        with self._table.lock:
            rows = [row for _, row in sorted(self._table.rows.items()) if row.status == _DEAD]
        return [
            StoredDead(
                row.position,
                row.id,
                row.topic,
                row.key,
                row.body,
                row.headers,
                row.created_at,
                row.attempts,
                row.done_at if row.done_at is not None else row.created_at,
                row.last_error,
            )
            for row in rows[:limit]
        ]

    def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Make dead messages ready again."""
        now = self._now()
        wanted = None if message_ids is None else set(message_ids)
        count = 0
        with self._table.lock:
            for row in self._table.rows.values():
                if row.status == _DEAD and (wanted is None or row.id in wanted):
                    row.status, row.attempts, row.available_at, row.done_at = _PENDING, 0, now, None
                    count += 1
        return count

    def stats(self) -> OutboxStats:
        """Counts per state."""
        now = self._now()
        ready = in_flight = delayed = sent = dead = 0
        oldest: float | None = None
        with self._table.lock:
            for row in self._table.rows.values():
                if row.status == _SENT:
                    sent += 1
                elif row.status == _DEAD:
                    dead += 1
                else:
                    oldest = row.created_at if oldest is None else min(oldest, row.created_at)
                    if row.leased(now):
                        in_flight += 1
                    elif row.available_at > now:
                        delayed += 1
                    else:
                        ready += 1
        return OutboxStats(
            ready, in_flight, delayed, sent, dead, None if oldest is None else now - oldest
        )

    def announce(self) -> None:
        """Nothing to do: only this process sees a memory outbox."""

    def listen(self, ring: Callable[[], None]) -> Listening | None:
        """No other process can write here: nothing to listen to."""
        return None

    def create_tables(self) -> None:
        """Nothing to create."""

    def drop_tables(self) -> None:
        """Forget every message."""
        with self._table.lock:
            self._table.rows.clear()

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryOutboxStore({self.engine!r}, table={self.table!r})"
