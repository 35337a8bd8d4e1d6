"""The shape every resilience policy shares, so a pipeline can compose any of them."""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

__all__ = ["Policy"]

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Policy(ABC):
    """A policy wraps calls: ``policy.call(fn, ...)``, ``await policy.acall(fn, ...)``, ``@policy``.

    Subclasses implement :meth:`call` and :meth:`acall` over one sans-I/O core and may
    override :meth:`decorate` with a faster specialised wrapper. ``name`` identifies the
    policy in events, errors and metrics.
    """

    name: str

    @abstractmethod
    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` under this policy, in the calling thread."""

    @abstractmethod
    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` under this policy."""

    def decorate(self, fn: F) -> F:
        """Wrap ``fn`` (sync or async) so every call goes through this policy."""
        if inspect.iscoroutinefunction(fn):
            acall = self.acall

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await acall(fn, *args, **kwargs)

            return cast(F, async_wrapper)
        call = self.call

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return call(fn, *args, **kwargs)

        return cast(F, wrapper)

    def __call__(self, fn: F) -> F:
        """Use the policy as a decorator: ``@policy``."""
        return self.decorate(fn)
