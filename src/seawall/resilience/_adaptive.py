"""Adaptive concurrency limit: shed load without a hand-tuned number.

:class:`AdaptiveLimiter` lets a call in while fewer than ``limit`` calls are in flight
and refuses the rest with :class:`~seawall.errors.ConcurrencyLimitError`. The limit is
not configured: after every call an algorithm, fed the call's round-trip time, the
in-flight count and whether it was dropped (an error or a timeout), moves the limit
to what the downstream can take, as Netflix's concurrency-limits library does.

The algorithms are sans-I/O objects, ``update(now, rtt, in_flight, dropped) -> limit``:

- :class:`AIMD` adds one while calls succeed under ``timeout`` and the limit is in use,
  and multiplies by ``backoff`` on a drop or a call slower than ``timeout``.
- :class:`Gradient` compares each call's latency with the no-load latency and moves the
  limit by their ratio (the gradient), so it backs off as soon as queueing shows, before
  anything times out.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConcurrencyLimitError, ConfigurationError
from seawall.events import Event, EventHub, hub
from seawall.resilience._policy import Policy

__all__ = [
    "AIMD",
    "AdaptiveLimiter",
    "AdaptiveMetrics",
    "CallShed",
    "Gradient",
    "LimitAlgorithm",
    "LimitChanged",
    "Permit",
]

P = ParamSpec("P")
T = TypeVar("T")


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class LimitChanged(Event):
    """The algorithm moved the concurrency limit from ``previous`` to ``limit``."""

    previous: int
    limit: int
    rtt: float
    """Round-trip time of the call whose outcome caused the change."""
    dropped: bool


@dataclass(frozen=True, slots=True)
class CallShed(Event):
    """A call was refused because ``in_flight`` calls already reached ``limit``."""

    limit: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class AdaptiveMetrics:
    """A snapshot of an adaptive limiter."""

    limit: int
    in_flight: int
    rejected: int
    """Calls shed since the limiter was built."""
    dropped: int
    """Calls that ended in a drop (an error of ``drop_on``)."""


# ----------------------------------------------------------------------- algorithms


@runtime_checkable
class LimitAlgorithm(Protocol):
    """Decides the concurrency limit from call outcomes; sans-I/O and not thread-safe.

    The limiter calls :meth:`update` under its lock once per finished call.
    """

    @property
    def limit(self) -> int:
        """The current limit (>= 1)."""
        ...

    def update(self, now: float, rtt: float, in_flight: int, dropped: bool) -> int:
        """Learn from one call and return the new limit.

        ``rtt`` is the call's duration in seconds, ``in_flight`` the calls in flight
        when it started (itself included), ``dropped`` whether it failed in a way that
        signals overload (an error, a timeout).
        """
        ...


def _check_bounds(kind: str, initial: int, minimum: int, maximum: int) -> None:
    for field, value in (("initial", initial), ("min", minimum), ("max", maximum)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(
                f"{kind}({field}={value!r}) is invalid: {field} must be an int >= 1"
            )
    if minimum > maximum:
        raise ConfigurationError(
            f"{kind}(min={minimum!r}, max={maximum!r}) is invalid: min must be <= max"
        )
    if not minimum <= initial <= maximum:
        raise ConfigurationError(
            f"{kind}(initial={initial!r}) is invalid: initial must be in [min, max] = "
            f"[{minimum}, {maximum}]"
        )


def _check_fraction(kind: str, field: str, value: float, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigurationError(
            f"{kind}({field}={value!r}) is invalid: {field} must be in (0, 1) ({meaning})"
        )


class AIMD:
    """Additive increase, multiplicative decrease (Netflix ``AIMDLimit``).

    After a call that was not dropped and took at most ``timeout`` seconds, the limit
    grows by one if at least half of it was in use; after a drop or a slower call it is
    multiplied by ``backoff``, at most once per round trip: calls sent before the last
    backoff do not trigger another (unlike Netflix's, which backs off on each of them
    and so collapses to ``min`` after a burst of slow calls). Kept within ``[min, max]``.
    """

    __slots__ = ("_backed_off_at", "_limit", "backoff", "initial", "max", "min", "timeout")

    def __init__(
        self,
        initial: int = 20,
        min: int = 1,
        max: int = 200,
        backoff: float = 0.9,
        timeout: float = 5.0,
    ) -> None:
        _check_bounds("AIMD", initial, min, max)
        _check_fraction("AIMD", "backoff", backoff, "the share of the limit kept after a drop")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ConfigurationError(
                f"AIMD(timeout={timeout!r}) is invalid: timeout must be finite seconds > 0 "
                "(a call slower than this counts as a drop)"
            )
        self.initial = initial
        self.min = min
        self.max = max
        self.backoff = float(backoff)
        self.timeout = float(timeout)
        self._limit = initial
        self._backed_off_at = -math.inf

    @property
    def limit(self) -> int:
        """The current limit."""
        return self._limit

    def update(self, now: float, rtt: float, in_flight: int, dropped: bool) -> int:
        """Back off on a drop or a slow call; add one when the limit is in use."""
        limit = self._limit
        if dropped or rtt > self.timeout:
            if now - rtt < self._backed_off_at:
                return limit  # sent before the last backoff: that backoff already answered it
            self._backed_off_at = now
            limit = int(limit * self.backoff)
        elif in_flight * 2 >= limit:
            limit += 1
        else:
            return limit  # the caller does not use the limit: no evidence to grow it
        if limit < self.min:
            limit = self.min
        elif limit > self.max:
            limit = self.max
        self._limit = limit
        return limit

    def __repr__(self) -> str:
        return (
            f"AIMD(initial={self.initial}, min={self.min}, max={self.max}, "
            f"backoff={self.backoff}, timeout={self.timeout}, limit={self._limit})"
        )


QueueSize = Callable[[float], float]
"""How many calls :class:`Gradient` lets queue at a given limit (default: its square root)."""


class Gradient:
    """Move the limit by the ratio of no-load latency to current latency (the gradient).

    Per call: ``gradient = clamp(tolerance * rtt_noload / rtt, 0.5, 1)``, the target is
    ``limit * gradient + queue_size(limit)``, and the limit moves ``smoothing`` of the
    way there. A dropped call counts as the steepest gradient (0.5). The limit is left
    alone while less than half of it is in use (the caller, not the downstream, limits).

    ``rtt_noload`` is the lowest latency among the last ``long_window`` calls: a long-term
    view that follows a downstream that became slower for good, without absorbing the
    queueing this limiter itself causes (an average would; see the docs).
    """

    __slots__ = (
        "_counter",
        "_limit",
        "_window",
        "initial",
        "long_window",
        "max",
        "min",
        "queue_size",
        "smoothing",
        "tolerance",
    )

    def __init__(
        self,
        initial: int = 20,
        min: int = 1,
        max: int = 200,
        *,
        smoothing: float = 0.2,
        long_window: int = 600,
        tolerance: float = 1.5,
        queue_size: QueueSize | float = math.sqrt,
    ) -> None:
        _check_bounds("Gradient", initial, min, max)
        _check_fraction(
            "Gradient", "smoothing", smoothing, "how far the limit moves toward its target per call"
        )
        if (
            isinstance(long_window, bool)
            or not isinstance(long_window, int)
            or not 1 <= long_window <= 1_000_000
        ):
            raise ConfigurationError(
                f"Gradient(long_window={long_window!r}) is invalid: long_window must be an int "
                "in [1, 1000000] (calls remembered for the no-load latency)"
            )
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, int | float)
            or not 1 <= tolerance < math.inf
        ):
            raise ConfigurationError(
                f"Gradient(tolerance={tolerance!r}) is invalid: tolerance must be a finite "
                "number >= 1 (latency may reach tolerance x no-load before the limit drops)"
            )
        if isinstance(queue_size, int | float) and not isinstance(queue_size, bool):
            if not 0 <= queue_size < math.inf:
                raise ConfigurationError(
                    f"Gradient(queue_size={queue_size!r}) is invalid: queue_size must be a "
                    "finite number >= 0 or a function of the limit"
                )
            fixed = float(queue_size)
            self.queue_size: QueueSize = lambda _limit: fixed
        elif callable(queue_size):
            self.queue_size = queue_size
        else:
            raise ConfigurationError(
                f"Gradient(queue_size={queue_size!r}) is invalid: queue_size must be a "
                "number >= 0 or a function of the limit"
            )
        self.initial = initial
        self.min = min
        self.max = max
        self.smoothing = float(smoothing)
        self.long_window = long_window
        self.tolerance = float(tolerance)
        self._limit = float(initial)
        # (call number, rtt), rtts increasing: the front is the window's minimum
        self._window: deque[tuple[int, float]] = deque()
        self._counter = 0

    @property
    def limit(self) -> int:
        """The current limit (the estimate, rounded down)."""
        return int(self._limit)

    @property
    def rtt_noload(self) -> float | None:
        """The no-load latency estimate: the lowest rtt of the last ``long_window`` calls."""
        return self._window[0][1] if self._window else None

    def update(self, now: float, rtt: float, in_flight: int, dropped: bool) -> int:
        """Learn the call's latency, then move the limit toward ``limit * gradient + queue``."""
        self._counter += 1
        window = self._window
        while window and window[-1][1] >= rtt:
            window.pop()
        window.append((self._counter, rtt))
        if window[0][0] <= self._counter - self.long_window:
            window.popleft()
        limit = self._limit
        if not dropped and in_flight < limit / 2:
            return int(limit)
        if dropped:
            gradient = 0.5
        elif rtt <= 0:
            gradient = 1.0
        else:
            gradient = max(0.5, min(1.0, self.tolerance * window[0][1] / rtt))
        target = limit * gradient + self.queue_size(limit)
        limit += (target - limit) * self.smoothing
        self._limit = limit = min(float(self.max), max(float(self.min), limit))
        return int(limit)

    def __repr__(self) -> str:
        return (
            f"Gradient(initial={self.initial}, min={self.min}, max={self.max}, "
            f"smoothing={self.smoothing}, long_window={self.long_window}, "
            f"tolerance={self.tolerance}, limit={self.limit})"
        )


# ------------------------------------------------------------------------- the policy


class Permit:
    """A slot taken with :meth:`AdaptiveLimiter.try_acquire`; report how the call went.

    Call exactly one of :meth:`success`, :meth:`drop` or :meth:`ignore` when the call
    ends; the round-trip time is measured from the acquisition on the limiter's clock.
    """

    __slots__ = ("_done", "_limiter", "in_flight", "started")

    def __init__(self, limiter: AdaptiveLimiter, started: float, in_flight: int) -> None:
        self._limiter = limiter
        self.started = started
        self.in_flight = in_flight
        self._done = False

    def success(self) -> None:
        """The call succeeded: release the slot and feed its latency to the algorithm."""
        self._finish(False)

    def drop(self) -> None:
        """The call failed from overload (error, timeout): release and shrink the limit."""
        self._finish(True)

    def ignore(self) -> None:
        """Release the slot without teaching the algorithm (e.g. the caller cancelled)."""
        if self._done:
            raise RuntimeError("this permit was already released")
        self._done = True
        self._limiter._release_unmeasured()

    def _finish(self, dropped: bool) -> None:
        if self._done:
            raise RuntimeError("this permit was already released")
        self._done = True
        self._limiter._release(self.started, self.in_flight, dropped)


class AdaptiveLimiter(Policy):
    """Admit a call while fewer than ``limit`` are in flight; the algorithm sets ``limit``.

    A refused call raises :class:`~seawall.errors.ConcurrencyLimitError` at once. An
    exception of ``drop_on`` (default: any ``Exception``) counts as a drop; other
    exceptions, such as cancellation, release the slot without a sample. Put a
    :class:`~seawall.resilience.Timeout` inside the limiter so timeouts count as drops.
    """

    def __init__(
        self,
        algorithm: LimitAlgorithm | None = None,
        *,
        drop_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "adaptive",
    ) -> None:
        if algorithm is None:
            algorithm = Gradient()
        if not isinstance(algorithm, LimitAlgorithm):
            raise ConfigurationError(
                f"AdaptiveLimiter(algorithm={algorithm!r}) is invalid: pass AIMD(), Gradient() "
                "or an object with .limit and .update(now, rtt, in_flight, dropped)"
            )
        if isinstance(drop_on, type) and issubclass(drop_on, BaseException):
            drop_types: tuple[type[BaseException], ...] = (drop_on,)
        elif (
            isinstance(drop_on, tuple)
            and drop_on
            and all(isinstance(item, type) and issubclass(item, BaseException) for item in drop_on)
        ):
            drop_types = drop_on
        else:
            raise ConfigurationError(
                f"AdaptiveLimiter(drop_on={drop_on!r}) is invalid: pass an exception type or a "
                "non-empty tuple of them"
            )
        if not isinstance(clock, Clock):
            raise ConfigurationError(
                f"AdaptiveLimiter(clock={clock!r}) is invalid: pass a seawall.clock.Clock"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"AdaptiveLimiter(name={name!r}) is invalid: name must be a non-empty str"
            )
        self.algorithm = algorithm
        self.drop_on = drop_types
        self.clock = clock
        self.name = name
        self.events = EventHub(parent=hub)
        self._now = clock.now
        self._update = algorithm.update
        self._lock = threading.Lock()
        self._limit = algorithm.limit
        self._in_flight = 0
        self._rejected = 0
        self._dropped = 0

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return self._limit

    # ------------------------------------------------------------- sans-I/O surface

    def try_acquire(self) -> Permit | None:
        """Take a slot for a call (a :class:`Permit`), or ``None`` when at the limit."""
        with self._lock:
            in_flight = self._in_flight
            if in_flight >= self._limit:
                self._rejected += 1
                limit = self._limit
                shed = True
            else:
                self._in_flight = in_flight = in_flight + 1
                shed = False
        if shed:
            if self.events.active:
                self.events.emit(CallShed(self.name, limit, in_flight))
            return None
        return Permit(self, self._now(), in_flight)

    def _shed(self, limit: int, in_flight: int) -> ConcurrencyLimitError:
        """The error for a refused call (already counted), after telling the listeners."""
        if self.events.active:
            self.events.emit(CallShed(self.name, limit, in_flight))
        return ConcurrencyLimitError(self.name, limit, in_flight)

    def _release(self, started: float, in_flight: int, dropped: bool) -> None:
        now = self._now()
        lock = self._lock
        lock.acquire()
        try:
            self._in_flight -= 1
            if dropped:
                self._dropped += 1
            previous = self._limit
            self._limit = limit = self._update(now, now - started, in_flight, dropped)
        finally:
            lock.release()
        if limit != previous and self.events.active:
            self.events.emit(LimitChanged(self.name, previous, limit, now - started, dropped))

    def _release_unmeasured(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # ------------------------------------------------------------------- runners

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` if under the limit, else raise ``ConcurrencyLimitError``."""
        lock = self._lock
        lock.acquire()
        in_flight = self._in_flight
        if in_flight >= self._limit:
            self._rejected += 1
            limit = self._limit
            lock.release()
            raise self._shed(limit, in_flight)
        self._in_flight = in_flight = in_flight + 1
        lock.release()
        now = self._now
        started = now()
        try:
            result = fn(*args, **kwargs)
        except self.drop_on:
            self._release(started, in_flight, True)
            raise
        except BaseException:
            self._release_unmeasured()
            raise
        ended = now()  # the success path of _release, inlined
        lock.acquire()
        self._in_flight -= 1
        previous = self._limit
        try:
            self._limit = limit = self._update(ended, ended - started, in_flight, False)
        finally:
            lock.release()
        if limit != previous and self.events.active:
            self.events.emit(LimitChanged(self.name, previous, limit, ended - started, False))
        return result

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn`` if under the limit, else raise ``ConcurrencyLimitError``."""
        lock = self._lock
        lock.acquire()
        in_flight = self._in_flight
        if in_flight >= self._limit:
            self._rejected += 1
            limit = self._limit
            lock.release()
            raise self._shed(limit, in_flight)
        self._in_flight = in_flight = in_flight + 1
        lock.release()
        now = self._now
        started = now()
        try:
            result = await fn(*args, **kwargs)
        except self.drop_on:
            self._release(started, in_flight, True)
            raise
        except BaseException:
            self._release_unmeasured()
            raise
        ended = now()  # the success path of _release, inlined
        lock.acquire()
        self._in_flight -= 1
        previous = self._limit
        try:
            self._limit = limit = self._update(ended, ended - started, in_flight, False)
        finally:
            lock.release()
        if limit != previous and self.events.active:
            self.events.emit(LimitChanged(self.name, previous, limit, ended - started, False))
        return result

    def metrics(self) -> AdaptiveMetrics:
        """The limit now, calls in flight, and calls shed and dropped so far."""
        with self._lock:
            return AdaptiveMetrics(self._limit, self._in_flight, self._rejected, self._dropped)

    def __repr__(self) -> str:
        return f"AdaptiveLimiter({self.algorithm!r}, name={self.name!r})"
