"""The storage contract every outbox engine implements (memory, SQLite, PostgreSQL).

A store keeps messages in one table ordered by ``position``. The relay ``claim``\\s
ready messages under a lease, publishes them, then ``mark_sent`` (or ``fail``, or
``unclaim`` the ones waiting behind a failure). A message is claimable only when no
earlier unsent message with the same key is leased by a relay or waiting for a retry,
so messages of one key are published in order even with several relays.
Times are seconds on the store's clock: the database's (PostgreSQL
``clock_timestamp()``, this host's wall clock for SQLite) unless a test injects one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from seawall.messaging.outbox._model import NewMessage, OutboxStats, StoredDead, StoredMessage

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["Listening", "OutboxStore"]


class Listening(Protocol):
    """A running cross-process wake-up source (PostgreSQL LISTEN); close it when done."""

    def close(self) -> None:
        """Stop listening."""
        ...


@runtime_checkable
class OutboxStore(Protocol):
    """Where outbox messages live between the writer's commit and the relay's publish."""

    @property
    def kind(self) -> str:
        """The engine kind: ``"memory"``, ``"sqlite"`` or ``"postgres"``."""
        ...

    @property
    def supports_transactions(self) -> bool:
        """True when ``add`` can join a caller's database transaction."""
        ...

    def add(self, messages: Sequence[NewMessage], transaction: Transaction | None) -> None:
        """Insert messages (in the caller's transaction when given)."""
        ...

    async def aadd(self, messages: Sequence[NewMessage], transaction: Transaction | None) -> None:
        """Asyncio twin of :meth:`add` (for ``engine.atransaction()`` on PostgreSQL)."""
        ...

    def claim(self, owner: str, limit: int, lease: float) -> list[StoredMessage]:
        """Lease up to ``limit`` claimable messages to ``owner``, in position order."""
        ...

    def extend(self, owner: str, positions: Sequence[int], lease: float) -> int:
        """Push the leases ``owner`` still holds ``lease`` seconds ahead; how many it holds."""
        ...

    def mark_sent(self, positions: Sequence[int], keep: bool) -> int:
        """Record messages as published (kept for retention, or deleted when not ``keep``)."""
        ...

    def fail(self, owner: str, position: int, delay: float, error: str, dead: bool) -> bool:
        """Give a failed message back for a retry after ``delay`` (or set it aside if ``dead``)."""
        ...

    def unclaim(self, owner: str, positions: Sequence[int]) -> int:
        """Give messages back untried (their claim does not count as an attempt)."""
        ...

    def purge_sent(self, older_than: float, limit: int) -> int:
        """Delete up to ``limit`` messages sent more than ``older_than`` seconds ago."""
        ...

    def dead(self, limit: int) -> list[StoredDead]:
        """The messages set aside, oldest first."""
        ...

    def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Make dead messages (all, or those ids) ready again with a fresh attempt count."""
        ...

    def stats(self) -> OutboxStats:
        """Counts per state and the age of the oldest pending message."""
        ...

    def announce(self) -> None:
        """Tell relays in other processes that messages were committed (PostgreSQL NOTIFY)."""
        ...

    def listen(self, ring: Callable[[], None]) -> Listening | None:
        """Call ``ring`` when another process announces messages; ``None`` if unsupported."""
        ...

    def create_tables(self) -> None:
        """Create the table and its indexes if missing."""
        ...

    def drop_tables(self) -> None:
        """Drop the table and everything in it (tests and teardown)."""
        ...

    def close(self) -> None:
        """Release what the store holds (not the engine)."""
        ...
