"""Injected time: every duration in seawall is measured and waited through a ``Clock``.

Policies never call ``time.monotonic`` or ``time.sleep`` themselves; they ask the
clock they were given. Production code uses :class:`MonotonicClock` (the default);
tests pass a :class:`ManualClock` and move time by hand, so no test ever sleeps.

Clocks measure durations only (monotonic seconds as ``float``). Deadlines shared
between hosts live in the engine (PostgreSQL ``now()``, Redis ``TIME``), never here.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "MonotonicClock", "SYSTEM_CLOCK"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time and the two ways to wait for it."""

    def now(self) -> float:
        """Seconds on a monotonic scale; only differences are meaningful."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic``, ``time.sleep`` and ``asyncio.sleep``."""

    __slots__ = ()

    now = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of real time."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "MonotonicClock()"


SYSTEM_CLOCK: Clock = MonotonicClock()
"""The process-wide default clock."""


class ManualClock:
    """A clock that only moves when told to: the test double for every policy.

    ``sleep`` advances time at once and records the duration in ``sleeps``, so a
    retry loop under test finishes instantly and its waits can be asserted.

    ``asleep`` has two modes. With ``autojump=True`` (the default) it advances
    time by the duration and yields once to the event loop, like ``sleep``. With
    ``autojump=False`` the task waits until :meth:`advance` moves time past its
    deadline; that mode lets a test interleave several tasks (a hedged call, a
    timeout racing work) at exact instants.
    """

    __slots__ = ("_now", "_sequence", "_waiters", "autojump", "sleeps")

    def __init__(self, start: float = 0.0, *, autojump: bool = True) -> None:
        self._now = float(start)
        self.autojump = autojump
        self.sleeps: list[float] = []
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._sequence = itertools.count()

    def now(self) -> float:
        """The current manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every ``asleep`` whose deadline has passed."""
        if seconds < 0:
            raise ValueError(
                f"ManualClock.advance(seconds={seconds}) must be >= 0: time never goes back"
            )
        self._now += seconds
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    def sleep(self, seconds: float) -> None:
        """Record the wait and advance time by it, without blocking."""
        self.sleeps.append(seconds)
        if seconds > 0:
            self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` of manual time (see the class docstring for the two modes)."""
        self.sleeps.append(seconds)
        if self.autojump:
            if seconds > 0:
                self.advance(seconds)
            await asyncio.sleep(0)
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self._now + seconds, next(self._sequence), future))
        await future

    @property
    def pending_sleepers(self) -> int:
        """How many tasks are waiting in ``asleep`` (``autojump=False`` mode)."""
        return sum(1 for _, _, future in self._waiters if not future.done())

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r}, autojump={self.autojump!r})"
