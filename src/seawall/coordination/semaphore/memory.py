"""The in-memory semaphore store: holdings for threads and tasks of one process, and the test double.

Holdings expire on the store's injected clock, so a test passes one
:class:`~seawall.clock.ManualClock` to the store and its users and moves time by hand.
"""

from __future__ import annotations

import threading

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.coordination.semaphore._core import Holding, choose
from seawall.coordination.semaphore._store import HolderInfo, SemaphoreGrant, SemaphoreState

__all__ = ["MemorySemaphoreStore"]


class MemorySemaphoreStore:
    """Holdings in dicts guarded by a mutex; ``clock`` is the engine clock they expire on."""

    expires = True

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._guard = threading.Lock()
        self._holdings: dict[str, dict[str, tuple[int, int, bool, float]]] = {}
        """name -> owner -> (fencing token, slot, exclusive, expires at)"""
        self._intents: dict[str, dict[str, float]] = {}
        self._counters: dict[str, int] = {}

    def _live(self, name: str, now: float) -> dict[str, tuple[int, int, bool, float]]:
        holdings = self._holdings.setdefault(name, {})
        for owner in [owner for owner, entry in holdings.items() if entry[3] <= now]:
            del holdings[owner]
        intents = self._intents.setdefault(name, {})
        for owner in [owner for owner, expires in intents.items() if expires <= now]:
            del intents[owner]
        return holdings

    def acquire(
        self,
        name: str,
        owner: str,
        ttl: float,
        limit: int,
        *,
        exclusive: bool = False,
        intent_ttl: float = 0.0,
    ) -> SemaphoreGrant:
        """Grant ``owner`` a holding when there is room (see :mod:`._store`)."""
        with self._guard:
            now = self.clock.now()
            holdings = self._live(name, now)
            intents = self._intents[name]
            view: dict[str, Holding] = {
                holder: (entry[1], entry[2], entry[3]) for holder, entry in holdings.items()
            }
            slot, hint = choose(view, intents, owner, limit, exclusive, now)
            if slot < 0:
                if exclusive and intent_ttl > 0:
                    intents[owner] = now + intent_ttl
                return SemaphoreGrant(0, -1, hint)
            token = self._counters.get(name, 0) + 1
            self._counters[name] = token
            previous = holdings.get(owner)
            holdings[owner] = (token, slot, previous[2] if previous else exclusive, now + ttl)
            intents.pop(owner, None)
            return SemaphoreGrant(token, slot)

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Restart ``owner``'s holding at ``ttl`` seconds if it still has it."""
        with self._guard:
            now = self.clock.now()
            entry = self._live(name, now).get(owner)
            if entry is None:
                return False
            self._holdings[name][owner] = (entry[0], entry[1], entry[2], now + ttl)
            return True

    def release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding and withdraw its intent."""
        with self._guard:
            holdings = self._live(name, self.clock.now())
            self._intents[name].pop(owner, None)
            return holdings.pop(owner, None) is not None

    def state(self, name: str) -> SemaphoreState:
        """The live holdings (by slot) and the counter."""
        with self._guard:
            now = self.clock.now()
            holders = tuple(
                sorted(
                    (
                        HolderInfo(owner, entry[0], entry[1], entry[2], entry[3] - now)
                        for owner, entry in self._live(name, now).items()
                    ),
                    key=lambda holder: holder.slot,
                )
            )
            return SemaphoreState(name, holders, self._counters.get(name, 0))

    def force_release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding whoever asks."""
        with self._guard:
            return self._live(name, self.clock.now()).pop(owner, None) is not None

    async def aacquire(
        self,
        name: str,
        owner: str,
        ttl: float,
        limit: int,
        *,
        exclusive: bool = False,
        intent_ttl: float = 0.0,
    ) -> SemaphoreGrant:
        """Async :meth:`acquire` (runs inline: nothing blocks)."""
        return self.acquire(name, owner, ttl, limit, exclusive=exclusive, intent_ttl=intent_ttl)

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        return self.extend(name, owner, ttl)

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        return self.release(name, owner)

    async def astate(self, name: str) -> SemaphoreState:
        """Async :meth:`state`."""
        return self.state(name)

    async def aforce_release(self, name: str, owner: str) -> bool:
        """Async :meth:`force_release`."""
        return self.force_release(name, owner)

    def close(self) -> None:
        """Nothing to close."""

    async def aclose(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        return f"MemorySemaphoreStore(clock={self.clock!r})"
