"""Wait strategies: schedules, caps, jitter bounds, determinism and validation."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.errors import ConfigurationError
from seawall.resilience._backoff import Wait, constant, decorrelated, exponential, linear


def schedule(wait: Wait, retries: int) -> list[float]:
    """The waits a policy would ask for, feeding each back as ``previous``."""
    waits: list[float] = []
    previous = 0.0
    for retry in range(1, retries + 1):
        previous = wait.next_wait(retry, previous)
        waits.append(previous)
    return waits


def test_constant_waits_the_same_every_time() -> None:
    assert schedule(constant(0.5), 4) == [0.5, 0.5, 0.5, 0.5]


def test_constant_zero_is_allowed() -> None:
    assert schedule(constant(0), 2) == [0.0, 0.0]


def test_linear_grows_by_step_and_stops_at_cap() -> None:
    assert schedule(linear(1.0, 0.5, cap=2.2), 5) == [1.0, 1.5, 2.0, 2.2, 2.2]


def test_linear_step_defaults_to_start() -> None:
    assert schedule(linear(0.25), 3) == [0.25, 0.5, 0.75]


def test_exponential_doubles_by_default_and_stops_at_cap() -> None:
    assert schedule(exponential(0.1, cap=0.5), 5) == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_exponential_custom_factor() -> None:
    assert schedule(exponential(1.0, factor=3.0), 3) == [1.0, 3.0, 9.0]


def test_exponential_far_retries_do_not_overflow() -> None:
    assert exponential(1.0, cap=30.0).next_wait(5000, 30.0) == 30.0
    assert exponential(1.0).next_wait(5000, 0.0) == float("inf")


def test_full_jitter_stays_within_zero_and_the_capped_wait() -> None:
    wait = exponential(1.0, cap=4.0, jitter="full", random=7)
    draws = [wait.next_wait(retry, 0.0) for retry in range(1, 200)]
    assert all(0.0 <= draw <= 4.0 for draw in draws)
    assert max(draws) > 3.0  # the cap, not the raw 2**n, bounds the draws
    assert len(set(draws)) > 150  # really random


def test_equal_jitter_keeps_at_least_half() -> None:
    wait = constant(2.0, jitter="equal", random=1)
    draws = [wait.next_wait(1, 0.0) for _ in range(200)]
    assert all(1.0 <= draw <= 2.0 for draw in draws)
    assert min(draws) < 1.1
    assert max(draws) > 1.9


def test_same_seed_gives_the_same_schedule() -> None:
    first = schedule(exponential(0.1, jitter="full", random=42), 6)
    second = schedule(exponential(0.1, jitter="full", random=42), 6)
    third = schedule(exponential(0.1, jitter="full", random=43), 6)
    assert first == second
    assert first != third


def test_random_instance_is_used_as_given() -> None:
    source = random.Random(5)
    expected = random.Random(5).uniform(0.0, 1.0)
    assert constant(1.0, jitter="full", random=source).next_wait(1, 0.0) == expected


def test_decorrelated_first_wait_is_between_base_and_three_base() -> None:
    wait = decorrelated(1.0, cap=100.0, random=3)
    draws = [wait.next_wait(1, 0.0) for _ in range(300)]
    assert all(1.0 <= draw <= 3.0 for draw in draws)
    assert max(draws) > 2.5


def test_decorrelated_grows_from_the_previous_wait_and_is_capped() -> None:
    wait = decorrelated(0.5, cap=5.0, random=11)
    previous = 0.0
    for retry in range(1, 50):
        current = wait.next_wait(retry, previous)
        assert 0.5 <= current <= min(5.0, 3.0 * max(0.5, previous))
        previous = current
    assert wait.next_wait(99, 1000.0) <= 5.0


@given(
    base=st.floats(min_value=0.001, max_value=10.0),
    cap=st.floats(min_value=0.001, max_value=100.0),
    previous=st.floats(min_value=0.0, max_value=1000.0),
    seed=st.integers(0, 2**32),
)
def test_decorrelated_bounds_hold_for_any_input(
    base: float, cap: float, previous: float, seed: int
) -> None:
    if cap < base:
        with pytest.raises(ConfigurationError):
            decorrelated(base, cap)
        return
    draw = decorrelated(base, cap, random=seed).next_wait(3, previous)
    assert min(base, cap) <= draw <= cap


@given(
    base=st.floats(min_value=0.0, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=10.0),
    cap=st.floats(min_value=0.001, max_value=60.0),
    retry=st.integers(1, 2000),
    jitter=st.sampled_from(["none", "full", "equal"]),
)
def test_capped_exponential_never_exceeds_the_cap(
    base: float, factor: float, cap: float, retry: int, jitter: str
) -> None:
    wait = exponential(base, factor, cap=cap, jitter=jitter, random=0)  # type: ignore[arg-type]
    assert 0.0 <= wait.next_wait(retry, 0.0) <= cap


def test_waits_add_up() -> None:
    combined = constant(1.0) + linear(0.5) + exponential(0.1)
    assert schedule(combined, 3) == pytest.approx([1.6, 2.2, 2.9])
    assert repr(combined) == "constant(1.0) + linear(0.5, step=0.5) + exponential(0.1, factor=2.0)"


def test_a_custom_wait_subclass_works() -> None:
    class Fibonacci(Wait):
        def next_wait(self, retry: int, previous: float) -> float:
            a, b = 0.0, 1.0
            for _ in range(retry):
                a, b = b, a + b
            return a

    assert schedule(Fibonacci(), 5) == [1.0, 1.0, 2.0, 3.0, 5.0]
    assert schedule(Fibonacci() + constant(1.0), 2) == [2.0, 2.0]


def test_adding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        constant(1.0) + 2.0  # type: ignore[operator]


def test_reprs_show_the_options() -> None:
    assert repr(exponential(0.05, cap=2.0, jitter="full")) == (
        "exponential(0.05, factor=2.0, cap=2.0, jitter='full')"
    )
    assert repr(decorrelated(0.1, 3.0)) == "decorrelated(0.1, cap=3.0)"
    assert repr(constant(1.0, jitter="equal")) == "constant(1.0, jitter='equal')"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: constant(-1.0), "seconds"),
        (lambda: constant(float("nan")), "seconds"),
        (lambda: constant(float("inf")), "seconds"),
        (lambda: constant("1"), "seconds"),  # type: ignore[arg-type]
        (lambda: constant(True), "seconds"),
        (lambda: constant(1.0, jitter="half"), "jitter"),  # type: ignore[arg-type]
        (lambda: constant(1.0, random="seed"), "random"),  # type: ignore[arg-type]
        (lambda: linear(-0.1), "start"),
        (lambda: linear(0.1, -1.0), "step"),
        (lambda: linear(0.1, cap=0), "cap"),
        (lambda: exponential(-1.0), "base"),
        (lambda: exponential(1.0, factor=0.5), "factor"),
        (lambda: exponential(1.0, factor=float("inf")), "factor"),
        (lambda: exponential(1.0, cap=-2.0), "cap"),
        (lambda: decorrelated(0.0, 1.0), "base"),
        (lambda: decorrelated(2.0, 1.0), "cap"),
    ],
)
def test_invalid_configuration_names_the_field(build: object, field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"\b{field}=") as info:
        build()  # type: ignore[operator]
    assert isinstance(info.value, ValueError)
