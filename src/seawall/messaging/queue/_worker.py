"""The queue worker: consume a queue with bounded concurrency until told to stop.

::

    def send_email(body: dict) -> None: ...

    Worker(seawall.connect("sqlite:///shop.db").queue("emails"), send_email).run()

A :class:`Worker` receives at most as many messages as it has free slots (no
prefetch beyond its concurrency), runs the handler for each, extends the message's
visibility while the handler runs (a heartbeat), acknowledges on success, and on
failure gives the message back with a delay from a retry wait schedule (the
resilience layer's :func:`~seawall.resilience.exponential` and friends) chosen by the
delivery count. A message that fails on its last allowed delivery moves to the dead
letters with the handler's error.

``run()`` runs handlers in daemon threads; ``await arun()`` runs coroutine handlers
as asyncio tasks (and synchronous handlers in daemon threads). Both stop gracefully
on SIGTERM/SIGINT (when run in the main thread) or :meth:`Worker.stop`: receiving
stops, in-flight handlers get ``grace`` seconds to finish, and the messages of those
still running are then released (given back at once) so another worker takes them.

The decisions (free slots, heartbeat schedule, retry delays, counters) live in
:class:`WorkerCore`, a plain object fed the time; the two runners only wait and call
the queue.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import queue as queue_module
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock, MonotonicClock
from seawall.errors import ConfigurationError
from seawall.events import Event, EventHub, hub
from seawall.messaging.queue._errors import StaleReceiptError
from seawall.messaging.queue._model import Message
from seawall.messaging.queue._queue import Queue
from seawall.messaging.queue._validate import (
    MAX_BATCH,
    check_non_negative,
    check_positive,
    check_positive_int,
    error_text,
)

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.resilience._backoff import Wait

__all__ = [
    "FailurePlan",
    "HandlerFailed",
    "HeartbeatSent",
    "MessageHandled",
    "MessageReleased",
    "StoreCallFailed",
    "Worker",
    "WorkerCore",
    "WorkerStarted",
    "WorkerStats",
    "WorkerStopped",
    "current_message",
    "current_transaction",
]

T = TypeVar("T")

_logger = logging.getLogger("seawall.messaging.worker")

_DEFAULT_RETRY_WAIT = (1.0, 300.0)
"""``exponential(1.0, cap=300.0, jitter="full")``: 0-1 s, 0-2 s, 0-4 s, ... before a retry."""
_DEFAULT_RECONNECT_WAIT = (0.5, 30.0)
"""``exponential(0.5, cap=30.0, jitter="full")``: the pause after the n-th failed receive."""

_TICK = 0.05
"""Longest a runner waits in one go before it looks at the clock and the stop flag again."""
_MAX_REPLAYED_RETRIES = 64

_current_message: contextvars.ContextVar[Message | None] = contextvars.ContextVar(
    "seawall_current_message", default=None
)
_current_transaction: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
    "seawall_current_transaction", default=None
)


def current_message() -> Message | None:
    """The message whose handler is running in this thread or task, or None outside a handler.

    Lets a handler that takes the body reach the id, headers and delivery count
    (as Dramatiq's ``CurrentMessage`` or Celery's ``self.request`` do).
    """
    return _current_message.get()


def current_transaction() -> Transaction | None:
    """The transaction a transactional worker opened around this handler, or None.

    Write business rows through it (``current_transaction().execute(...)``): they
    commit together with the message's ack, or not at all.
    """
    return _current_transaction.get()


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerStarted(Event):
    """A worker began consuming ``queue``; ``source`` is the worker's name."""

    queue: str
    concurrency: int


@dataclass(frozen=True, slots=True)
class WorkerStopped(Event):
    """A worker stopped; the counts cover that run."""

    queue: str
    handled: int
    failed: int
    released: int


@dataclass(frozen=True, slots=True)
class MessageHandled(Event):
    """The handler finished a message and it was acknowledged (``duration`` in seconds)."""

    message_id: str
    delivery_count: int
    duration: float


@dataclass(frozen=True, slots=True)
class HandlerFailed(Event):
    """The handler raised; the message comes back after ``retry_in`` seconds or is dead.

    ``retry_in`` is None when the message went to the dead letters (``dead_lettered``).
    """

    message_id: str
    delivery_count: int
    error: str
    retry_in: float | None
    dead_lettered: bool


@dataclass(frozen=True, slots=True)
class MessageReleased(Event):
    """Shutting down, the worker gave back a message whose handler outran the grace period."""

    message_id: str
    delivery_count: int


@dataclass(frozen=True, slots=True)
class HeartbeatSent(Event):
    """The worker extended a running message's visibility by ``visibility_timeout`` seconds."""

    message_id: str
    visibility_timeout: float


@dataclass(frozen=True, slots=True)
class StoreCallFailed(Event):
    """A queue call failed: ``operation`` is receive, ack, nack, extend_visibility or dead_letter.

    ``stale`` is true when the receipt no longer held the message (another consumer
    received it after its visibility timeout); otherwise the engine failed and
    ``retry_in`` says when a failed receive is tried again.
    """

    operation: str
    error: str
    message_id: str | None
    stale: bool
    retry_in: float | None


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """What one run of a worker did so far.

    ``handled``: acknowledged after the handler returned; ``failed``: the handler
    raised; ``released``: given back at shutdown; ``stale``: the receipt went stale
    before the message was settled (another consumer received it); ``in_flight``:
    handlers running now.
    """

    handled: int
    failed: int
    released: int
    stale: int
    in_flight: int


# -- the sans-I/O core -------------------------------------------------------------------------


class _Delivery:
    """One message a worker holds, and when its next heartbeat is due."""

    __slots__ = ("beating", "message", "next_beat")

    def __init__(self, message: Message, next_beat: float) -> None:
        self.message = message
        self.next_beat = next_beat
        self.beating = True


@dataclass(frozen=True, slots=True)
class FailurePlan:
    """What to do with a message whose handler raised.

    ``dead_letter_reason`` set: move it to the dead letters with that reason now.
    Otherwise nack it with ``delay`` (``final``: that nack dead-letters it, since it
    was the last allowed delivery).
    """

    delay: float
    final: bool
    dead_letter_reason: str | None


class WorkerCore:
    """A worker's decisions without I/O: free slots, heartbeat schedule, retry delays, counts.

    Runners call :meth:`admit` for each received message, :meth:`due` to learn which
    running messages need a heartbeat at ``now``, :meth:`plan_failure` when a handler
    raises, and :meth:`finish` when a message is settled. Not thread-safe: the
    threaded runner holds its lock around every call.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        heartbeat: float,
        retry_wait: Wait,
        max_deliveries: int,
        dead_letter_on: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.concurrency = concurrency
        self.heartbeat = heartbeat
        self.retry_wait = retry_wait
        self.max_deliveries = max_deliveries
        self.dead_letter_on = dead_letter_on
        self.handled = 0
        self.failed = 0
        self.released = 0
        self.stale = 0
        self._deliveries: dict[tuple[str, str], _Delivery] = {}
        self._released: set[tuple[str, str]] = set()

    @property
    def in_flight(self) -> int:
        """Messages held now (handlers running)."""
        return len(self._deliveries)

    @property
    def free(self) -> int:
        """Slots free for new messages."""
        return self.concurrency - len(self._deliveries)

    def admit(self, message: Message, now: float) -> None:
        """Hold ``message`` (just received): its first heartbeat is due ``heartbeat`` s from now."""
        if len(self._deliveries) >= self.concurrency:
            raise RuntimeError(
                f"worker admitted more than concurrency={self.concurrency} messages (a bug)"
            )
        self._deliveries[(message.id, message.token)] = _Delivery(message, now + self.heartbeat)

    def finish(self, message: Message) -> None:
        """Forget ``message``: settled, or its handler returned after it was released."""
        key = (message.id, message.token)
        self._deliveries.pop(key, None)
        self._released.discard(key)

    def was_released(self, message: Message) -> bool:
        """Whether ``message`` was given back at shutdown while its handler still ran."""
        return (message.id, message.token) in self._released

    def release_all(self) -> list[Message]:
        """Take every held message out of the schedule to give it back; returns them."""
        released = [delivery.message for delivery in self._deliveries.values()]
        self._released.update(self._deliveries)
        self._deliveries.clear()
        self.released += len(released)
        return released

    def next_beat_at(self) -> float | None:
        """When the next heartbeat is due, or None when no held message needs one."""
        times = [d.next_beat for d in self._deliveries.values() if d.beating]
        return min(times) if times else None

    def due(self, now: float) -> list[Message]:
        """The held messages whose heartbeat is due at ``now``; each is rescheduled."""
        due: list[Message] = []
        for delivery in self._deliveries.values():
            if delivery.beating and delivery.next_beat <= now:
                delivery.next_beat = now + self.heartbeat
                due.append(delivery.message)
        return due

    def stop_beating(self, message: Message) -> None:
        """No more heartbeats for ``message`` (its receipt went stale)."""
        delivery = self._deliveries.get((message.id, message.token))
        if delivery is not None:
            delivery.beating = False

    def retry_delay(self, delivery_count: int) -> float:
        """Seconds before a message that failed on delivery ``delivery_count`` comes back.

        The wait schedule's retry number is the delivery count (1 after the first
        failure). Schedules that grow from the previous wait (decorrelated jitter)
        are replayed from the first retry, so each delay is a fair draw.
        """
        retries = max(1, min(delivery_count, _MAX_REPLAYED_RETRIES))
        previous = 0.0
        for retry in range(1, retries + 1):
            previous = self.retry_wait.next_wait(retry, previous)
        return previous if math.isfinite(previous) and previous > 0 else 0.0

    def plan_failure(self, delivery_count: int, error: BaseException) -> FailurePlan:
        """Decide how to give back a message whose handler raised ``error``."""
        if self.dead_letter_on and isinstance(error, self.dead_letter_on):
            return FailurePlan(
                0.0,
                True,
                f"handler raised {error_text(error)}; "
                f"{type(error).__name__} is in the worker's dead_letter_on",
            )
        if delivery_count >= self.max_deliveries:
            return FailurePlan(0.0, True, None)
        return FailurePlan(self.retry_delay(delivery_count), False, None)

    def stats(self) -> WorkerStats:
        """The counts so far."""
        return WorkerStats(self.handled, self.failed, self.released, self.stale, self.in_flight)


# -- helpers for the runners -------------------------------------------------------------------


class _StaleAckError(Exception):
    """The ack inside a handler's transaction was stale; raised to roll the transaction back."""


class _HandlerThreads:
    """A fixed set of daemon threads running submitted calls in order of submission.

    Daemon threads, so a handler that outlives the grace period cannot keep the
    process alive at exit (a thread pool executor's threads would).
    """

    def __init__(self, size: int, name: str) -> None:
        self._inbox: queue_module.SimpleQueue[Callable[[], None] | None] = (
            queue_module.SimpleQueue()
        )
        self._size = size
        for number in range(size):
            threading.Thread(
                target=self._serve, name=f"{name}-handler-{number + 1}", daemon=True
            ).start()

    def _serve(self) -> None:
        inbox = self._inbox
        while True:
            call = inbox.get()
            if call is None:
                return
            try:
                call()
            except BaseException:  # a bug in the runner itself: keep the thread serving
                _logger.exception("worker handler thread failed")

    def submit(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the next free thread."""
        self._inbox.put(call)

    async def run(self, function: Callable[[], T]) -> T:
        """Run ``function`` on a handler thread and await its result from the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def call() -> None:
            try:
                result = function()
            except BaseException as exc:
                _call_in_loop(loop, _set_exception, future, exc)
            else:
                _call_in_loop(loop, _set_result, future, result)

        self.submit(call)
        return await future

    def close(self) -> None:
        """Let each idle thread exit (a thread still in a handler exits when it returns)."""
        for _ in range(self._size):
            self._inbox.put(None)


def _call_in_loop(
    loop: asyncio.AbstractEventLoop, function: Callable[..., None], *args: Any
) -> None:
    with suppress(RuntimeError):  # the loop is closed: nobody waits for the result any more
        loop.call_soon_threadsafe(function, *args)


def _set_result(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _is_async_callable(function: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004  # an instance with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _refuse_awaitable(result: object) -> None:
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError(
            "the handler returned an awaitable: run coroutine handlers with "
            "`await worker.arun()` (the CLI does so by itself)"
        )


def _wait_schedule(field: str, value: object, default: tuple[float, float]) -> Wait:
    # Imported here: importing the queue package should not load every resilience policy.
    from seawall.resilience._backoff import Wait, constant, exponential

    if value is None:
        base, cap = default
        return exponential(base, cap=cap, jitter="full")
    if isinstance(value, Wait):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return constant(check_non_negative(field, value))
    raise ConfigurationError(
        f"{field}={value!r} must be a wait schedule (e.g. exponential(1.0, cap=300.0)) "
        "or a number of seconds"
    )


# -- the worker --------------------------------------------------------------------------------


class Worker:
    """Consumes a queue: bounded concurrency, heartbeats, ack/nack with backoff, graceful stop.

    The handler receives the message **body** (as Celery and Dramatiq tasks receive
    their arguments); ``pass_message=True`` passes the :class:`Message` instead, and
    :func:`current_message` reaches it from anywhere in the handler. A handler that
    returns acknowledges the message; one that raises gives it back after
    ``retry_wait.next_wait(delivery_count)`` seconds (default
    ``exponential(1.0, cap=300.0, jitter="full")``), or to the dead letters on its
    last allowed delivery (or at once for exceptions listed in ``dead_letter_on``).
    A failed receive pauses by ``reconnect_wait`` (default
    ``exponential(0.5, cap=30.0, jitter="full")``) before the next try.

    ``transaction`` (e.g. ``engine.transaction`` on SQLite or PostgreSQL) opens a
    transaction around each handler and acknowledges inside it: writes made through
    :func:`current_transaction` and the ack commit together, so each message's
    effect happens exactly once even if the worker is killed.

    See docs/messaging/worker.md for every option.
    """

    def __init__(
        self,
        queue: Queue,
        handler: Callable[[Any], Any],
        *,
        concurrency: int = 4,
        visibility_timeout: float | None = None,
        heartbeat: float | None = None,
        retry_wait: Wait | float | None = None,
        dead_letter_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        pass_message: bool = False,
        transaction: Callable[[], AbstractContextManager[Transaction]] | None = None,
        batch: int | None = None,
        poll_wait: float = 1.0,
        grace: float = 25.0,
        reconnect_wait: Wait | float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        name: str | None = None,
    ) -> None:
        if not isinstance(queue, Queue):
            raise ConfigurationError(
                f"queue={queue!r} must be a seawall Queue (open one with engine.queue(name))"
            )
        if not callable(handler):
            raise ConfigurationError(f"handler={handler!r} must be callable")
        self.queue = queue
        self.handler = handler
        self.concurrency = check_positive_int("concurrency", concurrency, MAX_BATCH)
        self.visibility_timeout = (
            queue.visibility_timeout
            if visibility_timeout is None
            else check_positive("visibility_timeout", visibility_timeout)
        )
        self.heartbeat = (
            self.visibility_timeout / 3.0
            if heartbeat is None
            else check_positive("heartbeat", heartbeat)
        )
        if self.heartbeat >= self.visibility_timeout:
            raise ConfigurationError(
                f"heartbeat={heartbeat!r} must be shorter than visibility_timeout="
                f"{self.visibility_timeout!r} (a third of it is a good choice); otherwise the "
                "message becomes visible to other consumers between two heartbeats"
            )
        self.retry_wait = _wait_schedule("retry_wait", retry_wait, _DEFAULT_RETRY_WAIT)
        self.reconnect_wait = _wait_schedule(
            "reconnect_wait", reconnect_wait, _DEFAULT_RECONNECT_WAIT
        )
        if isinstance(dead_letter_on, type):
            dead_letter_on = (dead_letter_on,)
        if not isinstance(dead_letter_on, tuple) or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in dead_letter_on
        ):
            raise ConfigurationError(
                f"dead_letter_on={dead_letter_on!r} must be an exception type or a tuple of them"
            )
        self.dead_letter_on: tuple[type[BaseException], ...] = dead_letter_on
        if not isinstance(pass_message, bool):
            raise ConfigurationError(f"pass_message={pass_message!r} must be True or False")
        self.pass_message = pass_message
        self._handler_is_async = _is_async_callable(handler)
        if transaction is not None:
            if not callable(transaction):
                raise ConfigurationError(
                    f"transaction={transaction!r} must be a callable returning a transaction "
                    "context manager, e.g. engine.transaction"
                )
            if self._handler_is_async:
                raise ConfigurationError(
                    "transaction=... needs a synchronous handler: the transaction belongs to "
                    "the thread that runs the handler; make the handler a plain function"
                )
        self.transaction = transaction
        self.batch = (
            self.concurrency if batch is None else check_positive_int("batch", batch, MAX_BATCH)
        )
        self.poll_wait = check_non_negative("poll_wait", poll_wait)
        self.grace = check_non_negative("grace", grace)
        if not callable(getattr(clock, "now", None)):
            raise ConfigurationError(f"clock={clock!r} must be a seawall Clock (now/sleep/asleep)")
        self.clock = clock
        self.name = f"worker:{queue.name}" if name is None else str(name)
        self.events = EventHub(parent=hub)
        self._real_time = isinstance(clock, MonotonicClock)
        self._core = self._new_core()
        self._condition = threading.Condition()
        self._running = False
        self._stopping = False
        self._finished = False
        self._stop_grace: float | None = None
        self._stop_requested_at: float | None = None
        self._signals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._beat_wake: asyncio.Event | None = None

    def _new_core(self) -> WorkerCore:
        return WorkerCore(
            concurrency=self.concurrency,
            heartbeat=self.heartbeat,
            retry_wait=self.retry_wait,
            max_deliveries=self.queue.max_deliveries,
            dead_letter_on=self.dead_letter_on,
        )

    # -- public control --------------------------------------------------------------------

    @property
    def handler_is_async(self) -> bool:
        """Whether the handler is a coroutine function (run the worker with ``arun``)."""
        return self._handler_is_async

    @property
    def running(self) -> bool:
        """Whether ``run``/``arun`` is running now."""
        return self._running

    def stats(self) -> WorkerStats:
        """Counts of the current (or last) run: handled, failed, released, stale, in flight."""
        return self._core.stats()

    def stop(self, *, grace: float | None = None) -> None:
        """Ask the running worker to stop: no more receives; in-flight handlers get ``grace`` s.

        Returns at once; ``run``/``arun`` return when the worker has stopped. Safe
        from any thread and from a signal handler. ``grace`` overrides the worker's
        grace period (``stop(grace=0)`` releases running messages at once). No effect
        when the worker is not running.
        """
        if self._request_stop(grace) and self._loop is None:
            with self._condition:
                self._condition.notify_all()

    def _request_stop(self, grace: float | None) -> bool:
        """Set the stop flags (no lock taken: a signal handler calls this); False if not running."""
        if not self._running:
            return False
        if grace is not None:
            self._stop_grace = check_non_negative("grace", grace)
        if not self._stopping:
            self._stop_requested_at = self.clock.now()
            self._stopping = True
        loop = self._loop
        if loop is not None:
            _call_in_loop(loop, self._wake_tasks)
        return True

    async def astop(self, *, grace: float | None = None) -> None:
        """Ask the worker to stop (see :meth:`stop`) and wait until ``arun`` has returned."""
        self.stop(grace=grace)
        while self._running:
            changed = self._changed
            if changed is None:
                await asyncio.sleep(_TICK)
                continue
            changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), _TICK)

    def _wake_tasks(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _current_grace(self) -> float:
        return self.grace if self._stop_grace is None else self._stop_grace

    def _grace_deadline(self) -> float:
        """When running handlers must have finished: the grace period counts from the stop request."""
        requested = self._stop_requested_at
        started = self.clock.now() if requested is None else requested
        return started + self._current_grace()

    def _begin(self) -> None:
        if self._running:
            raise RuntimeError(f"worker {self.name!r} is already running")
        self._running = True
        self._stopping = False
        self._finished = False
        self._stop_grace = None
        self._stop_requested_at = None
        self._signals = 0
        self._core = self._new_core()

    def _end(self) -> WorkerStats:
        stats = self._core.stats()
        self._running = False
        self._stopping = False
        self._loop = None
        if self.events.active:
            self.events.emit(
                WorkerStopped(
                    self.name, self.queue.name, stats.handled, stats.failed, stats.released
                )
            )
        _logger.info(
            "worker %s stopped: %d handled, %d failed, %d released",
            self.name,
            stats.handled,
            stats.failed,
            stats.released,
        )
        return stats

    def _started(self) -> None:
        if self.events.active:
            self.events.emit(WorkerStarted(self.name, self.queue.name, self.concurrency))
        _logger.info(
            "worker %s consuming queue %r with concurrency %d",
            self.name,
            self.queue.name,
            self.concurrency,
        )

    def _install_signals(self) -> Callable[[], None]:
        """Stop gracefully on SIGTERM/SIGINT (a second signal skips the grace period)."""
        if threading.current_thread() is not threading.main_thread():
            return _nothing
        previous: dict[int, Any] = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # Flags only: the threaded runner's waits look at them every tick, and taking
            # a lock here could interleave with the interrupted main thread's own use of it.
            self._signals += 1
            self._request_stop(0.0 if self._signals > 1 else None)

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, on_signal)

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

        return restore

    def _argument(self, message: Message) -> Any:
        return message if self.pass_message else message.body

    # -- shared settlement bookkeeping -----------------------------------------------------

    def _invoke_sync(self, message: Message) -> bool:
        """Run a synchronous handler in this thread; True if it was acked inside its transaction.

        Raises what the handler raised; raises :class:`_StaleAckError` when the ack inside
        the transaction was stale (the transaction, and the handler's writes, rolled back).
        """
        message_token = _current_message.set(message)
        try:
            transaction = self.transaction
            if transaction is None:
                _refuse_awaitable(self.handler(self._argument(message)))
                return False
            with transaction() as tx:
                tx_token = _current_transaction.set(tx)
                try:
                    _refuse_awaitable(self.handler(self._argument(message)))
                finally:
                    _current_transaction.reset(tx_token)
                try:
                    self.queue.ack(message, transaction=tx)
                except StaleReceiptError as exc:
                    raise _StaleAckError(str(exc)) from exc  # leaving the block rolls back
            return True
        finally:
            _current_message.reset(message_token)

    def _handled(self, message: Message, started: float) -> None:
        if self.events.active:
            self.events.emit(
                MessageHandled(
                    self.name, message.id, message.delivery_count, self.clock.now() - started
                )
            )

    def _report_failure(
        self, message: Message, error: BaseException, plan: FailurePlan, settled: bool
    ) -> None:
        dead = plan.final and settled
        retry_in = None if plan.final else plan.delay
        if self.events.active:
            self.events.emit(
                HandlerFailed(
                    self.name,
                    message.id,
                    message.delivery_count,
                    error_text(error) or type(error).__name__,
                    retry_in,
                    dead,
                )
            )
        if dead:
            outcome = "moved to the dead letters"
        elif settled:
            outcome = f"delivered again in {plan.delay:.3g} s"
        else:
            outcome = (
                "not given back (see the store error); redelivered after its visibility timeout"
            )
        _logger.warning(
            "handler failed on message %s of queue %r (delivery %d of %d): %s",
            message.id,
            self.queue.name,
            message.delivery_count,
            self.queue.max_deliveries,
            outcome,
            exc_info=error,
        )

    def _store_failed(
        self,
        operation: str,
        error: BaseException,
        message: Message | None,
        retry_in: float | None = None,
    ) -> None:
        stale = isinstance(error, StaleReceiptError | _StaleAckError)
        if self.events.active:
            self.events.emit(
                StoreCallFailed(
                    self.name,
                    operation,
                    error_text(error) or type(error).__name__,
                    None if message is None else message.id,
                    stale,
                    retry_in,
                )
            )
        if stale:
            _logger.warning(
                "%s of message %s on queue %r came too late: another consumer received it "
                "after its visibility timeout (raise visibility_timeout, keep handlers idempotent)",
                operation,
                None if message is None else message.id,
                self.queue.name,
            )
        elif retry_in is not None:
            _logger.warning(
                "%s on queue %r failed (%s); trying again in %.3g s",
                operation,
                self.queue.name,
                error_text(error),
                retry_in,
            )
        else:
            _logger.warning(
                "%s of message %s on queue %r failed (%s); the message is delivered again "
                "after its visibility timeout",
                operation,
                None if message is None else message.id,
                self.queue.name,
                error_text(error),
            )

    def _release_text(self) -> str:
        return (
            f"released by {self.name}: it shut down before the handler finished "
            f"(grace {self._current_grace():g} s)"
        )

    def _late_finish(self, message: Message) -> None:
        _logger.info(
            "handler for message %s finished after it was released at shutdown; it was not "
            "acknowledged and will be processed again",
            message.id,
        )

    # -- threads: run() --------------------------------------------------------------------

    def run(self, *, stop_when_empty: bool = False, handle_signals: bool = True) -> WorkerStats:
        """Consume until stopped, running handlers in ``concurrency`` daemon threads.

        ``stop_when_empty`` returns once no message is ready and none is in flight
        (delayed messages stay queued). ``handle_signals`` (main thread only) makes
        SIGTERM/SIGINT stop gracefully; a second signal releases running messages at once.
        Returns the run's counts.
        """
        if self._handler_is_async:
            raise ConfigurationError(
                f"handler {self.handler!r} is a coroutine function: run it with "
                "`await worker.arun()`"
            )
        _refuse_running_loop(self.name)
        self._begin()
        threads: _HandlerThreads | None = None
        heartbeat: threading.Thread | None = None
        restore = _nothing
        try:
            if handle_signals:
                restore = self._install_signals()
            threads = _HandlerThreads(self.concurrency, self.name)
            heartbeat = threading.Thread(
                target=self._beat_loop, name=f"{self.name}-heartbeat", daemon=True
            )
            heartbeat.start()
            self._started()
            self._fetch_loop(threads, stop_when_empty)
            self._drain()
        finally:
            restore()
            with self._condition:
                self._finished = True  # the heartbeat thread exits
                self._condition.notify_all()
            self._release_in_flight()
            if threads is not None:
                threads.close()
            if heartbeat is not None:
                heartbeat.join(timeout=1.0)
            stats = self._end()
        return stats

    def _wait(self, timeout: float | None) -> None:
        """Wait on the condition (held) for a change, at most ``timeout`` (ticks on manual clocks)."""
        if not self._real_time:
            timeout = _TICK if timeout is None else min(timeout, _TICK)
        self._condition.wait(timeout)

    def _fetch_loop(self, threads: _HandlerThreads, stop_when_empty: bool) -> None:
        condition = self._condition
        core = self._core
        wait = 0.0 if stop_when_empty else self.poll_wait
        failures = 0
        while not self._stopping:
            with condition:
                while core.free <= 0 and not self._stopping:
                    condition.wait(_TICK)
                if self._stopping:
                    return
                want = min(core.free, self.batch)
            try:
                messages = self.queue.receive(
                    want, visibility_timeout=self.visibility_timeout, wait=wait
                )
            except Exception as exc:
                failures += 1
                delay = self._reconnect_delay(failures)
                resume_at = self.clock.now() + delay  # before the report: a listener may act on it
                self._store_failed("receive", exc, None, delay)
                self._pause_until(resume_at)
                continue
            failures = 0
            if messages:
                now = self.clock.now()
                with condition:
                    for message in messages:
                        core.admit(message, now)
                    condition.notify_all()
                for message in messages:
                    threads.submit(functools.partial(self._handle_in_thread, core, message))
                continue
            with condition:
                if stop_when_empty and core.in_flight == 0:
                    return
                if stop_when_empty or wait <= 0:
                    condition.wait(_TICK)

    def _reconnect_delay(self, failures: int) -> float:
        delay = self.reconnect_wait.next_wait(failures, 0.0)
        return delay if math.isfinite(delay) and delay > 0 else 0.0

    def _pause_until(self, deadline: float) -> None:
        """Wait until ``deadline`` on the worker's clock, or less if asked to stop."""
        with self._condition:
            while not self._stopping:
                remaining = deadline - self.clock.now()
                if remaining <= 0:
                    return
                self._condition.wait(min(remaining, _TICK))

    def _log_stopping(self, running: int) -> None:
        _logger.info(
            "worker %s stopping: no longer receiving; waiting up to %g s for %d running handler(s)",
            self.name,
            self._current_grace(),
            running,
        )

    def _drain(self) -> None:
        """Wait up to the grace period (on the worker's clock) for running handlers."""
        with self._condition:
            if self._stopping:
                self._log_stopping(self._core.in_flight)
            while self._core.in_flight:
                remaining = self._grace_deadline() - self.clock.now()
                if remaining <= 0:
                    return
                self._condition.wait(min(remaining, _TICK))

    def _release_in_flight(self) -> None:
        with self._condition:
            released = self._core.release_all()
        for message in released:
            try:
                self.queue.nack(message, delay=0.0, error=self._release_text())
            except Exception as exc:
                self._store_failed("nack", exc, message)
            self._report_release(message)

    def _report_release(self, message: Message) -> None:
        if self.events.active:
            self.events.emit(MessageReleased(self.name, message.id, message.delivery_count))
        _logger.warning(
            "released message %s of queue %r: its handler outran the %g s grace period",
            message.id,
            self.queue.name,
            self._current_grace(),
        )

    def _handle_in_thread(self, core: WorkerCore, message: Message) -> None:
        """Run the handler for one message on a handler thread and settle the message.

        ``core`` is the run's core (a handler outliving its run must not touch the next one's).
        """
        started = self.clock.now()
        try:
            try:
                acked = self._invoke_sync(message)
            except _StaleAckError as exc:
                self._settled_stale(core, message, exc)
                return
            except BaseException as exc:  # a handler may raise anything; the thread lives on
                self._fail_sync(core, message, exc)
                return
            with self._condition:
                released = core.was_released(message)
            if released:
                self._late_finish(message)
                return
            if not acked:
                try:
                    self.queue.ack(message)
                except StaleReceiptError as exc:
                    self._settled_stale(core, message, exc)
                    return
                except Exception as exc:
                    self._store_failed("ack", exc, message)
                    return
            with self._condition:
                core.handled += 1
            self._handled(message, started)
        finally:
            with self._condition:
                core.finish(message)
                self._condition.notify_all()

    def _settled_stale(self, core: WorkerCore, message: Message, error: BaseException) -> None:
        with self._condition:
            released = core.was_released(message)
            if not released:
                core.stale += 1
        if released:
            self._late_finish(message)
            return
        self._store_failed("ack", error, message)

    def _fail_sync(self, core: WorkerCore, message: Message, error: BaseException) -> None:
        with self._condition:
            plan = None
            if not core.was_released(message):
                core.failed += 1
                plan = core.plan_failure(message.delivery_count, error)
        if plan is None:
            self._late_finish(message)
            return
        settled = True
        try:
            if plan.dead_letter_reason is not None:
                if not self.queue.store.dead_letter(
                    message.id, message.token, plan.dead_letter_reason
                ):
                    raise StaleReceiptError(self.queue.name, "dead_letter", [message.id])
            else:
                self.queue.nack(message, delay=plan.delay, error=error)
        except Exception as exc:
            settled = False
            operation = "dead_letter" if plan.dead_letter_reason is not None else "nack"
            self._store_failed(operation, exc, message)
        self._report_failure(message, error, plan, settled)

    def _beat_loop(self) -> None:
        """The heartbeat thread: extend each running message's visibility when it is due."""
        condition = self._condition
        core = self._core
        clock = self.clock
        while True:
            with condition:
                if self._finished:
                    return
                due_at = core.next_beat_at()
                now = clock.now()
                if due_at is None or due_at > now:
                    self._wait(None if due_at is None else due_at - now)
                    continue
                due = core.due(now)
            for message in due:
                self._beat_sync(core, message)

    def _beat_sync(self, core: WorkerCore, message: Message) -> None:
        try:
            self.queue.extend_visibility(message, self.visibility_timeout)
        except StaleReceiptError as exc:
            with self._condition:
                core.stop_beating(message)
            self._store_failed("extend_visibility", exc, message)
            return
        except Exception as exc:
            self._store_failed("extend_visibility", exc, message)
            return
        if self.events.active:
            self.events.emit(HeartbeatSent(self.name, message.id, self.visibility_timeout))

    # -- asyncio: arun() -------------------------------------------------------------------

    async def arun(
        self, *, stop_when_empty: bool = False, handle_signals: bool = True
    ) -> WorkerStats:
        """Asyncio twin of :meth:`run`: coroutine handlers run as tasks on this loop.

        A synchronous handler runs in ``concurrency`` daemon threads, so it never
        blocks the loop. Receives, acks and heartbeats are awaited on the loop.
        """
        self._begin()
        loop = asyncio.get_running_loop()
        self._loop = loop
        changed = self._changed = asyncio.Event()
        self._beat_wake = asyncio.Event()
        tasks: dict[asyncio.Task[None], Message] = {}
        threads: _HandlerThreads | None = None
        beating: asyncio.Task[None] | None = None
        restore = _nothing
        try:
            if handle_signals:
                restore = self._install_signals()
            if not self._handler_is_async:
                threads = _HandlerThreads(self.concurrency, self.name)
            beating = loop.create_task(self._abeat_loop(), name=f"{self.name}-heartbeat")
            self._started()
            await self._afetch_loop(tasks, threads, stop_when_empty)
            await self._adrain(tasks)
        finally:
            restore()
            await self._arelease_in_flight(tasks)
            if beating is not None:
                beating.cancel()
                await asyncio.gather(beating, return_exceptions=True)
            if threads is not None:
                threads.close()
            stats = self._end()
            self._changed = None
            self._beat_wake = None
            changed.set()  # wakes astop()
        return stats

    async def _await_change(self, at_most: float | None) -> None:
        """Suspend until a handler finishes or stop is asked (at most ``at_most`` real seconds)."""
        changed = self._changed
        assert changed is not None  # set by arun before any caller runs
        changed.clear()
        if at_most is None:
            await changed.wait()
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), at_most)

    async def _afetch_loop(
        self,
        tasks: dict[asyncio.Task[None], Message],
        threads: _HandlerThreads | None,
        stop_when_empty: bool,
    ) -> None:
        core = self._core
        loop = asyncio.get_running_loop()
        wait = 0.0 if stop_when_empty else self.poll_wait
        failures = 0
        while not self._stopping:
            while core.free <= 0 and not self._stopping:
                await self._await_change(None)
            if self._stopping:
                return
            try:
                messages = await self.queue.areceive(
                    min(core.free, self.batch),
                    visibility_timeout=self.visibility_timeout,
                    wait=wait,
                )
            except Exception as exc:
                failures += 1
                delay = self._reconnect_delay(failures)
                self._store_failed("receive", exc, None, delay)
                await self._apause(delay)
                continue
            failures = 0
            if messages:
                now = self.clock.now()
                for message in messages:
                    core.admit(message, now)
                    task = loop.create_task(self._ahandle(message, threads))
                    tasks[task] = message
                    task.add_done_callback(functools.partial(_forget_task, tasks))
                if self._beat_wake is not None:
                    self._beat_wake.set()
                continue
            if stop_when_empty and core.in_flight == 0:
                return
            if stop_when_empty or wait <= 0:
                await self._await_change(None if stop_when_empty else _TICK)

    async def _apause(self, seconds: float) -> None:
        """Wait ``seconds`` on the worker's clock, or less if asked to stop."""
        if seconds <= 0:
            return
        sleeper = asyncio.ensure_future(self.clock.asleep(seconds))
        try:
            while not sleeper.done() and not self._stopping:
                changed = self._changed
                assert changed is not None
                changed.clear()
                waiter = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        finally:
            sleeper.cancel()
            await asyncio.gather(sleeper, return_exceptions=True)

    async def _adrain(self, tasks: dict[asyncio.Task[None], Message]) -> None:
        """Wait up to the grace period (on the worker's clock) for running handlers."""
        if self._stopping:
            self._log_stopping(len(tasks))
        while tasks:
            remaining = self._grace_deadline() - self.clock.now()
            if remaining <= 0:
                return
            changed = self._changed
            assert changed is not None
            changed.clear()
            sleeper = asyncio.ensure_future(self.clock.asleep(remaining))
            waiter = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({*tasks, sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waiter.cancel()
                await asyncio.gather(sleeper, waiter, return_exceptions=True)

    async def _arelease_in_flight(self, tasks: dict[asyncio.Task[None], Message]) -> None:
        released = self._core.release_all()
        for message in released:
            try:
                await self.queue.anack(message, delay=0.0, error=self._release_text())
            except Exception as exc:
                self._store_failed("nack", exc, message)
            self._report_release(message)
        running = list(tasks)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _ahandle(self, message: Message, threads: _HandlerThreads | None) -> None:
        """Run the handler for one message as a task and settle the message."""
        core = self._core
        started = self.clock.now()
        try:
            try:
                if threads is None:
                    message_token = _current_message.set(message)
                    try:
                        result = self.handler(self._argument(message))
                        if inspect.isawaitable(result):
                            await result
                    finally:
                        _current_message.reset(message_token)
                    acked = False
                else:
                    acked = await threads.run(functools.partial(self._invoke_sync, message))
            except asyncio.CancelledError:
                if core.was_released(message):
                    return
                raise
            except _StaleAckError as exc:
                await self._asettled_stale(message, exc)
                return
            except Exception as exc:
                await self._afail(message, exc)
                return
            if core.was_released(message):
                self._late_finish(message)
                return
            if not acked:
                try:
                    await self.queue.aack(message)
                except StaleReceiptError as exc:
                    await self._asettled_stale(message, exc)
                    return
                except Exception as exc:
                    self._store_failed("ack", exc, message)
                    return
            core.handled += 1
            self._handled(message, started)
        finally:
            core.finish(message)
            if self._changed is not None:
                self._changed.set()

    async def _asettled_stale(self, message: Message, error: BaseException) -> None:
        if self._core.was_released(message):
            self._late_finish(message)
            return
        self._core.stale += 1
        self._store_failed("ack", error, message)

    async def _afail(self, message: Message, error: BaseException) -> None:
        core = self._core
        if core.was_released(message):
            self._late_finish(message)
            return
        core.failed += 1
        plan = core.plan_failure(message.delivery_count, error)
        settled = True
        try:
            if plan.dead_letter_reason is not None:
                if not await self.queue.async_store.dead_letter(
                    message.id, message.token, plan.dead_letter_reason
                ):
                    raise StaleReceiptError(self.queue.name, "dead_letter", [message.id])
            else:
                await self.queue.anack(message, delay=plan.delay, error=error)
        except Exception as exc:
            settled = False
            operation = "dead_letter" if plan.dead_letter_reason is not None else "nack"
            self._store_failed(operation, exc, message)
        self._report_failure(message, error, plan, settled)

    async def _abeat_loop(self) -> None:
        """The heartbeat task: extend each running message's visibility when it is due."""
        core = self._core
        clock = self.clock
        while True:
            due_at = core.next_beat_at()
            if due_at is None:
                wake = self._beat_wake
                if wake is None:
                    return
                wake.clear()
                await wake.wait()
                continue
            delay = due_at - clock.now()
            if delay > 0:
                await clock.asleep(delay)
                continue
            for message in core.due(clock.now()):
                await self._abeat(message)

    async def _abeat(self, message: Message) -> None:
        try:
            await self.queue.aextend_visibility(message, self.visibility_timeout)
        except StaleReceiptError as exc:
            self._core.stop_beating(message)
            self._store_failed("extend_visibility", exc, message)
            return
        except Exception as exc:
            self._store_failed("extend_visibility", exc, message)
            return
        if self.events.active:
            self.events.emit(HeartbeatSent(self.name, message.id, self.visibility_timeout))

    def __repr__(self) -> str:
        return (
            f"Worker({self.name!r}, queue={self.queue.name!r}, concurrency={self.concurrency}, "
            f"running={self._running})"
        )


def _refuse_running_loop(name: str) -> None:
    """``run`` blocks: on a thread with a running event loop it would freeze the loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    from seawall.messaging.channel import BlockingInEventLoopError

    raise BlockingInEventLoopError(name, "run", "worker.arun")


def _forget_task(tasks: dict[asyncio.Task[None], Message], task: asyncio.Task[None]) -> None:
    tasks.pop(task, None)


def _nothing() -> None:
    """Restore nothing (signal handlers were not installed)."""
