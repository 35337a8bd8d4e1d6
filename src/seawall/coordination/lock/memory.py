"""The in-memory lock store: leases for threads and tasks of one process, and the test double.

Leases expire on the store's injected clock, so a test passes one
:class:`~seawall.clock.ManualClock` to the store and to its locks and moves time by
hand. Every operation takes one mutex; nothing blocks on I/O, so the async methods
simply call the sync ones.
"""

from __future__ import annotations

import threading

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.coordination.lock._store import Acquisition, LeaseInfo

__all__ = ["MemoryLockStore"]


class MemoryLockStore:
    """Leases in a dict guarded by a mutex; ``clock`` is the engine clock leases expire on."""

    expires = True

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._guard = threading.Lock()
        self._leases: dict[str, tuple[str, int, float]] = {}
        """name -> (owner, fencing token, expires at)"""
        self._counters: dict[str, int] = {}
        """name -> last fencing token issued (kept after release and expiry)"""

    def _live(self, name: str, now: float) -> tuple[str, int, float] | None:
        lease = self._leases.get(name)
        if lease is not None and lease[2] <= now:
            del self._leases[name]
            return None
        return lease

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Grant ``name`` to ``owner`` for ``ttl`` seconds unless a live lease exists."""
        with self._guard:
            now = self.clock.now()
            lease = self._live(name, now)
            if lease is not None and lease[0] != owner:
                return Acquisition(0, lease[2] - now)
            token = self._counters.get(name, 0) + 1
            self._counters[name] = token
            self._leases[name] = (owner, token, now + ttl)
            return Acquisition(token)

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Restart ``owner``'s lease at ``ttl`` seconds if it still holds ``name``."""
        with self._guard:
            now = self.clock.now()
            lease = self._live(name, now)
            if lease is None or lease[0] != owner:
                return False
            self._leases[name] = (owner, lease[1], now + ttl)
            return True

    def release(self, name: str, owner: str) -> bool:
        """End ``owner``'s lease on ``name`` if it still holds it."""
        with self._guard:
            lease = self._live(name, self.clock.now())
            if lease is None or lease[0] != owner:
                return False
            del self._leases[name]
            return True

    def inspect(self, name: str) -> LeaseInfo | None:
        """The live lease on ``name``, or ``None``."""
        with self._guard:
            now = self.clock.now()
            lease = self._live(name, now)
            if lease is None:
                return None
            return LeaseInfo(name, lease[0], lease[1], lease[2] - now)

    def force_release(self, name: str) -> bool:
        """End whoever's lease on ``name``; the fencing counter is kept."""
        with self._guard:
            return self._live(name, self.clock.now()) is not None and bool(
                self._leases.pop(name, None)
            )

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Async :meth:`acquire` (runs inline: nothing blocks)."""
        return self.acquire(name, owner, ttl)

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        return self.extend(name, owner, ttl)

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        return self.release(name, owner)

    async def ainspect(self, name: str) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        return self.inspect(name)

    async def aforce_release(self, name: str) -> bool:
        """Async :meth:`force_release`."""
        return self.force_release(name)

    def close(self) -> None:
        """Nothing to close."""

    async def aclose(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        return f"MemoryLockStore(clock={self.clock!r})"
