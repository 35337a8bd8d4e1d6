"""Timeout: give up on a call that takes longer than ``seconds``.

Async calls are cancelled: the awaited work receives ``CancelledError`` at the deadline
and the caller gets :class:`~seawall.errors.TimeoutExceededError`. Sync calls cannot be
interrupted in Python, so :meth:`Timeout.call` runs the function on a worker thread of a
bounded pool and stops *waiting* at the deadline; the worker thread keeps running until
the function returns on its own (counted as ``abandoned`` in :meth:`Timeout.metrics`).

Time comes from the injected clock. With the system clock the async path uses one
``loop.call_at`` timer (cheaper than ``asyncio.timeout``) and the sync path waits on an
event with the real timeout. With any other clock (a :class:`~seawall.clock.ManualClock`
in tests) the async path races the work against ``clock.asleep`` and the sync path
polls the clock every millisecond of real time, so a test moves time with
``clock.advance`` and never sleeps for real (see :func:`wait_signalled`).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
import queue
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar, cast

from seawall.clock import SYSTEM_CLOCK, Clock, MonotonicClock
from seawall.errors import ConfigurationError, TimeoutExceededError
from seawall.events import Event, EventHub, hub
from seawall.resilience._policy import Policy

__all__ = [
    "DEFAULT_TIMEOUT_WORKERS",
    "TimedOut",
    "Timeout",
    "TimeoutMetrics",
    "remaining_time",
    "wait_signalled",
]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_TIMEOUT_WORKERS: Final = 32
"""Size of the worker pool that every sync :class:`Timeout` shares by default."""

MANUAL_CLOCK_POLL: Final = 0.001
"""Real seconds between two looks at a non-system clock while a sync caller waits."""

_WORKER_IDLE_EXIT: Final = 30.0  # real seconds an idle pool thread lingers before exiting


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class TimedOut(Event):
    """A call did not finish within ``timeout`` seconds and its caller was released.

    ``abandoned`` is true when a sync call's worker thread was left running.
    """

    timeout: float
    abandoned: bool


@dataclass(frozen=True, slots=True)
class TimeoutMetrics:
    """A snapshot of one :class:`Timeout`'s counters."""

    timed_out: int
    """Calls that hit the deadline (sync and async)."""
    abandoned: int
    """Sync calls whose worker thread was still running at the deadline."""
    abandoned_running: int
    """Of those, how many are still running now (each holds a pool worker)."""


# ------------------------------------------------------------- waiting through a clock


def wait_signalled(wait: Callable[[float], bool], deadline: float, clock: Clock) -> bool:
    """Block until ``wait(seconds)`` reports a signal or ``clock.now()`` reaches ``deadline``.

    ``wait`` is a blocking primitive with a real-time timeout (``event.wait``, or a
    lock's ``acquire(True, seconds)``). With the system clock it is called once with
    the real time left. With any other clock it is called in slices of
    :data:`MANUAL_CLOCK_POLL` real seconds until ``clock.now()`` reaches the deadline,
    so another thread's ``ManualClock.advance`` ends the wait: the seam that lets sync
    tests drive timeouts without sleeping. The deadline is absolute so that time
    advanced before the wait begins still counts.
    """
    if type(clock) is MonotonicClock:
        return wait(max(0.0, deadline - clock.now()))
    while True:
        if clock.now() >= deadline:
            return wait(0.0)
        if wait(MANUAL_CLOCK_POLL):
            return True


# ---------------------------------------------------------------- remaining time


class _Deadline:
    """When the enclosing timeout fires, on the clock (or event loop) that measures it."""

    __slots__ = ("clock", "expired", "finished", "loop", "outer", "task", "when")

    def __init__(
        self,
        when: float,
        clock: Clock | None,
        loop: asyncio.AbstractEventLoop | None,
        task: asyncio.Task[Any] | None,
        outer: _Deadline | None,
    ) -> None:
        self.when = when
        self.clock = clock
        self.loop = loop
        self.task = task
        self.outer = outer
        self.expired = False
        self.finished = False

    def remaining(self) -> float:
        """Seconds until this deadline (infinite once its call has finished)."""
        if self.finished:
            return math.inf
        if self.loop is not None:
            return self.when - self.loop.time()
        if self.clock is not None:
            return self.when - self.clock.now()
        return math.inf


_current_deadline: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "seawall_timeout_deadline", default=None
)


def remaining_time() -> float | None:
    """Seconds left before the innermost enclosing :class:`Timeout` fires (``None`` outside one).

    Inner code can use it to pass a deadline on (an HTTP timeout, a database statement
    timeout) or to skip work that cannot finish in time. Never negative.
    """
    deadline = _current_deadline.get()
    remaining = math.inf
    while deadline is not None:
        remaining = min(remaining, deadline.remaining())
        deadline = deadline.outer
    return None if remaining == math.inf else max(0.0, remaining)


def _fire(deadline: _Deadline) -> None:
    """Timer callback: mark the deadline passed and cancel the task doing the work."""
    deadline.expired = True
    if deadline.task is not None:
        deadline.task.cancel()


async def _fire_at(clock: Clock, deadline: _Deadline) -> None:
    """Timer task for a non-system clock: sleep on the clock until the deadline, then fire."""
    delay = deadline.when - clock.now()
    if delay > 0:
        await clock.asleep(delay)
    _fire(deadline)


class _DeadlineQueue:
    """The pending deadlines of one :class:`Timeout` on one event loop, behind one timer.

    A ``loop.call_at`` handle per call costs more than the rest of the call; but the
    deadlines of one policy on one loop arrive in order (now + a fixed ``seconds``), so a
    FIFO and a single timer armed for the oldest unfinished deadline serve them all.
    Finished calls are dropped from the front as new ones arrive and when the timer
    fires, which then re-arms itself for the next unfinished deadline, if any.
    """

    __slots__ = ("entries", "loop", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # weak: the queue must not keep a finished loop alive
        self.entries: deque[_Deadline] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, deadline: _Deadline, loop: asyncio.AbstractEventLoop) -> None:
        entries = self.entries
        while entries and entries[0].finished:
            entries.popleft()
        entries.append(deadline)
        if self.timer is None:
            self.timer = loop.call_at(deadline.when, self._check)

    def _check(self) -> None:
        self.timer = None
        loop = self.loop()
        if loop is None:  # pragma: no cover - a callback runs only on a live loop
            return
        entries = self.entries
        now = loop.time()
        while entries:
            deadline = entries[0]
            if deadline.finished:
                entries.popleft()
            elif deadline.when <= now:
                entries.popleft()
                _fire(deadline)
            else:
                self.timer = loop.call_at(deadline.when, self._check)
                return


# ------------------------------------------------------------------ the worker pool

_PENDING: Final = 0
_RUNNING: Final = 1
_FINISHED: Final = 2
_CANCELLED: Final = 3
_ABANDONED: Final = 4


class _Job:
    """One sync call handed to a pool worker, with its outcome."""

    __slots__ = (
        "args",
        "clock",
        "context",
        "done",
        "exception",
        "finished_at",
        "fn",
        "kwargs",
        "owner",
        "result",
        "state",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: contextvars.Context,
        clock: Clock,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.context = context
        self.clock = clock
        self.done = threading.Event()
        self.state = _PENDING
        self.result: Any = None
        self.exception: BaseException | None = None
        self.finished_at = 0.0
        self.owner: Timeout | None = None


class _WorkerPool:
    """A bounded pool of daemon threads for sync timeouts.

    Daemon threads, so a call stuck forever cannot keep the interpreter from exiting
    (a ``ThreadPoolExecutor`` joins its workers at exit). Threads start on demand, up
    to ``max_workers``, and exit after idling for half a minute. When every worker is
    busy, jobs wait in the queue in order.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self.max_workers = max_workers
        self.name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # workers waiting for a job that nobody has claimed yet
        self._backlog = 0  # queued jobs that no worker has claimed yet
        self._numbers = itertools.count(1)

    def submit(self, job: _Job) -> None:
        """Queue ``job``; a worker (idle, new, or the next to finish) will run it."""
        start_thread = False
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self._threads < self.max_workers:
                self._threads += 1
                start_thread = True
            else:
                self._backlog += 1
        self._jobs.put(job)
        if start_thread:
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{next(self._numbers)}", daemon=True
            )
            thread.start()

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            try:
                job = jobs.get(timeout=_WORKER_IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # nobody claimed this worker: let it go
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue  # a submitter claimed us and its job is on the way
            _run_job(job)
            with self._lock:
                if self._backlog:
                    self._backlog -= 1
                else:
                    self._idle += 1


_JOB_LOCK = threading.Lock()  # guards job.state transitions between caller and worker


def _run_job(job: _Job) -> None:
    with _JOB_LOCK:
        if job.state != _PENDING:  # the caller gave up before the job started
            return
        job.state = _RUNNING
    try:
        job.result = job.context.run(job.fn, *job.args, **job.kwargs)
    except BaseException as exc:  # handed to the caller, who re-raises it
        job.exception = exc
    job.finished_at = job.clock.now()
    with _JOB_LOCK:
        owner = job.owner if job.state == _ABANDONED else None
        job.state = _FINISHED
        if owner is not None:
            owner._abandoned_running -= 1
    job.done.set()
    if owner is not None:  # nobody will read the outcome: drop references now
        job.result = job.exception = None


_shared_pool: _WorkerPool | None = None
_shared_pool_lock = threading.Lock()


def _get_shared_pool() -> _WorkerPool:
    global _shared_pool
    if _shared_pool is None:
        with _shared_pool_lock:
            if _shared_pool is None:
                _shared_pool = _WorkerPool(DEFAULT_TIMEOUT_WORKERS, "seawall-timeout")
    return _shared_pool


# ------------------------------------------------------------------------- the policy


class Timeout(Policy):
    """Give up on a call after ``seconds``, raising :class:`~seawall.errors.TimeoutExceededError`.

    ``acall`` cancels the awaited work. ``call`` runs the function on a pool worker
    thread and stops waiting at the deadline; the thread cannot be killed and runs on
    until the function returns (see the module docs and ``docs/resilience/timeout.md``).
    ``workers`` gives this policy its own pool of that many threads instead of the
    shared one of :data:`DEFAULT_TIMEOUT_WORKERS`.
    """

    def __init__(
        self,
        seconds: float,
        *,
        workers: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "timeout",
    ) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds < math.inf
        ):
            raise ConfigurationError(
                f"Timeout(seconds={seconds!r}) is invalid: seconds must be a finite number > 0"
            )
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 10_000
        ):
            raise ConfigurationError(
                f"Timeout(workers={workers!r}) is invalid: workers must be None (the shared "
                "pool) or an int in [1, 10000]"
            )
        if not isinstance(clock, Clock):
            raise ConfigurationError(
                f"Timeout(clock={clock!r}) is invalid: pass a seawall.clock.Clock"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"Timeout(name={name!r}) is invalid: name must be a non-empty str"
            )
        self.seconds = float(seconds)
        self.workers = workers
        self.clock = clock
        self.name = name
        self.events = EventHub(parent=hub)
        self._real_clock = type(clock) is MonotonicClock
        self._pool = _WorkerPool(workers, f"seawall-{name}") if workers is not None else None
        self._lock = threading.Lock()
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _DeadlineQueue] = (
            weakref.WeakKeyDictionary()
        )
        self._last_queue: _DeadlineQueue | None = None
        self._timed_out = 0
        self._abandoned = 0
        self._abandoned_running = 0

    # ------------------------------------------------------------------ sync runner

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on a pool worker thread and wait for it at most ``seconds``.

        The function sees the caller's context variables and :func:`remaining_time`.
        At the deadline the caller gets :class:`~seawall.errors.TimeoutExceededError`;
        a function that had not started yet is never run, one that had is abandoned.
        """
        clock = self.clock
        context = contextvars.copy_context()
        when = clock.now() + self.seconds
        context.run(
            _current_deadline.set, _Deadline(when, clock, None, None, _current_deadline.get())
        )
        job = _Job(fn, args, kwargs, context, clock)
        (self._pool or _get_shared_pool()).submit(job)
        if wait_signalled(job.done.wait, when, clock) and (
            self._real_clock or job.finished_at <= when
        ):
            if job.exception is not None:
                exception, job.exception = job.exception, None
                raise exception
            return cast(T, job.result)
        with _JOB_LOCK:
            abandoned = job.state == _RUNNING
            if job.state == _PENDING:
                job.state = _CANCELLED
            elif abandoned:
                job.state = _ABANDONED
                job.owner = self
                self._abandoned_running += 1
        with self._lock:
            self._timed_out += 1
            if abandoned:
                self._abandoned += 1
        if self.events.active:
            self.events.emit(TimedOut(self.name, self.seconds, abandoned))
        raise TimeoutExceededError(self.seconds)

    # ----------------------------------------------------------------- async runner

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn``; at the deadline cancel it and raise ``TimeoutExceededError``."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout.acall() must run inside an asyncio task")
        outer = _current_deadline.get()
        timer: asyncio.Task[None] | None = None
        if self._real_clock:
            loop = task.get_loop()
            deadline = _Deadline(loop.time() + self.seconds, None, loop, task, outer)
            queue = self._last_queue
            if queue is None or queue.loop() is not loop:
                queue = self._queue_for(loop)
            queue.add(deadline, loop)
        else:
            clock = self.clock
            deadline = _Deadline(clock.now() + self.seconds, clock, None, task, outer)
            timer = task.get_loop().create_task(_fire_at(clock, deadline))
        cancelling = task.cancelling()
        token = _current_deadline.set(deadline)
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            if deadline.expired:
                deadline.expired = False  # our cancel request is taken back just below
                if task.uncancel() <= cancelling:
                    self._async_timed_out()
                    raise TimeoutExceededError(self.seconds) from None
            raise
        finally:
            deadline.finished = True
            deadline.task = deadline.loop = None  # a queued entry must not pin them
            if timer is not None:
                timer.cancel()
            _current_deadline.reset(token)
            if deadline.expired:  # the work swallowed our cancellation: take it back
                task.uncancel()

    def _queue_for(self, loop: asyncio.AbstractEventLoop) -> _DeadlineQueue:
        """The deadline queue of ``loop`` (one per loop, so loops in other threads never mix)."""
        with self._lock:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = _DeadlineQueue(loop)
            self._last_queue = queue
        return queue

    def _async_timed_out(self) -> None:
        with self._lock:
            self._timed_out += 1
        if self.events.active:
            self.events.emit(TimedOut(self.name, self.seconds, False))

    # ---------------------------------------------------------------------- metrics

    def metrics(self) -> TimeoutMetrics:
        """Counters: calls timed out, sync calls abandoned, and those still running."""
        with _JOB_LOCK:
            running = self._abandoned_running
        with self._lock:
            return TimeoutMetrics(self._timed_out, self._abandoned, running)

    def __repr__(self) -> str:
        return f"Timeout({self.seconds!r}, name={self.name!r})"
