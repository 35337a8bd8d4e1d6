"""Wait strategies: how long a retry policy sleeps before each retry.

A strategy is a small sans-I/O object: ``next_wait(retry, previous)`` returns the seconds
to wait before retry number ``retry`` (1 for the first retry) given the previous wait it
returned (``0.0`` before the first retry). Strategies hold no per-call state, so one
instance serves every caller; randomness comes from an injectable ``random.Random`` so
tests are deterministic. Strategies add up: ``constant(1.0) + exponential(0.1)``.
"""

from __future__ import annotations

import math
import random as _random_module
from abc import ABC, abstractmethod
from typing import Literal, get_args

from seawall.errors import ConfigurationError

__all__ = ["Jitter", "Wait", "constant", "decorrelated", "exponential", "linear"]

Jitter = Literal["none", "full", "equal"]
"""How a computed wait ``w`` is randomised: ``none`` keeps ``w``; ``full`` draws from
``[0, w]``; ``equal`` draws from ``[w/2, w]`` (AWS Architecture Blog, "Exponential Backoff
and Jitter")."""

_JITTERS: frozenset[str] = frozenset(get_args(Jitter))
_SHARED_RANDOM = _random_module.Random()


def _random_source(random: _random_module.Random | int | None) -> _random_module.Random:
    if random is None:
        return _SHARED_RANDOM
    if isinstance(random, _random_module.Random):
        return random
    if isinstance(random, int) and not isinstance(random, bool):
        return _random_module.Random(random)
    raise ConfigurationError(
        f"random={random!r} is invalid: pass a random.Random instance, an int seed, or None"
    )


def _non_negative(function: str, field: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigurationError(
            f"{function}({field}={value!r}) is invalid: {field} must be a number of seconds >= 0"
        )
    if math.isinf(value):
        raise ConfigurationError(f"{function}({field}={value!r}) is invalid: it must be finite")
    return float(value)


def _cap(function: str, cap: float | None) -> float | None:
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not cap > 0:
        raise ConfigurationError(
            f"{function}(cap={cap!r}) is invalid: cap must be None or a number of seconds > 0"
        )
    return float(cap)


def _jitter(function: str, jitter: str) -> Jitter:
    if jitter not in _JITTERS:
        raise ConfigurationError(
            f"{function}(jitter={jitter!r}) is invalid: choose one of 'none', 'full', 'equal'"
        )
    return jitter  # type: ignore[return-value]  # checked against the Literal's values above


class Wait(ABC):
    """A wait strategy: the seconds to sleep before each retry.

    Subclass it and implement :meth:`next_wait` for a custom schedule; ``a + b`` sums two.
    """

    __slots__ = ()

    @abstractmethod
    def next_wait(self, retry: int, previous: float) -> float:
        """Seconds to wait before retry ``retry`` (1-based), given the previous wait returned."""

    def __add__(self, other: Wait) -> Wait:
        if not isinstance(other, Wait):
            return NotImplemented
        return _WaitSum((self, other))


class _WaitSum(Wait):
    """Several strategies added together."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple[Wait, ...]) -> None:
        flat: list[Wait] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, _WaitSum) else (part,))
        self.parts: tuple[Wait, ...] = tuple(flat)

    def next_wait(self, retry: int, previous: float) -> float:
        """The sum of every part's wait."""
        return sum(part.next_wait(retry, previous) for part in self.parts)

    def __repr__(self) -> str:
        return " + ".join(repr(part) for part in self.parts)


class _JitteredWait(Wait):
    """Shared by the deterministic schedules: cap the raw wait, then apply the jitter."""

    __slots__ = ("cap", "jitter", "random")

    def __init__(self, cap: float | None, jitter: Jitter, random: _random_module.Random) -> None:
        self.cap = cap
        self.jitter: Jitter = jitter
        self.random = random

    @abstractmethod
    def raw_wait(self, retry: int) -> float:
        """The wait before capping and jitter."""

    def next_wait(self, retry: int, previous: float) -> float:
        """The capped raw wait, randomised by the jitter mode."""
        wait = self.raw_wait(retry)
        if self.cap is not None and wait > self.cap:
            wait = self.cap
        if self.jitter == "none":
            return wait
        if self.jitter == "full":
            return self.random.uniform(0.0, wait)
        half = wait / 2.0
        return half + self.random.uniform(0.0, half)

    def _options(self) -> str:
        text = f", cap={self.cap!r}" if self.cap is not None else ""
        return text + (f", jitter={self.jitter!r}" if self.jitter != "none" else "")


class _Constant(_JitteredWait):
    __slots__ = ("seconds",)

    def __init__(self, seconds: float, jitter: Jitter, random: _random_module.Random) -> None:
        super().__init__(None, jitter, random)
        self.seconds = seconds

    def raw_wait(self, retry: int) -> float:
        return self.seconds

    def __repr__(self) -> str:
        return f"constant({self.seconds!r}{self._options()})"


class _Linear(_JitteredWait):
    __slots__ = ("start", "step")

    def __init__(
        self,
        start: float,
        step: float,
        cap: float | None,
        jitter: Jitter,
        random: _random_module.Random,
    ) -> None:
        super().__init__(cap, jitter, random)
        self.start = start
        self.step = step

    def raw_wait(self, retry: int) -> float:
        return self.start + self.step * (retry - 1)

    def __repr__(self) -> str:
        return f"linear({self.start!r}, step={self.step!r}{self._options()})"


class _Exponential(_JitteredWait):
    __slots__ = ("base", "factor")

    def __init__(
        self,
        base: float,
        factor: float,
        cap: float | None,
        jitter: Jitter,
        random: _random_module.Random,
    ) -> None:
        super().__init__(cap, jitter, random)
        self.base = base
        self.factor = factor

    def raw_wait(self, retry: int) -> float:
        try:
            return self.base * self.factor ** (retry - 1)
        except OverflowError:
            return math.inf if self.cap is None else self.cap

    def __repr__(self) -> str:
        return f"exponential({self.base!r}, factor={self.factor!r}{self._options()})"


class _Decorrelated(Wait):
    __slots__ = ("base", "cap", "random")

    def __init__(self, base: float, cap: float, random: _random_module.Random) -> None:
        self.base = base
        self.cap = cap
        self.random = random

    def next_wait(self, retry: int, previous: float) -> float:
        """A draw from ``[base, 3 * previous]``, capped (``previous`` starts at ``base``)."""
        upper = 3.0 * max(self.base, previous)
        return min(self.cap, self.random.uniform(self.base, upper))

    def __repr__(self) -> str:
        return f"decorrelated({self.base!r}, cap={self.cap!r})"


def constant(
    seconds: float, *, jitter: Jitter = "none", random: _random_module.Random | int | None = None
) -> Wait:
    """Wait the same ``seconds`` before every retry (optionally jittered)."""
    return _Constant(
        _non_negative("constant", "seconds", seconds),
        _jitter("constant", jitter),
        _random_source(random),
    )


def linear(
    start: float,
    step: float | None = None,
    *,
    cap: float | None = None,
    jitter: Jitter = "none",
    random: _random_module.Random | int | None = None,
) -> Wait:
    """Wait ``start``, then ``start + step``, ``start + 2*step``, ... up to ``cap``.

    ``step`` defaults to ``start`` (1x, 2x, 3x the first wait).
    """
    start = _non_negative("linear", "start", start)
    return _Linear(
        start,
        start if step is None else _non_negative("linear", "step", step),
        _cap("linear", cap),
        _jitter("linear", jitter),
        _random_source(random),
    )


def exponential(
    base: float,
    factor: float = 2.0,
    *,
    cap: float | None = None,
    jitter: Jitter = "none",
    random: _random_module.Random | int | None = None,
) -> Wait:
    """Wait ``base``, then ``base * factor``, ``base * factor**2``, ... up to ``cap``.

    The cap applies before the jitter, so ``jitter="full"`` draws from ``[0, cap]`` at most.
    """
    if (
        isinstance(factor, bool)
        or not isinstance(factor, int | float)
        or not 1 <= factor < math.inf
    ):
        raise ConfigurationError(
            f"exponential(factor={factor!r}) is invalid: factor must be a finite number >= 1"
        )
    return _Exponential(
        _non_negative("exponential", "base", base),
        float(factor),
        _cap("exponential", cap),
        _jitter("exponential", jitter),
        _random_source(random),
    )


def decorrelated(
    base: float, cap: float, *, random: _random_module.Random | int | None = None
) -> Wait:
    """AWS "decorrelated jitter": each wait is drawn from ``[base, 3 * previous wait]``, capped.

    Spreads a fleet's retries better than exponential backoff with full jitter while
    still growing; the first wait is drawn from ``[base, 3 * base]``.
    """
    base = _non_negative("decorrelated", "base", base)
    if base <= 0:
        raise ConfigurationError(
            f"decorrelated(base={base!r}) is invalid: base must be > 0 (it seeds the growth)"
        )
    checked_cap = _cap("decorrelated", cap)
    if checked_cap is None or checked_cap < base:
        raise ConfigurationError(
            f"decorrelated(cap={cap!r}) is invalid: cap must be a number of seconds >= base ({base})"
        )
    return _Decorrelated(base, checked_cap, _random_source(random))
