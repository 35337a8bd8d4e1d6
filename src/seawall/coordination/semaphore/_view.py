"""One mode of a semaphore store seen as a lock store, so the Lock machinery drives it.

A :class:`~seawall.coordination.Semaphore` is a :class:`~seawall.coordination.Lock`
whose store grants up to ``limit`` holdings at once; a read-write lock is two such
locks on one name, shared (readers) and exclusive (writers). The waiting, the
per-thread and per-task holdings, the heartbeat, the loss reports and the events are
the lock's; only the store call differs.
"""

from __future__ import annotations

from seawall.coordination.lock._store import Acquisition, LeaseInfo
from seawall.coordination.semaphore._store import HolderInfo, SemaphoreStore

__all__ = ["SemaphoreView"]

_MAX_SLOTS = 65536


class SemaphoreView:
    """A :class:`~seawall.coordination.LockStore` over one (limit, exclusive) mode of ``store``."""

    def __init__(
        self,
        store: SemaphoreStore,
        limit: int,
        *,
        exclusive: bool = False,
        intent_ttl: float = 0.0,
    ) -> None:
        self.store = store
        self.limit = limit
        self.exclusive = exclusive
        self.intent_ttl = intent_ttl
        self.expires = store.expires
        self.slots: dict[str, int] = {}
        """owner -> slot of the holdings granted through this view and not yet released"""

    def _granted(self, owner: str, token: int, slot: int, hint: float | None) -> Acquisition:
        if token:
            if len(self.slots) >= _MAX_SLOTS:  # holders that never released: forget the oldest
                del self.slots[next(iter(self.slots))]
            self.slots[owner] = slot
            return Acquisition(token)
        return Acquisition(0, hint)

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Take a holding in this view's mode."""
        token, slot, hint = self.store.acquire(
            name, owner, ttl, self.limit, exclusive=self.exclusive, intent_ttl=self.intent_ttl
        )
        return self._granted(owner, token, slot, hint)

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s holding."""
        return self.store.extend(name, owner, ttl)

    def release(self, name: str, owner: str) -> bool:
        """Release ``owner``'s holding."""
        self.slots.pop(owner, None)
        return self.store.release(name, owner)

    @staticmethod
    def _newest(name: str, holders: tuple[HolderInfo, ...]) -> LeaseInfo | None:
        newest = max(holders, key=lambda holder: holder.fencing_token, default=None)
        if newest is None:
            return None
        return LeaseInfo(name, newest.owner, newest.fencing_token, newest.expires_in)

    def inspect(self, name: str) -> LeaseInfo | None:
        """The newest live holding of ``name`` (``state`` lists them all)."""
        return self._newest(name, self.store.state(name).holders)

    def force_release(self, name: str) -> bool:
        """End every live holding of ``name``."""
        ended = False
        for holder in self.store.state(name).holders:
            ended = self.store.force_release(name, holder.owner) or ended
        return ended

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Async :meth:`acquire`."""
        token, slot, hint = await self.store.aacquire(
            name, owner, ttl, self.limit, exclusive=self.exclusive, intent_ttl=self.intent_ttl
        )
        return self._granted(owner, token, slot, hint)

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        return await self.store.aextend(name, owner, ttl)

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        self.slots.pop(owner, None)
        return await self.store.arelease(name, owner)

    async def ainspect(self, name: str) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        return self._newest(name, (await self.store.astate(name)).holders)

    async def aforce_release(self, name: str) -> bool:
        """Async :meth:`force_release`."""
        ended = False
        for holder in (await self.store.astate(name)).holders:
            ended = await self.store.aforce_release(name, holder.owner) or ended
        return ended

    def close(self) -> None:
        """Nothing: the semaphore that made this view closes the store."""

    async def aclose(self) -> None:
        """Nothing: the semaphore that made this view closes the store."""

    def __repr__(self) -> str:
        mode = "exclusive" if self.exclusive else f"limit={self.limit}"
        return f"SemaphoreView({self.store!r}, {mode})"
