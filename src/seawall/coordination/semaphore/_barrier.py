"""A distributed barrier: every caller waits until all ``parties`` have arrived.

Arrivals are counted by the semaphore store's per-name counter: the k-th arrival ever
(its fencing token is k) belongs to generation ``(k - 1) // parties`` and the barrier
opens for that generation once arrival number ``(generation + 1) * parties`` has
happened. The counter never goes back, so an open generation stays open for everyone
who arrived in it, even after the others left, and the next arrivals form the next
generation: the barrier is reusable, like ``threading.Barrier``. Each arrival also
holds a lease while it waits, so :meth:`Barrier.waiting` shows who is there.

An arrival that crashes or times out still counts (it did arrive): the others are
released when the rest arrive. Use one barrier name for one purpose and the same
``parties`` everywhere.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import TYPE_CHECKING

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.coordination.lock._core import check_name, check_seconds, check_ttl
from seawall.coordination.semaphore._errors import BarrierTimeoutError
from seawall.coordination.semaphore._semaphore import _open
from seawall.coordination.semaphore._store import (
    MAX_LIMIT,
    HolderInfo,
    SemaphoreState,
    SemaphoreStore,
    check_limit,
)
from seawall.errors import ConfigurationError, EngineError

if TYPE_CHECKING:
    from seawall.engines import Engine

__all__ = ["Barrier"]

DEFAULT_BARRIER_TTL = 60.0
DEFAULT_BARRIER_POLL = 0.05


class Barrier:
    """``parties`` callers of ``name`` meet here: each ``arrive`` returns once all arrived.

    ``ttl`` bounds each arrival's visible lease (:meth:`waiting`); ``poll_interval``
    is how often a waiting arrival checks the count.
    """

    def __init__(
        self,
        name: str,
        parties: int,
        *,
        store: str | Engine | SemaphoreStore | None = None,
        ttl: float = DEFAULT_BARRIER_TTL,
        poll_interval: float = DEFAULT_BARRIER_POLL,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = check_name(name, "barrier")
        self.parties = check_limit(parties, "parties")
        self.ttl = check_ttl(ttl)
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        if self.poll_interval == 0.0:
            raise ConfigurationError("poll_interval must be > 0 seconds, got 0")
        self.clock = clock
        self.store, self._owns_store = _open(store, clock, f"barrier {name!r}")

    def _place(self, token: int) -> tuple[int, int]:
        """(index within the generation, the count that opens it) of arrival ``token``."""
        if token < 1:
            raise EngineError(
                f"barrier {self.name!r}: the store refused the arrival; is the name also "
                "used by an exclusive lock? use one name per barrier"
            )
        generation, index = divmod(token - 1, self.parties)
        return index, (generation + 1) * self.parties

    def _late(self, target: int, state: SemaphoreState, timeout: float) -> BarrierTimeoutError:
        arrived = self.parties - max(0, target - state.last_token)
        return BarrierTimeoutError(self.name, self.parties, arrived, timeout)

    def arrive(self, wait: float | None = None) -> int:
        """Arrive and wait until all parties did; returns this arrival's index (0 = first).

        Raises :class:`BarrierTimeoutError` after ``wait`` seconds (default: forever).
        """
        limit = math.inf if wait is None else check_seconds(wait, "wait", allow_infinite=True)
        owner = os.urandom(16).hex()
        started = self.clock.now()
        token = self.store.acquire(self.name, owner, self.ttl, MAX_LIMIT).fencing_token
        try:
            index, target = self._place(token)
            while True:
                state = self.store.state(self.name)
                if state.last_token >= target:
                    return index
                left = started + limit - self.clock.now()
                if left <= 0:
                    raise self._late(target, state, limit)
                self.clock.sleep(min(self.poll_interval, left))
        finally:
            with contextlib.suppress(Exception):
                self.store.release(self.name, owner)

    async def aarrive(self, wait: float | None = None) -> int:
        """Async :meth:`arrive`."""
        limit = math.inf if wait is None else check_seconds(wait, "wait", allow_infinite=True)
        owner = os.urandom(16).hex()
        started = self.clock.now()
        grant = await self.store.aacquire(self.name, owner, self.ttl, MAX_LIMIT)
        try:
            index, target = self._place(grant.fencing_token)
            while True:
                state = await self.store.astate(self.name)
                if state.last_token >= target:
                    return index
                left = started + limit - self.clock.now()
                if left <= 0:
                    raise self._late(target, state, limit)
                await self.clock.asleep(min(self.poll_interval, left))
        finally:
            with contextlib.suppress(Exception):
                await self.store.arelease(self.name, owner)

    def waiting(self) -> tuple[HolderInfo, ...]:
        """The arrivals waiting now (any process)."""
        return self.store.state(self.name).holders

    def arrived(self) -> int:
        """How many parties of the current, not yet open, generation have arrived."""
        return self.store.state(self.name).last_token % self.parties

    def close(self) -> None:
        """Close the store if this barrier opened it from a URL."""
        if self._owns_store:
            self.store.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        if self._owns_store:
            await self.store.aclose()

    def __repr__(self) -> str:
        return f"Barrier({self.name!r}, parties={self.parties}, store={self.store!r})"
