"""How a blocked sender or receiver waits and is woken, whether it is a thread or a task.

A waiter is the bare primitive the party blocks on: a locked ``_thread.lock`` for a
thread (waking releases it) or an ``asyncio.Future`` for a task (waking resolves it,
through ``call_soon_threadsafe`` when the waker runs on another thread). The buffer
core keeps waiters in plain deques and wakes one when the state they wait for may
have changed, without knowing which kind it woke.

A woken party always re-checks the state under the channel's lock (another party
may have barged in), so a wake is a hint, never a promise. The one rule that keeps
wakes from being lost: a party that was woken (popped from the deque) but leaves
without re-checking (cancelled, interrupted) passes the wake on.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from _thread import LockType, allocate_lock
from collections import deque
from collections.abc import Callable
from typing import Final, TypeAlias, TypeVar

from seawall.clock import Clock, MonotonicClock

__all__ = [
    "NOT_YET",
    "NotYet",
    "Waiter",
    "block_task",
    "block_thread",
    "discard",
    "wait_thread",
    "wake_all",
    "wake_one",
]

R = TypeVar("R")
A = TypeVar("A")

Waiter: TypeAlias = "asyncio.Future[bool] | LockType"
"""A blocked task's future, or a blocked thread's (locked) lock."""

_get_running_loop = asyncio.events._get_running_loop
_TIMEOUT_MAX = threading.TIMEOUT_MAX


class NotYet(enum.Enum):
    """The type of :data:`NOT_YET`."""

    NOT_YET = enum.auto()


NOT_YET: Final = NotYet.NOT_YET
"""What an attempt returns when its caller must wait and try again (never a user's item)."""


def wake_one(waiters: deque[Waiter]) -> None:
    """Wake the first waiter that can still be woken (skipping cancelled or stranded tasks)."""
    while waiters:
        waiter = waiters.popleft()
        if type(waiter) is LockType:
            waiter.release()
            return
        if waiter.done():  # a cancelled task: it passes on its own wakes
            continue
        loop = waiter.get_loop()  # _wake_task() inlined: this runs on every hand-over
        if _get_running_loop() is loop:
            waiter.set_result(True)
            return
        try:
            loop.call_soon_threadsafe(_resolve, waiter, True)
        except RuntimeError:  # the loop is closed: that task will never run again
            continue
        return


def wake_all(waiters: deque[Waiter]) -> None:
    """Wake every waiter (the channel closed: each must see it)."""
    while waiters:
        waiter = waiters.popleft()
        if type(waiter) is LockType:
            waiter.release()
        else:
            _wake_task(waiter)


def _wake_task(future: asyncio.Future[bool]) -> bool:
    """Resolve a task's future from whichever thread runs this; False if it is past waking."""
    if future.done():  # cancelled
        return False
    loop = future.get_loop()
    if _get_running_loop() is loop:
        future.set_result(True)
        return True
    try:
        loop.call_soon_threadsafe(_resolve, future, True)
    except RuntimeError:  # the loop is closed: that task will never run again
        return False
    return True


def _resolve(future: asyncio.Future[bool], woken: bool) -> None:
    if not future.done():
        future.set_result(woken)


def discard(waiters: deque[Waiter], waiter: Waiter, *, ready: bool) -> None:
    """Take ``waiter`` out of ``waiters`` as it leaves; call with the channel's lock held.

    If it is gone already it was woken, and its wake is passed on when ``ready`` says
    another party could use it; otherwise that wake would be lost.
    """
    try:
        waiters.remove(waiter)
    except ValueError:
        if ready:
            wake_one(waiters)


def wait_thread(waiter: LockType, timeout: float | None) -> bool:
    """Block on a thread waiter until woken (``True``) or ``timeout`` seconds pass."""
    if timeout is None:
        return waiter.acquire()
    return waiter.acquire(True, min(timeout, _TIMEOUT_MAX))


def block_thread(
    lock: threading.Lock,
    waiters: deque[Waiter],
    attempt: Callable[[A], R | NotYet],
    argument: A,
    *,
    max_wait: float | None,
    clock: Clock,
    expired: Callable[[float], BaseException],
    ready: Callable[[], bool],
    refuse: Callable[[], BaseException],
    blocked: Callable[[], None] | None = None,
) -> R:
    """Block the calling thread until ``attempt(argument)`` (run under ``lock``) succeeds.

    ``attempt`` returns :data:`NOT_YET` to wait, a result to finish, or raises. After
    ``max_wait`` seconds of ``clock`` the error ``expired(max_wait)`` is raised; ``refuse()``
    is raised instead of waiting on a thread that runs an event loop; ``blocked()`` runs
    once, when the first wait begins. ``ready()`` says whether a wake could serve
    another waiter (so it is passed on rather than lost).
    """
    deadline = None if max_wait is None else clock.now() + max_wait
    waiter: LockType | None = None
    while True:
        lock.acquire()
        try:
            result = attempt(argument)
            if result is not NOT_YET:
                if waiter is not None and waiters and ready():
                    wake_one(waiters)  # still room / items: keep the other waiters moving
                return result
            remaining = None
            if deadline is not None:
                remaining = deadline - clock.now()
                if remaining <= 0:
                    raise expired(max_wait or 0.0)
            if waiter is None:
                if _get_running_loop() is not None:
                    raise refuse()
                waiter = allocate_lock()
                waiter.acquire()
                if blocked is not None:
                    blocked()
            waiters.append(waiter)
        finally:
            lock.release()
        try:
            woken = wait_thread(waiter, remaining)
        except BaseException:
            with lock:
                discard(waiters, waiter, ready=ready())
            raise
        if not woken:
            with lock:
                discard(waiters, waiter, ready=False)


async def block_task(
    lock: threading.Lock,
    waiters: deque[Waiter],
    attempt: Callable[[A], R | NotYet],
    argument: A,
    *,
    max_wait: float | None,
    clock: Clock,
    expired: Callable[[float], BaseException],
    ready: Callable[[], bool],
    blocked: Callable[[], None] | None = None,
) -> R:
    """Suspend the calling task until ``attempt(argument)`` succeeds; see :func:`block_thread`.

    A cancelled task leaves cleanly: it withdraws its waiter, or passes on a wake it
    had already received.
    """
    deadline = None if max_wait is None else clock.now() + max_wait
    loop = asyncio.get_running_loop()
    waited = False
    while True:
        lock.acquire()
        try:
            result = attempt(argument)
            if result is not NOT_YET:
                if waited and waiters and ready():
                    wake_one(waiters)
                return result
            remaining = None
            if deadline is not None:
                remaining = deadline - clock.now()
                if remaining <= 0:
                    raise expired(max_wait or 0.0)
            if not waited and blocked is not None:
                blocked()
            future: asyncio.Future[bool] = loop.create_future()
            waiters.append(future)
        finally:
            lock.release()
        waited = True
        try:
            if remaining is None:
                woken = await future
            else:
                woken = await _wait_timed(future, loop, remaining, clock)
        except BaseException:
            with lock:
                discard(waiters, future, ready=ready())
            raise
        if not woken:
            with lock:
                discard(waiters, future, ready=False)


async def _wait_timed(
    future: asyncio.Future[bool], loop: asyncio.AbstractEventLoop, seconds: float, clock: Clock
) -> bool:
    """Await ``future`` until woken (``True``) or ``seconds`` of ``clock`` pass (``False``)."""
    if type(clock) is MonotonicClock:  # the loop's own timer measures the same clock
        handle = loop.call_later(seconds, _resolve, future, False)
        try:
            return await future
        finally:
            handle.cancel()
    timer = loop.create_task(clock.asleep(seconds))
    timer.add_done_callback(lambda _: _resolve(future, False))
    try:
        return await future
    finally:
        timer.cancel()
