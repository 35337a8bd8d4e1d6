"""Bulkhead, timeout, adaptive limit and fallback around a successful call.

The protected function returns at once, so each row is the pure cost of the policy
per call. Baselines that do the same work: a plain call; for the bulkhead a
``threading.BoundedSemaphore`` (sync) and an ``asyncio.Semaphore`` (async) held around
the call; for the timeout ``asyncio.timeout``. No peer library offers an adaptive
concurrency limit or a fallback in Python, so those rows stand beside the plain call.

    python benchmarks/resilience_misc.py
    BENCH_SCALE=0.05 BENCH_REPS=3 python benchmarks/resilience_misc.py
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Case, Result, async_timer, measure, ops_for, print_table, sync_timer
from seawall.resilience._adaptive import AIMD, AdaptiveLimiter
from seawall.resilience._bulkhead import Bulkhead
from seawall.resilience._fallback import Fallback
from seawall.resilience._timeout import Timeout

SYNC_OPS = 400_000
ASYNC_OPS = 200_000


def target() -> int:
    """The protected call: returns at once."""
    return 1


async def atarget() -> int:
    """The protected coroutine: returns at once."""
    return 1


def _bulkhead_sync() -> list[Case]:
    bench, ops = "bulkhead_call_sync", ops_for(SYNC_OPS)
    bulkhead = Bulkhead(max_concurrent=20, max_wait=0.1, name="bench")
    semaphore = threading.BoundedSemaphore(20)

    def with_semaphore() -> int:
        with semaphore:
            return target()

    return [
        Case(bench, "plain", sync_timer(target), ops),
        Case(bench, "seawall", sync_timer(lambda: bulkhead.call(target)), ops, "max_concurrent=20"),
        Case(bench, "threading.BoundedSemaphore", sync_timer(with_semaphore), ops, "value=20"),
    ]


def _async_cases(
    loop: asyncio.AbstractEventLoop,
) -> list[Case]:
    ops = ops_for(ASYNC_OPS)
    bulkhead = Bulkhead(max_concurrent=20, max_wait=0.1, name="bench")
    timeout = Timeout(2.0, name="bench")

    async def make_semaphore() -> asyncio.Semaphore:
        return asyncio.Semaphore(20)

    semaphore = loop.run_until_complete(make_semaphore())

    async def with_semaphore() -> int:
        async with semaphore:
            return await atarget()

    async def with_asyncio_timeout() -> int:
        async with asyncio.timeout(2.0):
            return await atarget()

    def timer(operation: Callable[[], Awaitable[object]]) -> Callable[[int], float]:
        return async_timer(loop, operation)

    bench = "bulkhead_call_async"
    cases = [
        Case(bench, "plain", timer(atarget), ops),
        Case(bench, "seawall", timer(lambda: bulkhead.acall(atarget)), ops, "max_concurrent=20"),
        Case(bench, "asyncio.Semaphore", timer(with_semaphore), ops, "value=20"),
    ]
    bench = "timeout_call_async"
    cases += [
        Case(bench, "plain", timer(atarget), ops),
        Case(bench, "seawall", timer(lambda: timeout.acall(atarget)), ops, "2.0 s"),
        Case(bench, "asyncio.timeout", timer(with_asyncio_timeout), ops, "2.0 s"),
    ]
    return cases


def _adaptive_and_fallback() -> list[Case]:
    ops = ops_for(SYNC_OPS)
    limiter = AdaptiveLimiter(AIMD(initial=20, min=1, max=200), name="bench")
    fallback = Fallback(0, on=(ConnectionError,), name="bench")
    return [
        Case("adaptive_call_sync", "plain", sync_timer(target), ops),
        Case(
            "adaptive_call_sync", "seawall", sync_timer(lambda: limiter.call(target)), ops, "AIMD"
        ),
        Case("fallback_call_sync", "plain", sync_timer(target), ops),
        Case(
            "fallback_call_sync", "seawall", sync_timer(lambda: fallback.call(target)), ops, "value"
        ),
    ]


def run() -> list[Result]:
    """Measure every case (interleaved within each group) and return the medians."""
    results = measure(_bulkhead_sync())
    loop = asyncio.new_event_loop()
    try:
        results += measure(_async_cases(loop))
    finally:
        loop.close()
    results += measure(_adaptive_and_fallback())
    return results


if __name__ == "__main__":
    print_table("seawall resilience: misc", run())
