"""Resilience policies: retry, circuit breaker, bulkhead, timeout, rate limiting,
adaptive concurrency, fallback, hedging, and the pipeline that composes them.

Every policy is a sans-I/O core driven by a thin sync runner and a thin async runner,
with time taken from an injected :class:`~seawall.clock.Clock`.
"""

from __future__ import annotations

from seawall.resilience._policy import Policy

__all__ = ["Policy"]
