"""The five rate-limit algorithms: their parameters and their in-memory sans-I/O cores.

An algorithm is a frozen, validated value (``TokenBucket(rate=100, per=1.0, burst=200)``).
Engines read its parameters; the memory engine also runs its :meth:`RateLimitAlgorithm.kernel`, a
closure over a dict of per-key states that answers "may ``key`` take ``cost`` permits
now?". The kernel does no I/O: time comes from the ``now`` function it is given (a
:class:`~seawall.clock.ManualClock` in tests) and mutual exclusion from the guard it is
given, so the same code is what the tests drive and what production runs.

A kernel call returns ``0.0`` when it granted the permits and otherwise the seconds until
they could be granted (always ``> 0``), so ``not take(key, cost)`` reads as "granted".

Every algorithm admits a small tolerance (:data:`EPSILON` permits) so that waiting exactly
the reported ``retry_after`` is enough despite float rounding.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from seawall.errors import ConfigurationError

__all__ = [
    "EPSILON",
    "FixedWindow",
    "GCRA",
    "Kernel",
    "KernelGuard",
    "RateLimitAlgorithm",
    "SlidingWindowCounter",
    "SlidingWindowLog",
    "TokenBucket",
]

EPSILON = 1e-9
"""Permits of slack in every comparison, so float rounding never denies an exact wait."""

Kernel = Callable[[str, int], float]
"""``take(key, cost)``: ``0.0`` when granted, else seconds until ``cost`` permits are free."""

NewKeyHook = Callable[[str, float], None]
"""Called (inside the guard) after a kernel stored state for a key it did not know."""

_TOKEN = True


class KernelGuard(Protocol):
    """Mutual exclusion for a kernel's read-modify-write, split for speed.

    ``take()`` claims the single token or raises :class:`IndexError` when another
    thread holds it; ``wait()`` is the contended path that blocks until it claims it;
    ``give(True)`` hands it back. The memory store implements it with a one-item deque,
    whose ``pop``/``append`` are atomic and much cheaper than a lock's calls.
    """

    take: Callable[[], object]
    wait: Callable[[], None]
    give: Callable[[bool], object]


def _positive_number(owner: str, name: str, value: object, unit: str) -> float:
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise ConfigurationError(
            f"{owner} {name} must be a finite number > 0 ({unit}), got {value!r}"
        )
    return number


def _positive_int(owner: str, name: str, value: object, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{owner} {name} must be an integer >= 1 ({meaning}), got {value!r}"
        )
    return value


class RateLimitAlgorithm(ABC):
    """A rate-limit algorithm: validated parameters plus the in-memory core.

    ``kind`` names it in storage keys and tables; ``capacity`` is the most permits one
    key can hold, so it bounds the ``cost`` of a single call.
    """

    __slots__ = ()

    kind: ClassVar[str]

    @property
    @abstractmethod
    def capacity(self) -> int:
        """The most permits one key can hold at once (the largest valid ``cost``)."""

    @abstractmethod
    def kernel(
        self,
        states: dict[str, Any],
        now: Callable[[], float],
        guard: KernelGuard,
        on_new_key: NewKeyHook,
    ) -> Kernel:
        """Build ``take(key, cost)`` over ``states``; ``0 <= cost <= capacity`` is the caller's job."""

    @abstractmethod
    def inspect(self, state: Any, now: float) -> tuple[int, float]:
        """``(remaining, reset_after)`` of one key's state (``None`` = never used) at ``now``."""

    @abstractmethod
    def expires_at(self, state: Any) -> float:
        """The time from which ``state`` equals a fresh key's, so it can be forgotten."""

    @abstractmethod
    def describe(self) -> str:
        """A short human description, e.g. ``token bucket 100/1s burst 200``."""


def _per(per: float) -> str:
    return f"{per:g}s"


@dataclass(frozen=True, slots=True)
class TokenBucket(RateLimitAlgorithm):
    """``rate`` permits every ``per`` seconds refill a bucket of ``burst`` (default ``rate``).

    A call takes ``cost`` tokens when the bucket holds that many; tokens refill
    continuously. State per key: the token count and when it was computed.
    """

    kind: ClassVar[str] = "token_bucket"

    rate: float
    """Permits added every ``per`` seconds."""
    per: float = 1.0
    """The period ``rate`` refers to, in seconds."""
    burst: int = 0
    """Bucket size: the most permits available at once (default: ``rate`` rounded up)."""

    def __init__(self, rate: float, per: float = 1.0, burst: int | None = None) -> None:
        rate = _positive_number("TokenBucket", "rate", rate, "permits per `per` seconds")
        per = _positive_number("TokenBucket", "per", per, "seconds")
        if burst is None:
            burst = max(1, math.ceil(rate))
        burst = _positive_int("TokenBucket", "burst", burst, "the bucket size")
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "per", per)
        object.__setattr__(self, "burst", burst)

    @property
    def capacity(self) -> int:
        """The bucket size."""
        return self.burst

    @property
    def refill_rate(self) -> float:
        """Tokens added per second."""
        return self.rate / self.per

    def kernel(
        self,
        states: dict[str, Any],
        now: Callable[[], float],
        guard: KernelGuard,
        on_new_key: NewKeyHook,
    ) -> Kernel:
        """Token bucket over ``states[key] = [tokens, computed_at]``."""
        refill = self.refill_rate
        capacity = float(self.burst)
        take_token, wait_token, give_token = guard.take, guard.wait, guard.give

        def take(key: str, cost: int) -> float:
            try:
                take_token()
            except IndexError:
                wait_token()
            try:
                moment = now()
                try:
                    state: list[float] = states[key]
                except KeyError:
                    if cost > capacity:
                        return (cost - capacity) / refill
                    if cost:
                        states[key] = [capacity - cost, moment]
                        on_new_key(key, moment)
                    return 0.0
                tokens = state[0] + (moment - state[1]) * refill
                if tokens > capacity:
                    tokens = capacity
                if tokens < cost - EPSILON:
                    return (cost - tokens) / refill
                state[0] = tokens - cost
                state[1] = moment
                return 0.0
            finally:
                give_token(_TOKEN)

        return take

    def _tokens(self, state: Any, now: float) -> float:
        if state is None:
            return float(self.burst)
        return min(float(self.burst), float(state[0] + (now - state[1]) * self.refill_rate))

    def inspect(self, state: Any, now: float) -> tuple[int, float]:
        """Whole tokens left, and seconds until the bucket is full."""
        tokens = self._tokens(state, now)
        return int(tokens + EPSILON), max(0.0, (self.burst - tokens) / self.refill_rate)

    def expires_at(self, state: Any) -> float:
        """When the bucket is full again."""
        return float(state[1] + (self.burst - state[0]) / self.refill_rate)

    def describe(self) -> str:
        """E.g. ``token bucket 100/1s burst 200``."""
        return f"token bucket {self.rate:g}/{_per(self.per)} burst {self.burst}"


@dataclass(frozen=True, slots=True)
class GCRA(RateLimitAlgorithm):
    """The leaky bucket as a meter (generic cell rate algorithm): ``rate`` per ``per``.

    It admits exactly what a :class:`TokenBucket` of the same ``rate``/``burst`` admits,
    but keeps one number per key, the theoretical arrival time, which makes it the
    cheapest to store and update (one value in Redis, one column in PostgreSQL).
    ``burst=1`` spaces calls evenly, ``1/rate`` apart.
    """

    kind: ClassVar[str] = "gcra"

    rate: float
    """Permits every ``per`` seconds."""
    per: float = 1.0
    """The period ``rate`` refers to, in seconds."""
    burst: int = 0
    """Permits that may arrive back to back (default: ``rate`` rounded up)."""

    def __init__(self, rate: float, per: float = 1.0, burst: int | None = None) -> None:
        rate = _positive_number("GCRA", "rate", rate, "permits per `per` seconds")
        per = _positive_number("GCRA", "per", per, "seconds")
        if burst is None:
            burst = max(1, math.ceil(rate))
        burst = _positive_int("GCRA", "burst", burst, "permits allowed back to back")
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "per", per)
        object.__setattr__(self, "burst", burst)

    @property
    def capacity(self) -> int:
        """The burst size."""
        return self.burst

    @property
    def interval(self) -> float:
        """Seconds one permit occupies (the emission interval)."""
        return self.per / self.rate

    def kernel(
        self,
        states: dict[str, Any],
        now: Callable[[], float],
        guard: KernelGuard,
        on_new_key: NewKeyHook,
    ) -> Kernel:
        """GCRA over ``states[key] = theoretical_arrival_time``."""
        interval = self.interval
        tolerance = self.burst * interval
        allowance = tolerance + EPSILON * interval
        take_token, wait_token, give_token = guard.take, guard.wait, guard.give

        def take(key: str, cost: int) -> float:
            try:
                take_token()
            except IndexError:
                wait_token()
            try:
                moment = now()
                try:
                    arrival: float = states[key]
                except KeyError:
                    debt = cost * interval
                    if debt > allowance:
                        return debt - tolerance
                    if cost:
                        states[key] = moment + debt
                        on_new_key(key, moment)
                    return 0.0
                # work on the debt (arrival - now, exact when both are close), so a
                # fresh or idle key is compared exactly, whatever the clock's magnitude
                debt = arrival - moment
                if debt < 0.0:
                    debt = 0.0
                debt += cost * interval
                if debt > allowance:
                    return debt - tolerance
                states[key] = moment + debt
                return 0.0
            finally:
                give_token(_TOKEN)

        return take

    def inspect(self, state: Any, now: float) -> tuple[int, float]:
        """Permits that could arrive now, and seconds until the meter is empty."""
        debt = 0.0 if state is None else max(0.0, state - now)
        interval = self.interval
        remaining = int((self.burst * interval - debt) / interval + EPSILON)
        return max(0, remaining), debt

    def expires_at(self, state: Any) -> float:
        """The theoretical arrival time: from then on the key is fresh."""
        return float(state)

    def describe(self) -> str:
        """E.g. ``GCRA 100/1s burst 100``."""
        return f"GCRA {self.rate:g}/{_per(self.per)} burst {self.burst}"


def _window_end(moment: float, window: float) -> float:
    """The end of the ``window``-long window holding ``moment`` (always after it)."""
    end = (moment // window + 1.0) * window
    return end if end > moment else end + window  # float division can land one window short


@dataclass(frozen=True, slots=True)
class FixedWindow(RateLimitAlgorithm):
    """At most ``limit`` permits in each ``window``-second window aligned on the clock.

    The cheapest to store, but a caller can get ``2 * limit`` across a window boundary.
    State per key: the window's end and the permits granted in it.
    """

    kind: ClassVar[str] = "fixed_window"

    limit: int
    """Permits per window."""
    window: float
    """Window length in seconds."""

    def __init__(self, limit: int, window: float) -> None:
        limit = _positive_int("FixedWindow", "limit", limit, "permits per window")
        window = _positive_number("FixedWindow", "window", window, "seconds")
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "window", window)

    @property
    def capacity(self) -> int:
        """The per-window limit."""
        return self.limit

    def kernel(
        self,
        states: dict[str, Any],
        now: Callable[[], float],
        guard: KernelGuard,
        on_new_key: NewKeyHook,
    ) -> Kernel:
        """Fixed window over ``states[key] = [window_end, granted]``."""
        limit = self.limit
        window = self.window
        window_end = _window_end
        take_token, wait_token, give_token = guard.take, guard.wait, guard.give

        def take(key: str, cost: int) -> float:
            try:
                take_token()
            except IndexError:
                wait_token()
            try:
                moment = now()
                try:
                    state: list[float] = states[key]
                except KeyError:
                    if cost:
                        states[key] = [window_end(moment, window), cost]
                        on_new_key(key, moment)
                    return 0.0
                if moment < state[0]:
                    granted = state[1] + cost
                    if granted > limit:
                        return state[0] - moment
                    state[1] = granted
                else:
                    state[0] = window_end(moment, window)
                    state[1] = cost
                return 0.0
            finally:
                give_token(_TOKEN)

        return take

    def inspect(self, state: Any, now: float) -> tuple[int, float]:
        """Permits left in this window, and seconds until it ends (0 when unused)."""
        if state is None or now >= state[0] or not state[1]:
            return self.limit, 0.0
        return self.limit - state[1], state[0] - now

    def expires_at(self, state: Any) -> float:
        """The end of the stored window."""
        return float(state[0])

    def describe(self) -> str:
        """E.g. ``fixed window 100/60s``."""
        return f"fixed window {self.limit}/{_per(self.window)}"


@dataclass(frozen=True, slots=True)
class SlidingWindowLog(RateLimitAlgorithm):
    """At most ``limit`` permits in any ``window`` seconds, exactly: a log of grants.

    Exact and smooth, but keeps one entry per grant still inside the window, so memory
    and (on PostgreSQL) work grow with ``limit``; prefer :class:`SlidingWindowCounter`
    for large limits.
    """

    kind: ClassVar[str] = "sliding_window_log"

    limit: int
    """Permits in any window."""
    window: float
    """Window length in seconds."""

    def __init__(self, limit: int, window: float) -> None:
        limit = _positive_int("SlidingWindowLog", "limit", limit, "permits per window")
        window = _positive_number("SlidingWindowLog", "window", window, "seconds")
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "window", window)

    @property
    def capacity(self) -> int:
        """The per-window limit."""
        return self.limit

    def kernel(
        self,
        states: dict[str, Any],
        now: Callable[[], float],
        guard: KernelGuard,
        on_new_key: NewKeyHook,
    ) -> Kernel:
        """Sliding log over ``states[key] = [granted, deque((expires_at, cost), ...)]``."""
        limit = self.limit
        window = self.window
        take_token, wait_token, give_token = guard.take, guard.wait, guard.give

        def take(key: str, cost: int) -> float:
            try:
                take_token()
            except IndexError:
                wait_token()
            try:
                moment = now()
                try:
                    state = states[key]
                except KeyError:
                    if cost:
                        states[key] = [cost, deque(((moment + window, cost),))]
                        on_new_key(key, moment)
                    return 0.0
                entries = state[1]
                granted = state[0]
                while entries and entries[0][0] <= moment:
                    granted -= entries.popleft()[1]
                state[0] = granted
                if granted + cost > limit:
                    excess = granted + cost - limit
                    for expires, entry_cost in entries:
                        excess -= entry_cost
                        if excess <= 0:
                            return float(expires - moment)
                    return window  # only when cost > limit, which callers rule out
                if cost:
                    entries.append((moment + window, cost))
                    state[0] = granted + cost
                return 0.0
            finally:
                give_token(_TOKEN)

        return take

    def inspect(self, state: Any, now: float) -> tuple[int, float]:
        """Permits left in the window ending now, and seconds until the log is empty."""
        if state is None:
            return self.limit, 0.0
        live = [(expires, cost) for expires, cost in state[1] if expires > now]
        if not live:
            return self.limit, 0.0
        return self.limit - sum(cost for _, cost in live), live[-1][0] - now

    def expires_at(self, state: Any) -> float:
        """When the newest entry leaves the window."""
        entries = state[1]
        return float(entries[-1][0]) if entries else -math.inf

    def describe(self) -> str:
        """E.g. ``sliding window log 100/60s``."""
        return f"sliding window log {self.limit}/{_per(self.window)}"


@dataclass(frozen=True, slots=True)
class SlidingWindowCounter(RateLimitAlgorithm):
    """About ``limit`` permits in any ``window`` seconds, from two counters per key.

    The previous window's count is weighted by how much of it the sliding window still
    covers and added to the current window's count: smooth like a log, as cheap as a
    fixed window, and never admits more than ``limit`` in one fixed window.
    """

    kind: ClassVar[str] = "sliding_window_counter"

    limit: int
    """Permits per window."""
    window: float
    """Window length in seconds."""

    def __init__(self, limit: int, window: float) -> None:
        limit = _positive_int("SlidingWindowCounter", "limit", limit, "permits per window")
        window = _positive_number("SlidingWindowCounter", "window", window, "seconds")
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "window", window)

    @property
    def capacity(self) -> int:
        """The per-window limit."""
        return self.limit

    def kernel(
        self,
        states: dict[str, Any],
        now: Callable[[], float],
        guard: KernelGuard,
        on_new_key: NewKeyHook,
    ) -> Kernel:
        """Sliding counter over ``states[key] = [window_end, previous, current]``."""
        limit = self.limit
        window = self.window
        window_end = _window_end
        retry_after = self.retry_after
        take_token, wait_token, give_token = guard.take, guard.wait, guard.give

        def take(key: str, cost: int) -> float:
            try:
                take_token()
            except IndexError:
                wait_token()
            try:
                moment = now()
                try:
                    state = states[key]
                except KeyError:
                    if cost:
                        states[key] = [window_end(moment, window), 0, cost]
                        on_new_key(key, moment)
                    return 0.0
                end = state[0]
                if moment >= end:
                    new_end = window_end(moment, window)
                    state[1] = state[2] if new_end - end < 1.5 * window else 0
                    state[2] = 0
                    state[0] = end = new_end
                previous = state[1]
                current = state[2] + cost
                if previous * (end - moment) / window + current > limit + EPSILON:
                    return retry_after(previous, state[2], end - moment, cost)
                state[2] = current
                return 0.0
            finally:
                give_token(_TOKEN)

        return take

    def retry_after(self, previous: int, current: int, left: float, cost: int) -> float:
        """Seconds until ``cost`` fits, with ``left`` seconds left in the current window.

        The estimate ``previous * left / window + current`` falls linearly to
        ``current`` at the window's end, then ``current`` becomes the previous count.
        """
        limit = self.limit
        window = self.window
        if current + cost <= limit:
            # previous * (left - wait) / window + current + cost == limit
            wait = left - window * (limit - current - cost) / previous
        else:
            # next window: current * (window - w) / window + cost == limit
            wait = left + window - window * (limit - cost) / current
        return wait if wait > 0.0 else EPSILON

    def _counts(self, state: Any, now: float) -> tuple[float, int, int]:
        end, previous, current = state
        if now >= end:
            new_end = _window_end(now, self.window)
            previous = current if new_end - end < 1.5 * self.window else 0
            current = 0
            end = new_end
        return end, previous, current

    def inspect(self, state: Any, now: float) -> tuple[int, float]:
        """Permits left by the weighted estimate, and seconds until both counters are 0."""
        if state is None:
            return self.limit, 0.0
        end, previous, current = self._counts(state, now)
        used = previous * (end - now) / self.window + current
        remaining = max(0, math.floor(self.limit - used + EPSILON))
        if current:
            return remaining, end + self.window - now
        return remaining, (end - now) if previous else 0.0

    def expires_at(self, state: Any) -> float:
        """The end of the window after the stored one (both counters are 0 by then)."""
        return float(state[0] + self.window) if state[2] else float(state[0])

    def describe(self) -> str:
        """E.g. ``sliding window counter 100/60s``."""
        return f"sliding window counter {self.limit}/{_per(self.window)}"
