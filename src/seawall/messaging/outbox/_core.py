"""The relay's decisions, free of I/O: how long to idle, what to do with a claimed batch.

:class:`IdleSchedule` spaces out looks at an empty outbox (short at first, doubling
to a cap). :class:`BatchPlan` walks a claimed batch in position order: once a
message of a key fails, later messages of that key in the batch are held back
(given back untried) so the key's order is kept, while other keys go on. It also
says when the leases of the rest of the batch need renewing and how long a failed
message waits before its next try.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from seawall.messaging.outbox._model import OutboxMessage
from seawall.resilience._backoff import Wait

__all__ = ["BatchPlan", "Failure", "IdleSchedule"]


class IdleSchedule:
    """Pauses between looks at an empty outbox: ``first``, doubling, capped at ``cap``."""

    __slots__ = ("_next", "cap", "first")

    def __init__(self, first: float, cap: float) -> None:
        self.first = min(first, cap)
        self.cap = cap
        self._next = self.first

    def pause(self) -> float:
        """The next pause (then the one after doubles, up to the cap)."""
        pause = self._next
        self._next = min(self._next * 2.0, self.cap)
        return pause

    def reset(self) -> None:
        """Start again from the shortest pause (after finding work or a wake-up)."""
        self._next = self.first


@dataclass(frozen=True, slots=True)
class Failure:
    """What to do with a message whose publish failed."""

    delay: float
    """Seconds before it may be claimed again."""
    dead: bool
    """True when it has used up ``max_attempts``: set it aside instead."""


class BatchPlan:
    """One claimed batch: which messages to publish, which to hold back, when to renew leases."""

    __slots__ = (
        "_blocked",
        "_lease",
        "_renewed_at",
        "_settled",
        "backoff",
        "held_back",
        "max_attempts",
        "messages",
        "sent",
    )

    def __init__(
        self,
        messages: Sequence[OutboxMessage],
        *,
        now: float,
        lease: float,
        backoff: Wait,
        max_attempts: int | None,
    ) -> None:
        self.messages = messages
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.sent: list[OutboxMessage] = []
        """Published, to be marked sent."""
        self.held_back: list[OutboxMessage] = []
        """Behind a failed message of the same key: given back untried."""
        self._blocked: set[str] = set()
        self._settled: set[int] = set()
        self._lease = lease
        self._renewed_at = now

    def __iter__(self) -> Iterator[OutboxMessage]:
        """The messages to publish, in order; those behind a failed key are held back."""
        blocked = self._blocked
        for message in self.messages:
            if message.key is not None and message.key in blocked:
                self.held_back.append(message)
                self._settled.add(message.position)
                continue
            yield message

    def published(self, message: OutboxMessage) -> None:
        """``message`` was published."""
        self.sent.append(message)
        self._settled.add(message.position)

    def failed(self, message: OutboxMessage) -> Failure:
        """``message`` could not be published: block its key for the rest of the batch.

        A message that used up ``max_attempts`` is set aside instead and blocks nothing.
        """
        self._settled.add(message.position)
        if self.max_attempts is not None and message.attempts >= self.max_attempts:
            return Failure(0.0, True)
        if message.key is not None:
            self._blocked.add(message.key)
        return Failure(max(0.0, self.backoff.next_wait(message.attempts, 0.0)), False)

    def renewal_due(self, now: float) -> bool:
        """True when half the lease has passed since the claim (or the last renewal)."""
        return now - self._renewed_at >= self._lease / 2

    def renewed(self, now: float) -> None:
        """The leases of the unsettled messages were just renewed."""
        self._renewed_at = now

    def unsettled(self) -> list[int]:
        """Positions still held by this batch and not yet published, failed or held back."""
        settled = self._settled
        return [m.position for m in self.messages if m.position not in settled]
