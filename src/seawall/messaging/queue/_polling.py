"""Long-poll for stores without a native blocking read: a doorbell plus capped polling.

A send in this process rings the queue's :class:`Doorbell`, waking receivers at once
(threads and asyncio tasks alike). Sends from other processes are seen by polling,
with pauses that start at 1 ms and double up to 50 ms (:class:`PollSchedule`). With
an injected clock (tests), pauses go through ``clock.sleep``/``asleep`` instead, so a
manual clock makes a long-poll finish instantly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock

__all__ = ["FIRST_PAUSE", "MAX_PAUSE", "Doorbell", "PollSchedule", "apoll", "poll"]

T = TypeVar("T")

FIRST_PAUSE = 0.001
"""Seconds before the second look at an empty queue."""
MAX_PAUSE = 0.05
"""Longest pause between looks: bounds the latency of a send from another process."""


class PollSchedule:
    """Pauses between polls of an empty queue: ``first``, doubling, capped at ``cap`` (sans-I/O)."""

    __slots__ = ("_next", "cap", "first")

    def __init__(self, first: float = FIRST_PAUSE, cap: float = MAX_PAUSE) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def pause(self, remaining: float) -> float:
        """The next pause, never longer than the ``remaining`` wait."""
        pause = self._next if self._next < remaining else remaining
        self._next = min(self._next * 2.0, self.cap)
        return pause

    def reset(self) -> None:
        """Start again from the shortest pause (after a wake-up)."""
        self._next = self.first


class Doorbell:
    """Wakes a queue's waiting receivers in this process when a message may be ready.

    ``ring`` costs one integer increment when nobody waits. A waiter passes the
    ``generation`` it saw before looking at the queue, so a ring between its look and
    its wait is never missed.
    """

    __slots__ = ("__weakref__", "_async_waiters", "_condition", "_sleepers", "generation")

    def __init__(self) -> None:
        self.generation = 0
        self._sleepers = 0
        self._condition = threading.Condition(threading.Lock())
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def ring(self) -> None:
        """Wake every waiter (call after the message is committed)."""
        self.generation += 1
        if self._sleepers:
            with self._condition:
                self._condition.notify_all()
                for loop, future in self._async_waiters:
                    loop.call_soon_threadsafe(_resolve, future)

    def wait(self, seen: int, timeout: float) -> bool:
        """Block up to ``timeout`` seconds unless a ring came after ``seen``; True if rung."""
        with self._condition:
            self._sleepers += 1
            try:
                if self.generation != seen:
                    return True
                self._condition.wait(timeout)
                return self.generation != seen
            finally:
                self._sleepers -= 1

    async def await_ring(self, seen: int, seconds: float) -> bool:
        """Asyncio twin of :meth:`wait`: suspend up to ``seconds``; True if rung."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._condition:
            self._sleepers += 1
            if self.generation != seen:
                self._sleepers -= 1
                return True
            self._async_waiters.add(entry)
        timer = loop.call_later(seconds, _resolve, future)
        try:
            await future
        finally:
            timer.cancel()
            with self._condition:
                self._async_waiters.discard(entry)
                self._sleepers -= 1
        return self.generation != seen


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def poll(
    attempt: Callable[[], list[T]],
    wait: float,
    doorbell: Doorbell,
    clock: Clock | None,
) -> list[T]:
    """Call ``attempt`` until it returns something or ``wait`` seconds pass.

    ``clock=None`` waits in real time on the doorbell; a clock waits with its ``sleep``.
    """
    seen = doorbell.generation
    found = attempt()
    if found or wait <= 0:
        return found
    timer = clock if clock is not None else SYSTEM_CLOCK
    deadline = timer.now() + wait
    schedule = PollSchedule()
    while True:
        remaining = deadline - timer.now()
        if remaining <= 0:
            return found
        pause = schedule.pause(remaining)
        if clock is None:
            if doorbell.wait(seen, pause):
                schedule.reset()
        else:
            clock.sleep(pause)
        seen = doorbell.generation
        found = attempt()
        if found:
            return found


async def apoll(
    attempt: Callable[[], Awaitable[list[T]]],
    wait: float,
    doorbell: Doorbell,
    clock: Clock | None,
) -> list[T]:
    """Asyncio twin of :func:`poll`: pauses suspend the task, never block the loop."""
    seen = doorbell.generation
    found = await attempt()
    if found or wait <= 0:
        return found
    timer = clock if clock is not None else SYSTEM_CLOCK
    deadline = timer.now() + wait
    schedule = PollSchedule()
    while True:
        remaining = deadline - timer.now()
        if remaining <= 0:
            return found
        pause = schedule.pause(remaining)
        if clock is None:
            if await doorbell.await_ring(seen, pause):
                schedule.reset()
        else:
            await clock.asleep(pause)
        seen = doorbell.generation
        found = await attempt()
        if found:
            return found
