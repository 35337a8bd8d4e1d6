"""The table of waiting requests: match a reply by correlation id, or count it late.

Thread-safe and I/O-free: a receive loop (a thread, an asyncio task, a NATS
callback) calls :meth:`Correlator.resolve`; a waiting caller blocks on its waiter's
event or awaits its future. Many concurrent requests share one table.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

__all__ = ["Correlator", "Waiter"]


def _deliver(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Waiter:
    """One waiting request: the reply lands in ``status``/``body`` and the waiter is woken."""

    __slots__ = ("body", "event", "future", "loop", "status")

    def __init__(
        self,
        event: threading.Event | None = None,
        future: asyncio.Future[None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.event = event
        self.future = future
        self.loop = loop
        self.status: str | None = None
        self.body: Any = None

    @property
    def answered(self) -> bool:
        """Whether a reply arrived."""
        return self.status is not None

    def wake(self) -> None:
        """Wake the waiting caller, from any thread."""
        if self.event is not None:
            self.event.set()
            return
        future, loop = self.future, self.loop
        if future is None or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _deliver(future)
        else:
            # A closed loop raises RuntimeError: nobody waits there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, future)


class Correlator:
    """Pending requests by correlation id, with the counters a requester reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Waiter] = {}
        self.sent = 0
        self.replied = 0
        self.failed = 0
        self.timed_out = 0
        self.late_replies = 0

    @property
    def pending(self) -> int:
        """How many requests wait for a reply now."""
        return len(self._pending)

    def add(self, correlation_id: str, waiter: Waiter) -> Waiter:
        """Register a request before it is sent (so an instant reply is never missed)."""
        with self._lock:
            self._pending[correlation_id] = waiter
        return waiter

    def sent_one(self) -> None:
        """Count a request that reached the transport."""
        with self._lock:
            self.sent += 1

    def discard(self, correlation_id: str) -> None:
        """Forget a request whose send failed."""
        with self._lock:
            self._pending.pop(correlation_id, None)

    def expire(self, correlation_id: str) -> bool:
        """The request timed out: forget it; False if its reply won the race."""
        with self._lock:
            waiter = self._pending.pop(correlation_id, None)
            if waiter is None:
                return False
            self.timed_out += 1
            return True

    def resolve(self, correlation_id: str | None, status: str, body: Any) -> bool:
        """Hand a reply to its waiting request; False (counted late) when none waits."""
        with self._lock:
            waiter = self._pending.pop(correlation_id, None) if correlation_id else None
            if waiter is None:
                self.late_replies += 1
                return False
            if status == "ok":
                self.replied += 1
            else:
                self.failed += 1
            waiter.body = body
            waiter.status = status  # set under the lock: a racing expire() then sees it answered
        waiter.wake()
        return True

    def fail_all(self, status: str, body: Any) -> None:
        """Wake every waiting request with ``status`` (used when the requester closes)."""
        with self._lock:
            waiters, self._pending = list(self._pending.values()), {}
        for waiter in waiters:
            waiter.status = status
            waiter.body = body
            waiter.wake()
