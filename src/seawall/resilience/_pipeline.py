"""Compose policies in a declared order: the first listed is the outermost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from seawall.errors import ConfigurationError
from seawall.events import Event, Listener
from seawall.resilience._policy import Policy

__all__ = ["Pipeline"]

P = ParamSpec("P")
T = TypeVar("T")


class Pipeline(Policy):
    """Several policies applied as one, outermost first.

    ``Pipeline(Timeout(2.0), Retry(...), CircuitBreaker(...), Bulkhead(...), Timeout(0.5))``
    gives an overall timeout around every retry, a breaker and a bulkhead per attempt,
    and a per-attempt timeout innermost. The same pipeline serves sync and async
    callers, as decorator (``@pipeline``) or call wrapper (``pipeline.call(fn, ...)``).

    Impossible orders are refused at construction: an empty pipeline, a policy
    listed twice, a retry nested in a retry (attempts would multiply), and a
    per-attempt timeout (inside a retry) as long as the overall one (it could never
    fire). :meth:`subscribe` hears the events of every stage.
    """

    def __init__(self, *policies: Policy, name: str = "pipeline") -> None:
        if not policies:
            raise ConfigurationError("Pipeline() needs at least one policy, outermost first")
        for position, policy in enumerate(policies):
            if isinstance(policy, Pipeline):
                continue
            if not isinstance(policy, Policy):
                raise ConfigurationError(
                    f"Pipeline stage {position} is {policy!r}, not a seawall policy "
                    "(Retry, CircuitBreaker, Bulkhead, Timeout, RateLimiter, ...)"
                )
        seen: set[int] = set()
        for policy in policies:
            if id(policy) in seen:
                raise ConfigurationError(
                    f"Pipeline lists {policy.name!r} twice; build a second instance if you mean two stages"
                )
            seen.add(id(policy))
        _check_order(policies)
        self.policies: tuple[Policy, ...] = policies
        self.name = name

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` through every stage, outermost first."""
        policies = self.policies
        depth = len(policies)

        def stage(index: int) -> T:
            if index == depth:
                return fn(*args, **kwargs)
            return policies[index].call(stage, index + 1)

        return stage(0)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn`` through every stage, outermost first."""
        policies = self.policies
        depth = len(policies)

        async def stage(index: int) -> T:
            if index == depth:
                return await fn(*args, **kwargs)
            return await policies[index].acall(stage, index + 1)

        return await stage(0)

    def subscribe(
        self, listener: Listener, *, types: tuple[type[Event], ...] | None = None
    ) -> Callable[[], None]:
        """Hear the events of every stage; returns one function that unsubscribes them all."""
        unsubscribers = [
            policy.subscribe(listener, types=types)
            if isinstance(policy, Pipeline)
            else policy.events.subscribe(listener, types=types)  # type: ignore[attr-defined]
            for policy in self.policies
        ]

        def unsubscribe() -> None:
            for undo in unsubscribers:
                undo()

        return unsubscribe

    def __repr__(self) -> str:
        inner = ", ".join(repr(policy) for policy in self.policies)
        return f"Pipeline({inner})"


def _flatten(policies: tuple[Policy, ...]) -> list[Policy]:
    flat: list[Policy] = []
    for policy in policies:
        flat.extend(_flatten(policy.policies) if isinstance(policy, Pipeline) else [policy])
    return flat


def _check_order(policies: tuple[Policy, ...]) -> None:
    from seawall.resilience._retry import Retry
    from seawall.resilience._timeout import Timeout

    flat = _flatten(policies)
    retry_positions = [index for index, policy in enumerate(flat) if isinstance(policy, Retry)]
    if len(retry_positions) > 1:
        raise ConfigurationError(
            "Pipeline nests a Retry inside a Retry: their attempts multiply; keep one Retry"
        )
    if not retry_positions:
        return
    retry_at = retry_positions[0]
    outer = [p for p in flat[:retry_at] if isinstance(p, Timeout)]
    inner = [p for p in flat[retry_at + 1 :] if isinstance(p, Timeout)]
    if outer and inner:
        overall = min(timeout.seconds for timeout in outer)
        per_attempt = min(timeout.seconds for timeout in inner)
        if per_attempt >= overall:
            raise ConfigurationError(
                f"Pipeline per-attempt Timeout({per_attempt}) is not shorter than the overall "
                f"Timeout({overall}) outside the Retry: it can never fire; make it shorter"
            )
