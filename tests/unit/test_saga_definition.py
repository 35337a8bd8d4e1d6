"""Saga definitions are checked when built: bad ones never start."""

from __future__ import annotations

from typing import Any

import pytest

import seawall.workflows as workflows
import seawall.workflows.saga as saga_package
from seawall.errors import ConfigurationError
from seawall.resilience import Retry
from seawall.workflows import Parallel, Saga, Step, StepContext


def act(context: StepContext) -> None:
    return None


def undo(context: StepContext) -> None:
    return None


async def async_act(context: StepContext) -> None:
    return None


def test_a_saga_needs_steps() -> None:
    with pytest.raises(ConfigurationError, match="no steps"):
        Saga("empty", [])


def test_step_names_must_be_unique_across_groups() -> None:
    with pytest.raises(ConfigurationError, match="two steps named 'a'"):
        Saga("dup", [Step("a", act, undo), Parallel(Step("b", act, undo), Step("a", act, undo))])


def test_a_step_before_the_last_needs_a_compensation() -> None:
    with pytest.raises(ConfigurationError, match="step 'reserve' has no compensation"):
        Saga("order", [Step("reserve", act), Step("charge", act, undo), Step("ship", act)])


def test_the_last_lone_step_is_the_pivot_and_needs_no_compensation() -> None:
    saga = Saga("order", [Step("reserve", act, undo), Step("ship", act)])
    assert saga.pivot == 1
    assert saga.plan == (("reserve",), ("ship",))


def test_with_a_compensated_last_step_there_is_no_pivot() -> None:
    saga = Saga("order", [Step("reserve", act, undo), Step("ship", act, undo)])
    assert saga.pivot is None


def test_a_parallel_last_group_needs_compensations() -> None:
    with pytest.raises(ConfigurationError, match="step 'b' has no compensation"):
        Saga("p", [Step("a", act, undo), Parallel(Step("b", act), Step("c", act, undo))])


def test_an_explicit_pivot_frees_later_steps_from_compensations() -> None:
    saga = Saga(
        "order",
        [Step("reserve", act, undo), Step("charge", act, pivot=True), Step("email", act)],
    )
    assert saga.pivot == 1


def test_steps_after_the_pivot_cannot_have_compensations() -> None:
    with pytest.raises(ConfigurationError, match="after the pivot 'charge'"):
        Saga("order", [Step("charge", act, pivot=True), Step("email", act, undo)])


def test_only_one_pivot() -> None:
    with pytest.raises(ConfigurationError, match="at most one point of no return"):
        Saga("order", [Step("a", act, pivot=True), Step("b", act, pivot=True)])


def test_the_pivot_has_no_compensation() -> None:
    with pytest.raises(ConfigurationError, match="cannot have a compensation"):
        Step("a", act, undo, pivot=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty str"),
        ({"name": "x" * 201}, "at most 200"),
        ({"action": 3}, "not callable"),
        ({"compensation": "undo"}, "not callable"),
        ({"policy": object()}, "not a seawall resilience policy"),
        ({"compensation_policy": 3}, "not a seawall resilience policy"),
        ({"timeout": 0}, "timeout=0 is invalid"),
        ({"timeout": float("inf")}, "is invalid"),
        ({"timeout": True}, "is invalid"),
        ({"compensation": None, "compensate_failed": True}, "needs a compensation"),
        ({"local": True, "timeout": 1.0}, "cannot have a timeout"),
        ({"local": True, "action": async_act}, "plain \\(sync\\) functions"),
    ],
)
def test_step_arguments_are_checked(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"name": "s", "action": act, "compensation": undo}
    arguments.update(kwargs)
    name = arguments.pop("name")
    action = arguments.pop("action")
    with pytest.raises(ConfigurationError, match=message):
        Step(name, action, **arguments)


def test_parallel_needs_two_plain_steps() -> None:
    with pytest.raises(ConfigurationError, match="at least two steps"):
        Parallel(Step("a", act, undo))
    with pytest.raises(ConfigurationError, match="takes Step objects"):
        Parallel(Step("a", act, undo), "b")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="local"):
        Parallel(Step("a", act, undo, local=True), Step("b", act, undo))
    with pytest.raises(ConfigurationError, match="pivot"):
        Parallel(Step("a", act, pivot=True), Step("b", act, undo))


def test_saga_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="deadline=0 is invalid"):
        Saga("s", [Step("a", act)], deadline=0)
    with pytest.raises(ConfigurationError, match="not a Step"):
        Saga("s", [act])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="Saga name"):
        Saga("", [Step("a", act)])


def test_a_single_step_may_be_passed_bare() -> None:
    saga = Saga("one", Step("a", act))
    assert saga.plan == (("a",),)
    assert saga.steps["a"].name == "a"


def test_sync_and_async_functions_are_told_apart() -> None:
    step = Step("a", async_act, undo, policy=Retry(2))
    assert step.action_is_async
    assert not step.compensation_is_async


def test_the_idempotency_key_is_saga_id_and_step() -> None:
    context = StepContext("s-1", "order", "charge", None, {})
    assert context.idempotency_key == "s-1:charge"


def test_public_names_are_exactly_the_exported_set() -> None:
    assert workflows.__all__ == sorted(workflows.__all__)
    assert set(saga_package.__all__) <= set(workflows.__all__)
    for name in saga_package.__all__:
        assert getattr(workflows, name) is getattr(saga_package, name)
