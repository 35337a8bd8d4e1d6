"""The breaker's options: sliding windows, the slow-call rule, and their validation.

Every option is checked when the breaker is built; a bad value raises
:class:`~seawall.errors.ConfigurationError` (a ``ValueError``) naming the field, the
value and the valid range, never a surprise at the first call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seawall.errors import ConfigurationError

__all__ = ["BreakerConfig", "CountWindow", "SlowCall", "TimeWindow"]


def _require(ok: bool, field: str, value: object, valid: str) -> None:
    if not ok:
        raise ConfigurationError(f"{field}={value!r} is invalid: it must be {valid}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_rate(field: str, value: object) -> None:
    _require(
        _is_number(value) and 0.0 < value <= 1.0,  # type: ignore[operator]
        field,
        value,
        "a fraction in (0, 1], e.g. 0.5 for 50%",
    )


def _check_duration(field: str, value: object) -> None:
    _require(
        _is_number(value) and 0.0 < value < math.inf,  # type: ignore[operator]
        field,
        value,
        "a finite number of seconds > 0",
    )


@dataclass(frozen=True, slots=True)
class CountWindow:
    """Judge the last ``size`` calls (a count-based sliding window)."""

    size: int = 100

    def __post_init__(self) -> None:
        _require(
            isinstance(self.size, int) and not isinstance(self.size, bool) and self.size >= 1,
            "CountWindow.size",
            self.size,
            "an integer >= 1 (the number of most recent calls judged)",
        )


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Judge the calls of the last ``seconds`` (a time-based sliding window).

    Calls are counted in ``buckets`` equal buckets (default: one per second, at
    least one); the oldest bucket leaves the window as a whole.
    """

    seconds: float = 60.0
    buckets: int | None = None

    def __post_init__(self) -> None:
        _check_duration("TimeWindow.seconds", self.seconds)
        if self.buckets is not None:
            _require(
                isinstance(self.buckets, int)
                and not isinstance(self.buckets, bool)
                and 1 <= self.buckets <= 10_000,
                "TimeWindow.buckets",
                self.buckets,
                "an integer in [1, 10000] (or None for one bucket per second)",
            )

    @property
    def bucket_count(self) -> int:
        """How many buckets the window keeps."""
        if self.buckets is not None:
            return self.buckets
        return max(1, min(10_000, round(self.seconds)))

    @property
    def bucket_width(self) -> float:
        """Seconds covered by one bucket."""
        return self.seconds / self.bucket_count


@dataclass(frozen=True, slots=True)
class SlowCall:
    """A call lasting ``over`` seconds or more is slow; trip when ``rate`` of calls are slow."""

    over: float
    rate: float = 1.0

    def __post_init__(self) -> None:
        _check_duration("SlowCall.over", self.over)
        _check_rate("SlowCall.rate", self.rate)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The validated thresholds and timings of one breaker (shared by every runner)."""

    window: CountWindow | TimeWindow = CountWindow()
    failure_rate: float = 0.5
    slow_call: SlowCall | None = None
    minimum_calls: int = 10
    open_for: float = 30.0
    open_backoff: float = 1.0
    max_open_for: float | None = None
    half_open_calls: int = 5

    def __post_init__(self) -> None:
        _require(
            isinstance(self.window, CountWindow | TimeWindow),
            "window",
            self.window,
            "CountWindow(size) or TimeWindow(seconds)",
        )
        _check_rate("failure_rate", self.failure_rate)
        _require(
            self.slow_call is None or isinstance(self.slow_call, SlowCall),
            "slow_call",
            self.slow_call,
            "None or SlowCall(over=seconds, rate=fraction)",
        )
        _require(
            isinstance(self.minimum_calls, int)
            and not isinstance(self.minimum_calls, bool)
            and self.minimum_calls >= 1,
            "minimum_calls",
            self.minimum_calls,
            "an integer >= 1 (calls in the window before the rates are judged)",
        )
        _check_duration("open_for", self.open_for)
        _require(
            _is_number(self.open_backoff) and 1.0 <= self.open_backoff < math.inf,
            "open_backoff",
            self.open_backoff,
            "a finite factor >= 1 (1 keeps open_for fixed; 2 doubles it on each repeated trip)",
        )
        if self.max_open_for is not None:
            _require(
                _is_number(self.max_open_for) and self.open_for <= self.max_open_for < math.inf,
                "max_open_for",
                self.max_open_for,
                f"None or a finite number of seconds >= open_for ({self.open_for})",
            )
        _require(
            isinstance(self.half_open_calls, int)
            and not isinstance(self.half_open_calls, bool)
            and self.half_open_calls >= 1,
            "half_open_calls",
            self.half_open_calls,
            "an integer >= 1 (trial calls let through in half-open)",
        )

    @property
    def judged_minimum(self) -> int:
        """``minimum_calls``, capped at a count window's size (it can never hold more)."""
        if isinstance(self.window, CountWindow):
            return min(self.minimum_calls, self.window.size)
        return self.minimum_calls

    def open_duration(self, consecutive_trips: int) -> float:
        """Seconds to stay open after the ``consecutive_trips``-th trip in a row (1 = first)."""
        exponent = max(0, consecutive_trips - 1)
        cap = self.max_open_for if self.max_open_for is not None else _UNCAPPED_OPEN_FOR
        try:
            grown = self.open_for * self.open_backoff**exponent
        except OverflowError:
            return cap
        return min(cap, grown)


_UNCAPPED_OPEN_FOR = 365 * 24 * 3600.0
"""Without ``max_open_for`` an exponentially growing wait stops at one year."""
