"""The five rate-limit algorithms: validation, exact behaviour under a manual clock, and
hypothesis stateful tests of each in-memory kernel against a simple reference model.

The reference models keep an explicit list of grants ``(time, key, cost)`` and answer
from it in exact rational arithmetic; times move on a 1/64 s grid, so the kernels'
float arithmetic is exact or within their documented tolerance.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError
from seawall.resilience.ratelimit import (
    GCRA,
    FixedWindow,
    RateLimitAlgorithm,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from seawall.resilience.ratelimit.memory import StateGuard

# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("cls", [TokenBucket, GCRA])
@pytest.mark.parametrize("rate", [0, -1, 0.0, math.nan, math.inf, 10**400, True, "10", None])
def test_bucket_rate_must_be_a_positive_finite_number(cls: type[Any], rate: object) -> None:
    with pytest.raises(ConfigurationError, match=r"rate must be a finite number > 0") as caught:
        cls(rate=rate)
    assert isinstance(caught.value, ValueError)
    assert repr(rate) in str(caught.value)


@pytest.mark.parametrize("cls", [TokenBucket, GCRA])
@pytest.mark.parametrize("per", [0, -0.5, math.nan, math.inf])
def test_bucket_per_must_be_positive_seconds(cls: type[Any], per: float) -> None:
    with pytest.raises(ConfigurationError, match=r"per must be a finite number > 0 \(seconds\)"):
        cls(rate=10, per=per)


@pytest.mark.parametrize("cls", [TokenBucket, GCRA])
@pytest.mark.parametrize("burst", [0, -3, 2.5, True])
def test_bucket_burst_must_be_an_integer_of_at_least_one(cls: type[Any], burst: object) -> None:
    with pytest.raises(ConfigurationError, match=r"burst must be an integer >= 1"):
        cls(rate=10, burst=burst)


@pytest.mark.parametrize("cls", [FixedWindow, SlidingWindowLog, SlidingWindowCounter])
@pytest.mark.parametrize("limit", [0, -1, 1.5, True, None])
def test_window_limit_must_be_an_integer_of_at_least_one(cls: type[Any], limit: object) -> None:
    with pytest.raises(ConfigurationError, match=r"limit must be an integer >= 1") as caught:
        cls(limit=limit, window=1.0)
    assert cls.__name__ in str(caught.value)


@pytest.mark.parametrize("cls", [FixedWindow, SlidingWindowLog, SlidingWindowCounter])
@pytest.mark.parametrize("window", [0, -1.0, math.nan, math.inf, "1"])
def test_window_length_must_be_positive_seconds(cls: type[Any], window: object) -> None:
    with pytest.raises(ConfigurationError, match=r"window must be a finite number > 0"):
        cls(limit=10, window=window)


def test_burst_defaults_to_the_rate_rounded_up() -> None:
    assert TokenBucket(rate=100).burst == 100
    assert GCRA(rate=2.5).burst == 3
    assert TokenBucket(rate=0.1, per=60).burst == 1
    assert TokenBucket(rate=5, burst=20).capacity == 20


def test_algorithms_are_values() -> None:
    assert TokenBucket(10, 1.0, 20) == TokenBucket(rate=10, per=1.0, burst=20)
    assert hash(GCRA(10)) == hash(GCRA(10.0))
    assert FixedWindow(5, 60) != SlidingWindowLog(5, 60)
    with pytest.raises(AttributeError):
        FixedWindow(5, 60).limit = 6  # type: ignore[misc]
    assert FixedWindow(5, 60).describe() == "fixed window 5/60s"
    assert TokenBucket(100, 1, 200).describe() == "token bucket 100/1s burst 200"
    assert GCRA(3, 2).describe() == "GCRA 3/2s burst 3"
    assert SlidingWindowLog(7, 0.5).describe() == "sliding window log 7/0.5s"
    assert SlidingWindowCounter(7, 10).describe() == "sliding window counter 7/10s"


# --------------------------------------------------------------------------- exact behaviour


def _kernel(algorithm: RateLimitAlgorithm, clock: ManualClock) -> tuple[Any, dict[str, Any]]:
    states: dict[str, Any] = {}
    take = algorithm.kernel(states, clock.now, StateGuard(), lambda key, moment: None)
    return take, states


def test_token_bucket_refills_continuously(clock: ManualClock) -> None:
    take, states = _kernel(TokenBucket(rate=2, per=1.0, burst=4), clock)
    assert [take("k", 1) for _ in range(4)] == [0.0] * 4
    assert take("k", 1) == pytest.approx(0.5)
    assert take("k", 3) == pytest.approx(1.5)
    clock.advance(0.5)
    assert take("k", 1) == 0.0
    assert take("k", 1) == pytest.approx(0.5)
    clock.advance(10)
    assert take("k", 4) == 0.0
    assert TokenBucket(2, 1.0, 4).inspect(states["k"], clock.now()) == (0, 2.0)


def test_gcra_spaces_calls_by_the_emission_interval(clock: ManualClock) -> None:
    algorithm = GCRA(rate=4, per=1.0, burst=1)
    take, states = _kernel(algorithm, clock)
    assert take("k", 1) == 0.0
    assert take("k", 1) == pytest.approx(0.25)
    clock.advance(0.25)
    assert take("k", 1) == 0.0
    assert algorithm.inspect(states["k"], clock.now()) == (0, pytest.approx(0.25))
    assert algorithm.expires_at(states["k"]) == pytest.approx(clock.now() + 0.25)


def test_fixed_window_resets_at_the_boundary(clock: ManualClock) -> None:
    algorithm = FixedWindow(limit=3, window=10.0)
    take, states = _kernel(algorithm, clock)  # 1000.0 is a window start
    clock.advance(4)
    assert [take("k", 1) for _ in range(3)] == [0.0] * 3
    assert take("k", 1) == pytest.approx(6.0)
    assert algorithm.inspect(states["k"], clock.now()) == (0, pytest.approx(6.0))
    clock.advance(6)
    assert take("k", 3) == 0.0
    assert take("k", 1) == pytest.approx(10.0)


def test_sliding_window_log_frees_permits_as_grants_age(clock: ManualClock) -> None:
    algorithm = SlidingWindowLog(limit=3, window=10.0)
    take, states = _kernel(algorithm, clock)
    assert take("k", 2) == 0.0
    clock.advance(4)
    assert take("k", 1) == 0.0
    assert take("k", 1) == pytest.approx(6.0)  # the first grant (2 permits) leaves at +10
    assert take("k", 3) == pytest.approx(10.0)  # needs the second grant gone too
    clock.advance(6)
    assert algorithm.inspect(states["k"], clock.now()) == (2, pytest.approx(4.0))
    assert take("k", 2) == 0.0


def test_sliding_window_counter_weights_the_previous_window(clock: ManualClock) -> None:
    algorithm = SlidingWindowCounter(limit=10, window=10.0)
    take, states = _kernel(algorithm, clock)
    assert take("k", 10) == 0.0
    clock.advance(12.5)  # next window, 25% in: estimate 10 * 0.75 = 7.5
    assert algorithm.inspect(states["k"], clock.now())[0] == 2
    assert take("k", 2) == 0.0
    # 7.5 + 2 + 1 > 10: waits until 10 * (1 - w/10) + 2 + 1 <= 10, w = 3 s, 0.5 s from now
    assert take("k", 1) == pytest.approx(0.5)
    clock.advance(0.5)
    assert take("k", 1) == 0.0


def test_sliding_window_counter_waits_into_the_next_window_when_the_current_is_full(
    clock: ManualClock,
) -> None:
    algorithm = SlidingWindowCounter(limit=4, window=10.0)
    take, _ = _kernel(algorithm, clock)
    clock.advance(5)
    assert take("k", 4) == 0.0
    # current window full: wait 5 s to its end, then until 4 * (1 - w/10) + 1 <= 4: 2.5 s
    assert take("k", 1) == pytest.approx(7.5)


def test_expired_states_look_fresh(clock: ManualClock) -> None:
    for algorithm in (
        TokenBucket(3, 1.0),
        GCRA(3, 1.0),
        FixedWindow(3, 1.0),
        SlidingWindowLog(3, 1.0),
        SlidingWindowCounter(3, 1.0),
    ):
        take, states = _kernel(algorithm, clock)
        take("k", 2)
        clock.advance(algorithm.expires_at(states["k"]) - clock.now())
        remaining, reset_after = algorithm.inspect(states["k"], clock.now())
        assert remaining == 3, algorithm
        assert reset_after == pytest.approx(0.0, abs=1e-9), algorithm
        assert algorithm.inspect(None, clock.now()) == (3, 0.0)


def test_cost_zero_grants_without_storing_a_new_key(clock: ManualClock) -> None:
    for algorithm in (
        TokenBucket(3),
        GCRA(3),
        FixedWindow(3, 1.0),
        SlidingWindowLog(3, 1.0),
        SlidingWindowCounter(3, 1.0),
    ):
        take, states = _kernel(algorithm, clock)
        assert take("k", 0) == 0.0
        assert states == {}


def test_a_kernel_reports_new_keys_to_its_hook(clock: ManualClock) -> None:
    seen: list[tuple[str, float]] = []
    take = FixedWindow(3, 1.0).kernel({}, clock.now, StateGuard(), lambda k, t: seen.append((k, t)))
    take("a", 1)
    take("a", 1)
    take("b", 1)
    assert seen == [("a", 1000.0), ("b", 1000.0)]


# --------------------------------------------------------------------------- reference models


class Reference:
    """What an algorithm should answer, computed from the explicit list of grants."""

    def __init__(self, algorithm: RateLimitAlgorithm) -> None:
        self.algorithm = algorithm
        self.grants: list[tuple[Fraction, str, int]] = []

    def key_grants(self, key: str) -> list[tuple[Fraction, int]]:
        return [(time, cost) for time, grant_key, cost in self.grants if grant_key == key]

    def decide(self, key: str, now: Fraction, cost: int) -> tuple[bool, Fraction]:
        """(allowed, retry_after) for ``cost`` permits at ``now``."""
        raise NotImplementedError

    def remaining(self, key: str, now: Fraction) -> int:
        raise NotImplementedError


class BucketReference(Reference):
    """Token bucket / GCRA: ``cost`` fits iff, for every suffix of grants j..n,
    ``sum(costs) + cost <= capacity + refill * (now - t_j)``."""

    def _constraints(self, key: str, now: Fraction, cost: int) -> list[Fraction]:
        capacity = self.algorithm.capacity
        refill = Fraction(self.algorithm.rate) / Fraction(self.algorithm.per)  # type: ignore[attr-defined]
        grants = self.key_grants(key)
        lacks = [Fraction(cost - capacity) / refill]
        for index, (time, _) in enumerate(grants):
            suffix = sum(c for _, c in grants[index:])
            lacks.append(Fraction(suffix + cost - capacity) / refill - (now - time))
        return lacks

    def decide(self, key: str, now: Fraction, cost: int) -> tuple[bool, Fraction]:
        wait = max(self._constraints(key, now, cost))
        return wait <= 0, max(wait, Fraction(0))

    def remaining(self, key: str, now: Fraction) -> int:
        capacity = self.algorithm.capacity
        refill = Fraction(self.algorithm.rate) / Fraction(self.algorithm.per)  # type: ignore[attr-defined]
        grants = self.key_grants(key)
        tokens = Fraction(capacity)
        for index, (time, _) in enumerate(grants):
            suffix = sum(c for _, c in grants[index:])
            tokens = min(tokens, capacity - suffix + refill * (now - time))
        return math.floor(tokens)


class FixedWindowReference(Reference):
    def _window(self, time: Fraction) -> int:
        return math.floor(time / Fraction(self.algorithm.window))  # type: ignore[attr-defined]

    def _used(self, key: str, now: Fraction) -> int:
        return sum(c for t, c in self.key_grants(key) if self._window(t) == self._window(now))

    def decide(self, key: str, now: Fraction, cost: int) -> tuple[bool, Fraction]:
        if self._used(key, now) + cost <= self.algorithm.capacity:
            return True, Fraction(0)
        window = Fraction(self.algorithm.window)  # type: ignore[attr-defined]
        return False, (self._window(now) + 1) * window - now

    def remaining(self, key: str, now: Fraction) -> int:
        return self.algorithm.capacity - self._used(key, now)


class SlidingLogReference(Reference):
    def _live(self, key: str, now: Fraction) -> list[tuple[Fraction, int]]:
        window = Fraction(self.algorithm.window)  # type: ignore[attr-defined]
        return [(t, c) for t, c in self.key_grants(key) if t + window > now]

    def decide(self, key: str, now: Fraction, cost: int) -> tuple[bool, Fraction]:
        live = self._live(key, now)
        excess = sum(c for _, c in live) + cost - self.algorithm.capacity
        if excess <= 0:
            return True, Fraction(0)
        window = Fraction(self.algorithm.window)  # type: ignore[attr-defined]
        for time, grant_cost in live:
            excess -= grant_cost
            if excess <= 0:
                return False, time + window - now
        raise AssertionError("cost above the limit")

    def remaining(self, key: str, now: Fraction) -> int:
        return self.algorithm.capacity - sum(c for _, c in self._live(key, now))


class SlidingCounterReference(Reference):
    def estimate(self, key: str, at: Fraction) -> Fraction:
        window = Fraction(self.algorithm.window)  # type: ignore[attr-defined]
        index = math.floor(at / window)
        counts: dict[int, int] = {}
        for time, cost in self.key_grants(key):
            slot = math.floor(time / window)
            counts[slot] = counts.get(slot, 0) + cost
        end = (index + 1) * window
        return counts.get(index - 1, 0) * (end - at) / window + counts.get(index, 0)

    def decide(self, key: str, now: Fraction, cost: int) -> tuple[bool, Fraction]:
        allowed = self.estimate(key, now) + cost <= self.algorithm.capacity
        return allowed, Fraction(0)  # retry_after is checked by its defining property

    def remaining(self, key: str, now: Fraction) -> int:
        return max(0, math.floor(self.algorithm.capacity - self.estimate(key, now)))


REFERENCES: dict[type[RateLimitAlgorithm], type[Reference]] = {
    TokenBucket: BucketReference,
    GCRA: BucketReference,
    FixedWindow: FixedWindowReference,
    SlidingWindowLog: SlidingLogReference,
    SlidingWindowCounter: SlidingCounterReference,
}

bucket_parameters = st.tuples(
    st.integers(1, 12),
    st.sampled_from([Fraction(1, 2), Fraction(1), Fraction(2)]),
    st.integers(1, 8),
)
window_parameters = st.tuples(st.integers(1, 8), st.integers(1, 24).map(lambda n: Fraction(n, 8)))


class KernelMachine(RuleBasedStateMachine):
    """Drives one algorithm's kernel and its reference model side by side."""

    algorithm_class: type[RateLimitAlgorithm]

    def __init__(self) -> None:
        super().__init__()
        self.now = Fraction(1000)
        self.clock = ManualClock(1000.0)
        self.states: dict[str, Any] = {}
        self.last_wait = 0.0

    def start(self, algorithm: RateLimitAlgorithm) -> None:
        self.algorithm = algorithm
        self.take = algorithm.kernel(self.states, self.clock.now, StateGuard(), lambda k, t: None)
        self.model = REFERENCES[type(algorithm)](algorithm)

    @rule(steps=st.integers(0, 160))
    def advance(self, steps: int) -> None:
        self.now += Fraction(steps, 64)
        self.clock.advance(steps / 64)
        assert self.clock.now() == float(self.now)  # the grid keeps float time exact

    @rule()
    def wait_as_told(self) -> None:
        """Sleep the last ``retry_after`` (rounded up to the grid): lands on boundaries."""
        self.advance(math.ceil(self.last_wait * 64))

    @rule(key=st.sampled_from(["a", "b"]), share=st.floats(0, 1))
    def take_permits(self, key: str, share: float) -> None:
        cost = round(share * self.algorithm.capacity)
        wait = self.take(key, cost)
        allowed, expected_wait = self.model.decide(key, self.now, cost)
        assert (wait == 0.0) == allowed, (key, cost, wait, expected_wait)
        self.last_wait = wait
        if allowed:
            self.model.grants.append((self.now, key, cost))
            return
        assert wait > 0
        if isinstance(self.model, SlidingCounterReference):
            later = self.now + Fraction(wait)
            limit = self.algorithm.capacity
            assert self.model.estimate(key, later) + cost <= limit + Fraction(1, 10**6)
            assert self.model.estimate(key, later - Fraction(1, 10**6)) + cost > limit
        else:
            assert wait == pytest.approx(float(expected_wait), abs=1e-9)

    @invariant()
    def remaining_matches(self) -> None:
        if not hasattr(self, "model"):
            return
        for key in ("a", "b"):
            remaining, reset_after = self.algorithm.inspect(self.states.get(key), float(self.now))
            assert remaining == self.model.remaining(key, self.now), key
            assert reset_after >= 0

    @invariant()
    def expired_states_are_full_in_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        for key, state in self.states.items():
            expires = self.algorithm.expires_at(state)
            if expires > float(self.now):
                at = Fraction(expires)
                # a tiny step past the float expiry absorbs its rounding
                assert self.model.remaining(key, at + Fraction(1, 10**9)) == self.algorithm.capacity


class TokenBucketMachine(KernelMachine):
    @initialize(parameters=bucket_parameters)
    def setup(self, parameters: tuple[int, Fraction, int]) -> None:
        rate, per, burst = parameters
        self.start(TokenBucket(rate=rate, per=float(per), burst=burst))


class GCRAMachine(KernelMachine):
    @initialize(parameters=bucket_parameters)
    def setup(self, parameters: tuple[int, Fraction, int]) -> None:
        rate, per, burst = parameters
        self.start(GCRA(rate=rate, per=float(per), burst=burst))


class FixedWindowMachine(KernelMachine):
    @initialize(parameters=window_parameters)
    def setup(self, parameters: tuple[int, Fraction]) -> None:
        limit, window = parameters
        self.start(FixedWindow(limit=limit, window=float(window)))


class SlidingWindowLogMachine(KernelMachine):
    @initialize(parameters=window_parameters)
    def setup(self, parameters: tuple[int, Fraction]) -> None:
        limit, window = parameters
        self.start(SlidingWindowLog(limit=limit, window=float(window)))


class SlidingWindowCounterMachine(KernelMachine):
    @initialize(parameters=window_parameters)
    def setup(self, parameters: tuple[int, Fraction]) -> None:
        limit, window = parameters
        self.start(SlidingWindowCounter(limit=limit, window=float(window)))


_machine_settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
TestTokenBucketAgainstModel = _machine_settings(TokenBucketMachine).TestCase
TestGCRAAgainstModel = _machine_settings(GCRAMachine).TestCase
TestFixedWindowAgainstModel = _machine_settings(FixedWindowMachine).TestCase
TestSlidingWindowLogAgainstModel = _machine_settings(SlidingWindowLogMachine).TestCase
TestSlidingWindowCounterAgainstModel = _machine_settings(SlidingWindowCounterMachine).TestCase
