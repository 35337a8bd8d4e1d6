"""The in-memory rate-limit store: state in this process, time from the injected clock.

Each limit keeps a dict of per-key states and runs its algorithm's kernel over it. The
read-modify-write of a key is guarded by a one-token deque (``pop`` claims the token,
``append`` returns it): both are atomic and cost a fraction of a lock's two calls, and
the rare contended case waits by yielding the CPU.

Idle keys cost nothing for long: when a new key makes the dict outgrow twice its size
after the last sweep, every key whose state is back to full is dropped (a full state is
the same as no state). ``max_keys`` is a hard cap: past it, the keys nearest their full
state are evicted first, which are also the least recently used, so the cap forgets as
little as possible.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from seawall.clock import Clock
from seawall.errors import ConfigurationError, EngineError
from seawall.resilience.ratelimit._algorithms import Kernel, RateLimitAlgorithm
from seawall.resilience.ratelimit._store import RateLimitDecision

__all__ = ["MemoryLimit", "MemoryRateLimitStore"]

DEFAULT_MAX_KEYS = 100_000
MIN_SWEEP_SIZE = 1024
"""No sweep runs before a limit holds this many keys."""
STUCK_AFTER = 30.0
"""Seconds a contended guard may wait before declaring the state stuck."""


class StateGuard:
    """Mutual exclusion from a one-token deque; see :class:`~._algorithms.KernelGuard`.

    Also a context manager for the slow paths (inspect, reset, sweep).
    """

    __slots__ = ("_tokens", "give", "take", "wait")

    def __init__(self) -> None:
        tokens: deque[bool] = deque((True,))
        self._tokens = tokens
        self.take: Callable[[], object] = tokens.pop
        self.give: Callable[[bool], object] = tokens.append
        self.wait: Callable[[], None] = self._wait

    def _wait(self) -> None:
        take = self._tokens.pop
        delay = 0.0
        waited = 0.0
        while True:
            time.sleep(delay)
            try:
                take()
                return
            except IndexError:
                waited += delay
                if waited > STUCK_AFTER:
                    raise EngineError(
                        f"in-memory rate-limit state stayed locked for {STUCK_AFTER:.0f}s: "
                        "a thread was interrupted while updating it; rebuild the limiter"
                    ) from None
                delay = min(delay * 2.0 or 1e-6, 1e-3)

    def __enter__(self) -> None:
        try:
            self.take()
        except IndexError:
            self._wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.give(True)


class MemoryLimit:
    """One named limit's keys in process memory; ``take`` is the algorithm's kernel."""

    local = True

    def __init__(
        self, algorithm: RateLimitAlgorithm, name: str, clock: Clock, max_keys: int | None
    ) -> None:
        self.algorithm = algorithm
        self.name = name
        self.clock = clock
        self.max_keys = max_keys
        self._states: dict[str, Any] = {}
        self._guard = StateGuard()
        self._now = clock.now
        self._sweep_size = MIN_SWEEP_SIZE if max_keys is None else min(MIN_SWEEP_SIZE, max_keys)
        self.take: Kernel = algorithm.kernel(self._states, clock.now, self._guard, self._new_key)

    def __len__(self) -> int:
        """How many keys hold state now (idle ones included until the next sweep)."""
        return len(self._states)

    async def atake(self, key: str, cost: int) -> float:
        """:meth:`take` for async callers (no thread hop: it never blocks)."""
        return self.take(key, cost)

    def decide(self, key: str, cost: int) -> RateLimitDecision:
        """Take the permits if available and report the key's numbers right after."""
        wait = self.take(key, cost)
        with self._guard:
            remaining, reset_after = self.algorithm.inspect(self._states.get(key), self._now())
        return RateLimitDecision(
            allowed=not wait,
            remaining=remaining,
            retry_after=wait,
            reset_after=reset_after,
            limit=self.algorithm.capacity,
        )

    async def adecide(self, key: str, cost: int) -> RateLimitDecision:
        """:meth:`decide` for async callers."""
        return self.decide(key, cost)

    def reset(self, key: str) -> None:
        """Forget ``key``."""
        with self._guard:
            self._states.pop(key, None)

    async def areset(self, key: str) -> None:
        """:meth:`reset` for async callers."""
        self.reset(key)

    def cleanup(self) -> int:
        """Drop every key back to its full state now; returns how many."""
        with self._guard:
            return self._sweep(self._now(), keep=None)

    def _new_key(self, key: str, moment: float) -> None:
        # called by the kernel, inside the guard, after it stored a new key's state
        if len(self._states) > self._sweep_size:
            self._sweep(moment, keep=key)

    def _sweep(self, moment: float, keep: str | None) -> int:
        states = self._states
        expires_at = self.algorithm.expires_at
        idle = [key for key, state in states.items() if expires_at(state) <= moment and key != keep]
        for key in idle:
            del states[key]
        removed = len(idle)
        max_keys = self.max_keys
        if max_keys is not None and len(states) > max_keys:
            target = max_keys - max_keys // 8
            victims = heapq.nsmallest(
                len(states) - target,
                ((expires_at(state), key) for key, state in states.items() if key != keep),
            )
            for _, key in victims:
                del states[key]
            removed += len(victims)
        size = max(MIN_SWEEP_SIZE, 2 * len(states))
        self._sweep_size = size if max_keys is None else min(size, max_keys)
        return removed

    def __repr__(self) -> str:
        return f"MemoryLimit({self.name!r}, {self.algorithm.describe()}, keys={len(self._states)})"


class MemoryRateLimitStore:
    """Rate-limit state in this process: the default store and the test double.

    ``max_keys`` caps the keys one limit keeps (``None``: no cap, idle keys are still
    swept). Limits bound twice under one name share their state, so several
    :class:`~seawall.resilience.RateLimiter` objects can enforce one limit.
    """

    def __init__(self, *, max_keys: int | None = DEFAULT_MAX_KEYS) -> None:
        if max_keys is not None and (
            isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1
        ):
            raise ConfigurationError(
                f"MemoryRateLimitStore max_keys must be an integer >= 1 or None (no cap), "
                f"got {max_keys!r}"
            )
        self.max_keys = max_keys
        self._limits: dict[str, MemoryLimit] = {}
        self._guard = StateGuard()

    def bind(self, algorithm: RateLimitAlgorithm, name: str, clock: Clock) -> MemoryLimit:
        """The limit called ``name``: created on first use, shared afterwards."""
        with self._guard:
            limit = self._limits.get(name)
            if limit is None:
                limit = self._limits[name] = MemoryLimit(algorithm, name, clock, self.max_keys)
                return limit
        if limit.algorithm != algorithm or limit.clock is not clock:
            raise ConfigurationError(
                f"rate limit {name!r} is already bound in this store with "
                f"{limit.algorithm.describe()} and clock {limit.clock!r}; a second limiter "
                f"with {algorithm.describe()} and clock {clock!r} must use another name"
            )
        return limit

    def cleanup(self) -> int:
        """Drop every idle key of every limit now; returns how many."""
        return sum(limit.cleanup() for limit in list(self._limits.values()))

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryRateLimitStore(max_keys={self.max_keys!r}, limits={sorted(self._limits)})"
