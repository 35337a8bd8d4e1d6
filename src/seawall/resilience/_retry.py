"""Retry: run a call again when it fails in a way worth retrying.

The decisions live in :class:`_RetryRun`, a sans-I/O object fed each attempt's outcome
and the time, which answers "wait this long, then retry" or "give up". The sync runner
(:meth:`Retry.call`, the decorator, ``for attempt in retry``) and the async runner
(:meth:`Retry.acall`, ``async for attempt in retry``) only call the function and sleep.

The success path costs one clock read (the first attempt's start, for timing and the
stop conditions), one call and, when a budget is set, one deposit: no allocation and no
event. All the bookkeeping starts at the first failure.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import Attempt, ConfigurationError, RetryError
from seawall.events import Event, EventHub, hub
from seawall.resilience._backoff import Wait, constant, exponential
from seawall.resilience._budget import RetryBudget
from seawall.resilience._policy import Policy

__all__ = [
    "AttemptContext",
    "Retry",
    "RetryBudgetExhausted",
    "RetryGaveUp",
    "RetryScheduled",
    "RetrySucceeded",
    "parse_retry_after",
    "retry_testing",
]

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

ExceptionFilter = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[Exception], bool]
)
"""What ``on=`` accepts: exception types, or a predicate that says whether to retry."""

ATTEMPTS_EXHAUSTED: Final = "attempts exhausted"
TIMEOUT_REACHED: Final = "timeout reached"
DEADLINE_REACHED: Final = "deadline reached"
RETRY_AFTER_BEYOND_TIMEOUT: Final = "retry_after beyond timeout"
RETRY_AFTER_BEYOND_DEADLINE: Final = "retry_after beyond deadline"
BUDGET_EXHAUSTED: Final = "retry budget exhausted"

DEFAULT_WAIT: Final = exponential(0.1, cap=10.0, jitter="full")
"""The default schedule: 0.1 s doubling up to 10 s, with full jitter."""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """Attempt ``attempt`` failed and the next one starts after ``wait`` seconds."""

    attempt: int
    wait: float
    exception: BaseException | None
    """What the failed attempt raised (``None`` when its result was rejected)."""
    result: Any = None


@dataclass(frozen=True, slots=True)
class RetryGaveUp(Event):
    """The policy stopped retrying after ``attempts`` attempts, for ``reason``."""

    attempts: int
    reason: str
    exception: BaseException | None
    """The last attempt's exception (``None`` when its result was rejected)."""


@dataclass(frozen=True, slots=True)
class RetryBudgetExhausted(Event):
    """A retry after attempt ``attempt`` was refused because the shared budget is spent."""

    attempt: int
    balance: float


@dataclass(frozen=True, slots=True)
class RetrySucceeded(Event):
    """A call succeeded after ``attempts`` attempts (emitted only when it needed retries)."""

    attempts: int


# --------------------------------------------------------------------- testing mode


@dataclass(frozen=True, slots=True)
class _TestingMode:
    attempts: int | None


_testing: _TestingMode | None = None


class _TestingRestorer:
    """Returned by :func:`retry_testing`: restores the previous mode when used with ``with``."""

    __slots__ = ("_previous",)

    def __init__(self, previous: _TestingMode | None) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        global _testing
        _testing = self._previous


def retry_testing(enabled: bool = True, *, attempts: int | None = 1) -> _TestingRestorer:
    """Make every retry policy skip its waits (and stop after ``attempts``) for a test suite.

    Takes effect at once; used as ``with retry_testing(): ...`` it is undone on exit.
    ``attempts=None`` keeps each policy's own attempt limit.
    """
    global _testing
    if attempts is not None and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
    ):
        raise ConfigurationError(
            f"retry_testing(attempts={attempts!r}) is invalid: attempts must be None or an int >= 1"
        )
    previous = _testing
    _testing = _TestingMode(attempts) if enabled else None
    return _TestingRestorer(previous)


# ----------------------------------------------------------------- Retry-After hints

_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?", re.ASCII)


def parse_retry_after(
    header_value: str | bytes | None, now_wall: float | None = None
) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` value (delta-seconds or HTTP-date).

    ``now_wall`` is the current Unix time (default ``time.time()``), used for dates. Returns
    ``None`` for a missing or malformed value and ``0.0`` for a date already past.
    """
    if header_value is None:
        return None
    text = (
        header_value.decode("latin-1") if isinstance(header_value, bytes) else header_value
    ).strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # the asctime form carries no zone; HTTP dates are GMT
        moment = moment.replace(tzinfo=UTC)
    now = time.time() if now_wall is None else now_wall
    return max(0.0, moment.timestamp() - now)


def _retry_after_of(exception: BaseException) -> float | None:
    """The ``retry_after`` hint an error carries, as seconds, or ``None``."""
    hint = getattr(exception, "retry_after", None)
    if hint is None or isinstance(hint, bool):
        return None
    if isinstance(hint, int | float):
        return None if math.isnan(hint) else max(0.0, float(hint))
    if isinstance(hint, str | bytes):
        return parse_retry_after(hint)
    if isinstance(hint, timedelta):
        return max(0.0, hint.total_seconds())
    return None


# ------------------------------------------------------------------ the sans-I/O core


class _RetryRun:
    """The decisions for one retried call: fed each failed attempt, returns the next wait."""

    __slots__ = ("attempts", "first_started", "policy", "previous_wait", "reason")

    def __init__(self, policy: Retry, first_started: float) -> None:
        self.policy = policy
        self.first_started = first_started
        self.attempts: list[Attempt] = []
        self.previous_wait = 0.0
        self.reason = ""

    def after_failure(
        self, started: float, now: float, exception: Exception | None, result: Any
    ) -> float | None:
        """Record a failed attempt that ended at ``now``; the wait before the next, or ``None``."""
        policy = self.policy
        number = len(self.attempts) + 1
        self.attempts.append(Attempt(number, started, now - started, exception, result))
        testing = _testing
        limit = policy.attempts
        if testing is not None and testing.attempts is not None:
            limit = testing.attempts if limit is None else min(limit, testing.attempts)
        if limit is not None and number >= limit:
            return self._stop(ATTEMPTS_EXHAUSTED)

        scheduled = policy.wait.next_wait(number, self.previous_wait)
        self.previous_wait = scheduled
        wait = scheduled
        if exception is not None and policy.respect_retry_after:
            hint = _retry_after_of(exception)
            if hint is not None:
                if policy.max_retry_after is not None and hint > policy.max_retry_after:
                    hint = policy.max_retry_after
                wait = max(wait, hint)
        if testing is not None:
            wait = scheduled = 0.0

        if policy.timeout is not None:
            limit_at = self.first_started + policy.timeout
            if now + wait >= limit_at:
                late_anyway = now + scheduled >= limit_at
                return self._stop(TIMEOUT_REACHED if late_anyway else RETRY_AFTER_BEYOND_TIMEOUT)
        if policy.deadline is not None and now + wait >= policy.deadline:
            late_anyway = now + scheduled >= policy.deadline
            return self._stop(DEADLINE_REACHED if late_anyway else RETRY_AFTER_BEYOND_DEADLINE)

        budget = policy.budget
        if budget is not None and not budget.try_withdraw(now):
            if policy.events.active:
                policy.events.emit(RetryBudgetExhausted(policy.name, number, budget.balance(now)))
            return self._stop(BUDGET_EXHAUSTED)

        if policy.events.active:
            policy.events.emit(RetryScheduled(policy.name, number, wait, exception, result))
        return wait

    def _stop(self, reason: str) -> float | None:
        """Give up for ``reason``: always ``None``, so callers can ``return self._stop(...)``."""
        self.reason = reason
        return None

    def give_up(self) -> BaseException:
        """The exception to raise now that the policy gave up (``RetryError`` or the last one)."""
        policy = self.policy
        last = self.attempts[-1]
        if policy.events.active:
            policy.events.emit(
                RetryGaveUp(policy.name, len(self.attempts), self.reason, last.exception)
            )
        if policy.reraise and last.exception is not None:
            return last.exception
        error = RetryError(policy.name, self.attempts, self.reason)
        error.__cause__ = last.exception
        error.__suppress_context__ = True
        return error

    def succeeded(self) -> None:
        """Report a success after at least one retry."""
        policy = self.policy
        if policy.events.active:
            policy.events.emit(RetrySucceeded(policy.name, len(self.attempts) + 1))


# ------------------------------------------------------------------------- the policy


def _exception_filter(on: ExceptionFilter) -> Callable[[Exception], bool]:
    if isinstance(on, type) and issubclass(on, BaseException):
        types: tuple[type[BaseException], ...] = (on,)
    elif isinstance(on, tuple) and all(
        isinstance(item, type) and issubclass(item, BaseException) for item in on
    ):
        types = on
    elif callable(on) and not isinstance(on, type):
        return on
    else:
        raise ConfigurationError(
            f"Retry(on={on!r}) is invalid: pass an exception type, a tuple of exception types, "
            "or a predicate(exception) -> bool"
        )
    if not types:
        raise ConfigurationError("Retry(on=()) is invalid: name at least one exception type")

    def matches(exception: Exception) -> bool:
        return isinstance(exception, types)

    return matches


class Retry(Policy):
    """Run a call again when it raises (or returns) something worth retrying.

    Stops after ``attempts``, when the next wait would pass ``timeout`` (seconds since the
    first attempt started) or ``deadline`` (a ``clock.now()`` value), or when the shared
    ``budget`` is spent; then raises :class:`~seawall.errors.RetryError` carrying every
    attempt (or, with ``reraise=True``, the last exception). Errors with a ``retry_after``
    hint are waited for at least that long (at most ``max_retry_after``).
    """

    def __init__(
        self,
        attempts: int | None = 3,
        *,
        wait: Wait | float = DEFAULT_WAIT,
        on: ExceptionFilter = Exception,
        on_result: Callable[[Any], bool] | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        budget: RetryBudget | None = None,
        respect_retry_after: bool = True,
        max_retry_after: float | None = 60.0,
        reraise: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "retry",
    ) -> None:
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
        ):
            raise ConfigurationError(
                f"Retry(attempts={attempts!r}) is invalid: attempts must be an int >= 1 "
                "(1 means no retry) or None for no limit"
            )
        if isinstance(wait, int | float) and not isinstance(wait, bool):
            wait = constant(wait)
        if not isinstance(wait, Wait):
            raise ConfigurationError(
                f"Retry(wait={wait!r}) is invalid: pass seconds, constant(), linear(), "
                "exponential(), decorrelated() or a Wait subclass"
            )
        if on_result is not None and not callable(on_result):
            raise ConfigurationError(
                f"Retry(on_result={on_result!r}) is invalid: pass a predicate(result) -> bool"
            )
        for field, value in (("timeout", timeout), ("max_retry_after", max_retry_after)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise ConfigurationError(
                    f"Retry({field}={value!r}) is invalid: {field} must be None or seconds > 0"
                )
        if deadline is not None and (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or math.isnan(deadline)
        ):
            raise ConfigurationError(
                f"Retry(deadline={deadline!r}) is invalid: deadline must be None or a "
                "clock.now() value in seconds"
            )
        if budget is not None and not isinstance(budget, RetryBudget):
            raise ConfigurationError(
                f"Retry(budget={budget!r}) is invalid: pass a RetryBudget or None"
            )
        if not isinstance(clock, Clock):
            raise ConfigurationError(
                f"Retry(clock={clock!r}) is invalid: pass a seawall.clock.Clock"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"Retry(name={name!r}) is invalid: name must be a non-empty str"
            )
        self.attempts = attempts
        self.wait: Wait = wait
        self.on = on
        self.on_result = on_result
        self.timeout = None if timeout is None else float(timeout)
        self.deadline = None if deadline is None else float(deadline)
        self.budget = budget
        self.respect_retry_after = bool(respect_retry_after)
        self.max_retry_after = None if max_retry_after is None else float(max_retry_after)
        self.reraise = bool(reraise)
        self.clock = clock
        self.name = name
        self.events = EventHub(parent=hub)
        self._retryable = _exception_filter(on)
        self._now = clock.now

    def replace(self, **changes: Any) -> Retry:
        """A copy with some options changed (e.g. a per-request ``deadline``).

        The copy shares this policy's budget and event hub.
        """
        options: dict[str, Any] = {
            "attempts": self.attempts,
            "wait": self.wait,
            "on": self.on,
            "on_result": self.on_result,
            "timeout": self.timeout,
            "deadline": self.deadline,
            "budget": self.budget,
            "respect_retry_after": self.respect_retry_after,
            "max_retry_after": self.max_retry_after,
            "reraise": self.reraise,
            "clock": self.clock,
            "name": self.name,
        }
        unknown = sorted(set(changes) - set(options))
        if unknown:
            raise ConfigurationError(
                f"Retry.replace() got unknown option(s) {unknown}; valid: {sorted(options)}"
            )
        options.update(changes)
        copy = Retry(**options)
        copy.events = self.events
        return copy

    # ------------------------------------------------------------------ sync runner

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)``, retrying per this policy; returns its result."""
        started = self._now()
        if self.budget is not None:
            self.budget.deposit(started)
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if not self._retryable(exc):
                raise
            failure: Exception | None = exc
            result = cast(T, None)
        else:
            if self.on_result is None or not self.on_result(result):
                return result
            failure = None
        return self._retry(fn, args, kwargs, started, failure, result)

    def _retry(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        started: float,
        failure: Exception | None,
        result: T,
    ) -> T:
        """Everything after the first failed attempt, in the calling thread."""
        now = self._now
        run = _RetryRun(self, started)
        ended = now()
        while True:
            wait = run.after_failure(started, ended, failure, result)
            if wait is None:
                raise run.give_up()
            if wait > 0:
                self.clock.sleep(wait)
            started = now()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                ended = now()
                if not self._retryable(exc):
                    raise
                failure = exc
                result = cast(T, None)
                continue
            ended = now()
            if self.on_result is not None and self.on_result(result):
                failure = None
                continue
            run.succeeded()
            return result

    # ----------------------------------------------------------------- async runner

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying per this policy; returns its result."""
        started = self._now()
        if self.budget is not None:
            self.budget.deposit(started)
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            if not self._retryable(exc):
                raise
            failure: Exception | None = exc
            result = cast(T, None)
        else:
            if self.on_result is None or not self.on_result(result):
                return result
            failure = None
        return await self._aretry(fn, args, kwargs, started, failure, result)

    async def _aretry(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        started: float,
        failure: Exception | None,
        result: T,
    ) -> T:
        """Everything after the first failed attempt, in the calling task."""
        now = self._now
        run = _RetryRun(self, started)
        ended = now()
        while True:
            wait = run.after_failure(started, ended, failure, result)
            if wait is None:
                raise run.give_up()
            if wait > 0:
                await self.clock.asleep(wait)
            started = now()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                ended = now()
                if not self._retryable(exc):
                    raise
                failure = exc
                result = cast(T, None)
                continue
            ended = now()
            if self.on_result is not None and self.on_result(result):
                failure = None
                continue
            run.succeeded()
            return result

    # -------------------------------------------------------------------- decorator

    def decorate(self, fn: F) -> F:
        """Wrap ``fn`` (sync or async); the success path is one clock read and the call."""
        now = self._now
        retryable = self._retryable
        on_result = self.on_result
        budget = self.budget
        if inspect.iscoroutinefunction(fn):
            aretry = self._aretry

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                started = now()
                if budget is not None:
                    budget.deposit(started)
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    if not retryable(exc):
                        raise
                    failure: Exception | None = exc
                    result = None
                else:
                    if on_result is None or not on_result(result):
                        return result
                    failure = None
                return await aretry(fn, args, kwargs, started, failure, result)

            return cast(F, async_wrapper)

        retry = self._retry

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = now()
            if budget is not None:
                budget.deposit(started)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not retryable(exc):
                    raise
                failure: Exception | None = exc
                result = None
            else:
                if on_result is None or not on_result(result):
                    return result
                failure = None
            return retry(fn, args, kwargs, started, failure, result)

        return cast(F, wrapper)

    # ---------------------------------------------------------- iterator of attempts

    def __iter__(self) -> Iterator[AttemptContext]:
        """``for attempt in retry: with attempt: ...`` retries the block (sync code)."""
        return _Attempts(_AttemptDriver(self))

    def __aiter__(self) -> AsyncIterator[AttemptContext]:
        """``async for attempt in retry: with attempt: ...`` retries the block (async code)."""
        return _AsyncAttempts(_AttemptDriver(self))

    def __repr__(self) -> str:
        options = [f"attempts={self.attempts!r}", f"wait={self.wait!r}"]
        if self.timeout is not None:
            options.append(f"timeout={self.timeout!r}")
        if self.deadline is not None:
            options.append(f"deadline={self.deadline!r}")
        if self.budget is not None:
            options.append(f"budget={self.budget!r}")
        return f"Retry({', '.join(options)}, name={self.name!r})"


# ------------------------------------------------------------------------ attempts


class AttemptContext:
    """One attempt of a ``for attempt in retry:`` loop; run its body in ``with attempt:``.

    A retryable exception leaving the block is swallowed and the loop goes on after the
    wait; when the policy gives up, the block raises :class:`~seawall.errors.RetryError`.
    """

    __slots__ = ("_driver", "number", "started")

    def __init__(self, driver: _AttemptDriver, number: int, started: float) -> None:
        self._driver = driver
        self.number = number
        """1 for the first attempt."""
        self.started = started

    def __enter__(self) -> AttemptContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return self._driver.finish(self, exc)

    def __repr__(self) -> str:
        return f"AttemptContext(number={self.number})"


class _AttemptDriver:
    """The state between the attempts of one loop, shared by the sync and async iterators."""

    __slots__ = ("pending_wait", "policy", "run", "started_attempts", "state")

    def __init__(self, policy: Retry) -> None:
        self.policy = policy
        self.run: _RetryRun | None = None
        self.state = "new"  # new -> running -> (retry -> running)* -> done
        self.pending_wait = 0.0
        self.started_attempts = 0

    def next_wait(self) -> float | None:
        """The wait before the next attempt, or ``None`` when the loop is over."""
        if self.state == "new":
            return 0.0
        if self.state == "retry":
            return self.pending_wait
        self.state = "done"  # succeeded, gave up, or an attempt was never entered
        return None

    def begin(self) -> AttemptContext:
        """Start the next attempt now."""
        policy = self.policy
        started = policy._now()
        if self.state == "new" and policy.budget is not None:
            policy.budget.deposit(started)
        if self.run is None:
            self.run = _RetryRun(policy, started)
        self.state = "running"
        self.started_attempts += 1
        return AttemptContext(self, self.started_attempts, started)

    def finish(self, attempt: AttemptContext, exc: BaseException | None) -> bool:
        """Close ``attempt``; ``True`` swallows its exception because a retry follows."""
        run = self.run
        if run is None or self.state != "running" or attempt.number != self.started_attempts:
            return False  # an attempt entered out of order: leave its outcome alone
        if exc is None:
            self.state = "done"
            if attempt.number > 1:
                run.succeeded()
            return False
        if not isinstance(exc, Exception) or not self.policy._retryable(exc):
            self.state = "done"
            return False
        wait = run.after_failure(attempt.started, self.policy._now(), exc, None)
        if wait is None:
            self.state = "done"
            error = run.give_up()
            if error is exc:
                return False
            raise error
        self.state = "retry"
        self.pending_wait = wait
        return True


class _Attempts(Iterator[AttemptContext]):
    __slots__ = ("_driver",)

    def __init__(self, driver: _AttemptDriver) -> None:
        self._driver = driver

    def __next__(self) -> AttemptContext:
        wait = self._driver.next_wait()
        if wait is None:
            raise StopIteration
        if wait > 0:
            self._driver.policy.clock.sleep(wait)
        return self._driver.begin()


class _AsyncAttempts(AsyncIterator[AttemptContext]):
    __slots__ = ("_driver",)

    def __init__(self, driver: _AttemptDriver) -> None:
        self._driver = driver

    async def __anext__(self) -> AttemptContext:
        wait = self._driver.next_wait()
        if wait is None:
            raise StopAsyncIteration
        if wait > 0:
            await self._driver.policy.clock.asleep(wait)
        return self._driver.begin()
