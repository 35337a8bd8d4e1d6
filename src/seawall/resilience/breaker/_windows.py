"""Sliding windows of call outcomes with O(1) work per call.

Both windows count calls with a lock-free :class:`CallCounter` and keep only the
*exceptional* outcomes (failures, slow calls) in deques. A plain success is one C
call (``itertools.count.__next__``); failures and slow calls are rare, so they pay
for the bookkeeping under the breaker's lock.

* :class:`CountOutcomes`: the last ``size`` calls. A failure remembers its position
  in the call sequence; it leaves the window once ``size`` newer calls exist.
* :class:`TimeOutcomes`: the calls of the last ``buckets`` buckets of
  ``width`` seconds. Each bucket remembers the call count when it began, so the
  calls in the window are "now" minus the mark of the oldest live bucket.

Every method except :attr:`CallCounter.add_one` must be called with the owning
breaker's lock held.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from typing import NamedTuple

from seawall.resilience.breaker._config import CountWindow, TimeWindow

__all__ = ["CallCounter", "CountOutcomes", "Outcomes", "TimeOutcomes", "WindowTotals"]


class CallCounter:
    """Counts calls from any thread without a lock.

    ``add_one`` is ``itertools.count().__next__``: a single C call, so under the GIL no
    increment is ever lost (``self.n += 1`` is three bytecodes and could be). Reading
    the count also advances the iterator, so reads are counted and subtracted; reads
    must therefore be serialised by the owner's lock.
    """

    __slots__ = ("_reads", "_sequence", "add_one")

    def __init__(self) -> None:
        self._sequence = itertools.count()
        self._reads = 0
        self.add_one = self._sequence.__next__

    def read(self) -> int:
        """Calls counted so far (caller holds the owner's lock)."""
        raw = next(self._sequence)
        value = raw - self._reads
        self._reads += 1
        return value

    def add_one_and_read(self) -> int:
        """Count one call and return the total including it (caller holds the lock)."""
        return next(self._sequence) - self._reads + 1


class WindowTotals(NamedTuple):
    """The calls, failures and slow calls currently inside a window."""

    calls: int
    failed: int
    slow: int


class Outcomes:
    """What the breaker core needs from a window (both implementations share it)."""

    __slots__ = ("add_success", "counter", "current", "dirty", "width")

    def __init__(self) -> None:
        self.counter = CallCounter()
        self.add_success = self.counter.add_one
        self.dirty = False
        """Set when time moved the window (old calls expired) since the last judgement."""
        self.width = math.inf
        """Seconds per bucket (a count window has one endless bucket)."""
        self.current = 0.0
        """The newest bucket; a call at ``now // width <= current`` needs no roll."""

    def reset(self, now: float) -> None:
        """Forget every outcome."""
        raise NotImplementedError

    def advance(self, now: float) -> None:
        """Let time move the window forward (no-op for a count window)."""

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Count one failed and/or slow call."""
        raise NotImplementedError

    def totals(self, now: float) -> WindowTotals:
        """The calls, failures and slow calls in the window at ``now``."""
        raise NotImplementedError


class CountOutcomes(Outcomes):
    """The last ``size`` calls."""

    __slots__ = ("_base", "_failures", "_size", "_slow")

    def __init__(self, window: CountWindow) -> None:
        super().__init__()
        self._size = window.size
        self._base = 0
        self._failures: deque[int] = deque()
        self._slow: deque[int] = deque()

    def reset(self, now: float) -> None:
        """Forget every outcome: calls counted so far fall before the window."""
        self._base = self.counter.read()
        self._failures.clear()
        self._slow.clear()

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Count one call at the next position and remember it if it failed or was slow."""
        position = self.counter.add_one_and_read()
        if failed:
            self._failures.append(position)
        if slow:
            self._slow.append(position)

    def totals(self, now: float) -> WindowTotals:
        """Calls in the window and the failures and slow calls among them."""
        total = self.counter.read()
        oldest_gone = total - self._size
        failures = self._failures
        while failures and failures[0] <= oldest_gone:
            failures.popleft()
        slow = self._slow
        while slow and slow[0] <= oldest_gone:
            slow.popleft()
        return WindowTotals(min(total - self._base, self._size), len(failures), len(slow))


class TimeOutcomes(Outcomes):
    """The calls of the last ``bucket_count`` buckets of ``bucket_width`` seconds."""

    __slots__ = ("_buckets", "_failures", "_marks", "_slow")

    def __init__(self, window: TimeWindow) -> None:
        super().__init__()
        self.width = window.bucket_width
        self._buckets = window.bucket_count
        self._marks: deque[tuple[float, int]] = deque()
        """(bucket, calls counted when it began), oldest first; empty buckets are skipped."""
        self._failures: deque[float] = deque()
        self._slow: deque[float] = deque()

    def bucket(self, now: float) -> float:
        """The bucket number of ``now`` (a whole float)."""
        return now // self.width

    def reset(self, now: float) -> None:
        """Forget every outcome; the window starts in the bucket of ``now``."""
        self.current = now // self.width
        self._marks.clear()
        self._marks.append((self.current, self.counter.read()))
        self._failures.clear()
        self._slow.clear()
        self.dirty = False

    def advance(self, now: float) -> None:
        """Open the bucket of ``now`` if time reached it; older buckets expire lazily."""
        bucket = now // self.width
        if bucket > self.current:
            self.current = bucket
            self._marks.append((bucket, self.counter.read()))
            self.dirty = True

    def record(self, now: float, failed: bool, slow: bool) -> None:
        """Count one call in the current bucket and remember it if it failed or was slow."""
        self.advance(now)
        self.counter.add_one()
        if failed:
            self._failures.append(self.current)
        if slow:
            self._slow.append(self.current)

    def totals(self, now: float) -> WindowTotals:
        """Calls in the live buckets and the failures and slow calls among them."""
        self.advance(now)
        oldest = self.current - self._buckets + 1
        marks = self._marks
        while marks[0][0] < oldest:  # the current bucket's mark always stays
            marks.popleft()
        failures = self._failures
        while failures and failures[0] < oldest:
            failures.popleft()
        slow = self._slow
        while slow and slow[0] < oldest:
            slow.popleft()
        calls = self.counter.read() - marks[0][1]
        return WindowTotals(calls, len(failures), len(slow))
