"""The retry budget: retries limited to a share of recent requests, so a fleet cannot
turn a slow downstream into a retry storm.

Semantics follow Finagle's ``RetryBudget``: every first attempt deposits ``ratio``
tokens, every retry withdraws one, and a reserve of ``min_per_second * window`` tokens
lets low-traffic callers retry at all. Deposits and withdrawals expire ``window``
seconds after they happen (kept in ``slots`` time buckets, not a list per call), so
the budget tracks recent traffic only. Sans-I/O: every method takes ``now``.
"""

from __future__ import annotations

import math
import threading

from seawall.errors import ConfigurationError

__all__ = ["RetryBudget"]

_EPSILON = 1e-9  # 0.1 * 10 must buy one retry despite binary floating point


class RetryBudget:
    """Retries allowed: ``min_per_second * window + ratio * requests - retries`` over ``window``.

    Share one instance between every caller of a policy (it is thread-safe): with
    ``ratio=0.2`` the retries add at most 20% load to the downstream, plus the floor.
    ``now`` is a non-negative ``clock.now()`` value.
    """

    __slots__ = (
        "_current",
        "_current_requests",
        "_current_retries",
        "_lock",
        "_past_requests",
        "_past_retries",
        "_slot_requests",
        "_slot_retries",
        "_slots_per_second",
        "min_per_second",
        "ratio",
        "reserve",
        "slots",
        "window",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float = 10.0,
        *,
        slots: int = 10,
    ) -> None:
        _check_number("ratio", ratio, "a number >= 0 (0.2 lets retries add 20% load)")
        _check_number("min_per_second", min_per_second, "a number of retries per second >= 0")
        if isinstance(window, bool) or not isinstance(window, int | float) or not window > 0:
            raise ConfigurationError(
                f"RetryBudget(window={window!r}) is invalid: window must be seconds > 0"
            )
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 10_000:
            raise ConfigurationError(
                f"RetryBudget(slots={slots!r}) is invalid: slots must be an int in [1, 10000]"
            )
        self.ratio = float(ratio)
        self.min_per_second = float(min_per_second)
        self.window = float(window)
        self.slots = slots
        self.reserve = self.min_per_second * self.window
        """Tokens always available: the floor of ``min_per_second`` over one window."""
        self._slots_per_second = slots / self.window
        # The bucket being filled lives in two plain counters (cheap to bump); the ring
        # keeps the finished buckets of the window and ``_past_*`` their totals.
        self._current = -1
        self._current_requests = 0
        self._current_retries = 0
        self._slot_requests = [0] * slots
        self._slot_retries = [0] * slots
        self._past_requests = 0
        self._past_retries = 0
        self._lock = threading.Lock()

    def deposit(self, now: float) -> None:
        """Record a first attempt (a request): it earns ``ratio`` tokens for ``window`` seconds."""
        slot = int(now * self._slots_per_second)
        lock = self._lock
        lock.acquire()
        try:
            if slot != self._current:
                self._advance(slot)
            self._current_requests += 1
        finally:
            lock.release()

    def try_withdraw(self, now: float) -> bool:
        """Spend one token for a retry; ``False`` (and nothing spent) when the budget is empty."""
        slot = int(now * self._slots_per_second)
        with self._lock:
            if slot != self._current:
                self._advance(slot)
            if self._balance() < 1.0 - _EPSILON:
                return False
            self._current_retries += 1
            return True

    def balance(self, now: float) -> float:
        """Tokens available at ``now``: how many retries could start right away (may be < 0)."""
        slot = int(now * self._slots_per_second)
        with self._lock:
            if slot != self._current:
                self._advance(slot)
            return self._balance()

    def _balance(self) -> float:
        requests = self._past_requests + self._current_requests
        retries = self._past_retries + self._current_retries
        return self.reserve + self.ratio * requests - retries

    def _advance(self, slot: int) -> None:
        """Close the current bucket and expire those that left the window (lock held)."""
        current, slots = self._current, self.slots
        if slot < current:
            return  # a clock that went back: keep counting in the current bucket
        if slot - current >= slots:  # everything expired (or the first call)
            self._slot_requests = [0] * slots
            self._slot_retries = [0] * slots
            self._past_requests = 0
            self._past_retries = 0
        else:
            requests, retries = self._slot_requests, self._slot_retries
            index = current % slots
            requests[index] = self._current_requests
            retries[index] = self._current_retries
            self._past_requests += self._current_requests
            self._past_retries += self._current_retries
            for expired in range(current + 1, slot + 1):  # buckets of ``expired - slots``
                index = expired % slots
                self._past_requests -= requests[index]
                self._past_retries -= retries[index]
                requests[index] = 0
                retries[index] = 0
        self._current_requests = 0
        self._current_retries = 0
        self._current = slot

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio!r}, min_per_second={self.min_per_second!r}, "
            f"window={self.window!r}, slots={self.slots!r})"
        )


def _check_number(field: str, value: float, valid: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigurationError(
            f"RetryBudget({field}={value!r}) is invalid: {field} must be {valid}"
        )
