"""The breaker core against a plain list-based reference model (hypothesis stateful).

The model keeps every outcome in a list and re-judges the whole window after each
one; the core keeps O(1) counters and skips judgements it can prove unnecessary.
Random runs of successes, failures, slow calls, calls in flight, time advances and
manual controls must leave both in the same state with the same metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from seawall.resilience.breaker import (
    BreakerConfig,
    BreakerCore,
    CircuitState,
    CountWindow,
    SlowCall,
    TimeWindow,
)

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
FORCED_OPEN, DISABLED = CircuitState.FORCED_OPEN, CircuitState.DISABLED
YEAR = 365 * 24 * 3600.0


@dataclass
class Model:
    """The reference: lists, full re-evaluation, no cleverness."""

    config: BreakerConfig
    now: float
    state: CircuitState = CLOSED
    period: int = 0
    outcomes: list[tuple[float, bool, bool]] = field(default_factory=list)
    current_bucket: float = 0.0
    trials: list[tuple[bool, bool]] = field(default_factory=list)
    permits_left: int = 0
    open_until: float = -math.inf
    consecutive: int = 0
    trips: int = 0
    rejected: int = 0
    frozen: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        self.reset_window()

    # window -------------------------------------------------------------------
    @property
    def is_time(self) -> bool:
        return isinstance(self.config.window, TimeWindow)

    def bucket(self, now: float) -> float:
        window = self.config.window
        assert isinstance(window, TimeWindow)
        return now // window.bucket_width

    def reset_window(self) -> None:
        self.outcomes = []
        if self.is_time:
            self.current_bucket = self.bucket(self.now)

    def advance(self, now: float) -> None:
        if self.is_time:
            self.current_bucket = max(self.current_bucket, self.bucket(now))

    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        window = self.config.window
        if isinstance(window, CountWindow):
            return self.outcomes[-window.size :]
        self.advance(now)
        oldest = self.current_bucket - window.bucket_count + 1
        return [entry for entry in self.outcomes if entry[0] >= oldest]

    def totals(self, now: float) -> tuple[int, int, int]:
        entries = self.window(now)
        return (
            len(entries),
            sum(1 for _, failed, _ in entries if failed),
            sum(1 for _, _, slow in entries if slow),
        )

    # states -------------------------------------------------------------------
    def enter(self, state: CircuitState) -> None:
        self.state = state
        self.period += 1
        if state is CLOSED:
            self.reset_window()
            self.frozen = (0, 0, 0)
        elif state is HALF_OPEN:
            self.permits_left = self.config.half_open_calls
            self.trials = []

    def trip(self, now: float, totals: tuple[int, int, int]) -> None:
        self.frozen = totals
        self.consecutive += 1
        self.trips += 1
        cap = self.config.max_open_for if self.config.max_open_for is not None else YEAR
        try:
            wait = self.config.open_for * self.config.open_backoff ** (self.consecutive - 1)
        except OverflowError:
            wait = cap
        self.open_until = now + min(cap, wait)
        self.enter(OPEN)

    def poll(self, now: float) -> None:
        if self.state is OPEN and now >= self.open_until:
            self.enter(HALF_OPEN)

    @property
    def slow_rate(self) -> float:
        return self.config.slow_call.rate if self.config.slow_call else math.inf

    def is_slow(self, duration: float) -> bool:
        return self.config.slow_call is not None and duration >= self.config.slow_call.over

    def judge(self, now: float) -> None:
        calls, failed, slow = totals = self.totals(now)
        if calls >= self.config.judged_minimum and (
            failed / calls >= self.config.failure_rate or slow / calls >= self.slow_rate
        ):
            self.trip(now, totals)

    # the protocol ---------------------------------------------------------------
    def acquire(self, now: float) -> int | None:
        """The admitting period, or None when rejected."""
        self.poll(now)
        if self.state in (CLOSED, DISABLED):
            return self.period
        if self.state is HALF_OPEN and self.permits_left > 0:
            self.permits_left -= 1
            return self.period
        self.rejected += 1
        return None

    def outcome(self, now: float, duration: float, period: int, kind: str) -> None:
        if period != self.period:
            return
        if kind == "ignored":
            if self.state is HALF_OPEN:
                self.permits_left += 1
            return
        failed = kind == "failure"
        slow = self.is_slow(duration)
        if self.state is CLOSED:
            self.advance(now)
            bucket = self.current_bucket if self.is_time else 0.0
            self.outcomes.append((bucket, failed, slow))
            self.judge(now)
        elif self.state is HALF_OPEN:
            self.trials.append((failed, slow))
            if len(self.trials) >= self.config.half_open_calls:
                calls = len(self.trials)
                failures = sum(1 for f, _ in self.trials if f)
                slows = sum(1 for _, s in self.trials if s)
                if failures / calls >= self.config.failure_rate or slows / calls >= self.slow_rate:
                    self.trip(now, (calls, failures, slows))
                else:
                    self.consecutive = 0
                    self.enter(CLOSED)

    def metrics(self, now: float) -> tuple[CircuitState, int, int, int, int, int]:
        self.poll(now)
        if self.state is CLOSED:
            totals = self.totals(now)
        elif self.state is HALF_OPEN:
            totals = (
                len(self.trials),
                sum(1 for f, _ in self.trials if f),
                sum(1 for _, s in self.trials if s),
            )
        elif self.state is OPEN:
            totals = self.frozen
        else:
            totals = (0, 0, 0)
        return (self.state, *totals, self.rejected, self.trips)


windows = st.one_of(
    st.builds(CountWindow, st.integers(1, 12)),
    st.builds(
        TimeWindow,
        st.sampled_from([1.0, 2.0, 3.0, 5.0, 2.5]),
        st.one_of(st.none(), st.integers(1, 4)),
    ),
)
configs = st.builds(
    BreakerConfig,
    window=windows,
    failure_rate=st.sampled_from([0.2, 0.5, 0.75, 1.0]),
    slow_call=st.one_of(
        st.none(), st.builds(SlowCall, st.sampled_from([0.5, 1.0]), st.sampled_from([0.5, 1.0]))
    ),
    minimum_calls=st.integers(1, 8),
    open_for=st.sampled_from([0.5, 1.0, 3.0]),
    open_backoff=st.sampled_from([1.0, 1.5, 2.0]),
    max_open_for=st.sampled_from([None, 3.0, 10.0]),
    half_open_calls=st.integers(1, 4),
)
kinds = st.sampled_from(["success", "failure", "ignored"])
durations = st.sampled_from([0.0, 0.1, 0.5, 0.99, 1.0, 2.0])


@dataclass
class InFlight:
    ticket: int
    period: int
    started: float


class BreakerMachine(RuleBasedStateMachine):
    """Drives the core the way the runners do and mirrors every step in the model."""

    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.core: BreakerCore
        self.model: Model
        self.fast_path = True

    @initialize(config=configs, fast_path=st.booleans())
    def build(self, config: BreakerConfig, fast_path: bool) -> None:
        self.fast_path = fast_path
        self.core = BreakerCore(config, self.now, fast_path=fast_path)
        self.model = Model(config, self.now)

    # time ---------------------------------------------------------------------
    @rule(seconds=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 3.0, 7.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    # a call that completes at once, through the runner's fast paths -------------
    @rule(kind=kinds, duration=durations)
    def immediate_call(self, kind: str, duration: float) -> None:
        core, model, now = self.core, self.model, self.now
        expected = model.acquire(now)
        fast = core.fast_ticket
        if fast:
            ticket = fast
        elif now < core.reject_until:
            core.rejected += 1
            ticket = 0
        else:
            ticket = core.admit_ticket or core.try_acquire(now)
        assert bool(ticket) == (expected is not None), (ticket, expected, model.state)
        if not ticket:
            return
        assert expected is not None
        if fast:
            # The fast path runs only without a slow-call rule: no timing.
            assert self.core.config.slow_call is None
            duration = 0.0
        end = now
        model.outcome(end, duration, expected, kind)
        if kind == "success":
            if fast:
                core.add_success()
            else:
                core.on_success(end, duration, ticket)
        elif kind == "failure":
            core.on_error(end, duration, ticket)
        else:
            core.on_ignored(ticket)

    # calls in flight, through the protocol --------------------------------------
    @rule(target=calls)
    def start_call(self) -> InFlight | None:
        expected = self.model.acquire(self.now)
        ticket = self.core.try_acquire(self.now)
        assert bool(ticket) == (expected is not None), (ticket, expected, self.model.state)
        if expected is None:
            return None
        return InFlight(ticket, expected, self.now)

    @rule(call=consumes(calls), kind=kinds)
    def finish_call(self, call: InFlight | None, kind: str) -> None:
        if call is None:
            return
        duration = self.now - call.started
        self.model.outcome(self.now, duration, call.period, kind)
        if kind == "success":
            self.core.on_success(self.now, duration, call.ticket)
        elif kind == "failure":
            self.core.on_error(self.now, duration, call.ticket)
        else:
            self.core.on_ignored(call.ticket)

    @rule(kind=kinds, duration=durations)
    def another_immediate_call(self, kind: str, duration: float) -> None:
        # Calls are what the breaker is about: make them twice as likely as other steps.
        self.immediate_call(kind, duration)

    # reading (has the same side effects in both) ---------------------------------
    @rule(what=st.sampled_from(["metrics", "poll"]))
    def read(self, what: str) -> None:
        if what == "poll":
            self.model.poll(self.now)
            assert self.core.poll(self.now) is self.model.state
            return
        metrics = self.core.metrics(self.now)
        state, calls, failed, slow, rejected, trips = self.model.metrics(self.now)
        assert (metrics.state, metrics.calls, metrics.failed, metrics.slow) == (
            state,
            calls,
            failed,
            slow,
        )
        assert metrics.not_permitted == rejected
        assert metrics.trips == trips
        if calls:
            assert metrics.failure_rate == failed / calls

    @rule(observed=st.booleans())
    def observe(self, observed: bool) -> None:
        self.core.set_observed(observed)

    # manual controls (one rule, so they interrupt runs of calls rarely) -----------
    @rule(control=st.sampled_from(["force_open", "force_closed", "disable", "reset"]))
    def manual(self, control: str) -> None:
        getattr(self.core, control)(self.now)
        model = self.model
        if control == "force_open":
            model.enter(FORCED_OPEN)
        elif control == "disable":
            model.enter(DISABLED)
        else:
            model.consecutive = 0
            if control == "reset":
                model.trips = 0
                model.rejected = 0
            model.enter(CLOSED)

    # invariants (read attributes only: no side effects) --------------------------
    @invariant()
    def same_state(self) -> None:
        if hasattr(self, "core"):
            assert self.core.state is self.model.state

    @invariant()
    def gates_agree(self) -> None:
        if not hasattr(self, "core"):
            return
        core, model = self.core, self.model
        if core.fast_ticket:
            assert core.admit_ticket == core.fast_ticket
        if core.admit_ticket:
            assert model.state in (CLOSED, DISABLED)
            assert core.admit_ticket == core.period
        if self.now < core.reject_until:
            assert model.state is FORCED_OPEN or (
                model.state is OPEN and self.now < model.open_until
            )
        if core._observed:
            assert core.fast_ticket == 0
            assert core.reject_until == -math.inf
        if model.state is OPEN:
            assert core.open_until == model.open_until


TestBreakerAgainstModel = BreakerMachine.TestCase
TestBreakerAgainstModel.settings = settings(
    max_examples=300,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
