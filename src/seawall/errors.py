"""Every error seawall raises, under one root.

::

    SeawallError
    ├── ConfigurationError (also ValueError)     bad arguments at construction
    │   └── UnsupportedEngineError               unknown URL scheme / engine lacks a capability
    ├── MissingExtraError (also ImportError)     an optional driver is not installed
    ├── EngineError                              an engine failed or is unreachable
    │   └── EngineUnavailableError
    ├── RejectedError                            a policy refused to run the call
    │   ├── CircuitOpenError
    │   ├── BulkheadFullError
    │   ├── RateLimitedError
    │   └── ConcurrencyLimitError
    ├── TimeoutExceededError (also TimeoutError)
    └── RetryError                               every attempt failed

Each error carries the data a caller needs (``retry_after``, ``attempts``, ...) and a
message that says what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Attempt",
    "BulkheadFullError",
    "CircuitOpenError",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "EngineError",
    "EngineUnavailableError",
    "MissingExtraError",
    "RateLimitedError",
    "RejectedError",
    "RetryError",
    "SeawallError",
    "TimeoutExceededError",
    "UnsupportedEngineError",
]


class SeawallError(Exception):
    """Root of every error seawall raises."""


class ConfigurationError(SeawallError, ValueError):
    """A policy, engine or store was built with invalid arguments.

    Raised at construction, never at first call; the message names the field and
    the valid range.
    """


class UnsupportedEngineError(ConfigurationError):
    """The URL scheme is unknown, or the engine cannot serve the requested store."""


class MissingExtraError(SeawallError, ImportError):
    """An optional driver is missing; the message names the extra to install."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"this feature needs the {module!r} package: pip install 'seawall[{extra}]'"
        )
        self.extra = extra
        self.module = module


class EngineError(SeawallError):
    """An engine (Redis, PostgreSQL, ...) failed an operation."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class EngineUnavailableError(EngineError):
    """The engine could not be reached within the configured time."""


class RejectedError(SeawallError):
    """A policy refused to run the call; nothing reached the protected code.

    ``retry_after`` is the earliest time (seconds from now) at which trying again can
    succeed, or ``None`` when unknown. A :class:`~seawall.resilience.Retry` honours it.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpenError(RejectedError):
    """The circuit breaker is open (or forced open, or half-open and full)."""

    def __init__(self, breaker: str, state: str, *, retry_after: float | None = None) -> None:
        hint = f"; it lets a trial call through in {retry_after:.3f}s" if retry_after else ""
        super().__init__(
            f"circuit breaker {breaker!r} is {state} and rejected the call{hint}; "
            "the downstream is failing: back off, use a fallback, or reset the breaker",
            retry_after=retry_after,
        )
        self.breaker = breaker
        self.state = state


class BulkheadFullError(RejectedError):
    """Every slot of the bulkhead was busy for longer than its ``max_wait``."""

    def __init__(self, bulkhead: str, max_concurrent: int, max_wait: float) -> None:
        super().__init__(
            f"bulkhead {bulkhead!r} is full ({max_concurrent} calls running, waited "
            f"{max_wait:.3f}s for a slot); raise max_concurrent or max_wait, or shed the load"
        )
        self.bulkhead = bulkhead
        self.max_concurrent = max_concurrent
        self.max_wait = max_wait


class RateLimitedError(RejectedError):
    """The rate limit for ``key`` is spent; try again after ``retry_after`` seconds."""

    def __init__(self, limiter: str, key: str, *, retry_after: float | None) -> None:
        when = f"after {retry_after:.3f}s" if retry_after is not None else "later"
        super().__init__(
            f"rate limit {limiter!r} exceeded for key {key!r}; try again {when}",
            retry_after=retry_after,
        )
        self.limiter = limiter
        self.key = key


class ConcurrencyLimitError(RejectedError):
    """The adaptive concurrency limit shed this call to protect the downstream."""

    def __init__(self, limiter: str, limit: int, in_flight: int) -> None:
        super().__init__(
            f"concurrency limit {limiter!r} shed the call ({in_flight} in flight, limit {limit}); "
            "the downstream is slowing down: retry later or reduce load"
        )
        self.limiter = limiter
        self.limit = limit
        self.in_flight = in_flight


class TimeoutExceededError(SeawallError, TimeoutError):
    """The call did not finish within ``timeout`` seconds."""

    def __init__(self, timeout: float, *, what: str = "call") -> None:
        super().__init__(
            f"{what} did not finish within {timeout:.3f}s; raise the timeout or make it faster"
        )
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome and timing of one attempt of a retried call."""

    number: int
    """1 for the first attempt."""
    started: float
    """Clock time the attempt started."""
    duration: float
    """Seconds the attempt took."""
    exception: BaseException | None = None
    """The exception it raised, if any."""
    result: Any = None
    """The result it returned when it raised nothing."""

    @property
    def failed(self) -> bool:
        """True when the attempt raised."""
        return self.exception is not None


class RetryError(SeawallError):
    """Every attempt allowed by the retry policy failed.

    ``attempts`` holds each attempt's outcome and timing, first to last; the last
    exception is also this error's ``__cause__``.
    """

    def __init__(self, policy: str, attempts: Sequence[Attempt], reason: str) -> None:
        last = attempts[-1] if attempts else None
        detail = (
            f"last error: {type(last.exception).__name__}: {last.exception}"
            if last is not None and last.exception is not None
            else f"last result: {last.result!r}"
            if last is not None
            else "no attempt was made"
        )
        super().__init__(
            f"retry policy {policy!r} gave up after {len(attempts)} attempt(s) ({reason}); {detail}"
        )
        self.policy = policy
        self.attempts = tuple(attempts)
        self.reason = reason

    @property
    def last(self) -> Attempt | None:
        """The final attempt, or ``None`` when none ran."""
        return self.attempts[-1] if self.attempts else None
