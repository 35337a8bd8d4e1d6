"""The lock users hold: acquire with a bounded wait, release, extend, auto-renewal.

One :class:`Lock` object serves threads and asyncio: ``acquire``/``release``/``extend``
block, ``aacquire``/``arelease``/``aextend`` are awaited, ``with lock`` and
``async with lock`` acquire and release. The object can be shared: each thread (sync
calls) or task (async calls) holds its own lease, as with ``threading.Lock``. Both
flavours are thin loops over the sans-I/O :class:`~seawall.coordination.Lease` and
:class:`AcquireSchedule`; only the store call and the way they wait differ.

The optional heartbeat (``auto_renew=True``) is a daemon thread per lease for sync
acquires and a task per lease for async ones. It extends the lease every
``renew_fraction`` of the TTL; when renewal is refused, or keeps failing until the
lease's end, the lease is marked lost, ``on_lost`` is called, a
:class:`~seawall.coordination.LockLost` event is emitted, and the next ``lease.check()``
(or leaving the ``with`` block) raises :class:`LockLostError`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.coordination.lock._core import (
    DRIFT_FACTOR,
    AcquireSchedule,
    Lease,
    check_name,
    check_seconds,
    check_ttl,
)
from seawall.coordination.lock._errors import (
    LockError,
    LockLostError,
    LockNotHeldError,
    LockTimeoutError,
)
from seawall.coordination.lock._events import (
    LockAcquired,
    LockLost,
    LockReleased,
    LockRenewalFailed,
    LockRenewed,
)
from seawall.coordination.lock._store import LeaseInfo, LockStore, open_lock_store
from seawall.errors import ConfigurationError, EngineUnavailableError
from seawall.events import EventHub, hub

if TYPE_CHECKING:
    from seawall.engines import Engine

__all__ = ["DEFAULT_TTL", "DEFAULT_WAIT", "Lock"]

DEFAULT_TTL = 30.0
DEFAULT_WAIT = 10.0
DEFAULT_POLL_INTERVAL = 0.1

_logger = logging.getLogger("seawall.coordination.lock")

LostCallback = Callable[[LockLostError], object]
"""Called once with the error when a held lease is found lost."""


def _owner_token() -> str:
    """A fresh random owner token (128 bits): unique per acquire, across processes and forks."""
    return os.urandom(16).hex()


class Lock:
    """A distributed lock with fencing tokens, on the engine ``store`` names.

    ``ttl`` is the lease length in seconds; a holder that neither releases nor extends
    within it loses the lock to the next acquirer. ``wait`` is how long ``acquire``
    waits by default (``0``: one attempt; ``math.inf``: forever), polling with
    jittered backoff capped at ``poll_interval``. ``store`` is ``None`` (the process-wide
    memory store), an engine URL, an :class:`~seawall.engines.Engine` or a
    :class:`LockStore` such as :class:`~seawall.coordination.RedlockStore`.
    ``auto_renew`` starts a heartbeat per lease that extends it every
    ``renew_fraction`` of the TTL; ``on_lost`` is called when a lease is found lost.
    """

    def __init__(
        self,
        name: str,
        ttl: float = DEFAULT_TTL,
        *,
        store: str | Engine | LockStore | None = None,
        wait: float = DEFAULT_WAIT,
        auto_renew: bool = False,
        renew_fraction: float = 1 / 3,
        on_lost: LostCallback | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = check_name(name)
        self.ttl = check_ttl(ttl)
        self.wait = check_seconds(wait, "wait", allow_infinite=True)
        if (
            isinstance(renew_fraction, bool)
            or not isinstance(renew_fraction, int | float)
            or not 0.0 < renew_fraction < 1.0 - DRIFT_FACTOR
        ):
            raise ConfigurationError(
                f"renew_fraction must be a share of the ttl between 0 and {1.0 - DRIFT_FACTOR} "
                f"(exclusive; 1/3 renews three times per ttl), got {renew_fraction!r}"
            )
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        if self.poll_interval == 0.0:
            raise ConfigurationError("poll_interval must be > 0 seconds, got 0")
        if on_lost is not None and not callable(on_lost):
            raise ConfigurationError(f"on_lost must be callable or None, got {on_lost!r}")
        if store is None and clock is not SYSTEM_CLOCK:
            raise ConfigurationError(
                f"lock {name!r} was given a custom clock but no store: the default memory "
                "store runs on the system clock; pass store=MemoryLockStore(clock=clock)"
            )
        self.auto_renew = bool(auto_renew)
        self.renew_fraction = float(renew_fraction)
        self.on_lost = on_lost
        self.clock = clock
        self.store, self._owns_store = open_lock_store(store)
        self.events = EventHub(parent=hub)
        self._local = threading.local()
        self._task_leases: weakref.WeakKeyDictionary[asyncio.Task[object], Lease] = (
            weakref.WeakKeyDictionary()
        )
        self._mutex = threading.Lock()
        self._stops: dict[str, threading.Event] = {}
        self._heartbeat_tasks: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ current holder

    @property
    def lease(self) -> Lease | None:
        """The lease held by the calling task (inside asyncio) or thread, or ``None``."""
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        if task is not None and task in self._task_leases:
            return self._task_leases[task]
        lease: Lease | None = getattr(self._local, "lease", None)
        return lease

    @property
    def held(self) -> bool:
        """True while the calling task or thread holds a live lease on this lock."""
        lease = self.lease
        return lease is not None and lease.held

    def _refuse_reentry(self, lease: Lease | None) -> None:
        if lease is not None and not lease.released and not lease.lost and lease.held:
            raise LockError(
                f"lock {self.name!r} is already held by this thread or task (fencing token "
                f"{lease.fencing_token}); Lock is not reentrant: release it first"
            )

    def _new_lease(self, owner: str, token: int, sent_at: float) -> Lease:
        return Lease(
            self.name,
            owner,
            token,
            self.ttl,
            sent_at=sent_at,
            clock=self.clock,
            renew_fraction=self.renew_fraction,
        )

    def _wait_for(self, wait: float | None) -> float:
        return self.wait if wait is None else check_seconds(wait, "wait", allow_infinite=True)

    def _give_up(
        self, wait: float, hint: float | None, error: EngineUnavailableError | None
    ) -> Exception:
        if error is not None:
            unavailable = EngineUnavailableError(
                f"lock {self.name!r}: acquire gave up after {wait:.3f}s because the engine "
                f"did not answer: {error}",
                url=error.url,
            )
            unavailable.__cause__ = error
            return unavailable
        return LockTimeoutError(self.name, wait, retry_after=hint)

    # ------------------------------------------------------------------ sync

    def acquire(self, wait: float | None = None) -> Lease:
        """Take the lock, waiting up to ``wait`` seconds (default: the lock's ``wait``).

        Returns the :class:`Lease` with the fencing token. Raises
        :class:`LockTimeoutError` when another holder kept it for the whole wait, and
        :class:`~seawall.errors.EngineUnavailableError` when the engine did not answer.
        """
        local = self._local
        self._refuse_reentry(getattr(local, "lease", None))
        budget = self.wait if wait is None else self._wait_for(wait)
        owner = _owner_token()
        now = self.clock.now
        sent = now()
        try:
            token, hint = self.store.acquire(self.name, owner, self.ttl)
            error: EngineUnavailableError | None = None
        except EngineUnavailableError as exc:
            token, hint, error = 0, None, exc
        attempts = 1
        started = sent
        if not token:
            schedule = AcquireSchedule(sent, budget, cap=self.poll_interval)
            sleep = self.clock.sleep
            while not token:
                delay = schedule.next_delay(now(), hint)
                if delay is None:
                    raise self._give_up(budget, hint, error)
                sleep(delay)
                sent = now()
                try:
                    token, hint = self.store.acquire(self.name, owner, self.ttl)
                    error = None
                except EngineUnavailableError as exc:
                    token, hint, error = 0, None, exc
            attempts = schedule.attempts
        lease = self._new_lease(owner, token, sent)
        local.lease = lease
        if self.events.active:
            self.events.emit(LockAcquired(self.name, token, attempts, sent - started))
        if self.auto_renew:
            self._start_heartbeat(lease)
        return lease

    def release(self, lease: Lease | None = None) -> None:
        """End the calling thread's lease (or ``lease``) on the engine.

        Raises :class:`LockNotHeldError` when there is no lease to release, and
        :class:`LockLostError` when the lease had expired or been taken before: work
        done under it may have overlapped another holder's.
        """
        target = self._releasable(lease, getattr(self._local, "lease", None), "release")
        if getattr(self._local, "lease", None) is target:
            self._local.lease = None
        stop = self._stops.pop(target.owner, None)
        if stop is not None:
            stop.set()
        released = self.store.release(self.name, target.owner)
        self._after_release(target, released)

    def extend(self, ttl: float | None = None, lease: Lease | None = None) -> Lease:
        """Restart the lease at ``ttl`` seconds (default: the lock's ttl) from now.

        Compare-and-set on the owner token: raises :class:`LockLostError` (and marks the
        lease lost) when the lease had expired or another holder took it.
        """
        target = self._extendable(lease, getattr(self._local, "lease", None))
        new_ttl = self.ttl if ttl is None else check_ttl(ttl)
        sent = self.clock.now()
        extended = self.store.extend(self.name, target.owner, new_ttl)
        return self._after_extend(target, extended, sent, new_ttl)

    def inspect(self) -> LeaseInfo | None:
        """The current holder as the engine sees it (any process), or ``None``."""
        return self.store.inspect(self.name)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        lease: Lease | None = getattr(self._local, "lease", None)
        try:
            self.release(lease)
        except LockLostError as lost:
            if exc is None:
                raise
            exc.add_note(f"seawall: {lost}")

    def _start_heartbeat(self, lease: Lease) -> None:
        stop = threading.Event()
        self._stops[lease.owner] = stop
        threading.Thread(
            target=self._heartbeat,
            args=(lease, stop),
            name=f"seawall-lock-heartbeat:{self.name}",
            daemon=True,
        ).start()

    def _heartbeat(self, lease: Lease, stop: threading.Event) -> None:
        """Extend ``lease`` every ``renew_fraction`` of its TTL until released or lost."""
        clock = self.clock
        next_delay: float | None = lease.renewal_delay(clock.now())
        try:
            while next_delay is not None and not stop.wait(next_delay):
                if lease.released or lease.lost:
                    return
                sent = clock.now()
                try:
                    extended = self.store.extend(self.name, lease.owner, lease.ttl)
                except Exception as exc:
                    next_delay = self._renewal_failed(lease, exc)
                    continue
                next_delay = self._renewal_done(lease, extended, sent)
        finally:
            if self._stops.get(lease.owner) is stop:
                del self._stops[lease.owner]

    # ------------------------------------------------------------------ async

    async def aacquire(self, wait: float | None = None) -> Lease:
        """Async :meth:`acquire`: waits with ``clock.asleep``, renews with a task."""
        task = asyncio.current_task()
        self._refuse_reentry(self._task_leases.get(task) if task is not None else None)
        budget = self.wait if wait is None else self._wait_for(wait)
        owner = _owner_token()
        now = self.clock.now
        sent = now()
        try:
            token, hint = await self.store.aacquire(self.name, owner, self.ttl)
            error: EngineUnavailableError | None = None
        except EngineUnavailableError as exc:
            token, hint, error = 0, None, exc
        attempts = 1
        started = sent
        if not token:
            schedule = AcquireSchedule(sent, budget, cap=self.poll_interval)
            while not token:
                delay = schedule.next_delay(now(), hint)
                if delay is None:
                    raise self._give_up(budget, hint, error)
                await self.clock.asleep(delay)
                sent = now()
                try:
                    token, hint = await self.store.aacquire(self.name, owner, self.ttl)
                    error = None
                except EngineUnavailableError as exc:
                    token, hint, error = 0, None, exc
            attempts = schedule.attempts
        lease = self._new_lease(owner, token, sent)
        if task is not None:
            self._task_leases[task] = lease
        else:  # pragma: no cover - a coroutine always runs in a task under asyncio
            self._local.lease = lease
        if self.events.active:
            self.events.emit(LockAcquired(self.name, token, attempts, sent - started))
        if self.auto_renew:
            self._heartbeat_tasks[lease.owner] = asyncio.get_running_loop().create_task(
                self._aheartbeat(lease), name=f"seawall-lock-heartbeat:{self.name}"
            )
        return lease

    def _task_lease(self) -> Lease | None:
        task = asyncio.current_task()
        if task is not None:
            lease = self._task_leases.get(task)
            if lease is not None:
                return lease
        thread_lease: Lease | None = getattr(self._local, "lease", None)
        return thread_lease

    async def arelease(self, lease: Lease | None = None) -> None:
        """Async :meth:`release`."""
        target = self._releasable(lease, self._task_lease(), "release")
        task = asyncio.current_task()
        if task is not None and self._task_leases.get(task) is target:
            del self._task_leases[task]
        elif getattr(self._local, "lease", None) is target:
            self._local.lease = None
        heartbeat = self._heartbeat_tasks.pop(target.owner, None)
        if heartbeat is not None and heartbeat is not task:
            heartbeat.cancel()
        stop = self._stops.pop(target.owner, None)
        if stop is not None:
            stop.set()
        released = await self.store.arelease(self.name, target.owner)
        self._after_release(target, released)

    async def aextend(self, ttl: float | None = None, lease: Lease | None = None) -> Lease:
        """Async :meth:`extend`."""
        target = self._extendable(lease, self._task_lease())
        new_ttl = self.ttl if ttl is None else check_ttl(ttl)
        sent = self.clock.now()
        extended = await self.store.aextend(self.name, target.owner, new_ttl)
        return self._after_extend(target, extended, sent, new_ttl)

    async def ainspect(self) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        return await self.store.ainspect(self.name)

    async def __aenter__(self) -> Lease:
        return await self.aacquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self.arelease(self._task_lease())
        except LockLostError as lost:
            if exc is None:
                raise
            exc.add_note(f"seawall: {lost}")

    async def _aheartbeat(self, lease: Lease) -> None:
        """Async heartbeat: extend ``lease`` on schedule until it is released or lost."""
        clock = self.clock
        delay: float | None = lease.renewal_delay(clock.now())
        try:
            while delay is not None:
                await clock.asleep(delay)
                if lease.released or lease.lost:
                    return
                sent = clock.now()
                try:
                    extended = await self.store.aextend(self.name, lease.owner, lease.ttl)
                except Exception as exc:
                    delay = self._renewal_failed(lease, exc)
                    continue
                delay = self._renewal_done(lease, extended, sent)
        finally:
            if self._heartbeat_tasks.get(lease.owner) is asyncio.current_task():
                del self._heartbeat_tasks[lease.owner]

    # ------------------------------------------------------------------ shared steps

    def _releasable(self, lease: Lease | None, current: Lease | None, operation: str) -> Lease:
        target = lease if lease is not None else current
        if target is None or target.name != self.name:
            raise LockNotHeldError(self.name, operation)
        with self._mutex:
            if not target.finish():
                raise LockNotHeldError(self.name, operation)
        return target

    def _after_release(self, lease: Lease, released: bool) -> None:
        if lease.lost:
            raise LockLostError(self.name, lease.fencing_token, lease.lost_reason or "lost")
        if not released:
            error = self._lose(
                lease,
                "it had expired or another holder had taken it before release",
                after_release=True,
            )
            raise error or LockLostError(self.name, lease.fencing_token, "lost")
        if self.events.active:
            self.events.emit(
                LockReleased(self.name, lease.fencing_token, self.clock.now() - lease.acquired_at)
            )

    def _extendable(self, lease: Lease | None, current: Lease | None) -> Lease:
        target = lease if lease is not None else current
        if target is None or target.released or target.name != self.name:
            raise LockNotHeldError(self.name, "extend")
        if target.lost:
            raise LockLostError(self.name, target.fencing_token, target.lost_reason or "lost")
        return target

    def _after_extend(self, lease: Lease, extended: bool, sent: float, ttl: float) -> Lease:
        if not extended:
            error = self._lose(lease, "extend found it expired or taken by another holder")
            raise error or LockLostError(self.name, lease.fencing_token, "lost")
        lease.confirm(sent, ttl)
        if self.events.active:
            self.events.emit(LockRenewed(self.name, lease.fencing_token, ttl))
        return lease

    def _renewal_done(self, lease: Lease, extended: bool, sent: float) -> float | None:
        """Apply a heartbeat's extend reply; the delay to the next one, or None to stop."""
        if lease.released:
            return None
        if not extended:
            self._lose(lease, "renewal was refused: the lease expired or another holder took it")
            return None
        lease.confirm(sent, lease.ttl)
        if self.events.active:
            self.events.emit(LockRenewed(self.name, lease.fencing_token, lease.ttl))
        return lease.renewal_delay(self.clock.now())

    def _renewal_failed(self, lease: Lease, error: Exception) -> float | None:
        """Apply a heartbeat's failed extend; the delay to retry, or None once lost."""
        now = self.clock.now()
        if lease.released:
            return None
        if lease.past_end(now):
            self._lose(lease, f"renewal kept failing until the lease ran out ({error})")
            return None
        if self.events.active:
            self.events.emit(
                LockRenewalFailed(
                    self.name, lease.fencing_token, str(error), lease.valid_until - now
                )
            )
        return lease.retry_delay(now)

    def _lose(
        self, lease: Lease, reason: str, *, after_release: bool = False
    ) -> LockLostError | None:
        """Mark ``lease`` lost once and tell the holder: event and ``on_lost`` callback."""
        with self._mutex:
            if lease.released and not after_release:
                return None
            error = lease.lose(reason)
        if error is None:
            return None
        if self.events.active:
            self.events.emit(LockLost(self.name, lease.fencing_token, reason))
        if self.on_lost is not None:
            try:
                self.on_lost(error)
            except Exception:
                _logger.exception("on_lost callback of lock %r failed", self.name)
        return error

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop heartbeats and close the store if this lock opened it from a URL."""
        for stop in list(self._stops.values()):
            stop.set()
        self._stops.clear()
        if self._owns_store:
            self.store.close()

    async def aclose(self) -> None:
        """Async :meth:`close` (also cancels heartbeat tasks)."""
        for task in list(self._heartbeat_tasks.values()):
            task.cancel()
        self._heartbeat_tasks.clear()
        for stop in list(self._stops.values()):
            stop.set()
        self._stops.clear()
        if self._owns_store:
            await self.store.aclose()

    def __repr__(self) -> str:
        return f"Lock({self.name!r}, ttl={self.ttl}, store={self.store!r})"
