"""RetryBudget: reserve, ratio, expiry, thread safety, and a model-based check."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from seawall.errors import ConfigurationError
from seawall.resilience._budget import RetryBudget

NOW = 1000.0


def withdraw_all(budget: RetryBudget, now: float, limit: int = 10_000) -> int:
    """How many retries the budget grants right now."""
    granted = 0
    while granted < limit and budget.try_withdraw(now):
        granted += 1
    return granted


def test_reserve_allows_min_per_second_over_the_window() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=2, window=5.0)
    assert budget.reserve == 10.0
    assert budget.balance(NOW) == 10.0
    assert withdraw_all(budget, NOW) == 10
    assert budget.try_withdraw(NOW) is False


def test_each_request_earns_ratio_tokens() -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=0, window=10.0)
    assert budget.try_withdraw(NOW) is False
    for _ in range(25):
        budget.deposit(NOW)
    assert budget.balance(NOW) == pytest.approx(2.5)
    assert withdraw_all(budget, NOW) == 2


def test_ten_requests_at_a_tenth_buy_exactly_one_retry() -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=0, window=10.0)
    for _ in range(10):
        budget.deposit(NOW)
    assert budget.try_withdraw(NOW) is True  # 10 * 0.1 is 0.9999... in binary floating point
    assert budget.try_withdraw(NOW) is False


def test_a_refused_withdrawal_spends_nothing() -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=10.0)
    budget.deposit(NOW)
    assert budget.try_withdraw(NOW) is False
    budget.deposit(NOW)
    assert budget.try_withdraw(NOW) is True


def test_deposits_expire_after_the_window() -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0, window=10.0, slots=10)
    for _ in range(5):
        budget.deposit(NOW)
    assert budget.balance(NOW + 9.0) == 5.0
    assert budget.balance(NOW + 10.0) == 0.0
    assert budget.try_withdraw(NOW + 10.0) is False


def test_withdrawals_expire_too_so_the_budget_refills() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=1, window=4.0, slots=4)
    assert withdraw_all(budget, NOW) == 4
    assert budget.try_withdraw(NOW + 3.5) is False
    assert withdraw_all(budget, NOW + 4.0) == 4


def test_buckets_expire_one_at_a_time() -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0, window=4.0, slots=4)
    for offset in (0.0, 1.0, 2.0, 3.0):
        budget.deposit(NOW + offset)
    assert budget.balance(NOW + 3.0) == 4.0
    assert budget.balance(NOW + 4.0) == 3.0
    assert budget.balance(NOW + 5.5) == 2.0
    assert budget.balance(NOW + 100.0) == 0.0


def test_a_clock_going_back_keeps_counting_in_the_current_bucket() -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0, window=4.0, slots=4)
    budget.deposit(NOW + 2.0)
    budget.deposit(NOW)  # earlier than the current bucket
    assert budget.balance(NOW + 2.0) == 2.0
    assert budget.balance(NOW + 5.9) == 2.0
    assert budget.balance(NOW + 6.0) == 0.0


def test_ratio_zero_and_no_floor_never_retries() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=0)
    for _ in range(100):
        budget.deposit(NOW)
    assert budget.try_withdraw(NOW) is False


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads very often, so a missing lock would lose updates."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def run_threads(count: int, work: Callable[[], None]) -> None:
    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.usefixtures("busy_switching")
def test_concurrent_deposits_lose_no_update() -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0, window=60.0)

    def deposit_many() -> None:
        for _ in range(3000):
            budget.deposit(NOW)

    run_threads(8, deposit_many)
    assert budget.balance(NOW) == 8 * 3000


@pytest.mark.usefixtures("busy_switching")
def test_concurrent_withdrawals_never_overspend() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=100, window=10.0)
    granted: list[int] = []

    def withdraw_many() -> None:
        granted.append(sum(budget.try_withdraw(NOW) for _ in range(500)))

    run_threads(8, withdraw_many)
    assert sum(granted) == 1000
    assert budget.balance(NOW) == 0.0


def test_repr() -> None:
    assert repr(RetryBudget()) == (
        "RetryBudget(ratio=0.2, min_per_second=10.0, window=10.0, slots=10)"
    )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": float("nan")}, "ratio"),
        ({"ratio": float("inf")}, "ratio"),
        ({"min_per_second": -1}, "min_per_second"),
        ({"window": 0}, "window"),
        ({"window": "10"}, "window"),
        ({"slots": 0}, "slots"),
        ({"slots": 2.5}, "slots"),
    ],
)
def test_invalid_configuration_names_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"RetryBudget\({field}="):
        RetryBudget(**options)  # type: ignore[arg-type]


class BudgetModel(RuleBasedStateMachine):
    """The ring of buckets against a plain list of timestamped events."""

    @initialize(
        ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
        min_per_second=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
        window=st.sampled_from([1.0, 2.5, 10.0]),
        slots=st.integers(1, 12),
    )
    def build(self, ratio: float, min_per_second: float, window: float, slots: int) -> None:
        self.budget = RetryBudget(ratio, min_per_second, window, slots=slots)
        self.ratio = ratio
        self.reserve = min_per_second * window
        self.slot_width_inverse = slots / window
        self.slots = slots
        self.now = NOW
        self.events: list[tuple[int, str]] = []  # (slot, "request" | "retry")

    def slot(self, moment: float) -> int:
        return math.floor(moment * self.slot_width_inverse)

    def model_balance(self) -> float:
        current = self.slot(self.now)
        live = [kind for slot, kind in self.events if current - slot < self.slots]
        return self.reserve + self.ratio * live.count("request") - live.count("retry")

    @rule(seconds=st.floats(min_value=0.0, max_value=4.0))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(count=st.integers(1, 5))
    def deposit(self, count: int) -> None:
        for _ in range(count):
            self.budget.deposit(self.now)
            self.events.append((self.slot(self.now), "request"))

    @rule()
    def withdraw(self) -> None:
        expected = self.model_balance() >= 1.0 - 1e-9
        assert self.budget.try_withdraw(self.now) is expected
        if expected:
            self.events.append((self.slot(self.now), "retry"))

    @invariant()
    def balances_agree(self) -> None:
        if hasattr(self, "budget"):
            assert self.budget.balance(self.now) == pytest.approx(self.model_balance())


TestBudgetModel = BudgetModel.TestCase
TestBudgetModel.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
