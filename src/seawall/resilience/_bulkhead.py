"""Bulkheads: cap how many calls run at once, so one slow dependency cannot take every
thread, connection or task of the process with it.

:class:`Bulkhead` is a semaphore: at most ``max_concurrent`` calls inside, others wait
up to ``max_wait`` seconds for a slot, then get :class:`~seawall.errors.BulkheadFullError`.
One object serves sync callers (threads) and async callers (any event loop) from the
same slots. Free slots are tokens in a deque whose ``pop``/``append`` are atomic, so a
call that finds a free slot takes no lock. Waiting happens under a lock: a sync waiter
blocks on a lock of its own, an async waiter on a future of its own event loop, and a
freed slot is handed straight to the longest waiter, whichever kind it is. Newcomers
do not overtake callers already waiting.

:class:`ThreadPoolBulkhead` runs the work on its own threads with a bounded queue, so
the caller's thread is never the one stuck in the dependency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import itertools
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock, MonotonicClock
from seawall.errors import BulkheadFullError, ConfigurationError
from seawall.events import Event, EventHub, hub
from seawall.resilience._policy import Policy
from seawall.resilience._timeout import wait_signalled

__all__ = [
    "Bulkhead",
    "BulkheadMetrics",
    "BulkheadQueueFullError",
    "BulkheadRejected",
    "BulkheadWaiting",
    "ThreadPoolBulkhead",
]

P = ParamSpec("P")
T = TypeVar("T")


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class BulkheadRejected(Event):
    """A call was refused: every slot stayed busy for ``max_wait`` (or the queue was full)."""

    max_concurrent: int
    max_wait: float


@dataclass(frozen=True, slots=True)
class BulkheadWaiting(Event):
    """A call found every slot busy and started waiting; ``queued`` callers wait now."""

    queued: int


@dataclass(frozen=True, slots=True)
class BulkheadMetrics:
    """A snapshot of a bulkhead's counters."""

    active: int
    """Calls running now."""
    queued: int
    """Calls waiting for a slot (or, in a thread pool, for a worker) now."""
    rejected: int
    """Calls refused since the bulkhead was built."""
    completed: int
    """Calls that ran and finished (returned or raised)."""
    max_concurrent: int
    """The slot count (the worker count for a thread pool)."""


class BulkheadQueueFullError(BulkheadFullError):
    """A :class:`ThreadPoolBulkhead` refused work: every worker busy and its queue full."""

    def __init__(self, bulkhead: str, max_workers: int, queue_size: int) -> None:
        super().__init__(bulkhead, max_workers, 0.0)
        self.args = (
            f"thread-pool bulkhead {bulkhead!r} is full ({max_workers} workers busy, "
            f"{queue_size} calls queued); raise max_workers or queue_size, or shed the load",
        )
        self.queue_size = queue_size


# ------------------------------------------------------------------- the semaphore

_WAITING: Final = 0
_GRANTED: Final = 1
_GONE: Final = 2  # timed out or cancelled before a slot came


class _SyncWaiter:
    """A thread waiting for a slot: it blocks on ``signal``, a lock taken in advance."""

    __slots__ = ("signal", "state")

    def __init__(self) -> None:
        self.state = _WAITING
        self.signal = threading.Lock()
        self.signal.acquire()


class _AsyncWaiter:
    """A task waiting for a slot: it awaits ``future``, resolved on its own loop."""

    __slots__ = ("future", "loop", "state", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.state = _WAITING
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.thread = threading.get_ident()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Bulkhead(Policy):
    """At most ``max_concurrent`` calls at once; others wait up to ``max_wait`` seconds.

    A call that finds no slot within ``max_wait`` (``0``: at once) raises
    :class:`~seawall.errors.BulkheadFullError` without running. Sync (``call``) and
    async (``acall``) callers share the same slots; waiters are served in arrival order.
    """

    def __init__(
        self,
        max_concurrent: int = 25,
        max_wait: float = 0.0,
        *,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "bulkhead",
    ) -> None:
        if (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or not 1 <= max_concurrent <= 1_000_000
        ):
            raise ConfigurationError(
                f"Bulkhead(max_concurrent={max_concurrent!r}) is invalid: max_concurrent must "
                "be an int in [1, 1000000]"
            )
        if (
            isinstance(max_wait, bool)
            or not isinstance(max_wait, int | float)
            or not 0 <= max_wait < math.inf
        ):
            raise ConfigurationError(
                f"Bulkhead(max_wait={max_wait!r}) is invalid: max_wait must be finite seconds "
                ">= 0 (0 rejects at once when every slot is busy)"
            )
        if not isinstance(clock, Clock):
            raise ConfigurationError(
                f"Bulkhead(clock={clock!r}) is invalid: pass a seawall.clock.Clock"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"Bulkhead(name={name!r}) is invalid: name must be a non-empty str"
            )
        self.max_concurrent = max_concurrent
        self.max_wait = float(max_wait)
        self.clock = clock
        self.name = name
        self.events = EventHub(parent=hub)
        self._real_clock = type(clock) is MonotonicClock
        # One token per free slot. deque.pop/append are atomic (they hold the GIL, or the
        # deque's own lock on free-threaded builds), so the fast path takes no lock.
        self._free: deque[None] = deque([None] * max_concurrent)
        self._completed = itertools.count()
        # The slow path: waiters in arrival order, under the lock.
        self._lock = threading.Lock()
        self._waiters: deque[_SyncWaiter | _AsyncWaiter] = deque()
        self._queued = 0  # waiters still waiting (gone ones stay in the deque until skipped)
        self._rejected = 0

    # ------------------------------------------------------------------ sync runner

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in a slot, waiting up to ``max_wait`` for one; else ``BulkheadFullError``."""
        free = self._free
        if self._queued:
            self._wait_sync()
        else:
            try:
                free.pop()
            except IndexError:
                self._wait_sync()
        try:
            return fn(*args, **kwargs)
        finally:
            next(self._completed)
            free.append(None)
            if self._queued:  # checked after the append: a new waiter sees the slot, or we it
                self._grant_free_slots()

    def _wait_sync(self) -> None:
        deadline = self.clock.now() + self.max_wait
        waiter = _SyncWaiter()
        if not self._enqueue(waiter):
            return
        signal = waiter.signal
        if wait_signalled(lambda seconds: signal.acquire(True, seconds), deadline, self.clock):
            return
        with self._lock:
            if waiter.state == _GRANTED:  # the slot came just as the wait ended
                return
            waiter.state = _GONE
            self._queued -= 1
            self._rejected += 1
        self._reject()

    # ----------------------------------------------------------------- async runner

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn`` in a slot, waiting up to ``max_wait`` for one; else ``BulkheadFullError``."""
        free = self._free
        if self._queued:
            await self._wait_async()
        else:
            try:
                free.pop()
            except IndexError:
                await self._wait_async()
        try:
            return await fn(*args, **kwargs)
        finally:
            next(self._completed)
            free.append(None)
            if self._queued:
                self._grant_free_slots()

    async def _wait_async(self) -> None:
        loop = asyncio.get_running_loop()
        arrived = self.clock.now()
        waiter = _AsyncWaiter(loop)
        if not self._enqueue(waiter):
            return
        timer: asyncio.TimerHandle | asyncio.Task[None]
        if self._real_clock:
            timer = loop.call_later(self.max_wait, self._expire, waiter)
        else:
            timer = loop.create_task(self._expire_after(waiter, arrived + self.max_wait))
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                granted = waiter.state == _GRANTED
                if waiter.state == _WAITING:
                    waiter.state = _GONE
                    self._queued -= 1
            if granted:  # a slot came, but the caller left: pass it on
                self._free.append(None)
                if self._queued:
                    self._grant_free_slots()
            raise
        finally:
            timer.cancel()
        if waiter.state != _GRANTED:
            self._reject()

    async def _expire_after(self, waiter: _AsyncWaiter, deadline: float) -> None:
        await self.clock.asleep(max(0.0, deadline - self.clock.now()))
        self._expire(waiter)

    def _expire(self, waiter: _AsyncWaiter) -> None:
        """The async waiter's ``max_wait`` ran out: withdraw it unless a slot came first."""
        with self._lock:
            if waiter.state != _WAITING:
                return
            waiter.state = _GONE
            self._queued -= 1
            self._rejected += 1
        _wake(waiter.future)

    # ------------------------------------------------------------- the slot queue

    def _enqueue(self, waiter: _SyncWaiter | _AsyncWaiter) -> bool:
        """Queue ``waiter`` (``True``), or take a slot that is free after all (``False``).

        Rejects at once when ``max_wait`` is 0. A waiter may be granted a slot before
        this returns; its signal is then already set.
        """
        with self._lock:
            if not self._queued:
                try:
                    self._free.pop()
                except IndexError:
                    pass
                else:
                    return False
            reject = self.max_wait <= 0
            if reject:
                self._rejected += 1
            else:
                waiters = self._waiters
                if len(waiters) > 2 * self._queued + 64:  # drop entries of waiters gone
                    self._waiters = waiters = deque(w for w in waiters if w.state == _WAITING)
                waiters.append(waiter)
                self._queued += 1
                queued = self._queued
                self._grant_free_slots_locked()  # a slot freed between our look and the queue
        if reject:
            self._reject()
        if self.events.active:
            self.events.emit(BulkheadWaiting(self.name, queued))
        return True

    def _grant_free_slots(self) -> None:
        with self._lock:
            self._grant_free_slots_locked()

    def _grant_free_slots_locked(self) -> None:
        """Hand free slots to waiters, longest waiting first (the caller holds the lock)."""
        free = self._free
        waiters = self._waiters
        while self._queued:
            try:
                free.pop()
            except IndexError:
                return
            while True:  # find a waiter still waiting for this slot
                if not self._queued:
                    free.append(None)
                    return
                waiter = waiters.popleft()
                if waiter.state != _WAITING:
                    continue
                self._queued -= 1
                waiter.state = _GRANTED  # before the signal: a waiter on another thread may
                if _signal(waiter):  # wake before _signal even returns
                    break
                waiter.state = _GONE

    def _reject(self) -> None:
        if self.events.active:
            self.events.emit(BulkheadRejected(self.name, self.max_concurrent, self.max_wait))
        raise BulkheadFullError(self.name, self.max_concurrent, self.max_wait)

    # ---------------------------------------------------------------------- metrics

    def metrics(self) -> BulkheadMetrics:
        """Counters now: calls running, waiting, refused and finished."""
        with self._lock:
            return BulkheadMetrics(
                self.max_concurrent - len(self._free),
                self._queued,
                self._rejected,
                _count_of(self._completed),
                self.max_concurrent,
            )

    def __repr__(self) -> str:
        return (
            f"Bulkhead(max_concurrent={self.max_concurrent!r}, max_wait={self.max_wait!r}, "
            f"name={self.name!r})"
        )


def _signal(waiter: _SyncWaiter | _AsyncWaiter) -> bool:
    """Wake a granted waiter; ``False`` when it can never wake (its event loop is closed)."""
    if type(waiter) is _SyncWaiter:
        waiter.signal.release()
        return True
    if type(waiter) is _AsyncWaiter:
        if waiter.thread == threading.get_ident():
            _wake(waiter.future)
            return True
        try:
            waiter.loop.call_soon_threadsafe(_wake, waiter.future)
        except RuntimeError:  # the loop is closed
            return False
        return True
    return False  # pragma: no cover - there are only two kinds of waiter


def _count_of(counter: itertools.count[int]) -> int:
    """How many times ``next`` was called on a fresh ``itertools.count()`` (atomic counter)."""
    return int(repr(counter)[6:-1])


# ------------------------------------------------------------------ the thread pool


class ThreadPoolBulkhead(Policy):
    """Run calls on ``max_workers`` threads of its own, with at most ``queue_size`` waiting.

    :meth:`submit` returns a ``concurrent.futures.Future``; :meth:`call` waits for the
    result; :meth:`acall` awaits it without blocking the event loop. Work beyond
    ``max_workers + queue_size`` is refused with :class:`BulkheadQueueFullError` (a
    :class:`~seawall.errors.BulkheadFullError`). It runs sync functions: for coroutine
    functions use :class:`Bulkhead`.
    """

    def __init__(
        self,
        max_workers: int = 10,
        queue_size: int = 10,
        *,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "thread-pool-bulkhead",
    ) -> None:
        if (
            isinstance(max_workers, bool)
            or not isinstance(max_workers, int)
            or not 1 <= max_workers <= 10_000
        ):
            raise ConfigurationError(
                f"ThreadPoolBulkhead(max_workers={max_workers!r}) is invalid: max_workers must "
                "be an int in [1, 10000]"
            )
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 0:
            raise ConfigurationError(
                f"ThreadPoolBulkhead(queue_size={queue_size!r}) is invalid: queue_size must be "
                "an int >= 0 (0: refuse when every worker is busy)"
            )
        if not isinstance(clock, Clock):
            raise ConfigurationError(
                f"ThreadPoolBulkhead(clock={clock!r}) is invalid: pass a seawall.clock.Clock"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"ThreadPoolBulkhead(name={name!r}) is invalid: name must be a non-empty str"
            )
        self.max_workers = max_workers
        self.queue_size = queue_size
        self.clock = clock
        self.name = name
        self.events = EventHub(parent=hub)
        self._capacity = max_workers + queue_size
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers, thread_name_prefix=f"seawall-{name}"
        )
        self._lock = threading.Lock()
        self._active = 0
        self._queued = 0
        self._rejected = 0
        self._completed = 0

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn`` for a worker; raises :class:`BulkheadQueueFullError` when full."""
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"ThreadPoolBulkhead {self.name!r} runs sync functions on its threads; "
                f"{fn!r} is a coroutine function: use Bulkhead for async code"
            )
        with self._lock:
            if self._active + self._queued >= self._capacity:
                self._rejected += 1
                full = True
            else:
                self._queued += 1
                full = False
        if full:
            if self.events.active:
                self.events.emit(BulkheadRejected(self.name, self.max_workers, 0.0))
            raise BulkheadQueueFullError(self.name, self.max_workers, self.queue_size)
        try:
            context = contextvars.copy_context()  # the work sees the caller's context variables
            future = self._executor.submit(context.run, self._run, fn, args, kwargs)
        except BaseException:
            with self._lock:
                self._queued -= 1
            raise
        future.add_done_callback(self._forget_if_cancelled)
        return future

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        with self._lock:
            self._queued -= 1
            self._active += 1
        try:
            result = fn(*args, **kwargs)
        finally:
            with self._lock:
                self._active -= 1
                self._completed += 1
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"ThreadPoolBulkhead {self.name!r} got an awaitable from {fn!r}; it runs sync "
                "functions: use Bulkhead for async code"
            )
        return result

    def _forget_if_cancelled(self, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled():  # cancelled while queued: _run never ran
            with self._lock:
                self._queued -= 1

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on a worker thread and wait for its result."""
        return self.submit(fn, *args, **kwargs).result()

    async def acall(  # type: ignore[override]  # runs a sync fn on the pool, see docstring
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run sync ``fn`` on a worker thread and await its result without blocking the loop.

        Cancelling the awaiting task cancels the work if it has not started yet.
        """
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def metrics(self) -> BulkheadMetrics:
        """Counters now: calls running, queued, refused and finished."""
        with self._lock:
            return BulkheadMetrics(
                self._active, self._queued, self._rejected, self._completed, self.max_workers
            )

    def shutdown(self, wait: bool = True, *, cancel_pending: bool = False) -> None:
        """Stop accepting work; ``wait`` for running calls; ``cancel_pending`` drops the queue."""
        self._executor.shutdown(wait=wait, cancel_futures=cancel_pending)

    def __enter__(self) -> ThreadPoolBulkhead:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (
            f"ThreadPoolBulkhead(max_workers={self.max_workers!r}, "
            f"queue_size={self.queue_size!r}, name={self.name!r})"
        )
