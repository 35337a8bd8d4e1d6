"""The simulation's heart: a clock the scheduler moves, and one queue of future events.

Everything that happens in a simulated run is an event on this queue: a message
arriving, a timer firing, a node crashing or restarting. Events run one at a time in
order of ``(time, sequence)``; the sequence number breaks ties in the order events
were scheduled, so a run depends on nothing but its seed. No threads, no wall clock.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Final

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError

__all__ = ["Scheduler", "SimulatedClock", "Timer", "derived_random"]


def derived_random(seed: int, stream: str) -> random.Random:
    """An independent random stream named ``stream`` of a run's ``seed``.

    Seeding with text hashes it with SHA-512 (not ``hash()``), so the stream is the
    same in every process whatever ``PYTHONHASHSEED`` is.
    """
    return random.Random(f"seawall-simulation:{seed}:{stream}")


class SimulatedClock(ManualClock):
    """A :class:`~seawall.clock.ManualClock` whose time only the scheduler moves.

    Policies built with it (retry waits, breaker open periods) see simulated seconds.
    ``sleep`` keeps the manual clock's meaning (record and advance), but code under
    simulation should schedule a timer instead of sleeping.
    """

    __slots__ = ()

    def advance_to(self, moment: float) -> None:
        """Move time forward to ``moment`` (never back)."""
        now = self.now()
        if moment > now:
            self.advance(moment - now)


class Timer:
    """A scheduled event; :meth:`cancel` keeps it from running."""

    __slots__ = ("at", "callback", "cancelled", "incarnation", "label", "owner")

    def __init__(
        self,
        at: float,
        callback: Callable[[], None],
        label: str,
        owner: object | None,
        incarnation: int,
    ) -> None:
        self.at = at
        self.callback = callback
        self.label = label
        self.owner = owner
        self.incarnation = incarnation
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run this event."""
        self.cancelled = True

    def __repr__(self) -> str:
        return f"Timer(at={self.at!r}, label={self.label!r}, cancelled={self.cancelled!r})"


_NO_OWNER: Final = -1


class Scheduler:
    """The queue of future events of one simulated run, in ``(time, sequence)`` order.

    An event owned by a node (``owner``) is skipped if that node crashed after
    scheduling it: a crash loses every timer of the old incarnation.
    """

    __slots__ = ("_heap", "_sequence", "clock", "executed")

    def __init__(self, clock: SimulatedClock | None = None) -> None:
        self.clock = clock if clock is not None else SimulatedClock()
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self.executed = 0
        """Events run so far (skipped ones excluded)."""

    def now(self) -> float:
        """The simulated time."""
        return self.clock.now()

    def at(
        self,
        moment: float,
        callback: Callable[[], None],
        *,
        label: str = "",
        owner: object | None = None,
    ) -> Timer:
        """Run ``callback`` at simulated time ``moment`` (not before now)."""
        moment = max(moment, self.clock.now())
        incarnation = getattr(owner, "incarnation", _NO_OWNER) if owner is not None else _NO_OWNER
        timer = Timer(moment, callback, label, owner, incarnation)
        heapq.heappush(self._heap, (moment, next(self._sequence), timer))
        return timer

    def after(
        self,
        delay: float,
        callback: Callable[[], None],
        *,
        label: str = "",
        owner: object | None = None,
    ) -> Timer:
        """Run ``callback`` ``delay`` simulated seconds from now."""
        if not delay >= 0:
            raise ConfigurationError(f"Scheduler.after(delay={delay!r}) needs a delay >= 0")
        return self.at(self.clock.now() + delay, callback, label=label, owner=owner)

    def pending(self) -> int:
        """Events still queued (cancelled ones included until they are popped)."""
        return len(self._heap)

    def idle(self) -> bool:
        """True when no live event is left."""
        heap = self._heap
        while heap and not self._live(heap[0][2]):
            heapq.heappop(heap)
        return not heap

    def next_time(self) -> float | None:
        """When the next live event runs, or ``None`` when none is left."""
        if self.idle():
            return None
        return self._heap[0][0]

    def step(self) -> bool:
        """Run the next live event; ``False`` when none is left."""
        heap = self._heap
        while heap:
            moment, _, timer = heapq.heappop(heap)
            if not self._live(timer):
                continue
            self.clock.advance_to(moment)
            self.executed += 1
            timer.callback()
            return True
        return False

    @staticmethod
    def _live(timer: Timer) -> bool:
        if timer.cancelled:
            return False
        owner = timer.owner
        return owner is None or getattr(owner, "incarnation", _NO_OWNER) == timer.incarnation

    def __repr__(self) -> str:
        return f"Scheduler(now={self.clock.now()!r}, pending={len(self._heap)})"
