"""Defining a saga: ordered steps (or parallel groups of steps), each an action and a compensation.

A definition is checked when it is built, so a saga that could not be undone never
starts: no steps, duplicate step names, or a step that would need a compensation and
has none raise :class:`~seawall.errors.ConfigurationError` at once.

**Which steps need a compensation.** A saga undoes completed steps when a later one
fails; every step that a later failure could reach needs a compensation. The *pivot*
is the point of no return: once it has succeeded the saga only goes forward (the
steps after it are retried, and an operator is called if they keep failing). The
pivot is the step marked ``pivot=True``, or else the last step when it is a single
step without a compensation. Every step before the pivot needs a compensation; the
pivot and the steps after it have none.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seawall.errors import ConfigurationError
from seawall.resilience._policy import Policy

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["Parallel", "Saga", "Step", "StepContext", "StepFunction"]

MAX_NAME_LENGTH = 200

StepFunction = Callable[["StepContext"], Any]
"""An action or compensation: ``fn(context)``, a plain function or a coroutine function."""


@dataclass(frozen=True, slots=True)
class StepContext:
    """What an action or compensation receives: which saga and step, the input, earlier results.

    ``idempotency_key`` is stable across retries, crashes and resumes (saga id and step
    name): a participant that stores it and ignores a repeat makes at-least-once
    execution take effect exactly once. A compensation gets the same key, and
    ``result`` holds the action's recorded result (``None`` when the action's outcome
    was never recorded: a compensation must also cope with an action that never ran).
    """

    saga_id: str
    saga: str
    step: str
    input: Any
    """The saga's input, as decoded from the log (JSON types)."""
    results: Mapping[str, Any]
    """The results of the steps completed so far, by step name."""
    result: Any = None
    """In a compensation: this step's recorded result."""
    compensating: bool = False
    """True when called as the compensation."""
    transaction: Transaction | None = None
    """For a ``local=True`` step: the transaction that also records the step's completion."""

    @property
    def idempotency_key(self) -> str:
        """``"<saga id>:<step name>"``, the same on every attempt, retry and resume."""
        return f"{self.saga_id}:{self.step}"


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"{what} name {value!r} is invalid: it must be a non-empty str of at most "
            f"{MAX_NAME_LENGTH} characters"
        )
    return value


class Step:
    """One step of a saga: an action, its compensation, and how hard to try each.

    ``policy`` (any resilience policy, e.g. a :class:`~seawall.resilience.Retry` or a
    :class:`~seawall.resilience.Pipeline`) wraps every run of the action; ``timeout``
    bounds each attempt. ``compensation_policy`` wraps the compensation (default: the
    orchestrator's, 5 attempts with exponential backoff); past it the saga is ``stuck``.
    ``local=True`` runs the action inside the saga log's transaction that records its
    completion (SQL logs only; sync functions only): its writes through
    ``context.transaction`` commit exactly once. ``compensate_failed=True`` also
    compensates this step when its own action failed (for actions that may take effect
    and still fail, such as a call that timed out).
    """

    __slots__ = (
        "action",
        "action_is_async",
        "compensate_failed",
        "compensation",
        "compensation_is_async",
        "compensation_policy",
        "local",
        "name",
        "pivot",
        "policy",
        "timeout",
    )

    def __init__(
        self,
        name: str,
        action: StepFunction,
        compensation: StepFunction | None = None,
        *,
        policy: Policy | None = None,
        timeout: float | None = None,
        compensation_policy: Policy | None = None,
        pivot: bool = False,
        local: bool = False,
        compensate_failed: bool = False,
    ) -> None:
        self.name = _check_name(name, "Step")
        where = f"Step {name!r}"
        if not callable(action):
            raise ConfigurationError(f"{where}: action={action!r} is not callable")
        if compensation is not None and not callable(compensation):
            raise ConfigurationError(
                f"{where}: compensation={compensation!r} is not callable (pass a function or None)"
            )
        for field, value in (("policy", policy), ("compensation_policy", compensation_policy)):
            if value is not None and not isinstance(value, Policy):
                raise ConfigurationError(
                    f"{where}: {field}={value!r} is not a seawall resilience policy "
                    "(Retry, Pipeline, CircuitBreaker, ...)"
                )
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ConfigurationError(
                f"{where}: timeout={timeout!r} is invalid: pass None or a finite number of "
                "seconds > 0"
            )
        if pivot and compensation is not None:
            raise ConfigurationError(
                f"{where} is the pivot (the point of no return) and cannot have a "
                "compensation; drop pivot=True or the compensation"
            )
        if compensate_failed and compensation is None:
            raise ConfigurationError(f"{where}: compensate_failed=True needs a compensation to run")
        action_is_async = inspect.iscoroutinefunction(action)
        compensation_is_async = compensation is not None and inspect.iscoroutinefunction(
            compensation
        )
        if local:
            if action_is_async or compensation_is_async:
                raise ConfigurationError(
                    f"{where}: a local step runs inside a database transaction and must use "
                    "plain (sync) functions"
                )
            if timeout is not None:
                raise ConfigurationError(
                    f"{where}: a local step cannot have a timeout (an abandoned attempt would "
                    "keep using the transaction); bound the work with a statement timeout"
                )
        self.action = action
        self.compensation = compensation
        self.policy = policy
        self.timeout = float(timeout) if timeout is not None else None
        self.compensation_policy = compensation_policy
        self.pivot = bool(pivot)
        self.local = bool(local)
        self.compensate_failed = bool(compensate_failed)
        self.action_is_async = action_is_async
        self.compensation_is_async = compensation_is_async

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


class Parallel:
    """Steps that run at the same time; the saga moves on when all of them have finished.

    If one fails, the others are still waited for, then every completed step (from
    this group and earlier ones) is compensated in reverse order of completion.
    """

    __slots__ = ("steps",)

    def __init__(self, *steps: Step) -> None:
        if len(steps) < 2:
            raise ConfigurationError(
                f"Parallel() needs at least two steps, got {len(steps)}; list a single step "
                "directly in the saga"
            )
        for step in steps:
            if not isinstance(step, Step):
                raise ConfigurationError(f"Parallel() takes Step objects, got {step!r}")
            if step.local:
                raise ConfigurationError(
                    f"Step {step.name!r} is local and cannot run in a parallel group: each "
                    "local step commits with the saga log in turn"
                )
            if step.pivot:
                raise ConfigurationError(
                    f"Step {step.name!r} cannot be the pivot inside a parallel group; make the "
                    "pivot a step of its own"
                )
        self.steps = steps

    def __repr__(self) -> str:
        return f"Parallel({', '.join(repr(step.name) for step in self.steps)})"


class Saga:
    """A named, validated sequence of steps and parallel groups, with an optional deadline.

    ``deadline`` (seconds from the start, judged on the log engine's clock) turns the
    saga back at the next step boundary once it has passed, unless the pivot has
    already succeeded. Raises :class:`~seawall.errors.ConfigurationError` for no steps,
    duplicate step names, or a missing compensation (see the module docs).
    """

    __slots__ = ("deadline", "group_of", "groups", "name", "pivot", "plan", "steps")

    def __init__(
        self, name: str, steps: Iterable[Step | Parallel], *, deadline: float | None = None
    ) -> None:
        self.name = _check_name(name, "Saga")
        if isinstance(steps, Step | Parallel):
            steps = [steps]
        items = list(steps)
        if not items:
            raise ConfigurationError(f"Saga {name!r} has no steps; give it at least one Step")
        groups: list[tuple[Step, ...]] = []
        for item in items:
            if isinstance(item, Step):
                groups.append((item,))
            elif isinstance(item, Parallel):
                groups.append(item.steps)
            else:
                raise ConfigurationError(
                    f"Saga {name!r}: {item!r} is not a Step or a Parallel group of steps"
                )
        seen: set[str] = set()
        for group in groups:
            for step in group:
                if step.name in seen:
                    raise ConfigurationError(
                        f"Saga {name!r} has two steps named {step.name!r}; step names must be "
                        "unique (they key the saga log and the idempotency keys)"
                    )
                seen.add(step.name)
        if deadline is not None and (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not 0 < deadline < math.inf
        ):
            raise ConfigurationError(
                f"Saga {name!r}: deadline={deadline!r} is invalid: pass None or a finite "
                "number of seconds > 0"
            )
        self.groups: tuple[tuple[Step, ...], ...] = tuple(groups)
        self.pivot = _find_pivot(self.name, self.groups)
        _check_compensations(self.name, self.groups, self.pivot)
        self.deadline = float(deadline) if deadline is not None else None
        self.steps: dict[str, Step] = {step.name: step for group in groups for step in group}
        self.group_of: dict[str, int] = {
            step.name: index for index, group in enumerate(groups) for step in group
        }
        self.plan: tuple[tuple[str, ...], ...] = tuple(
            tuple(step.name for step in group) for group in groups
        )

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, {len(self.steps)} steps)"


def _find_pivot(name: str, groups: tuple[tuple[Step, ...], ...]) -> int | None:
    """The index of the pivot's group: the step marked ``pivot``, or a lone last step without compensation."""
    marked = [index for index, group in enumerate(groups) if group[0].pivot]
    if len(marked) > 1:
        names = [groups[index][0].name for index in marked]
        raise ConfigurationError(
            f"Saga {name!r} marks {names} as pivot; a saga has at most one point of no return"
        )
    if marked:
        return marked[0]
    last = groups[-1]
    if len(last) == 1 and last[0].compensation is None:
        return len(groups) - 1
    return None


def _check_compensations(
    name: str, groups: tuple[tuple[Step, ...], ...], pivot: int | None
) -> None:
    for index, group in enumerate(groups):
        for step in group:
            if (pivot is None or index < pivot) and step.compensation is None:
                raise ConfigurationError(
                    f"Saga {name!r}: step {step.name!r} has no compensation, but a later step "
                    "can fail and the saga would have to undo it. Give it a compensation (a "
                    "no-op if it changes nothing), or mark the point of no return with "
                    "pivot=True on a step at or before it"
                )
            if pivot is not None and index > pivot and step.compensation is not None:
                raise ConfigurationError(
                    f"Saga {name!r}: step {step.name!r} comes after the pivot "
                    f"{groups[pivot][0].name!r} and can never be compensated; remove its "
                    "compensation or move the pivot after it"
                )
