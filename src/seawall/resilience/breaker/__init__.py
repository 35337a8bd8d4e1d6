"""Circuit breaker: stop calling a failing downstream, probe it, recover.

Count- and time-based sliding windows, failure-rate and slow-call-rate thresholds,
fixed or exponentially growing open periods, half-open trial calls, manual
controls, events, metrics, and a state shared between processes through Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seawall.resilience.breaker._config import BreakerConfig, CountWindow, SlowCall, TimeWindow
from seawall.resilience.breaker._core import BreakerCore, BreakerMetrics, CircuitState, Transition
from seawall.resilience.breaker._errors import (
    CallNotPermittedError,
    CircuitStoreUnavailableError,
    Rejection,
)
from seawall.resilience.breaker._events import (
    CircuitCallFailed,
    CircuitCallIgnored,
    CircuitCallRejected,
    CircuitCallSucceeded,
    CircuitReset,
    CircuitStateChanged,
    CircuitStoreRecovered,
    CircuitStoreUnavailable,
)
from seawall.resilience.breaker._policy import CircuitBreaker, ErrorFilter
from seawall.resilience.breaker._shared import BreakerStore, SharedBreakerCore

if TYPE_CHECKING:
    from seawall.resilience.breaker.redis import RedisBreakerStore

__all__ = [
    "BreakerConfig",
    "BreakerCore",
    "BreakerMetrics",
    "BreakerStore",
    "CallNotPermittedError",
    "CircuitBreaker",
    "CircuitCallFailed",
    "CircuitCallIgnored",
    "CircuitCallRejected",
    "CircuitCallSucceeded",
    "CircuitReset",
    "CircuitState",
    "CircuitStateChanged",
    "CircuitStoreRecovered",
    "CircuitStoreUnavailable",
    "CircuitStoreUnavailableError",
    "CountWindow",
    "ErrorFilter",
    "RedisBreakerStore",
    "Rejection",
    "SharedBreakerCore",
    "SlowCall",
    "TimeWindow",
    "Transition",
]


def __getattr__(name: str) -> Any:
    # The Redis store is imported on first use, so the breaker works without redis-py.
    if name == "RedisBreakerStore":
        from seawall.resilience.breaker.redis import RedisBreakerStore

        return RedisBreakerStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
