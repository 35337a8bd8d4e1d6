"""Counting semaphores and read-write locks with leases, renewal and fencing tokens.

Both are :class:`~seawall.coordination.Lock` objects over a
:class:`~seawall.coordination.semaphore._view.SemaphoreView`: a holding is a lease with
a fencing token from the name's counter, it expires on the engine's clock unless
extended, ``auto_renew`` keeps it alive and reports its loss, and waiting polls with
jittered backoff bounded by ``wait``. Each thread (sync calls) or task (async calls)
holds at most one permit of a given object at a time, as with locks.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import TYPE_CHECKING

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.coordination.lock._core import Lease
from seawall.coordination.lock._errors import LockTimeoutError
from seawall.coordination.lock._lock import DEFAULT_POLL_INTERVAL, DEFAULT_TTL, DEFAULT_WAIT, Lock
from seawall.coordination.semaphore._errors import SemaphoreFullError
from seawall.coordination.semaphore._store import (
    MAX_LIMIT,
    SemaphoreState,
    SemaphoreStore,
    check_limit,
    open_semaphore_store,
)
from seawall.coordination.semaphore._view import SemaphoreView
from seawall.errors import ConfigurationError

if TYPE_CHECKING:
    from seawall.coordination.lock._lock import LostCallback
    from seawall.engines import Engine

__all__ = ["ReadWriteLock", "Semaphore"]


def _open(
    store: str | Engine | SemaphoreStore | None, clock: Clock, what: str
) -> tuple[SemaphoreStore, bool]:
    if store is None and clock is not SYSTEM_CLOCK:
        raise ConfigurationError(
            f"{what} was given a custom clock but no store: the default memory store runs on "
            "the system clock; pass store=MemorySemaphoreStore(clock=clock)"
        )
    return open_semaphore_store(store)


class Semaphore:
    """At most ``limit`` holders of ``name`` at once, across every process using the engine.

    ``acquire`` returns a :class:`~seawall.coordination.Lease` (the permit) whose
    ``fencing_token`` strictly increases across all permits of the name; ``slot(lease)``
    tells which of the ``limit`` slots it occupies (fence per-slot resources with
    ``f"{name}#{slot}"``). Options as for :class:`~seawall.coordination.Lock`.
    """

    def __init__(
        self,
        name: str,
        limit: int,
        ttl: float = DEFAULT_TTL,
        *,
        store: str | Engine | SemaphoreStore | None = None,
        wait: float = DEFAULT_WAIT,
        auto_renew: bool = False,
        renew_fraction: float = 1 / 3,
        on_lost: LostCallback | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.limit = check_limit(limit)
        self.store, self._owns_store = _open(store, clock, f"semaphore {name!r}")
        self._view = SemaphoreView(self.store, self.limit)
        try:
            self._lock = Lock(
                name,
                ttl,
                store=self._view,
                wait=wait,
                auto_renew=auto_renew,
                renew_fraction=renew_fraction,
                on_lost=on_lost,
                poll_interval=poll_interval,
                clock=clock,
            )
        except BaseException:
            if self._owns_store:
                self.store.close()
            raise
        self.name = self._lock.name
        self.ttl = self._lock.ttl
        self.events = self._lock.events

    def _full(self, error: LockTimeoutError) -> SemaphoreFullError:
        return SemaphoreFullError(self.name, self.limit, error.wait, retry_after=error.retry_after)

    @property
    def lease(self) -> Lease | None:
        """The permit held by the calling task or thread, or ``None``."""
        return self._lock.lease

    @property
    def held(self) -> bool:
        """True while the calling task or thread holds a live permit."""
        return self._lock.held

    def slot(self, lease: Lease | None = None) -> int | None:
        """The slot (``0 <= slot < limit``) of ``lease`` (default: the caller's), if held."""
        target = lease if lease is not None else self._lock.lease
        return None if target is None else self._view.slots.get(target.owner)

    def acquire(self, wait: float | None = None) -> Lease:
        """Take a permit, waiting up to ``wait`` seconds; :class:`SemaphoreFullError` if none frees."""
        try:
            return self._lock.acquire(wait)
        except SemaphoreFullError:
            raise
        except LockTimeoutError as exc:
            raise self._full(exc) from None

    def release(self, lease: Lease | None = None) -> None:
        """Give the caller's permit (or ``lease``) back; errors as for :meth:`Lock.release`."""
        self._lock.release(lease)

    def extend(self, ttl: float | None = None, lease: Lease | None = None) -> Lease:
        """Restart the permit's lease at ``ttl`` seconds (default: the semaphore's ttl)."""
        return self._lock.extend(ttl, lease)

    def state(self) -> SemaphoreState:
        """Every live holding (any process) and the last fencing token issued."""
        return self.store.state(self.name)

    async def aacquire(self, wait: float | None = None) -> Lease:
        """Async :meth:`acquire`."""
        try:
            return await self._lock.aacquire(wait)
        except SemaphoreFullError:
            raise
        except LockTimeoutError as exc:
            raise self._full(exc) from None

    async def arelease(self, lease: Lease | None = None) -> None:
        """Async :meth:`release`."""
        await self._lock.arelease(lease)

    async def aextend(self, ttl: float | None = None, lease: Lease | None = None) -> Lease:
        """Async :meth:`extend`."""
        return await self._lock.aextend(ttl, lease)

    async def astate(self) -> SemaphoreState:
        """Async :meth:`state`."""
        return await self.store.astate(self.name)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.__exit__(exc_type, exc, traceback)

    async def __aenter__(self) -> Lease:
        return await self.aacquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._lock.__aexit__(exc_type, exc, traceback)

    def close(self) -> None:
        """Stop heartbeats; close the store if this semaphore opened it from a URL."""
        self._lock.close()
        if self._owns_store:
            self.store.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        await self._lock.aclose()
        if self._owns_store:
            await self.store.aclose()

    def __repr__(self) -> str:
        return f"Semaphore({self.name!r}, limit={self.limit}, ttl={self.ttl}, store={self.store!r})"


class ReadWriteLock:
    """Many readers or one writer of ``name``: ``rw.read`` and ``rw.write`` are :class:`Lock` s.

    Writers are preferred: once a writer waits, new readers wait too (until it got the
    lock, gave up, or its intent lapsed ``intent_ttl`` seconds after its last attempt),
    so readers cannot starve writers. A holder cannot upgrade a read lock to a write
    lock (it would wait for itself). ``max_readers`` bounds concurrent readers.
    """

    def __init__(
        self,
        name: str,
        ttl: float = DEFAULT_TTL,
        *,
        store: str | Engine | SemaphoreStore | None = None,
        wait: float = DEFAULT_WAIT,
        auto_renew: bool = False,
        renew_fraction: float = 1 / 3,
        on_lost: LostCallback | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_readers: int = MAX_LIMIT,
        intent_ttl: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.max_readers = check_limit(max_readers, "max_readers")
        if intent_ttl is None:
            intent_ttl = (
                max(1.0, 10 * poll_interval) if isinstance(poll_interval, int | float) else 1.0
            )
        if (
            isinstance(intent_ttl, bool)
            or not isinstance(intent_ttl, int | float)
            or not (0 < intent_ttl < math.inf)
        ):
            raise ConfigurationError(
                f"intent_ttl must be a finite number of seconds > 0, got {intent_ttl!r}"
            )
        self.intent_ttl = float(intent_ttl)
        self.store, self._owns_store = _open(store, clock, f"read-write lock {name!r}")

        def side(view: SemaphoreView) -> Lock:
            return Lock(
                name,
                ttl,
                store=view,
                wait=wait,
                auto_renew=auto_renew,
                renew_fraction=renew_fraction,
                on_lost=on_lost,
                poll_interval=poll_interval,
                clock=clock,
            )

        try:
            self.read = side(SemaphoreView(self.store, self.max_readers))
            """The shared side: many holders at once, none while a writer holds or waits."""
            self.write = side(
                SemaphoreView(self.store, 1, exclusive=True, intent_ttl=self.intent_ttl)
            )
            """The exclusive side: one holder, no readers."""
        except BaseException:
            if self._owns_store:
                self.store.close()
            raise
        self.name = self.read.name

    def state(self) -> SemaphoreState:
        """Every live holding (readers and the writer) and the last fencing token issued."""
        return self.store.state(self.name)

    async def astate(self) -> SemaphoreState:
        """Async :meth:`state`."""
        return await self.store.astate(self.name)

    def close(self) -> None:
        """Stop heartbeats; close the store if this lock opened it from a URL."""
        self.read.close()
        self.write.close()
        if self._owns_store:
            self.store.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        await self.read.aclose()
        await self.write.aclose()
        if self._owns_store:
            await self.store.aclose()

    def __repr__(self) -> str:
        return f"ReadWriteLock({self.name!r}, store={self.store!r})"
