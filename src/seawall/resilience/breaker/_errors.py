"""The breaker's rejection errors: cheap to raise, rich when read."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from seawall.errors import CircuitOpenError

__all__ = ["CallNotPermittedError", "CircuitStoreUnavailableError", "Rejection"]


class Rejection:
    """What an open breaker tells every call it rejects, built once per state period.

    ``until`` is the clock time the rejecting stops (``inf`` when forced open); the
    seconds left are read from ``now`` when someone asks, so raising costs nothing.
    """

    __slots__ = ("breaker", "now", "state", "until")

    def __init__(self, breaker: str, state: str, until: float, now: Callable[[], float]) -> None:
        self.breaker = breaker
        self.state = state
        self.until = until
        self.now = now

    def retry_after(self) -> float | None:
        """Seconds from now until a trial call may run, or None when unknown."""
        if self.until == math.inf:
            return None
        return max(0.0, self.until - self.now())

    def __repr__(self) -> str:
        return f"Rejection({self.breaker!r}, {self.state!r}, until={self.until!r})"


class CallNotPermittedError(CircuitOpenError):
    """The breaker refused the call (open, forced open, or half-open with no permit left).

    A :class:`~seawall.errors.CircuitOpenError` whose fields live in ``args`` and whose
    message is built only when read: an open breaker rejects many calls per second
    and most callers only catch the error, so raising costs no string formatting.
    Built as ``CallNotPermittedError(breaker, state, retry_after)``, or by the breaker
    from its :class:`Rejection` (then ``retry_after`` is measured when read).
    """

    # Keep BaseException's C __init__ (args only); CircuitOpenError's formats eagerly.
    __init__ = Exception.__init__

    def _fields(self) -> tuple[str, str, float | None]:
        args = self.args
        if len(args) == 1 and isinstance(args[0], Rejection):
            rejection = args[0]
            return rejection.breaker, rejection.state, rejection.retry_after()
        value = args[2] if len(args) > 2 else None
        retry_after = None if value is None or value == math.inf else max(0.0, float(value))
        return str(args[0]), str(args[1]), retry_after

    @property
    def breaker(self) -> str:
        """Name of the breaker that refused the call."""
        return self._fields()[0]

    @breaker.setter
    def breaker(self, value: str) -> None:
        _, state, retry_after = self._fields()
        self.args = (value, state, retry_after)

    @property
    def state(self) -> str:
        """The breaker's state when it refused (a :class:`CircuitState`)."""
        return self._fields()[1]

    @state.setter
    def state(self, value: str) -> None:
        breaker, _, retry_after = self._fields()
        self.args = (breaker, value, retry_after)

    @property
    def retry_after(self) -> float | None:
        """Seconds until the breaker lets a trial call through, or None when unknown."""
        return self._fields()[2]

    @retry_after.setter
    def retry_after(self, value: float | None) -> None:
        breaker, state, _ = self._fields()
        self.args = (breaker, state, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._fields())

    def __str__(self) -> str:
        return str(CircuitOpenError(self.breaker, self.state, retry_after=self.retry_after))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.breaker!r}, {self.state!r}, "
            f"retry_after={self.retry_after!r})"
        )


class CircuitStoreUnavailableError(CircuitOpenError):
    """A shared breaker with ``on_store_error="fail_closed"`` cannot reach its store.

    The call was not run. The cause (``__cause__``) is the store's error.
    """

    def __init__(self, breaker: str, store: str, cause: BaseException) -> None:
        super().__init__(breaker, "unknown")
        self.args = (
            f"circuit breaker {breaker!r} rejected the call: its shared store ({store}) "
            f"is unavailable ({cause}) and on_store_error='fail_closed'; restore the store "
            "or choose on_store_error='fail_open' to keep deciding locally",
        )
        self.store = store
        self.cause = cause
