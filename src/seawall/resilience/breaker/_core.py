"""The sans-I/O circuit breaker state machine, shared by the sync and async runners.

The core is fed ``now`` (seconds on the breaker's clock) and outcomes; it never
reads a clock, sleeps or does I/O. The protocol follows resilience4j::

    ticket = core.try_acquire(now)          # 0: rejected; otherwise a permission
    ... run the call ...
    core.on_success(now, duration, ticket)  # or on_error(...), or on_ignored(ticket)

A ticket is the number of the state *period* that admitted the call. Every state
change starts a new period, so an outcome that arrives after the state moved on
(a call admitted while closed finishing after a trip) is not counted against the
new state, and only holders of a half-open permit count as trial calls.

Fast paths. A runner may skip ``try_acquire`` when :attr:`admit_ticket` is non-zero
(closed or disabled). When :attr:`fast_ticket` is non-zero too (a count window, no
slow-call rule, nothing to judge, nobody listening for events) it may also count a
plain success with :attr:`add_success` instead of ``on_success``. It may reject at once
when ``now < reject_until`` (open, forced open; ``reject_until is NEVER`` otherwise),
raising with :attr:`rejection`, which the runner's :attr:`rejection_factory` built
when the gate moved, and adding one to :attr:`rejected`. Both gates are closed while
:meth:`set_observed` says events are wanted, so runners need no ``events.active``
check on those paths: the general path emits the events.

Thread safety. The closed fast path takes no lock: :attr:`add_success` is
``itertools.count().__next__`` and so atomic under the GIL. A plain success can
never raise the failure or slow-call rate, so it needs no judgement; the one
exception (the window reaching ``minimum_calls`` while it already holds failures)
clears ``fast_ticket`` until judged. Everything else (failures, slow calls,
transitions, half-open permits) runs under one ``threading.Lock``; transitions are
announced to :attr:`on_transition` after the lock is released, so a listener may
call back into the breaker.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from seawall.resilience.breaker._config import BreakerConfig, CountWindow, TimeWindow
from seawall.resilience.breaker._windows import (
    CountOutcomes,
    Outcomes,
    TimeOutcomes,
    WindowTotals,
)

__all__ = [
    "NEVER",
    "REJECTED",
    "BreakerCore",
    "BreakerMetrics",
    "CircuitState",
    "Transition",
    "new_period",
]

REJECTED = 0
"""The ticket :meth:`BreakerCore.try_acquire` returns when the call may not run."""

NEVER = -math.inf
"""``reject_until`` of a breaker that rejects nothing on its own. Cores assign this one
float object, so a runner tells "may be open" from "not open" with ``is``."""

new_period = itertools.count(1).__next__
"""Process-wide period numbers, so tickets of two cores can never be confused."""

_NO_TOTALS = WindowTotals(0, 0, 0)


class CircuitState(StrEnum):
    """Where a breaker stands; the value is what errors and events print."""

    CLOSED = "closed"
    """Calls run; outcomes are judged against the thresholds."""
    OPEN = "open"
    """Calls are rejected until the open period ends."""
    HALF_OPEN = "half_open"
    """A few trial calls run; their outcome closes or reopens the circuit."""
    FORCED_OPEN = "forced_open"
    """Every call is rejected until a manual ``force_closed``/``reset``/``disable``."""
    DISABLED = "disabled"
    """Every call runs and nothing is recorded, until a manual control."""


class Transition(NamedTuple):
    """One state change, as the core announces it."""

    previous: CircuitState
    current: CircuitState
    reason: str
    at: float
    """The ``now`` the change happened at."""
    open_for: float | None
    """Seconds the circuit stays open (only when ``current`` is OPEN)."""


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot of a breaker: its state and the window it is judging.

    In CLOSED the numbers describe the sliding window; in HALF_OPEN the trial calls;
    in OPEN the window that tripped it. ``not_permitted`` and ``trips`` count since
    the breaker was built or last ``reset``.
    """

    state: CircuitState
    failure_rate: float
    """Failed calls / calls in the window (0.0 when it is empty)."""
    slow_call_rate: float
    """Slow calls / calls in the window (0.0 when it is empty)."""
    calls: int
    failed: int
    slow: int
    not_permitted: int
    """Calls rejected."""
    trips: int
    """Transitions to OPEN."""


class BreakerCore:
    """The circuit breaker's decisions: states, sliding window, thresholds, permits."""

    __slots__ = (
        "_consecutive_trips",
        "_failure_rate",
        "_frozen",
        "_lock",
        "_minimum",
        "_observed",
        "_permits_left",
        "_plain",
        "_rejected_base",
        "_slow_over",
        "_slow_rate",
        "_time_window",
        "_transitions",
        "_trial_calls",
        "_trial_failed",
        "_trial_slow",
        "_watch",
        "_window",
        "add_success",
        "admit_ticket",
        "config",
        "fast_ticket",
        "on_transition",
        "open_until",
        "period",
        "reject_until",
        "rejected",
        "rejection",
        "rejection_factory",
        "state",
        "trips",
    )

    def __init__(self, config: BreakerConfig, now: float = 0.0, *, fast_path: bool = True) -> None:
        self.config = config
        self._plain = fast_path and isinstance(config.window, CountWindow) and not config.slow_call
        self._observed = False
        window: Outcomes
        if isinstance(config.window, CountWindow):
            window = CountOutcomes(config.window)
            self._time_window = False
        else:
            assert isinstance(config.window, TimeWindow)
            window = TimeOutcomes(config.window)
            self._time_window = True
        self._window = window
        self.add_success: Callable[[], object] = window.add_success
        """Count a plain success while closed (lock-free; only when ``fast_ticket``)."""
        self._failure_rate = config.failure_rate
        self._slow_over = config.slow_call.over if config.slow_call else math.inf
        self._slow_rate = config.slow_call.rate if config.slow_call else math.inf
        self._minimum = config.judged_minimum
        self._lock = threading.Lock()
        self._transitions: deque[Transition] = deque()
        self.on_transition: Callable[[Transition], None] | None = None
        """Called with each state change, outside the lock."""
        self.rejected = 0
        """Calls rejected. Runners add to it on their own (``core.rejected += 1``):
        under the GIL, CPython switches threads only at calls and backward jumps, so
        that read-add-store on a slot is not interrupted; at worst (another
        implementation) a count is lost, and this number is a statistic, never a
        decision."""
        self._rejected_base = 0
        self._consecutive_trips = 0
        self.trips = 0
        self._frozen = _NO_TOTALS
        self._permits_left = 0
        self._trial_calls = self._trial_failed = self._trial_slow = 0
        self._watch = False
        self.state = CircuitState.CLOSED
        self.period = new_period()
        self.fast_ticket = 0
        """Non-zero exactly when a call may skip ``try_acquire`` and count a plain success."""
        self.admit_ticket = 0
        """Non-zero when a call may skip ``try_acquire`` (closed or disabled)."""
        self.open_until = -math.inf
        self.rejection: object = None
        """What the runner raises with while ``now < reject_until``."""
        self.rejection_factory: Callable[[CircuitState, float], object] | None = None
        """Set by the runner: builds :attr:`rejection` whenever the gate moves."""
        self.reject_until = NEVER
        """A call at ``now < reject_until`` is rejected (OPEN: its end; FORCED_OPEN: inf)."""
        window.reset(now)
        self._set_gates()

    # -- the call protocol --------------------------------------------------------

    def try_acquire(self, now: float) -> int:
        """Ask to run one call: a ticket (the current period) or :data:`REJECTED`."""
        state = self.state
        if state is CircuitState.CLOSED or state is CircuitState.DISABLED:
            return self.period
        if (state is CircuitState.OPEN and now < self.open_until) or (
            state is CircuitState.FORCED_OPEN
        ):
            self.rejected += 1
            return REJECTED
        with self._lock:
            state = self._poll(now)
            if state is CircuitState.HALF_OPEN:
                if self._permits_left > 0:
                    self._permits_left -= 1
                    ticket = self.period
                else:
                    ticket = REJECTED
            elif state is CircuitState.CLOSED or state is CircuitState.DISABLED:
                ticket = self.period
            else:
                ticket = REJECTED
        if ticket == REJECTED:
            self.rejected += 1
        if self._transitions:
            self._announce()
        return ticket

    def on_success(self, now: float, duration: float, ticket: int) -> None:
        """Record that the call admitted with ``ticket`` returned normally."""
        if ticket != self.period:
            return
        slow = duration >= self._slow_over
        state = self.state
        if state is CircuitState.CLOSED:
            if not (slow or self._watch):
                window = self._window
                # No judgement needed; a time window must not have to open a new bucket.
                if not window.dirty and now // window.width <= window.current:
                    self.add_success()
                    return
            with self._lock:
                if ticket != self.period:
                    return
                window = self._window
                if slow:
                    window.record(now, False, True)
                else:
                    window.advance(now)
                    window.add_success()
                if slow or self._watch or window.dirty:
                    self._judge(now)
        elif state is CircuitState.HALF_OPEN:
            with self._lock:
                if ticket != self.period:
                    return
                self._trial(now, False, slow)
        else:
            return
        if self._transitions:
            self._announce()

    def on_error(self, now: float, duration: float, ticket: int) -> None:
        """Record that the call admitted with ``ticket`` failed (a recorded failure)."""
        if ticket != self.period:
            return
        slow = duration >= self._slow_over
        with self._lock:
            if ticket != self.period:
                return
            state = self.state
            if state is CircuitState.CLOSED:
                self._window.record(now, True, slow)
                self._judge(now)
            elif state is CircuitState.HALF_OPEN:
                self._trial(now, True, slow)
        if self._transitions:
            self._announce()

    def on_ignored(self, ticket: int) -> None:
        """The call ended in a way that must not count: give a half-open permit back."""
        if ticket != self.period or self.state is not CircuitState.HALF_OPEN:
            return
        with self._lock:
            if ticket == self.period and self.state is CircuitState.HALF_OPEN:
                self._permits_left += 1

    # -- reading ------------------------------------------------------------------

    def poll(self, now: float) -> CircuitState:
        """The state at ``now`` (an expired open period turns into half-open here)."""
        if self.state is not CircuitState.OPEN or now < self.open_until:
            return self.state
        with self._lock:
            state = self._poll(now)
        self._announce()
        return state

    def retry_after(self, now: float) -> float | None:
        """Seconds until an open circuit admits a trial call, or None when unknown."""
        if self.state is CircuitState.OPEN:
            return max(0.0, self.open_until - now)
        return None

    def metrics(self, now: float) -> BreakerMetrics:
        """A consistent snapshot of the state and the window being judged."""
        with self._lock:
            state = self._poll(now)
            if state is CircuitState.CLOSED:
                totals = self._window.totals(now)
            elif state is CircuitState.HALF_OPEN:
                totals = WindowTotals(self._trial_calls, self._trial_failed, self._trial_slow)
            elif state is CircuitState.OPEN:
                totals = self._frozen
            else:
                totals = _NO_TOTALS
            not_permitted = self.rejected - self._rejected_base
            trips = self.trips
        self._announce()
        calls, failed, slow = totals
        return BreakerMetrics(
            state=state,
            failure_rate=failed / calls if calls else 0.0,
            slow_call_rate=slow / calls if calls else 0.0,
            calls=calls,
            failed=failed,
            slow=slow,
            not_permitted=not_permitted,
            trips=trips,
        )

    # -- manual control -----------------------------------------------------------

    def force_open(self, now: float) -> None:
        """Reject every call until another manual control."""
        with self._lock:
            self._enter(CircuitState.FORCED_OPEN, now, "forced open")
        self._announce()

    def force_closed(self, now: float) -> None:
        """Close the circuit now with an empty window; judging resumes."""
        with self._lock:
            self._consecutive_trips = 0
            self._enter(CircuitState.CLOSED, now, "forced closed")
        self._announce()

    def disable(self, now: float) -> None:
        """Let every call run and record nothing, until another manual control."""
        with self._lock:
            self._enter(CircuitState.DISABLED, now, "disabled")
        self._announce()

    def reset(self, now: float) -> None:
        """Back to a new breaker: closed, empty window, counters at zero."""
        with self._lock:
            self._consecutive_trips = 0
            self.trips = 0
            self._frozen = _NO_TOTALS
            self._rejected_base = self.rejected
            self._enter(CircuitState.CLOSED, now, "reset")
        self._announce()

    def restore(self, state: CircuitState, now: float, open_until: float, reason: str) -> None:
        """Take over a state decided elsewhere (a shared breaker falling back to local)."""
        with self._lock:
            if state is CircuitState.OPEN:
                if now >= open_until:
                    state = CircuitState.HALF_OPEN
                else:
                    self.open_until = open_until
            self._enter(state, now, reason)
        self._announce()

    def set_rejection_factory(self, factory: Callable[[CircuitState, float], object]) -> None:
        """Let the runner describe rejections (see :attr:`rejection`)."""
        with self._lock:
            self.rejection_factory = factory
            self._set_gates()

    def set_observed(self, observed: bool) -> None:
        """Events are wanted (or no longer): close (or reopen) the runners' fast paths."""
        with self._lock:
            self._observed = observed
            self._set_gates()

    # -- internals (lock held) ----------------------------------------------------

    def _poll(self, now: float) -> CircuitState:
        if self.state is CircuitState.OPEN and now >= self.open_until:
            self._enter(CircuitState.HALF_OPEN, now, "open period ended")
        return self.state

    def _judge(self, now: float) -> None:
        window = self._window
        calls, failed, slow = totals = window.totals(now)
        window.dirty = False
        if calls >= self._minimum:
            self._watch = False
            if failed / calls >= self._failure_rate:
                self._frozen = totals
                self._trip(
                    now,
                    f"failure rate {failed}/{calls} reached {self._failure_rate:.0%}",
                )
                return
            if slow / calls >= self._slow_rate:
                self._frozen = totals
                self._trip(now, f"slow-call rate {slow}/{calls} reached {self._slow_rate:.0%}")
                return
        else:
            self._watch = failed > 0 or slow > 0
        self._set_gates()

    def _trial(self, now: float, failed: bool, slow: bool) -> None:
        self._trial_calls += 1
        self._trial_failed += failed
        self._trial_slow += slow
        calls = self._trial_calls
        if calls < self.config.half_open_calls:
            return
        totals = WindowTotals(calls, self._trial_failed, self._trial_slow)
        if self._trial_failed / calls >= self._failure_rate:
            self._frozen = totals
            self._trip(
                now,
                f"trial failure rate {self._trial_failed}/{calls} reached {self._failure_rate:.0%}",
            )
        elif self._trial_slow / calls >= self._slow_rate:
            self._frozen = totals
            self._trip(
                now,
                f"trial slow-call rate {self._trial_slow}/{calls} reached {self._slow_rate:.0%}",
            )
        else:
            self._consecutive_trips = 0
            self._enter(CircuitState.CLOSED, now, f"{calls} trial calls passed")

    def _trip(self, now: float, reason: str) -> None:
        self._consecutive_trips += 1
        self.trips += 1
        self.open_until = now + self.config.open_duration(self._consecutive_trips)
        self._enter(CircuitState.OPEN, now, reason)

    def _enter(self, state: CircuitState, now: float, reason: str) -> None:
        previous = self.state
        self.state = state
        self.period = new_period()
        self._watch = False
        if state is CircuitState.CLOSED:
            self._window.reset(now)
            self._frozen = _NO_TOTALS
        elif state is CircuitState.HALF_OPEN:
            self._permits_left = self.config.half_open_calls
            self._trial_calls = self._trial_failed = self._trial_slow = 0
        self._set_gates()
        if previous is not state:
            open_for = self.open_until - now if state is CircuitState.OPEN else None
            self._transitions.append(Transition(previous, state, reason, now, open_for))

    def _set_gates(self) -> None:
        state = self.state
        free = (
            (state is CircuitState.CLOSED or state is CircuitState.DISABLED)
            and self._plain
            and not self._watch
            and not self._observed
        )
        self.fast_ticket = self.period if free else 0
        admit = state is CircuitState.CLOSED or state is CircuitState.DISABLED
        self.admit_ticket = self.period if admit else 0
        if self._observed:
            until = NEVER
        elif state is CircuitState.OPEN:
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
            except IndexError:  # another thread announced it
                return
            listener = self.on_transition
            if listener is not None:
                listener(transition)

    def __repr__(self) -> str:
        return f"BreakerCore(state={self.state.value}, period={self.period})"
