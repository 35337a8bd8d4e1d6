"""The rate limiter policy: an algorithm, a store, and the sync and async ways to ask.

``try_acquire`` answers at once; ``acquire`` waits (on the injected clock) up to
``max_wait`` for the permits, then raises :class:`~seawall.errors.RateLimitedError`
carrying ``retry_after``; ``decide`` returns the full :class:`RateLimitDecision`. Every method
takes a ``key`` (one allowance per user, tenant, IP...) and a ``cost`` in permits.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, ParamSpec, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.engines import Engine
from seawall.errors import ConfigurationError, EngineError, RateLimitedError
from seawall.events import Event, EventHub, hub
from seawall.resilience._policy import Policy
from seawall.resilience.ratelimit._algorithms import RateLimitAlgorithm
from seawall.resilience.ratelimit._store import RateLimitDecision, RateLimitStore, open_store

__all__ = [
    "DEFAULT_KEY",
    "RateLimitAcquired",
    "RateLimitRejected",
    "RateLimitStoreFailed",
    "RateLimiter",
]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_KEY: Final = "default"
"""The key used when none is given, and by ``call``/``acall``/``@limiter``."""

OnStoreError = Literal["raise", "fail_open", "fail_closed"]
_STORE_ERROR_MODES = ("raise", "fail_open", "fail_closed")
_UNKNOWN: Final = math.inf
"""The wait reported when a failed store makes the limiter deny (``fail_closed``)."""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RateLimitAcquired(Event):
    """``cost`` permits were granted to ``key`` after ``waited`` seconds (0 at once)."""

    key: str
    cost: int
    waited: float


@dataclass(frozen=True, slots=True)
class RateLimitRejected(Event):
    """``key`` was refused ``cost`` permits; ``retry_after`` is ``None`` when unknown."""

    key: str
    cost: int
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class RateLimitStoreFailed(Event):
    """The store failed; ``fallback`` says what the limiter did (raise, fail_open, fail_closed)."""

    key: str
    error: BaseException
    fallback: str


# --------------------------------------------------------------------------- policy


def _check_max_wait(value: object, field: str = "max_wait") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigurationError(
            f"RateLimiter {field} must be a number of seconds >= 0 (math.inf waits as long as "
            f"needed), got {value!r}"
        )
    return float(value)


class RateLimiter(Policy):
    """Limit how often each key may do something: ``algorithm`` applied in ``store``.

    ``store`` is ``None`` (private in-memory state), an engine URL (``"memory://"``,
    ``"redis://..."``, ``"postgresql://..."``), an :class:`~seawall.engines.Engine` or a
    :class:`RateLimitStore`. ``max_wait`` is how long ``acquire``, ``call`` and the
    decorator wait for permits by default (0: refuse at once). ``on_store_error`` says
    what a failing Redis/PostgreSQL means: ``"raise"`` the
    :class:`~seawall.errors.EngineError`, ``"fail_open"`` (allow) or ``"fail_closed"``
    (deny with ``retry_after=None``).
    """

    __slots__ = (
        "_atake",
        "_bound",
        "_capacity",
        "_clock",
        "_local_take",
        "_owned_engine",
        "_take",
        "algorithm",
        "events",
        "max_wait",
        "name",
        "on_store_error",
        "store",
    )

    def __init__(
        self,
        algorithm: RateLimitAlgorithm,
        store: str | Engine | RateLimitStore | None = None,
        *,
        name: str = "ratelimit",
        clock: Clock = SYSTEM_CLOCK,
        max_wait: float = 0.0,
        on_store_error: OnStoreError = "raise",
    ) -> None:
        if not isinstance(algorithm, RateLimitAlgorithm):
            raise ConfigurationError(
                "RateLimiter algorithm must be TokenBucket, GCRA, FixedWindow, "
                f"SlidingWindowLog or SlidingWindowCounter, got {algorithm!r}"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"RateLimiter name must be a non-empty string, got {name!r}")
        if on_store_error not in _STORE_ERROR_MODES:
            raise ConfigurationError(
                f"RateLimiter on_store_error must be one of {_STORE_ERROR_MODES}, "
                f"got {on_store_error!r}"
            )
        self.algorithm = algorithm
        self.name = name
        self.max_wait = _check_max_wait(max_wait)
        self.on_store_error: OnStoreError = on_store_error
        self._clock = clock
        self._capacity = algorithm.capacity
        self.store, self._owned_engine = open_store(store)
        self._bound = self.store.bind(algorithm, name, clock)
        self._take = self._bound.take
        self._atake = self._bound.atake
        self._local_take = self._take if self._bound.local else None
        self.events = EventHub(parent=hub)

    # ------------------------------------------------------------------ sync

    def try_acquire(self, key: str = DEFAULT_KEY, cost: int = 1) -> bool:
        """Take ``cost`` permits for ``key`` if available now; never waits."""
        if cost != 1:
            self._check_cost(cost)
        try:
            wait = self._take(key, cost)
        except EngineError as error:
            wait = self._store_failed(key, error)
        if self.events.active:
            self._report(key, cost, wait, 0.0)
        return not wait

    def acquire(self, key: str = DEFAULT_KEY, cost: int = 1, max_wait: float | None = None) -> None:
        """Take ``cost`` permits, waiting up to ``max_wait`` (default: the limiter's).

        Raises :class:`~seawall.errors.RateLimitedError` with ``retry_after`` at once
        when the permits cannot be free within the wait allowed.
        """
        if cost != 1:
            self._check_cost(cost)
        if max_wait is not None:
            max_wait = _check_max_wait(max_wait)
        try:
            wait = self._take(key, cost)
        except EngineError as error:
            wait = self._store_failed(key, error)
        if wait:
            self._wait_for(key, cost, wait, max_wait)
        elif self.events.active:
            self.events.emit(RateLimitAcquired(self.name, key, cost, 0.0))

    def decide(self, key: str = DEFAULT_KEY, cost: int = 1) -> RateLimitDecision:
        """Take ``cost`` permits if available now and return the whole decision.

        ``cost=0`` takes nothing: a way to read ``remaining`` and ``reset_after``.
        """
        if cost != 1:
            self._check_cost(cost)
        try:
            decision = self._bound.decide(key, cost)
        except EngineError as error:
            decision = self._failed_decision(key, error)
        if cost and self.events.active:  # a peek (cost 0) is no acquisition
            self._report(key, cost, decision.retry_after, 0.0)
        return decision

    def reset(self, key: str = DEFAULT_KEY) -> None:
        """Give ``key`` its full allowance back."""
        self._bound.reset(key)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Acquire one permit for the default key (waiting up to ``max_wait``), then call."""
        self.acquire(DEFAULT_KEY)
        return fn(*args, **kwargs)

    def _wait_for(self, key: str, cost: int, wait: float, max_wait: float | None) -> None:
        budget = self.max_wait if max_wait is None else max_wait
        clock = self._clock
        started = clock.now()
        while True:
            waited = clock.now() - started
            if wait == _UNKNOWN or wait > budget - waited:
                self._reject(key, cost, wait)
            clock.sleep(wait)
            try:
                wait = self._take(key, cost)
            except EngineError as error:
                wait = self._store_failed(key, error)
            if not wait:
                if self.events.active:
                    self.events.emit(RateLimitAcquired(self.name, key, cost, clock.now() - started))
                return

    # ------------------------------------------------------------------ async

    async def atry_acquire(self, key: str = DEFAULT_KEY, cost: int = 1) -> bool:
        """Async :meth:`try_acquire`."""
        if cost != 1:
            self._check_cost(cost)
        take = self._local_take
        if take is not None:
            wait = take(key, cost)
        else:
            try:
                wait = await self._atake(key, cost)
            except EngineError as error:
                wait = self._store_failed(key, error)
        if self.events.active:
            self._report(key, cost, wait, 0.0)
        return not wait

    async def aacquire(
        self, key: str = DEFAULT_KEY, cost: int = 1, max_wait: float | None = None
    ) -> None:
        """Async :meth:`acquire`: waits with ``clock.asleep``."""
        if cost != 1:
            self._check_cost(cost)
        if max_wait is not None:
            max_wait = _check_max_wait(max_wait)
        take = self._local_take
        if take is not None:
            wait = take(key, cost)
        else:
            try:
                wait = await self._atake(key, cost)
            except EngineError as error:
                wait = self._store_failed(key, error)
        if wait:
            await self._await_for(key, cost, wait, max_wait)
        elif self.events.active:
            self.events.emit(RateLimitAcquired(self.name, key, cost, 0.0))

    async def adecide(self, key: str = DEFAULT_KEY, cost: int = 1) -> RateLimitDecision:
        """Async :meth:`decide`."""
        if cost != 1:
            self._check_cost(cost)
        try:
            decision = await self._bound.adecide(key, cost)
        except EngineError as error:
            decision = self._failed_decision(key, error)
        if cost and self.events.active:  # a peek (cost 0) is no acquisition
            self._report(key, cost, decision.retry_after, 0.0)
        return decision

    async def areset(self, key: str = DEFAULT_KEY) -> None:
        """Async :meth:`reset`."""
        await self._bound.areset(key)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Acquire one permit for the default key (waiting up to ``max_wait``), then await."""
        await self.aacquire(DEFAULT_KEY)
        return await fn(*args, **kwargs)

    async def _await_for(self, key: str, cost: int, wait: float, max_wait: float | None) -> None:
        budget = self.max_wait if max_wait is None else max_wait
        clock = self._clock
        started = clock.now()
        while True:
            waited = clock.now() - started
            if wait == _UNKNOWN or wait > budget - waited:
                self._reject(key, cost, wait)
            await clock.asleep(wait)
            take = self._local_take
            if take is not None:
                wait = take(key, cost)
            else:
                try:
                    wait = await self._atake(key, cost)
                except EngineError as error:
                    wait = self._store_failed(key, error)
            if not wait:
                if self.events.active:
                    self.events.emit(RateLimitAcquired(self.name, key, cost, clock.now() - started))
                return

    # ------------------------------------------------------------------ shared

    def _check_cost(self, cost: object) -> None:
        if isinstance(cost, bool) or not isinstance(cost, int) or not 0 <= cost <= self._capacity:
            raise ConfigurationError(
                f"rate limit {self.name!r}: cost must be an integer from 0 to {self._capacity} "
                f"(the capacity of {self.algorithm.describe()}), got {cost!r}"
            )

    def _store_failed(self, key: str, error: EngineError) -> float:
        mode = self.on_store_error
        if self.events.active:
            self.events.emit(RateLimitStoreFailed(self.name, key, error, mode))
        if mode == "raise":
            raise error
        return 0.0 if mode == "fail_open" else _UNKNOWN

    def _failed_decision(self, key: str, error: EngineError) -> RateLimitDecision:
        allowed = not self._store_failed(key, error)
        return RateLimitDecision(
            allowed=allowed,
            remaining=self._capacity if allowed else 0,
            retry_after=0.0 if allowed else None,
            reset_after=0.0,
            limit=self._capacity,
        )

    def _report(self, key: str, cost: int, wait: float | None, waited: float) -> None:
        if not wait and wait is not None:
            self.events.emit(RateLimitAcquired(self.name, key, cost, waited))
        else:
            retry_after = None if wait is None or wait == _UNKNOWN else wait
            self.events.emit(RateLimitRejected(self.name, key, cost, retry_after))

    def _reject(self, key: str, cost: int, wait: float) -> None:
        retry_after = None if wait == _UNKNOWN else wait
        if self.events.active:
            self.events.emit(RateLimitRejected(self.name, key, cost, retry_after))
        raise RateLimitedError(self.name, key, retry_after=retry_after)

    # ------------------------------------------------------------------ lifecycle

    def cleanup(self) -> int:
        """Delete every idle key's state in the store now; returns how many."""
        return self.store.cleanup()

    def close(self) -> None:
        """Close the store's own connections and the engine opened from a URL, if any."""
        self.store.close()
        if self._owned_engine is not None:
            self._owned_engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close` (also closes the async connections of an owned engine)."""
        aclose = getattr(self.store, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            self.store.close()
        if self._owned_engine is not None:
            await self._owned_engine.aclose()

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.algorithm.describe()}, name={self.name!r}, "
            f"store={type(self.store).__name__}, max_wait={self.max_wait!r})"
        )
