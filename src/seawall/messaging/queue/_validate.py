"""Argument checks shared by the queue facade: each failure names the field, value and range."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from seawall.errors import ConfigurationError

__all__ = [
    "MAX_BATCH",
    "MAX_PRIORITY",
    "check_dedup_id",
    "check_headers",
    "check_max_messages",
    "check_name",
    "check_non_negative",
    "check_positive",
    "check_positive_int",
    "check_priority",
    "error_text",
]

MAX_PRIORITY = 9
"""Priorities run from 0 (default, lowest) to 9: a range every engine can honour."""
MAX_BATCH = 10_000
"""Most messages one receive may claim."""
MAX_DEDUP_ID = 256
MAX_ERROR_TEXT = 4_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}")


def check_name(name: object) -> str:
    """A queue name: 1-200 characters, letters, digits, ``_ . -``, starting alphanumeric."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigurationError(
            f"queue name {name!r} is invalid; use 1-200 characters from letters, digits, "
            "'_', '.', '-', starting with a letter or digit (e.g. 'emails' or 'billing.retry')"
        )
    return name


def check_positive(field: str, value: object) -> float:
    """A finite number of seconds greater than zero."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{field}={value!r} must be a finite number of seconds > 0")
    return float(value)


def check_non_negative(field: str, value: object) -> float:
    """A finite number of seconds, zero or more."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(f"{field}={value!r} must be a finite number of seconds >= 0")
    return float(value)


def check_positive_int(field: str, value: object, maximum: int | None = None) -> int:
    """An integer of at least 1 (and at most ``maximum``)."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < 1
        or (maximum is not None and value > maximum)
    ):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ConfigurationError(f"{field}={value!r} must be an integer >= 1{upper}")
    return value


def check_priority(priority: object) -> int:
    """A priority from 0 to :data:`MAX_PRIORITY` (higher is delivered first)."""
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not 0 <= priority <= MAX_PRIORITY
    ):
        raise ConfigurationError(
            f"priority={priority!r} must be an integer from 0 to {MAX_PRIORITY} (higher first)"
        )
    return priority


def check_max_messages(max_messages: object) -> int:
    """How many messages one receive may claim: 1 to :data:`MAX_BATCH`."""
    return check_positive_int("max_messages", max_messages, MAX_BATCH)


def check_headers(headers: object) -> Mapping[str, str] | None:
    """A mapping of string keys to string values, or None; empty means None."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise ConfigurationError(
            f"headers={headers!r} must be a mapping of str to str, e.g. {{'trace-id': 'abc'}}"
        )
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigurationError(
                f"headers must map str to str; {key!r}: {value!r} is "
                f"{type(key).__name__}: {type(value).__name__}"
            )
    return headers or None


def check_dedup_id(dedup_id: object) -> str:
    """A deduplication id: a non-empty string of at most 256 characters."""
    if not isinstance(dedup_id, str) or not 0 < len(dedup_id) <= MAX_DEDUP_ID:
        raise ConfigurationError(
            f"dedup_id={dedup_id!r} must be a non-empty string of at most {MAX_DEDUP_ID} characters"
        )
    return dedup_id


def error_text(error: Any) -> str | None:
    """The text kept as a message's last error: ``Type: message`` for an exception."""
    if error is None:
        return None
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."
