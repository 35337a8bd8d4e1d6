"""Retry decorator overhead on the success path, seawall beside tenacity, stamina and backoff.

The wrapped function returns at once, so the table shows the pure per-call cost of each
decorator (sync, and async on one event loop), next to a plain undecorated call.

    python benchmarks/resilience_retry.py
    BENCH_SCALE=0.01 BENCH_REPS=1 python benchmarks/resilience_retry.py   # smoke size
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Case, Result, async_timer, measure, ops_for, print_table, sync_timer
from seawall.resilience._backoff import exponential
from seawall.resilience._retry import Retry

# calls per repetition at BENCH_SCALE=1, sized so one repetition takes roughly 0.2-0.5 s
SYNC_OPS = {
    "plain": 2_000_000,
    "seawall": 1_000_000,
    "tenacity": 40_000,
    "stamina": 40_000,
    "backoff": 200_000,
}
ASYNC_OPS = {
    "plain": 1_000_000,
    "seawall": 500_000,
    "tenacity": 20_000,
    "stamina": 20_000,
    "backoff": 200_000,
}


def _sync_impls() -> dict[str, tuple[Callable[[], object], str]]:
    def target() -> int:
        return 1

    impls: dict[str, tuple[Callable[[], object], str]] = {
        "plain": (target, "undecorated call"),
        "seawall": (
            Retry(attempts=3, wait=exponential(0.1, cap=10.0, jitter="full"))(target),
            "Retry(attempts=3, wait=exponential(0.1, cap=10, jitter='full'))",
        ),
    }
    try:
        import tenacity

        impls["tenacity"] = (
            tenacity.retry(
                stop=tenacity.stop_after_attempt(3),
                wait=tenacity.wait_exponential_jitter(),
                reraise=True,
            )(target),
            "stop_after_attempt(3) + wait_exponential_jitter(), reraise",
        )
    except ImportError:
        pass
    try:
        import stamina

        impls["stamina"] = (stamina.retry(on=Exception, attempts=3)(target), "attempts=3")
    except ImportError:
        pass
    try:
        import backoff

        impls["backoff"] = (
            backoff.on_exception(backoff.expo, Exception, max_tries=3)(target),
            "on_exception(expo, max_tries=3)",
        )
    except ImportError:
        pass
    return impls


def _async_impls() -> dict[str, tuple[Callable[[], Awaitable[object]], str]]:
    async def target() -> int:
        return 1

    impls: dict[str, tuple[Callable[[], Awaitable[object]], str]] = {
        "plain": (target, "undecorated await"),
        "seawall": (
            Retry(attempts=3, wait=exponential(0.1, cap=10.0, jitter="full"))(target),
            "Retry(attempts=3, wait=exponential(0.1, cap=10, jitter='full'))",
        ),
    }
    try:
        import tenacity

        impls["tenacity"] = (
            tenacity.retry(
                stop=tenacity.stop_after_attempt(3),
                wait=tenacity.wait_exponential_jitter(),
                reraise=True,
            )(target),
            "stop_after_attempt(3) + wait_exponential_jitter(), reraise",
        )
    except ImportError:
        pass
    try:
        import stamina

        impls["stamina"] = (stamina.retry(on=Exception, attempts=3)(target), "attempts=3")
    except ImportError:
        pass
    try:
        import backoff

        impls["backoff"] = (
            backoff.on_exception(backoff.expo, Exception, max_tries=3)(target),
            "on_exception(expo, max_tries=3)",
        )
    except ImportError:
        pass
    return impls


def run() -> list[Result]:
    """Measure the success path of every retry decorator, sync then async."""
    cases = []
    for lib, (function, config) in _sync_impls().items():
        if function() != 1:
            raise RuntimeError(f"{lib} sync wrapper returned the wrong value")
        cases.append(
            Case("retry_success_sync", lib, sync_timer(function), ops_for(SYNC_OPS[lib]), config)
        )
    results = measure(cases)

    loop = asyncio.new_event_loop()
    try:
        async_cases = []
        for lib, (coroutine_function, config) in _async_impls().items():
            if loop.run_until_complete(coroutine_function()) != 1:
                raise RuntimeError(f"{lib} async wrapper returned the wrong value")
            async_cases.append(
                Case(
                    "retry_success_async",
                    lib,
                    async_timer(loop, coroutine_function),
                    ops_for(ASYNC_OPS[lib]),
                    config,
                )
            )
        results.extend(measure(async_cases))
    finally:
        loop.close()
    return results


if __name__ == "__main__":
    print_table("seawall resilience: retry", run())
