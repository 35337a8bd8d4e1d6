"""Small helpers the SQL stores of the outbox, inbox and idempotency keys share."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from seawall.clock import Clock
from seawall.errors import ConfigurationError, EngineError, EngineUnavailableError

__all__ = ["check_table_prefix", "sqlite_errors", "time_source"]


def sqlite_error(exc: sqlite3.Error, url: str) -> EngineError:
    """The seawall error for a sqlite3 error, naming the database and the fix."""
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
        return EngineUnavailableError(
            f"SQLite at {url} stayed locked by another writer ({exc}); "
            "retry, or raise the engine's timeout",
            url=url,
        )
    return EngineError(f"SQLite at {url} failed: {exc}", url=url)


@contextmanager
def sqlite_errors(url: str) -> Iterator[None]:
    """Translate sqlite3 errors raised inside the block into seawall's."""
    try:
        yield
    except sqlite3.Error as exc:
        raise sqlite_error(exc, url) from exc


def check_table_prefix(prefix: object, field: str = "table_prefix") -> str:
    """A table prefix: at most 40 letters, digits and underscores, not starting with a digit."""
    if (
        not isinstance(prefix, str)
        or len(prefix) > 40
        or not prefix.isascii()
        or not all(char.isalnum() or char == "_" for char in prefix)
        or prefix[:1].isdigit()
    ):
        raise ConfigurationError(
            f"{field}={prefix!r} is invalid: use at most 40 ASCII letters, digits and "
            "underscores, not starting with a digit"
        )
    return prefix


def time_source(clock: Clock | None) -> Callable[[], float]:
    """The injected clock's ``now`` (tests), or this host's wall clock in Unix seconds."""
    if clock is None:
        return time.time
    if not callable(getattr(clock, "now", None)):
        raise ConfigurationError(f"clock={clock!r} is not a seawall.clock.Clock (or None)")
    return clock.now
