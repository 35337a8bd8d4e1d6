"""Rate limiting: five algorithms, keyed limits, and memory, Redis and PostgreSQL stores.

::

    from seawall.resilience import RateLimiter, TokenBucket

    limiter = RateLimiter(TokenBucket(rate=100, per=1.0, burst=200), name="api")
    if not limiter.try_acquire("user-1"):
        ...  # answer 429

See ``docs/resilience/ratelimit.md``.
"""

from __future__ import annotations

from seawall.resilience.ratelimit._algorithms import (
    GCRA,
    FixedWindow,
    RateLimitAlgorithm,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from seawall.resilience.ratelimit._limiter import (
    DEFAULT_KEY,
    RateLimitAcquired,
    RateLimiter,
    RateLimitRejected,
    RateLimitStoreFailed,
)
from seawall.resilience.ratelimit._store import BoundRateLimit, RateLimitDecision, RateLimitStore
from seawall.resilience.ratelimit.memory import MemoryRateLimitStore

__all__ = [
    "BoundRateLimit",
    "DEFAULT_KEY",
    "FixedWindow",
    "GCRA",
    "MemoryRateLimitStore",
    "RateLimitAcquired",
    "RateLimitAlgorithm",
    "RateLimitDecision",
    "RateLimitRejected",
    "RateLimitStore",
    "RateLimitStoreFailed",
    "RateLimiter",
    "SlidingWindowCounter",
    "SlidingWindowLog",
    "TokenBucket",
]
