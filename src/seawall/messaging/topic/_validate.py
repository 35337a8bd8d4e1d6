"""Argument checks of the topic facade: each failure names the field, the value and the fix."""

from __future__ import annotations

import math
import re

from seawall.errors import ConfigurationError
from seawall.messaging.topic._model import Start

__all__ = ["MAX_KEY", "check_key", "check_name", "check_offset", "check_start", "check_time"]

MAX_KEY = 1024
"""Longest ordering key, in characters."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,199}")


def check_name(kind: str, name: object) -> str:
    """A topic or group name: 1-200 letters, digits, ``_`` or ``-``, starting alphanumeric.

    No dots, spaces or wildcards: every engine (NATS subjects and stream names too)
    can use such a name as it is.
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigurationError(
            f"{kind} name {name!r} is invalid; use 1-200 characters from letters, digits, "
            f"'_' and '-', starting with a letter or digit (e.g. 'orders' or 'billing-eu')"
        )
    return name


def check_key(key: object) -> str | None:
    """An ordering key: None, or a non-empty string of at most :data:`MAX_KEY` characters."""
    if key is None:
        return None
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY or "\r" in key or "\n" in key:
        raise ConfigurationError(
            f"key={key!r:.80} must be None or a non-empty string of at most {MAX_KEY} "
            "characters without line breaks (e.g. an order id)"
        )
    return key


def check_offset(field: str, offset: object) -> int:
    """An offset: an integer of at least 0 (0 and 1 both mean the first message)."""
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ConfigurationError(
            f"{field}={offset!r} must be an integer offset >= 0 (offsets start at 1)"
        )
    return offset


def check_start(start: object) -> Start:
    """A group's start: ``"earliest"``, ``"latest"`` or an offset."""
    if start == "earliest" or start == "latest":
        return "earliest" if start == "earliest" else "latest"
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return start
    raise ConfigurationError(
        f"start={start!r} must be 'earliest' (every retained message), 'latest' (only "
        "messages published from now on) or an integer offset >= 0"
    )


def check_time(field: str, value: object) -> float:
    """A finite timestamp in seconds (on the topic's clock: epoch seconds by default)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{field}={value!r} must be a finite timestamp in seconds")
    return float(value)
