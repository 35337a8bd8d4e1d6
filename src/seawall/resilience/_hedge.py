"""Hedging: when a call is slow, start another attempt and take whichever answers first.

``Hedge(delay=0.05)`` starts a second attempt when the first has run 50 ms without an
answer, a third 50 ms after the second, up to ``max_hedges`` extra attempts. The first
attempt to succeed wins; the others are cancelled (and awaited, so none outlives the
call). An attempt that fails with an ``on`` exception starts the next one at once
(waiting for the delay would only add latency); when every attempt has failed the last
error is raised. Any other exception ends the call immediately.

``Hedge(delay="p95")`` uses the 95th percentile of recent successful attempt latencies
(the last ``window`` calls, bounded memory), so only the slowest 5% of calls are hedged;
until ``min_samples`` latencies are known it uses ``initial_delay``.

Hedging needs asyncio (to cancel the losers): :meth:`Hedge.call` raises
:class:`HedgeNeedsAsyncError`.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock, MonotonicClock
from seawall.errors import ConfigurationError
from seawall.events import Event, EventHub, hub
from seawall.resilience._policy import Policy

__all__ = [
    "Hedge",
    "HedgeNeedsAsyncError",
    "HedgeStarted",
    "HedgeWon",
    "LatencyWindow",
]

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class HedgeStarted(Event):
    """Attempt number ``attempt`` (2 for the first hedge) started.

    ``after_failure`` is true when it started because an earlier attempt failed, false
    when the earlier attempts were slower than ``delay``.
    """

    attempt: int
    delay: float
    after_failure: bool


@dataclass(frozen=True, slots=True)
class HedgeWon(Event):
    """A hedge (attempt ``attempt`` >= 2) answered first, ``latency`` s after it started.

    ``attempts`` attempts had been started; the others were cancelled.
    """

    attempt: int
    attempts: int
    latency: float


class HedgeNeedsAsyncError(ConfigurationError):
    """``Hedge.call`` was used: hedging runs attempts concurrently, which needs asyncio."""


# ----------------------------------------------------------------- latency window


class LatencyWindow:
    """The last ``size`` latencies in a ring buffer, with cached percentiles (sans-I/O)."""

    __slots__ = ("_next", "_samples", "_sorted", "size")

    def __init__(self, size: int = 100) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100_000:
            raise ConfigurationError(
                f"LatencyWindow(size={size!r}) is invalid: size must be an int in [1, 100000]"
            )
        self.size = size
        self._samples: list[float] = []
        self._next = 0
        self._sorted: list[float] | None = None

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, latency: float) -> None:
        """Remember ``latency``, forgetting the oldest once ``size`` are kept."""
        if len(self._samples) < self.size:
            self._samples.append(latency)
        else:
            self._samples[self._next] = latency
            self._next = (self._next + 1) % self.size
        self._sorted = None

    def percentile(self, fraction: float) -> float | None:
        """The latency below which ``fraction`` of the samples fall (``None`` when empty)."""
        if not self._samples:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._samples)
        ordered = self._sorted
        index = max(0, math.ceil(fraction * len(ordered)) - 1)
        return ordered[min(index, len(ordered) - 1)]


# ------------------------------------------------------------------------- the policy


class Hedge(Policy):
    """Start extra attempts of a slow async call; the first success wins, the rest are cancelled.

    ``delay`` is seconds, or ``"p95"`` (any ``"pNN"``) for that percentile of recent
    successful latencies. ``max_hedges`` extra attempts at most; ``on`` names the
    exceptions after which hedging goes on (others end the call at once).
    """

    def __init__(
        self,
        delay: float | str = 0.05,
        *,
        max_hedges: int = 2,
        initial_delay: float = 0.05,
        min_samples: int = 20,
        window: int = 100,
        on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "hedge",
    ) -> None:
        self.percentile: float | None = None
        if isinstance(delay, str):
            match = _PERCENTILE.fullmatch(delay)
            fraction = float(match.group(1)) / 100 if match else 0.0
            if not 0 < fraction < 1:
                raise ConfigurationError(
                    f"Hedge(delay={delay!r}) is invalid: pass seconds > 0 or a percentile of "
                    "recent latencies such as 'p95' or 'p99.9'"
                )
            self.percentile = fraction
        elif (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not 0 <= delay < math.inf
        ):
            raise ConfigurationError(
                f"Hedge(delay={delay!r}) is invalid: pass finite seconds >= 0 or a percentile "
                "such as 'p95'"
            )
        if (
            isinstance(max_hedges, bool)
            or not isinstance(max_hedges, int)
            or not 1 <= max_hedges <= 100
        ):
            raise ConfigurationError(
                f"Hedge(max_hedges={max_hedges!r}) is invalid: max_hedges must be an int in "
                "[1, 100] (extra attempts after the first)"
            )
        if (
            isinstance(initial_delay, bool)
            or not isinstance(initial_delay, int | float)
            or not 0 <= initial_delay < math.inf
        ):
            raise ConfigurationError(
                f"Hedge(initial_delay={initial_delay!r}) is invalid: initial_delay must be "
                "finite seconds >= 0 (used until min_samples latencies are known)"
            )
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 100_000:
            raise ConfigurationError(
                f"Hedge(window={window!r}) is invalid: window must be an int in [1, 100000] "
                "(latencies remembered)"
            )
        if (
            isinstance(min_samples, bool)
            or not isinstance(min_samples, int)
            or not 1 <= min_samples <= window
        ):
            raise ConfigurationError(
                f"Hedge(min_samples={min_samples!r}) is invalid: min_samples must be an int in "
                f"[1, window={window}]"
            )
        if isinstance(on, type) and issubclass(on, BaseException):
            types: tuple[type[BaseException], ...] = (on,)
        elif (
            isinstance(on, tuple)
            and on
            and all(isinstance(item, type) and issubclass(item, BaseException) for item in on)
        ):
            types = on
        else:
            raise ConfigurationError(
                f"Hedge(on={on!r}) is invalid: pass an exception type or a non-empty tuple of them"
            )
        if not isinstance(clock, Clock):
            raise ConfigurationError(
                f"Hedge(clock={clock!r}) is invalid: pass a seawall.clock.Clock"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"Hedge(name={name!r}) is invalid: name must be a non-empty str"
            )
        self.delay = delay if isinstance(delay, str) else float(delay)
        self.max_hedges = max_hedges
        self.initial_delay = float(initial_delay)
        self.min_samples = min_samples
        self.on = types
        self.clock = clock
        self.name = name
        self.events = EventHub(parent=hub)
        self.latencies = LatencyWindow(window)
        self._fixed_delay = 0.0 if isinstance(delay, str) else float(delay)
        self._real_clock = type(clock) is MonotonicClock

    def current_delay(self) -> float:
        """Seconds an attempt runs before the next one starts, as of now."""
        if self.percentile is None:
            return self._fixed_delay
        if len(self.latencies) < self.min_samples:
            return self.initial_delay
        value = self.latencies.percentile(self.percentile)
        return self.initial_delay if value is None else value

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Not supported: raises :class:`HedgeNeedsAsyncError` (hedging needs asyncio)."""
        raise self._needs_async()

    def _needs_async(self) -> HedgeNeedsAsyncError:
        return HedgeNeedsAsyncError(
            f"Hedge {self.name!r} runs attempts concurrently and cancels the losers, which "
            "needs asyncio: use `await hedge.acall(fn, ...)` or decorate an async function; "
            "leave Hedge out of sync pipelines"
        )

    def decorate(self, fn: F) -> F:
        """Hedge a coroutine function; a sync one is refused here, at decoration time."""
        if not inspect.iscoroutinefunction(fn):
            raise self._needs_async()
        return super().decorate(fn)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn``, hedging it per this policy; returns the first successful result."""
        run: _HedgedCall[T] = _HedgedCall(self, lambda: fn(*args, **kwargs))
        return await run.run()

    def __repr__(self) -> str:
        return f"Hedge(delay={self.delay!r}, max_hedges={self.max_hedges!r}, name={self.name!r})"


class _HedgedCall(Generic[T]):
    """The attempts of one hedged call, driven by completions and the hedge timer."""

    __slots__ = (
        "attempts",
        "delay",
        "factory",
        "finished",
        "loop",
        "policy",
        "timer",
        "timer_fired",
        "wakeup",
    )

    def __init__(self, policy: Hedge, factory: Callable[[], Awaitable[T]]) -> None:
        self.policy = policy
        self.factory = factory
        self.loop = asyncio.get_running_loop()
        self.delay = policy.current_delay()
        self.attempts: dict[asyncio.Future[T], tuple[int, float]] = {}
        self.finished: list[asyncio.Future[T]] = []
        self.wakeup: asyncio.Future[None] = self.loop.create_future()
        self.timer: asyncio.TimerHandle | asyncio.Task[None] | None = None
        self.timer_fired = False

    def _wake(self) -> None:
        if not self.wakeup.done():
            self.wakeup.set_result(None)

    def _on_attempt_done(self, attempt: asyncio.Future[T]) -> None:
        self.finished.append(attempt)
        self._wake()

    def _on_timer(self) -> None:
        self.timer_fired = True
        self._wake()

    async def _sleep_then_fire(self, deadline: float) -> None:
        clock = self.policy.clock
        delay = deadline - clock.now()
        if delay > 0:
            await clock.asleep(delay)
        self._on_timer()

    def _start(self, number: int) -> None:
        policy = self.policy
        attempt = asyncio.ensure_future(self.factory(), loop=self.loop)
        self.attempts[attempt] = (number, policy.clock.now())
        attempt.add_done_callback(self._on_attempt_done)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_fired = False
        if number <= policy.max_hedges:  # another hedge may follow this attempt
            if policy._real_clock:
                self.timer = self.loop.call_later(self.delay, self._on_timer)
            else:
                deadline = policy.clock.now() + self.delay
                self.timer = self.loop.create_task(self._sleep_then_fire(deadline))

    async def run(self) -> T:
        policy = self.policy
        started = 1
        self._start(1)
        last_error: BaseException | None = None
        try:
            while True:
                await self.wakeup
                self.wakeup = self.loop.create_future()
                failed_now = False
                while self.finished:
                    attempt = self.finished.pop(0)
                    number, began = self.attempts.pop(attempt)
                    if attempt.cancelled():  # cancelled from inside: count it as a failure
                        last_error = last_error or asyncio.CancelledError()
                        failed_now = True
                        continue
                    error = attempt.exception()
                    if error is None:
                        latency = policy.clock.now() - began
                        policy.latencies.add(latency)
                        if number > 1 and policy.events.active:
                            policy.events.emit(HedgeWon(policy.name, number, started, latency))
                        return attempt.result()
                    if not isinstance(error, policy.on):
                        raise error
                    last_error = error
                    failed_now = True
                if started <= policy.max_hedges and (failed_now or self.timer_fired):
                    started += 1
                    if policy.events.active:
                        policy.events.emit(
                            HedgeStarted(policy.name, started, self.delay, failed_now)
                        )
                    self._start(started)
                elif not self.attempts and last_error is not None:
                    raise last_error
        finally:
            if self.timer is not None:
                self.timer.cancel()
            losers = list(self.attempts)
            for loser in losers:
                loser.cancel()
            if losers:
                await asyncio.wait(losers)
                for loser in losers:  # mark their errors seen: nobody is waiting for them
                    if not loser.cancelled():
                        loser.exception()
