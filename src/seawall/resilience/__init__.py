"""Resilience policies: retry, circuit breaker, bulkhead, timeout, rate limiting,
adaptive concurrency, fallback, hedging, and the pipeline that composes them.

Every policy is a sans-I/O core driven by a thin sync runner and a thin async runner,
with time taken from an injected :class:`~seawall.clock.Clock`.
"""

from __future__ import annotations

from typing import Any

from seawall.resilience._adaptive import (
    AIMD,
    AdaptiveLimiter,
    AdaptiveMetrics,
    CallShed,
    Gradient,
    LimitAlgorithm,
    LimitChanged,
)
from seawall.resilience._backoff import Jitter, Wait, constant, decorrelated, exponential, linear
from seawall.resilience._budget import RetryBudget
from seawall.resilience._bulkhead import (
    Bulkhead,
    BulkheadMetrics,
    BulkheadQueueFullError,
    BulkheadRejected,
    BulkheadWaiting,
    ThreadPoolBulkhead,
)
from seawall.resilience._fallback import Fallback, FallbackUsed
from seawall.resilience._hedge import Hedge, HedgeNeedsAsyncError, HedgeStarted, HedgeWon
from seawall.resilience._pipeline import Pipeline
from seawall.resilience._policy import Policy
from seawall.resilience._retry import (
    AttemptContext,
    Retry,
    RetryBudgetExhausted,
    RetryGaveUp,
    RetryScheduled,
    RetrySucceeded,
    parse_retry_after,
    retry_testing,
)
from seawall.resilience._timeout import TimedOut, Timeout, TimeoutMetrics, remaining_time
from seawall.resilience.breaker import (
    BreakerMetrics,
    CallNotPermittedError,
    CircuitBreaker,
    CircuitCallFailed,
    CircuitCallIgnored,
    CircuitCallRejected,
    CircuitCallSucceeded,
    CircuitReset,
    CircuitState,
    CircuitStateChanged,
    CircuitStoreRecovered,
    CircuitStoreUnavailable,
    CircuitStoreUnavailableError,
    CountWindow,
    Rejection,
    SlowCall,
    TimeWindow,
)
from seawall.resilience.ratelimit import (
    GCRA,
    FixedWindow,
    MemoryRateLimitStore,
    RateLimitAcquired,
    RateLimitAlgorithm,
    RateLimitDecision,
    RateLimiter,
    RateLimitRejected,
    RateLimitStore,
    RateLimitStoreFailed,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)

__all__ = [
    "AIMD",
    "AdaptiveLimiter",
    "AdaptiveMetrics",
    "AttemptContext",
    "BreakerMetrics",
    "Bulkhead",
    "BulkheadMetrics",
    "BulkheadQueueFullError",
    "BulkheadRejected",
    "BulkheadWaiting",
    "CallNotPermittedError",
    "CallShed",
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
    "Fallback",
    "FallbackUsed",
    "FixedWindow",
    "GCRA",
    "Gradient",
    "Hedge",
    "HedgeNeedsAsyncError",
    "HedgeStarted",
    "HedgeWon",
    "Jitter",
    "LimitAlgorithm",
    "LimitChanged",
    "MemoryRateLimitStore",
    "Pipeline",
    "Policy",
    "RateLimitAcquired",
    "RateLimitAlgorithm",
    "RateLimitDecision",
    "RateLimitRejected",
    "RateLimitStore",
    "RateLimitStoreFailed",
    "RateLimiter",
    "RedisBreakerStore",
    "Rejection",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryGaveUp",
    "RetryScheduled",
    "RetrySucceeded",
    "SlidingWindowCounter",
    "SlidingWindowLog",
    "SlowCall",
    "ThreadPoolBulkhead",
    "TimeWindow",
    "TimedOut",
    "Timeout",
    "TimeoutMetrics",
    "TokenBucket",
    "Wait",
    "constant",
    "decorrelated",
    "exponential",
    "linear",
    "parse_retry_after",
    "remaining_time",
    "retry_testing",
]


def __getattr__(name: str) -> Any:
    # Engine-backed stores are imported on first use, so the core installs without drivers.
    if name == "RedisBreakerStore":
        from seawall.resilience.breaker.redis import RedisBreakerStore

        return RedisBreakerStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
