"""Fallback: a substitute value or function on chosen exceptions or rejected results."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from seawall.errors import ConfigurationError
from seawall.events import Event
from seawall.resilience._fallback import Fallback, FallbackUsed


class Interrupt(BaseException):
    """A BaseException that is not an Exception (like KeyboardInterrupt)."""


def fail(error: BaseException) -> Any:
    raise error


async def afail(error: BaseException) -> Any:
    raise error


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: Fallback(), "exactly one of value"),
        (lambda: Fallback(1, function=str), "exactly one of value"),
        (lambda: Fallback(function=3), r"Fallback\(function=3\)"),  # type: ignore[arg-type]
        (lambda: Fallback(0, on="ValueError"), r"Fallback\(on='ValueError'\)"),  # type: ignore[arg-type]
        (lambda: Fallback(0, on=(ValueError, 3)), r"Fallback\(on="),  # type: ignore[arg-type]
        (lambda: Fallback(0, on=()), r"Fallback\(on=\(\)\)"),
        (lambda: Fallback(0, on_result=5), r"Fallback\(on_result=5\)"),  # type: ignore[arg-type]
        (lambda: Fallback(0, name=""), r"Fallback\(name=''\)"),
        (lambda: Fallback(0, clock="now"), r"Fallback\(clock='now'\)"),  # type: ignore[arg-type]
    ],
)
def test_invalid_configuration_is_refused(factory: Callable[[], Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        factory()


# ------------------------------------------------------------------------- sync


def test_success_passes_through_untouched() -> None:
    fallback = Fallback("default")
    assert fallback.call(lambda a, b: a + b, "x", b="y") == "xy"


def test_value_replaces_an_exception() -> None:
    assert Fallback([]).call(fail, ConnectionError()) == []


def test_none_is_a_valid_fallback_value() -> None:
    assert Fallback(None).call(fail, ValueError()) is None


def test_function_receives_the_exception() -> None:
    received: list[BaseException] = []
    error = ConnectionError("reset")

    def substitute(exc: BaseException) -> str:
        received.append(exc)
        return f"cached because {exc}"

    assert Fallback(function=substitute).call(fail, error) == "cached because reset"
    assert received == [error]


def test_only_the_chosen_exception_types_are_replaced() -> None:
    fallback = Fallback("default", on=(ConnectionError, TimeoutError))
    assert fallback.call(fail, TimeoutError()) == "default"
    with pytest.raises(KeyError):
        fallback.call(fail, KeyError("a bug"))
    assert Fallback(0, on=KeyError).call(fail, KeyError()) == 0


def test_a_predicate_chooses_exceptions() -> None:
    fallback = Fallback("default", on=lambda exc: isinstance(exc, OSError) and exc.errno == 111)
    assert fallback.call(fail, OSError(111, "refused")) == "default"
    with pytest.raises(OSError, match="denied"):
        fallback.call(fail, OSError(13, "denied"))


def test_base_exceptions_are_never_replaced_by_default() -> None:
    with pytest.raises(Interrupt):
        Fallback("default").call(fail, Interrupt())


def test_rejected_results_are_replaced_and_passed_to_the_function() -> None:
    fallback = Fallback(
        function=lambda result: {"status": "stale", "was": result},
        on_result=lambda r: r["status"] == 503,
    )
    assert fallback.call(lambda: {"status": 200}) == {"status": 200}
    assert fallback.call(lambda: {"status": 503}) == {"status": "stale", "was": {"status": 503}}


def test_events_say_what_was_replaced() -> None:
    fallback = Fallback(0, on_result=lambda r: r < 0, name="price")
    seen: list[Event] = []
    fallback.events.subscribe(seen.append)
    error = ValueError("bad")
    fallback.call(fail, error)
    fallback.call(lambda: -5)
    fallback.call(lambda: 5)
    assert seen == [FallbackUsed("price", error, None), FallbackUsed("price", None, -5)]


def test_a_failing_fallback_raises_with_the_original_as_context() -> None:
    original = ConnectionError("primary down")
    fallback = Fallback(function=lambda exc: fail(LookupError("cache empty too")))
    with pytest.raises(LookupError) as caught:
        fallback.call(fail, original)
    assert caught.value.__context__ is original


def test_an_async_function_in_a_sync_call_is_a_clear_error() -> None:
    async def async_substitute(exc: BaseException) -> str:
        return "never"

    fallback = Fallback(function=async_substitute)
    with pytest.raises(TypeError, match=r"is async; use it with acall\(\)"):
        fallback.call(fail, ValueError())


def test_decorator() -> None:
    @Fallback(-1)
    def parse(text: str) -> int:
        return int(text)

    assert parse("12") == 12
    assert parse("twelve") == -1


# ------------------------------------------------------------------------ async


async def test_async_success_and_value() -> None:
    fallback = Fallback("default")

    async def ok() -> str:
        return "fresh"

    assert await fallback.acall(ok) == "fresh"
    assert await fallback.acall(afail, ConnectionError()) == "default"


async def test_async_fallback_function_is_awaited() -> None:
    async def substitute(exc: BaseException) -> str:
        await asyncio.sleep(0)
        return f"async {type(exc).__name__}"

    fallback = Fallback(function=substitute)
    assert await fallback.acall(afail, TimeoutError()) == "async TimeoutError"


async def test_async_sync_function_and_rejected_result() -> None:
    async def empty() -> list[int]:
        return []

    fallback = Fallback(function=lambda result: [0], on_result=lambda result: not result)
    assert await fallback.acall(empty) == [0]


async def test_async_unchosen_exception_and_cancellation_propagate() -> None:
    fallback = Fallback("default", on=ConnectionError)
    with pytest.raises(KeyError):
        await fallback.acall(afail, KeyError())
    with pytest.raises(asyncio.CancelledError):
        await fallback.acall(afail, asyncio.CancelledError())


async def test_async_decorator_and_events() -> None:
    fallback = Fallback(0, name="stock")
    seen: list[Event] = []
    fallback.events.subscribe(seen.append)

    @fallback
    async def count() -> int:
        raise ConnectionError

    assert await count() == 0
    assert len(seen) == 1
    assert isinstance(seen[0], FallbackUsed)
    assert isinstance(seen[0].exception, ConnectionError)


def test_repr() -> None:
    assert repr(Fallback(3, name="x")) == "Fallback(3, name='x')"
    assert "function=" in repr(Fallback(function=str))
