"""seawall: the patterns distributed services need to survive a hostile network.

Start with :func:`connect` for an engine (``"memory://"``, ``"sqlite:///app.db"``,
``"redis://..."``, ``"postgresql://..."``) and :mod:`seawall.resilience` for policies.
"""

from __future__ import annotations

from typing import Any

from seawall.clock import SYSTEM_CLOCK, Clock, ManualClock, MonotonicClock
from seawall.engines import Engine, connect, register_engine
from seawall.errors import (
    Attempt,
    BulkheadFullError,
    CircuitOpenError,
    ConcurrencyLimitError,
    ConfigurationError,
    EngineError,
    EngineUnavailableError,
    MissingExtraError,
    RateLimitedError,
    RejectedError,
    RetryError,
    SeawallError,
    TimeoutExceededError,
    UnsupportedEngineError,
)
from seawall.events import Event, EventHub

__all__ = [
    "SYSTEM_CLOCK",
    "Attempt",
    "BulkheadFullError",
    "CircuitOpenError",
    "Clock",
    "ConcurrencyLimitError",
    "ConfigurationError",
    "Engine",
    "EngineError",
    "EngineUnavailableError",
    "Event",
    "EventHub",
    "ManualClock",
    "MissingExtraError",
    "MonotonicClock",
    "RateLimitedError",
    "RejectedError",
    "RetryError",
    "SeawallError",
    "TimeoutExceededError",
    "UnsupportedEngineError",
    "connect",
    "register_engine",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from seawall._version import __version__

        return __version__
    raise AttributeError(f"module 'seawall' has no attribute {name!r}")
