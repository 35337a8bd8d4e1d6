"""Resilience policies: retry, circuit breaker, bulkhead, timeout, rate limiting,
adaptive concurrency, fallback, hedging, and the pipeline that composes them.

Every policy is a sans-I/O core driven by a thin sync runner and a thin async runner,
with time taken from an injected :class:`~seawall.clock.Clock`.
"""

from __future__ import annotations

from seawall.resilience._backoff import Jitter, Wait, constant, decorrelated, exponential, linear
from seawall.resilience._budget import RetryBudget
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

__all__ = [
    "AttemptContext",
    "Jitter",
    "Pipeline",
    "Policy",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryGaveUp",
    "RetryScheduled",
    "RetrySucceeded",
    "Wait",
    "constant",
    "decorrelated",
    "exponential",
    "linear",
    "parse_retry_after",
    "retry_testing",
]
