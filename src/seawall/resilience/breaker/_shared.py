"""The sans-I/O half of a shared breaker: a local mirror of the state kept in a store.

Every process decides from its mirror, so a closed call costs what a local breaker's
does: no round trip. Outcomes are counted locally and handed to the store in
batches (:meth:`SharedBreakerCore.take_report`); the store merges them into the
shared window, judges, transitions atomically and answers with the shared state,
which :meth:`apply_reply` (or a published change, :meth:`apply_change`) copies into
the mirror. Half-open permits are granted by the store only
(:data:`ASK_STORE` tells the runner to ask), so N trial calls run fleet-wide.

When the store fails (:meth:`store_failed`) the mirror stops trusting itself:
``"fail_open"`` hands every decision to a local :class:`BreakerCore` seeded with the
last shared state; ``"fail_closed"`` rejects every call (:data:`STORE_DOWN`). The
first successful reply switches back.

No I/O, thread or clock here; the store adapter (``redis.py``) drives it.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from seawall.resilience.breaker._config import BreakerConfig
from seawall.resilience.breaker._core import (
    NEVER,
    REJECTED,
    BreakerCore,
    BreakerMetrics,
    CircuitState,
    Transition,
    new_period,
)
from seawall.resilience.breaker._windows import CallCounter

if TYPE_CHECKING:
    from seawall.clock import Clock

__all__ = [
    "ASK_STORE",
    "STORE_DOWN",
    "BreakerStore",
    "Report",
    "SharedBreakerCore",
    "SharedState",
    "StoreError",
]

ASK_STORE = -1
"""Ticket meaning: only the store can decide (a half-open permit); ask it."""
STORE_DOWN = -2
"""Ticket meaning: the store is unavailable and the breaker fails closed."""

StoreError = Literal["fail_open", "fail_closed"]


class Report(NamedTuple):
    """Outcomes counted since the last report, for one shared period (``epoch``)."""

    epoch: int
    calls: int
    failed: int
    slow: int
    released: int
    """Half-open permits handed back (ignored trial calls)."""


class SharedState(NamedTuple):
    """The store's answer: the shared state and the window it judges."""

    state: CircuitState
    epoch: int
    """Increases on every shared transition; a smaller one is stale."""
    remaining: float
    """Seconds the circuit stays open (0 unless OPEN), measured by the store's clock."""
    calls: float
    failed: float
    slow: float
    trips: int
    granted: bool = False
    """For an ``acquire``: whether a permit was granted."""
    reason: str = ""
    """Why the state last changed (empty when this operation changed nothing)."""


class BreakerStore(Protocol):
    """Where shared breakers keep their state; the Redis store implements it."""

    def attach(
        self,
        name: str,
        core: SharedBreakerCore,
        clock: Clock,
        on_store_change: Callable[[BaseException | None], None],
    ) -> None:
        """Start following the shared breaker ``name`` into ``core`` (syncs once)."""
        ...

    def detach(self, core: SharedBreakerCore) -> None:
        """Stop following; background work stops with the last attached core."""
        ...

    def acquire(self, core: SharedBreakerCore) -> SharedState:
        """Ask for a half-open permit (one round trip); raises EngineError on failure."""
        ...

    def command(self, core: SharedBreakerCore, operation: str) -> SharedState:
        """Apply a manual control (force_open, force_closed, disable, reset) to the shared state."""
        ...

    def describe(self) -> str:
        """A short, password-free description for errors and logs."""
        ...


class SharedBreakerCore:
    """A breaker that follows a shared state; same runner protocol as :class:`BreakerCore`."""

    __slots__ = (
        "_ask_after",
        "_flushed_successes",
        "_last_sync",
        "_local",
        "_lock",
        "_observed",
        "_pending_calls",
        "_pending_failed",
        "_pending_released",
        "_pending_slow",
        "_plain",
        "_recheck",
        "_rejected_base",
        "_remote",
        "_slow_over",
        "_successes",
        "_sync_interval",
        "_transitions",
        "add_success",
        "admit_ticket",
        "config",
        "degraded",
        "epoch",
        "fast_ticket",
        "last_error",
        "on_pending",
        "on_store_error",
        "on_transition",
        "open_until",
        "period",
        "reject_until",
        "rejected",
        "rejection",
        "rejection_factory",
        "state",
    )

    def __init__(
        self,
        config: BreakerConfig,
        *,
        on_store_error: StoreError = "fail_open",
        recheck: float = 0.1,
        sync_interval: float = 1.0,
        now: float = 0.0,
        fast_path: bool = True,
    ) -> None:
        self.config = config
        self._plain = fast_path and not config.slow_call
        self._observed = False
        self.on_store_error = on_store_error
        self._recheck = recheck
        self._sync_interval = sync_interval
        self._slow_over = config.slow_call.over if config.slow_call else math.inf
        self._lock = threading.Lock()
        self._transitions: deque[Transition] = deque()
        self.on_transition: Callable[[Transition], None] | None = None
        self.on_pending: Callable[[], None] | None = None
        """Called (outside the lock) when an outcome should reach the store soon."""
        self._successes = CallCounter()
        self.add_success: Callable[[], object] = self._successes.add_one
        self._flushed_successes = 0
        self.rejected = 0
        """Calls this process rejected (see :attr:`BreakerCore.rejected`)."""
        self._rejected_base = 0
        self._pending_calls = self._pending_failed = self._pending_slow = 0
        self._pending_released = 0
        self._local = BreakerCore(config, now, fast_path=fast_path)
        self._remote = SharedState(CircuitState.CLOSED, 0, 0.0, 0.0, 0.0, 0.0, 0)
        self._ask_after = -math.inf
        self._last_sync = -math.inf
        self.degraded = False
        """True while the store is failing and ``on_store_error`` decides."""
        self.last_error: BaseException | None = None
        """The store's most recent failure."""
        self.state = CircuitState.CLOSED
        self.epoch = 0
        self.period = new_period()
        self.fast_ticket = 0
        self.admit_ticket = 0
        self.open_until = -math.inf
        self.rejection: object = None
        self.rejection_factory: Callable[[CircuitState, float], object] | None = None
        self.reject_until = NEVER
        self._set_gates()

    @property
    def local(self) -> BreakerCore:
        """The per-process core used while the store fails open."""
        return self._local

    # -- the call protocol --------------------------------------------------------

    def try_acquire(self, now: float) -> int:
        """A ticket, :data:`REJECTED`, :data:`ASK_STORE` or :data:`STORE_DOWN`."""
        if self.degraded:
            if self.on_store_error == "fail_open":
                return self._local.try_acquire(now)
            return STORE_DOWN
        state = self.state
        if state is CircuitState.CLOSED or state is CircuitState.DISABLED:
            return self.period
        if (
            state is CircuitState.FORCED_OPEN
            or (state is CircuitState.OPEN and now < self.open_until)
            or (state is CircuitState.HALF_OPEN and now < self._ask_after)
        ):
            self.rejected += 1
            return REJECTED
        return ASK_STORE

    def apply_acquire(self, now: float, reply: SharedState) -> int:
        """Take the store's answer to an ``acquire``: a ticket or :data:`REJECTED`."""
        self.apply_reply(now, reply)
        if reply.granted and reply.epoch == self.epoch:
            return self.period
        if reply.state is CircuitState.HALF_OPEN:
            self._ask_after = now + self._recheck
        self.rejected += 1
        return REJECTED

    def on_success(self, now: float, duration: float, ticket: int) -> None:
        """Count a success for the store (or hand it to the local core)."""
        if ticket != self.period:
            self._local.on_success(now, duration, ticket)
            return
        slow = duration >= self._slow_over
        state = self.state
        if state is CircuitState.CLOSED and not slow:
            self.add_success()
            return
        if state is CircuitState.CLOSED or state is CircuitState.HALF_OPEN:
            self._count(ticket, False, slow)

    def on_error(self, now: float, duration: float, ticket: int) -> None:
        """Count a failure for the store (or hand it to the local core)."""
        if ticket != self.period:
            self._local.on_error(now, duration, ticket)
            return
        if self.state is CircuitState.CLOSED or self.state is CircuitState.HALF_OPEN:
            self._count(ticket, True, duration >= self._slow_over)

    def on_ignored(self, ticket: int) -> None:
        """Give a half-open permit back to the store (or to the local core)."""
        if ticket != self.period:
            self._local.on_ignored(ticket)
            return
        if self.state is CircuitState.HALF_OPEN:
            with self._lock:
                if ticket != self.period:
                    return
                self._pending_released += 1
            self._wake()

    def _count(self, ticket: int, failed: bool, slow: bool) -> None:
        with self._lock:
            if ticket != self.period:
                return
            self._pending_calls += 1
            self._pending_failed += failed
            self._pending_slow += slow
        if failed or self.state is CircuitState.HALF_OPEN:
            self._wake()

    def _wake(self) -> None:
        callback = self.on_pending
        if callback is not None:
            callback()

    # -- the store side -----------------------------------------------------------

    def take_report(self, now: float, *, force: bool = False) -> Report | None:
        """The outcomes to send now, or None when nothing is pending and no sync is due.

        ``force`` returns a report even when empty (a probe of a failing store).
        """
        with self._lock:
            successes = self._successes.read()
            new_successes = successes - self._flushed_successes
            self._flushed_successes = successes
            if self.state is not CircuitState.CLOSED:
                new_successes = 0  # counted by fast paths racing a transition
            calls = new_successes + self._pending_calls
            report = Report(
                self.epoch,
                calls,
                self._pending_failed,
                self._pending_slow,
                self._pending_released,
            )
            self._pending_calls = self._pending_failed = self._pending_slow = 0
            self._pending_released = 0
            if (
                not (force or calls or report.released)
                and now - self._last_sync < self._sync_interval
            ):
                return None
            self._last_sync = now
            return report

    def apply_reply(self, now: float, reply: SharedState) -> None:
        """Copy the store's state into the mirror (a stale epoch is ignored)."""
        with self._lock:
            self._last_sync = now
            recovered = self.degraded
            self.degraded = False
            if reply.epoch >= self.epoch:
                self._remote = reply
            if reply.epoch > self.epoch or recovered:
                self._adopt(now, reply.state, reply.epoch, reply.remaining, recovered, reply.reason)
            elif reply.epoch == self.epoch and reply.state is CircuitState.OPEN:
                # Same open period, as the store measures it: align the local deadline.
                self.open_until = now + reply.remaining
                self._set_gates()
        if self._transitions:
            self._announce()

    def apply_change(
        self,
        now: float,
        state: CircuitState,
        epoch: int,
        remaining: float,
        trips: int,
        reason: str = "",
    ) -> None:
        """A change published by another process (or this one)."""
        with self._lock:
            if self.degraded or epoch <= self.epoch:
                return
            # Every shared transition starts an empty window.
            self._remote = SharedState(state, epoch, remaining, 0.0, 0.0, 0.0, trips, False, reason)
            self._adopt(now, state, epoch, remaining, False, reason)
        if self._transitions:
            self._announce()

    def store_failed(self, now: float, error: BaseException) -> bool:
        """The store failed: switch to ``on_store_error``. True if this is news."""
        with self._lock:
            self.last_error = error
            if self.degraded:
                return False
            self.degraded = True
            self.period = new_period()  # outcomes in flight now go to the local core
            self._set_gates()
            state, open_until = self.state, self.open_until
        if self.on_store_error == "fail_open":
            self._local.restore(state, now, open_until, "store unavailable: deciding locally")
        return True

    def _adopt(
        self,
        now: float,
        state: CircuitState,
        epoch: int,
        remaining: float,
        recovered: bool,
        reason: str,
    ) -> None:
        previous = (
            self._local.state if recovered and self.on_store_error == "fail_open" else (self.state)
        )
        self.state = state
        self.epoch = epoch
        self.period = new_period()
        self._pending_calls = self._pending_failed = self._pending_slow = 0
        self._pending_released = 0
        self._flushed_successes = self._successes.read()
        self._ask_after = -math.inf
        if state is CircuitState.OPEN:
            self.open_until = now + remaining
        self._set_gates()
        if previous is not state:
            if recovered:
                reason = f"store recovered ({reason or 'shared state'})"
            open_for = remaining if state is CircuitState.OPEN else None
            self._transitions.append(Transition(previous, state, reason, now, open_for))

    # -- reading ------------------------------------------------------------------

    def poll(self, now: float) -> CircuitState:
        """The state this process acts on (an expired open period reads as half-open)."""
        if self.degraded:
            if self.on_store_error == "fail_open":
                return self._local.poll(now)
            return self.state
        if self.state is CircuitState.OPEN and now >= self.open_until:
            return CircuitState.HALF_OPEN
        return self.state

    def retry_after(self, now: float) -> float | None:
        """Seconds until the circuit admits a trial call, or None when unknown."""
        if self.degraded:
            return self._local.retry_after(now) if self.on_store_error == "fail_open" else None
        if self.state is CircuitState.OPEN:
            return max(0.0, self.open_until - now)
        return None

    def metrics(self, now: float) -> BreakerMetrics:
        """The shared window as of the last reply; ``not_permitted`` counts this process."""
        if self.degraded and self.on_store_error == "fail_open":
            return self._local.metrics(now)
        with self._lock:
            remote = self._remote
            not_permitted = self.rejected - self._rejected_base
        calls, failed, slow = remote.calls, remote.failed, remote.slow
        return BreakerMetrics(
            state=self.poll(now),
            failure_rate=failed / calls if calls else 0.0,
            slow_call_rate=slow / calls if calls else 0.0,
            calls=round(calls),
            failed=round(failed),
            slow=round(slow),
            not_permitted=not_permitted,
            trips=remote.trips,
        )

    def reset_counters(self, now: float) -> None:
        """Zero this process's ``not_permitted`` count and the local fallback (on reset)."""
        with self._lock:
            self._rejected_base = self.rejected
        self._local.reset(now)

    def set_rejection_factory(self, factory: Callable[[CircuitState, float], object]) -> None:
        """Let the runner describe rejections (see :attr:`BreakerCore.rejection`)."""
        with self._lock:
            self.rejection_factory = factory
            self._set_gates()
        self._local.set_rejection_factory(factory)

    def set_observed(self, observed: bool) -> None:
        """Events are wanted (or no longer): close (or reopen) the runners' fast paths."""
        with self._lock:
            self._observed = observed
            self._set_gates()
        self._local.set_observed(observed)

    def _set_gates(self) -> None:
        state = self.state
        admit = (state is CircuitState.CLOSED or state is CircuitState.DISABLED) and not (
            self.degraded
        )
        self.admit_ticket = self.period if admit else 0
        if self.degraded or self._observed:
            self.fast_ticket = 0
            self.reject_until = NEVER
            return
        self.fast_ticket = self.period if admit and self._plain else 0
        if state is CircuitState.OPEN:
            until = self.open_until
        elif state is CircuitState.FORCED_OPEN:
            until = math.inf
        else:
            until = NEVER
        factory = self.rejection_factory
        if until is not NEVER and factory is not None:
            self.rejection = factory(state, until)  # before the gate, for lock-free readers
        self.reject_until = until

    def _announce(self) -> None:
        transitions = self._transitions
        while transitions:
            try:
                transition = transitions.popleft()
            except IndexError:
                return
            listener = self.on_transition
            if listener is not None:
                listener(transition)

    def __repr__(self) -> str:
        return (
            f"SharedBreakerCore(state={self.state.value}, epoch={self.epoch}, "
            f"degraded={self.degraded})"
        )
