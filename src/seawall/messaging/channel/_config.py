"""Validation shared by every channel constructor: bad arguments fail at construction."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from seawall.errors import ConfigurationError

__all__ = ["check_capacity", "check_choice", "check_seconds", "default_name"]

_counter: Iterator[int] = itertools.count(1)


def default_name(kind: str) -> str:
    """A unique readable name (``channel-3``) for a component the caller did not name."""
    return f"{kind}-{next(_counter)}"


def check_capacity(owner: str, field: str, value: object) -> int:
    """``value`` as a capacity: an int >= 1, or a ConfigurationError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{owner}({field}={value!r}) is invalid: {field} must be an int >= 1 "
            "(a channel is always bounded)"
        )
    return value


def check_choice(owner: str, field: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ConfigurationError listing them."""
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(choice) for choice in choices)
        raise ConfigurationError(
            f"{owner}({field}={value!r}) is invalid: {field} must be one of {valid}"
        )
    return value


def check_seconds(owner: str, field: str, value: object) -> float | None:
    """``value`` as a duration: ``None`` (no limit) or seconds >= 0."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value < 0
    ):
        raise ConfigurationError(
            f"{owner}({field}={value!r}) is invalid: {field} must be None (no limit) "
            "or seconds >= 0"
        )
    return float(value)
