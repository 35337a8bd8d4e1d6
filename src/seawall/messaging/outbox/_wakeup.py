"""Waking relays: an in-process doorbell, rung after an outbox commit.

``ring`` costs an integer increment when nobody waits. A waiter passes the
``generation`` it saw before looking at the outbox, so a ring between its look and
its wait is never missed. Threads and asyncio tasks can both wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

__all__ = ["Doorbell"]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Doorbell:
    """Wakes the relays of one outbox in this process when messages may be ready."""

    __slots__ = ("_async_waiters", "_condition", "_sleepers", "generation")

    def __init__(self) -> None:
        self.generation = 0
        self._sleepers = 0
        self._condition = threading.Condition(threading.Lock())
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    def ring(self) -> None:
        """Wake every waiter (call after the messages are committed)."""
        self.generation += 1
        if self._sleepers:
            with self._condition:
                self._condition.notify_all()
                for loop, future in self._async_waiters:
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(_resolve, future)

    def wait(self, seen: int, timeout: float) -> bool:
        """Block up to ``timeout`` seconds unless rung after ``seen``; True if rung."""
        with self._condition:
            self._sleepers += 1  # before the check: a ring after it sees a sleeper
            try:
                if self.generation == seen:
                    self._condition.wait(timeout)
            finally:
                self._sleepers -= 1
            return self.generation != seen

    async def await_ring(self, seen: int, seconds: float) -> bool:
        """Suspend up to ``seconds`` unless rung after ``seen``; True if rung."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._condition:
            self._sleepers += 1  # before the check: a ring after it sees a sleeper
            self._async_waiters.add(entry)
            if self.generation != seen:
                self._sleepers -= 1
                self._async_waiters.discard(entry)
                return True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, seconds)
        finally:
            with self._condition:
                self._sleepers -= 1
                self._async_waiters.discard(entry)
        return self.generation != seen
