"""Fallback: answer with a substitute when the call fails or returns something unusable.

``Fallback(value=[])`` returns a fixed value; ``Fallback(function=f)`` calls
``f(exception)`` (or ``f(result)`` for a result rejected by ``on_result``) and returns
what it returns. ``on`` chooses which exceptions are replaced: exception types or a
predicate; anything else propagates unchanged. In ``acall`` the function may be async.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar, cast

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.events import Event, EventHub, hub
from seawall.resilience._policy import Policy

__all__ = ["Fallback", "FallbackUsed"]

P = ParamSpec("P")
T = TypeVar("T")

ExceptionFilter = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
"""What ``on=`` accepts: exception types, or a predicate that says whether to fall back."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """The fallback answered instead of the call.

    ``exception`` is what the call raised, or ``None`` when its ``result`` was rejected
    by ``on_result``.
    """

    exception: BaseException | None
    result: Any = None


class Fallback(Policy):
    """Replace a failure (or an unusable result) with ``value`` or ``function(failure)``.

    Pass exactly one of ``value`` and ``function``. ``on`` (default ``Exception``) picks
    the exceptions to replace; ``on_result(result) -> bool`` marks results to replace.
    ``function`` receives the exception, or the rejected result.
    """

    def __init__(
        self,
        value: Any = _MISSING,
        *,
        function: Callable[[Any], Any] | None = None,
        on: ExceptionFilter = Exception,
        on_result: Callable[[Any], bool] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "fallback",
    ) -> None:
        if (value is _MISSING) == (function is None):
            raise ConfigurationError(
                "Fallback() needs exactly one of value=... (a fixed answer) or "
                "function=... (called with the exception or the rejected result)"
            )
        if function is not None and not callable(function):
            raise ConfigurationError(
                f"Fallback(function={function!r}) is invalid: pass a callable taking the "
                "exception (or the rejected result)"
            )
        if isinstance(on, type) and issubclass(on, BaseException):
            types: tuple[type[BaseException], ...] = (on,)
            predicate: Callable[[BaseException], bool] | None = None
        elif isinstance(on, tuple) and all(
            isinstance(item, type) and issubclass(item, BaseException) for item in on
        ):
            if not on:
                raise ConfigurationError(
                    "Fallback(on=()) is invalid: name at least one exception type"
                )
            types, predicate = on, None
        elif callable(on) and not isinstance(on, type):
            types, predicate = (Exception,), on
        else:
            raise ConfigurationError(
                f"Fallback(on={on!r}) is invalid: pass an exception type, a tuple of exception "
                "types, or a predicate(exception) -> bool"
            )
        if on_result is not None and not callable(on_result):
            raise ConfigurationError(
                f"Fallback(on_result={on_result!r}) is invalid: pass a predicate(result) -> bool"
            )
        if not isinstance(clock, Clock):
            raise ConfigurationError(
                f"Fallback(clock={clock!r}) is invalid: pass a seawall.clock.Clock"
            )
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"Fallback(name={name!r}) is invalid: name must be a non-empty str"
            )
        self.value = None if value is _MISSING else value
        self.function = function
        self.on = on
        self.on_result = on_result
        self.clock = clock
        self.name = name
        self.events = EventHub(parent=hub)
        self._types = types
        self._predicate = predicate

    # ------------------------------------------------------------------ sync runner

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn``; on a chosen exception or rejected result return the fallback."""
        try:
            result = fn(*args, **kwargs)
        except self._types as exc:
            if self._predicate is not None and not self._predicate(exc):
                raise
            return cast(T, self._substitute(exc, exc, None))
        if self.on_result is not None and self.on_result(result):
            return cast(T, self._substitute(result, None, result))
        return result

    def _substitute(self, argument: Any, exception: BaseException | None, result: Any) -> Any:
        if self.events.active:
            self.events.emit(FallbackUsed(self.name, exception, result))
        if self.function is None:
            return self.value
        answer = self.function(argument)
        if inspect.isawaitable(answer):
            if inspect.iscoroutine(answer):
                answer.close()
            raise TypeError(
                f"Fallback {self.name!r}: function {self.function!r} is async; "
                "use it with acall() (await policy.acall(...)) or pass a sync function"
            )
        return answer

    # ----------------------------------------------------------------- async runner

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn``; on a chosen exception or rejected result return the fallback.

        The fallback function may be sync or async.
        """
        try:
            result = await fn(*args, **kwargs)
        except self._types as exc:
            if self._predicate is not None and not self._predicate(exc):
                raise
            return cast(T, await self._asubstitute(exc, exc, None))
        if self.on_result is not None and self.on_result(result):
            return cast(T, await self._asubstitute(result, None, result))
        return result

    async def _asubstitute(
        self, argument: Any, exception: BaseException | None, result: Any
    ) -> Any:
        if self.events.active:
            self.events.emit(FallbackUsed(self.name, exception, result))
        if self.function is None:
            return self.value
        answer = self.function(argument)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer

    def __repr__(self) -> str:
        what = f"function={self.function!r}" if self.function is not None else f"{self.value!r}"
        return f"Fallback({what}, name={self.name!r})"
