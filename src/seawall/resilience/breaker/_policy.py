"""The CircuitBreaker policy: thin sync and async runners over one sans-I/O core.

The closed fast path (count window, no slow-call rule, no result predicate, no
listener) is: see ``core.reject_until is NEVER``, read ``core.fast_ticket``, run the
call, count the success with one C call. An open breaker rejects from
``core.reject_until`` after one clock read,
raising a :class:`CallNotPermittedError` that formats its message only when read.
Everything else (timing, predicates, events, half-open permits, the shared store)
runs on the general path, written once for both flavours.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.engines import Engine
from seawall.errors import ConfigurationError, EngineError
from seawall.events import EventHub, hub
from seawall.resilience._policy import Policy
from seawall.resilience.breaker._config import (
    BreakerConfig,
    CountWindow,
    SlowCall,
    TimeWindow,
)
from seawall.resilience.breaker._core import (
    NEVER,
    REJECTED,
    BreakerCore,
    BreakerMetrics,
    CircuitState,
    Transition,
)
from seawall.resilience.breaker._errors import (
    CallNotPermittedError,
    CircuitStoreUnavailableError,
    Rejection,
)
from seawall.resilience.breaker._events import (
    CircuitCallFailed,
    CircuitCallIgnored,
    CircuitCallRejected,
    CircuitCallSucceeded,
    CircuitReset,
    CircuitStateChanged,
    CircuitStoreRecovered,
    CircuitStoreUnavailable,
)
from seawall.resilience.breaker._shared import (
    ASK_STORE,
    STORE_DOWN,
    BreakerStore,
    SharedBreakerCore,
    StoreError,
)

__all__ = ["CircuitBreaker", "ErrorFilter"]

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_logger = logging.getLogger("seawall.resilience.breaker")

_DEFAULT_WINDOW = CountWindow()

ErrorFilter = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
"""Which exceptions a rule matches: a class, a tuple of classes, or a predicate."""


def _error_predicate(field: str, value: object) -> Callable[[BaseException], bool]:
    if isinstance(value, type) and issubclass(value, BaseException):
        value = (value,)
    if isinstance(value, tuple):
        if not all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in value):
            raise ConfigurationError(
                f"{field}={value!r} is invalid: a tuple must hold exception classes only"
            )
        kinds: tuple[type[BaseException], ...] = value
        return lambda error: isinstance(error, kinds)
    if callable(value):
        return cast(Callable[[BaseException], bool], value)
    raise ConfigurationError(
        f"{field}={value!r} is invalid: it must be an exception class, a tuple of them, "
        "or a predicate taking the exception and returning bool"
    )


class CircuitBreaker(Policy):
    """Stops calling a failing downstream, then lets a few trial calls probe it.

    CLOSED judges a sliding window (``window``): once it holds ``minimum_calls``
    calls and the failure rate reaches ``failure_rate`` (or the slow-call rate
    reaches ``slow_call.rate``), the breaker trips to OPEN and rejects calls for
    ``open_for`` seconds (times ``open_backoff`` for each further trip in a row, at
    most ``max_open_for``). Then HALF_OPEN lets ``half_open_calls`` trial calls
    through: if their rates stay under the thresholds it closes, otherwise it
    reopens. ``store`` shares one breaker between processes (see
    :class:`~seawall.resilience.breaker.redis.RedisBreakerStore`).
    """

    def __init__(
        self,
        name: str = "breaker",
        *,
        window: CountWindow | TimeWindow = _DEFAULT_WINDOW,
        failure_rate: float = 0.5,
        slow_call: SlowCall | None = None,
        minimum_calls: int = 10,
        open_for: float = 30.0,
        open_backoff: float = 1.0,
        max_open_for: float | None = None,
        half_open_calls: int = 5,
        record: ErrorFilter = Exception,
        ignore: ErrorFilter = (),
        record_result: Callable[[Any], bool] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        store: BreakerStore | Engine | str | None = None,
        on_store_error: StoreError = "fail_open",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name={name!r} is invalid: it must be a non-empty string")
        if on_store_error not in ("fail_open", "fail_closed"):
            raise ConfigurationError(
                f"on_store_error={on_store_error!r} is invalid: it must be 'fail_open' "
                "(decide locally while the store is down) or 'fail_closed' (reject calls)"
            )
        if record_result is not None and not callable(record_result):
            raise ConfigurationError(
                f"record_result={record_result!r} is invalid: it must be None or a predicate "
                "taking the result and returning True when it counts as a failure"
            )
        self.name = name
        self.config = BreakerConfig(
            window=window,
            failure_rate=failure_rate,
            slow_call=slow_call,
            minimum_calls=minimum_calls,
            open_for=open_for,
            open_backoff=open_backoff,
            max_open_for=max_open_for,
            half_open_calls=half_open_calls,
        )
        self._record = _error_predicate("record", record)
        self._ignore = _error_predicate("ignore", ignore)
        self._record_result = record_result
        self._timed = slow_call is not None or isinstance(window, TimeWindow)
        self._timed_only = self._timed and record_result is None
        self._clock = clock
        self._now = clock.now
        self.events = EventHub(parent=hub, on_active_change=self._events_changed)
        """Listeners of this breaker (chained to :data:`seawall.events.hub`)."""
        self._store: BreakerStore | None = None
        self._owns_store = False
        self._core: BreakerCore | SharedBreakerCore
        now = clock.now()
        fast_path = record_result is None
        if store is None:
            self._core = BreakerCore(self.config, now, fast_path=fast_path)
        else:
            shared = SharedBreakerCore(
                self.config, on_store_error=on_store_error, now=now, fast_path=fast_path
            )
            shared.local.on_transition = self._on_transition
            self._core = shared
            self._owns_store = isinstance(store, str | Engine)
            self._store = _as_store(store)
        self._core.on_transition = self._on_transition
        self._core.set_rejection_factory(self._describe_rejection)
        self._core.set_observed(self.events.active)
        if self._store is not None:
            assert isinstance(self._core, SharedBreakerCore)
            self._store.attach(name, self._core, self._clock, self._store_changed)

    # -- the policy ---------------------------------------------------------------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` if the breaker permits; raise CallNotPermittedError if not."""
        core = self._core
        until = core.reject_until
        if until is not NEVER:  # open, or forced open (raise before any try: see decorate)
            started = self._now()
            if started < until:
                core.rejected += 1
                raise CallNotPermittedError(core.rejection)
        else:
            ticket = core.fast_ticket
            if ticket:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:
                    self._settle_error(error, ticket, None)
                    raise
                core.add_success()
                return result
            started = self._now()
        ticket = core.admit_ticket or self._acquire(started)
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self._settle_error(error, ticket, started)
            raise
        self._settle_result(result, ticket, started)
        return result

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` if the breaker permits; raise CallNotPermittedError if not."""
        core = self._core
        until = core.reject_until
        if until is not NEVER:  # open, or forced open (raise before any try: see decorate)
            started = self._now()
            if started < until:
                core.rejected += 1
                raise CallNotPermittedError(core.rejection)
        else:
            ticket = core.fast_ticket
            if ticket:
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as error:
                    self._settle_error(error, ticket, None)
                    raise
                core.add_success()
                return result
            started = self._now()
        ticket = core.admit_ticket or await self._aacquire(started)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            self._settle_error(error, ticket, started)
            raise
        self._settle_result(result, ticket, started)
        return result

    def decorate(self, fn: F) -> F:
        """Wrap ``fn`` (sync or async) so every call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):
            return cast(F, self._decorate_async(fn))
        # Few free variables: each one costs every call a copy into the frame. The
        # rare paths reach the rest through ``breaker``.
        breaker = self
        core = self._core
        now = self._now
        add_success = core.add_success

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            until = core.reject_until
            if until is not NEVER:  # open, or forced open
                # This raise comes before any ``try`` in the bytecode: the interpreter
                # finds no handler in the exception table at once.
                started = now()
                if started < until:
                    core.rejected += 1
                    raise CallNotPermittedError(core.rejection)
                return breaker._general(fn, args, kwargs, started)
            ticket = core.fast_ticket
            if ticket:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:
                    breaker._settle_error(error, ticket, None)
                    raise
                add_success()
                return result
            started = now()
            ticket = core.admit_ticket
            if ticket and breaker._timed_only:
                # Closed with a slow-call rule or a time window: no permit to ask for,
                # only the end time to read.
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:
                    breaker._settle_error(error, ticket, started)
                    raise
                if breaker.events.active:
                    breaker._settle_result(result, ticket, started)
                else:
                    end = now()
                    core.on_success(end, end - started, ticket)
                return result
            return breaker._general(fn, args, kwargs, started)

        return cast(F, wrapper)

    def _decorate_async(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        breaker = self
        core = self._core
        now = self._now
        add_success = core.add_success

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            until = core.reject_until
            if until is not NEVER:  # open, or forced open
                # This raise comes before any ``try`` in the bytecode: the interpreter
                # finds no handler in the exception table at once.
                started = now()
                if started < until:
                    core.rejected += 1
                    raise CallNotPermittedError(core.rejection)
                return await breaker._ageneral(fn, args, kwargs, started)
            ticket = core.fast_ticket
            if ticket:
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as error:
                    breaker._settle_error(error, ticket, None)
                    raise
                add_success()
                return result
            started = now()
            ticket = core.admit_ticket
            if ticket and breaker._timed_only:
                # Closed with a slow-call rule or a time window: no permit to ask for,
                # only the end time to read.
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as error:
                    breaker._settle_error(error, ticket, started)
                    raise
                if breaker.events.active:
                    breaker._settle_result(result, ticket, started)
                else:
                    end = now()
                    core.on_success(end, end - started, ticket)
                return result
            return await breaker._ageneral(fn, args, kwargs, started)

        return wrapper

    # -- the general path ---------------------------------------------------------

    def _general(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], started: float
    ) -> Any:
        ticket = self._core.admit_ticket or self._acquire(started)
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self._settle_error(error, ticket, started)
            raise
        self._settle_result(result, ticket, started)
        return result

    async def _ageneral(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        started: float,
    ) -> Any:
        ticket = self._core.admit_ticket or await self._aacquire(started)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            self._settle_error(error, ticket, started)
            raise
        self._settle_result(result, ticket, started)
        return result

    def _acquire(self, now: float) -> int:
        ticket = self._core.try_acquire(now)
        if ticket > 0:
            return ticket
        if ticket == ASK_STORE:
            ticket = self._ask_store(now)
            if ticket > 0:
                return ticket
        return self._refuse(now, ticket)

    async def _aacquire(self, now: float) -> int:
        ticket = self._core.try_acquire(now)
        if ticket > 0:
            return ticket
        if ticket == ASK_STORE:
            # The permit round trip runs in a worker thread so the event loop never
            # blocks on the store; it only happens while the circuit is half-open.
            ticket = await asyncio.to_thread(self._ask_store, now)
            if ticket > 0:
                return ticket
        return self._refuse(now, ticket)

    def _ask_store(self, now: float) -> int:
        core = self._core
        assert isinstance(core, SharedBreakerCore)
        assert self._store is not None
        try:
            reply = self._store.acquire(core)
        except EngineError as exc:
            if core.store_failed(self._now(), exc):
                self._store_changed(exc)
            return core.try_acquire(now)
        return core.apply_acquire(self._now(), reply)

    def _describe_rejection(self, state: CircuitState, until: float) -> Rejection:
        return Rejection(self.name, state, until, self._now)

    def _refuse(self, now: float, ticket: int) -> int:
        if ticket == STORE_DOWN:
            core = self._core
            store = self._store
            cause = (
                core.last_error if isinstance(core, SharedBreakerCore) else None
            ) or EngineError("the store is unavailable")
            if self.events.active:
                self.events.emit(CircuitCallRejected(self.name, core.state, None))
            raise CircuitStoreUnavailableError(
                self.name, store.describe() if store is not None else "store", cause
            ) from cause
        assert ticket == REJECTED
        raise self._reject(now, self._core.retry_after(now), counted=True)

    def _reject(
        self, now: float, retry_after: float | None, counted: bool = False
    ) -> CallNotPermittedError:
        core = self._core
        if not counted:
            core.rejected += 1
        state = core.poll(now)
        if self.events.active:
            wait = retry_after if retry_after is not None and retry_after != float("inf") else None
            self.events.emit(CircuitCallRejected(self.name, state, wait))
        error: CallNotPermittedError = CallNotPermittedError(self.name, state, retry_after)
        return error

    def _settle_result(self, result: Any, ticket: int, started: float) -> None:
        # Each call's event goes out before the core records it, so a state change the
        # outcome causes is announced after the call that caused it.
        record_result = self._record_result
        events = self.events
        if record_result is not None and record_result(result):
            end = self._now()
            if events.active:
                events.emit(CircuitCallFailed(self.name, end - started, None))
            self._core.on_error(end, end - started, ticket)
            return
        if not (self._timed or events.active):
            self._core.on_success(started, 0.0, ticket)  # the end time is not needed
            return
        end = self._now()
        duration = end - started
        if events.active:
            slow_call = self.config.slow_call
            slow = slow_call is not None and duration >= slow_call.over
            events.emit(CircuitCallSucceeded(self.name, duration, slow))
        self._core.on_success(end, duration, ticket)

    def _settle_error(self, error: BaseException, ticket: int, started: float | None) -> None:
        end = self._now()
        duration = end - started if started is not None else 0.0
        core = self._core
        events = self.events
        if not isinstance(error, Exception) or self._ignore(error):
            if events.active:
                events.emit(CircuitCallIgnored(self.name, error))
            core.on_ignored(ticket)
        elif self._record(error):
            if events.active:
                events.emit(CircuitCallFailed(self.name, duration, error))
            core.on_error(end, duration, ticket)
        else:
            if events.active:
                events.emit(CircuitCallSucceeded(self.name, duration, False))
            core.on_success(end, duration, ticket)

    # -- observing ----------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (an open circuit whose wait is over reads as half-open)."""
        return self._core.poll(self._now())

    def metrics(self) -> BreakerMetrics:
        """A snapshot: state, rates and counts of the window being judged."""
        return self._core.metrics(self._now())

    def _on_transition(self, transition: Transition) -> None:
        _logger.info(
            "circuit breaker %r: %s -> %s (%s)",
            self.name,
            transition.previous.value,
            transition.current.value,
            transition.reason,
        )
        if self.events.active:
            self.events.emit(
                CircuitStateChanged(
                    self.name,
                    transition.previous,
                    transition.current,
                    transition.reason,
                    transition.open_for,
                )
            )

    def _events_changed(self, active: bool) -> None:
        core = getattr(self, "_core", None)
        if core is not None:
            core.set_observed(active)

    def _store_changed(self, error: BaseException | None) -> None:
        core = self._core
        assert isinstance(core, SharedBreakerCore)
        if error is None:
            _logger.warning("circuit breaker %r: shared store recovered", self.name)
            if self.events.active:
                self.events.emit(CircuitStoreRecovered(self.name))
            return
        _logger.warning(
            "circuit breaker %r: shared store unavailable (%s); %s",
            self.name,
            error,
            "deciding locally" if core.on_store_error == "fail_open" else "rejecting calls",
        )
        if self.events.active:
            self.events.emit(CircuitStoreUnavailable(self.name, str(error), core.on_store_error))

    # -- manual control -----------------------------------------------------------

    def force_open(self) -> None:
        """Reject every call until ``force_closed``, ``reset`` or ``disable``."""
        self._control("force_open")

    def force_closed(self) -> None:
        """Close now with an empty window; automatic judging resumes."""
        self._control("force_closed")

    def disable(self) -> None:
        """Let every call through and record nothing, until another manual control."""
        self._control("disable")

    def reset(self) -> None:
        """Back to a new breaker: closed, empty window, counters at zero."""
        self._control("reset")
        if self.events.active:
            self.events.emit(CircuitReset(self.name))

    def _control(self, operation: str) -> None:
        core = self._core
        if isinstance(core, BreakerCore):
            getattr(core, operation)(self._now())
            return
        assert self._store is not None
        reply = self._store.command(core, operation)  # raises EngineError if unreachable
        core.apply_reply(self._now(), reply)
        if operation == "reset":
            core.reset_counters(self._now())

    # -- lifetime -----------------------------------------------------------------

    def close(self) -> None:
        """Detach from the shared store (its threads stop with its last breaker).

        A store the breaker made itself (from a URL or an engine) is closed too.
        """
        store = self._store
        if store is not None and isinstance(self._core, SharedBreakerCore):
            store.detach(self._core)
            close = getattr(store, "close", None)
            if self._owns_store and callable(close):
                close()

    def __enter__(self) -> CircuitBreaker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        shared = f", store={self._store.describe()}" if self._store is not None else ""
        return f"CircuitBreaker({self.name!r}, state={self._core.state.value}{shared})"


def _as_store(store: BreakerStore | Engine | str) -> BreakerStore:
    if isinstance(store, str | Engine):
        from seawall.resilience.breaker.redis import RedisBreakerStore

        return RedisBreakerStore(store)
    for method in ("attach", "detach", "acquire", "command", "describe"):
        if not callable(getattr(store, method, None)):
            raise ConfigurationError(
                f"store={store!r} is invalid: it must be a breaker store (e.g. "
                "RedisBreakerStore), a Redis engine, or a 'redis://' URL"
            )
    return store
