"""Circuit breaker overhead against pybreaker, purgatory, aiobreaker and circuitbreaker.

* closed: one successful call through the breaker (the function returns at once);
* open: one rejected call (the breaker tripped by real failures, then every call
  raises the library's "open" error, caught by the loop);
* shared: a closed call through a breaker whose state lives in Redis (seawall's
  ``RedisBreakerStore`` against pybreaker's ``CircuitRedisStorage``), and the time a
  trip in one breaker takes to reach another one on its own connections.

Every library is used through its decorator, set up as in
``/work/shared/peer-benchmarks/bench_breaker.py`` (trip after 5 failures, an hour
open). seawall runs with its default count window (sliding, 100 calls).
The Redis rows need ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) to answer.

    python benchmarks/resilience_breaker.py
    BENCH_SCALE=0.05 BENCH_REPS=3 python benchmarks/resilience_breaker.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Case, Result, async_timer, measure, ops_for, print_table, sync_timer
from seawall.resilience.breaker import (
    CallNotPermittedError,
    CircuitBreaker,
    CircuitState,
    CircuitStateChanged,
    RedisBreakerStore,
)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
FAIL_MAX = 5
SYNC_OPS = 400_000
ASYNC_OPS = 200_000
SHARED_PEER_OPS = 2_000
TRIPS = 30


def ok() -> int:
    return 1


def bad() -> int:
    raise ValueError("boom")


async def aok() -> int:
    return 1


async def abad() -> int:
    raise ValueError("boom")


def reject_timer(operation: Callable[[], object], error: type[BaseException]) -> Any:
    """A timer calling ``operation`` n times and catching ``error`` each time."""

    def timer(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            try:  # noqa: SIM105 - the peers' scripts catch this way; suppress() costs more
                operation()
            except error:
                pass
        return time.perf_counter() - started

    return timer


def async_reject_timer(
    loop: asyncio.AbstractEventLoop,
    operation: Callable[[], Awaitable[object]],
    error: type[BaseException],
) -> Any:
    """A timer awaiting ``operation()`` n times and catching ``error`` each time."""

    async def body(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            try:  # noqa: SIM105 - the peers' scripts catch this way; suppress() costs more
                await operation()
            except error:
                pass
        return time.perf_counter() - started

    return lambda n: loop.run_until_complete(body(n))


def trip(operation: Callable[[], object]) -> None:
    for _ in range(FAIL_MAX * 2):
        with contextlib.suppress(Exception):  # tripping on purpose
            operation()


def atrip(loop: asyncio.AbstractEventLoop, operation: Callable[[], Awaitable[object]]) -> None:
    async def body() -> None:
        for _ in range(FAIL_MAX * 2):
            with contextlib.suppress(Exception):  # tripping on purpose
                await operation()

    loop.run_until_complete(body())


def seawall_breaker(name: str, **options: Any) -> CircuitBreaker:
    return CircuitBreaker(
        name, minimum_calls=FAIL_MAX, failure_rate=0.5, open_for=3600.0, **options
    )


SEAWALL_CONFIG = "CountWindow(100), failure_rate=0.5, minimum_calls=5"


def local_cases(loop: asyncio.AbstractEventLoop) -> list[Case]:
    """Closed calls and open rejections, sync and async, every library."""
    sync_ops, async_ops = ops_for(SYNC_OPS), ops_for(ASYNC_OPS)
    closed, rejected = "breaker_closed_sync", "breaker_open_reject_sync"
    aclosed, arejected = "breaker_closed_async", "breaker_open_reject_async"
    cases = [
        Case(closed, "plain", sync_timer(ok), sync_ops),
        Case(rejected, "plain_raise", reject_timer(bad, ValueError), sync_ops),
        Case(aclosed, "plain", async_timer(loop, aok), async_ops),
        Case(arejected, "plain_raise", async_reject_timer(loop, abad, ValueError), async_ops),
    ]

    breaker = seawall_breaker("bench-closed")
    cases.append(Case(closed, "seawall", sync_timer(breaker(ok)), sync_ops, SEAWALL_CONFIG))
    failing = seawall_breaker("bench-open")(bad)
    trip(failing)
    cases.append(Case(rejected, "seawall", reject_timer(failing, CallNotPermittedError), sync_ops))
    abreaker = seawall_breaker("bench-aclosed")
    cases.append(Case(aclosed, "seawall", async_timer(loop, abreaker(aok)), async_ops))
    afailing = seawall_breaker("bench-aopen")(abad)
    atrip(loop, afailing)
    cases.append(
        Case(
            arejected,
            "seawall",
            async_reject_timer(loop, afailing, CallNotPermittedError),
            async_ops,
        )
    )

    try:
        import pybreaker

        peer = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=3600)
        cases.append(Case(closed, "pybreaker", sync_timer(peer(ok)), sync_ops, "sync only"))
        peer_failing = pybreaker.CircuitBreaker(fail_max=FAIL_MAX, reset_timeout=3600)(bad)
        trip(peer_failing)
        cases.append(
            Case(
                rejected,
                "pybreaker",
                reject_timer(peer_failing, pybreaker.CircuitBreakerError),
                sync_ops,
            )
        )
    except ImportError:
        pass

    try:
        import circuitbreaker

        def cb(name: str) -> Any:
            return circuitbreaker.CircuitBreaker(
                failure_threshold=FAIL_MAX, recovery_timeout=3600, name=name
            )

        error = circuitbreaker.CircuitBreakerError
        cases.append(Case(closed, "circuitbreaker", sync_timer(cb("c_ok")(ok)), sync_ops))
        cb_failing = cb("c_bad")(bad)
        trip(cb_failing)
        cases.append(Case(rejected, "circuitbreaker", reject_timer(cb_failing, error), sync_ops))
        cases.append(
            Case(aclosed, "circuitbreaker", async_timer(loop, cb("ac_ok")(aok)), async_ops)
        )
        acb_failing = cb("ac_bad")(abad)
        atrip(loop, acb_failing)
        cases.append(
            Case(
                arejected,
                "circuitbreaker",
                async_reject_timer(loop, acb_failing, error),
                async_ops,
            )
        )
    except ImportError:
        pass

    try:
        import purgatory
        from purgatory.domain.model import OpenedState

        factory = purgatory.SyncCircuitBreakerFactory(default_threshold=FAIL_MAX, default_ttl=3600)
        cases.append(Case(closed, "purgatory", sync_timer(factory("p_ok")(ok)), sync_ops))
        p_failing = factory("p_bad")(bad)
        trip(p_failing)
        cases.append(Case(rejected, "purgatory", reject_timer(p_failing, OpenedState), sync_ops))
        afactory = purgatory.AsyncCircuitBreakerFactory(
            default_threshold=FAIL_MAX, default_ttl=3600
        )
        loop.run_until_complete(afactory.initialize())
        cases.append(
            Case(aclosed, "purgatory", async_timer(loop, afactory("ap_ok")(aok)), async_ops)
        )
        ap_failing = afactory("ap_bad")(abad)
        atrip(loop, ap_failing)
        cases.append(
            Case(
                arejected,
                "purgatory",
                async_reject_timer(loop, ap_failing, OpenedState),
                async_ops,
            )
        )
    except ImportError:
        pass

    try:
        import aiobreaker

        def ab() -> Any:
            return aiobreaker.CircuitBreaker(fail_max=FAIL_MAX, timeout_duration=timedelta(hours=1))

        error = aiobreaker.CircuitBreakerError
        cases.append(Case(closed, "aiobreaker", sync_timer(ab()(ok)), sync_ops))
        ab_failing = ab()(bad)
        trip(ab_failing)
        cases.append(Case(rejected, "aiobreaker", reject_timer(ab_failing, error), sync_ops))
        cases.append(Case(aclosed, "aiobreaker", async_timer(loop, ab()(aok)), async_ops))
        aab_failing = ab()(abad)
        atrip(loop, aab_failing)
        cases.append(
            Case(arejected, "aiobreaker", async_reject_timer(loop, aab_failing, error), async_ops)
        )
    except ImportError:
        pass
    return cases


def _redis_client() -> Any | None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
        client.ping()
        return client
    except Exception:  # redis-py missing or server unreachable: skip the shared rows
        return None


def shared_cases(client: Any, names: list[str], stores: list[RedisBreakerStore]) -> list[Case]:
    """A closed call through a Redis-shared breaker: seawall against pybreaker."""
    bench = "shared_breaker_closed_sync"
    name = f"bench-shared-{uuid.uuid4().hex[:8]}"
    names.append(name)
    store = RedisBreakerStore(REDIS_URL)
    stores.append(store)
    breaker = seawall_breaker(name, store=store)
    cases = [
        Case(
            bench,
            "seawall",
            sync_timer(breaker(ok)),
            ops_for(SYNC_OPS),
            "RedisBreakerStore: local mirror, outcomes flushed every 20 ms",
        )
    ]
    try:
        import pybreaker

        namespace = f"bench-{uuid.uuid4().hex[:8]}"
        names.append(namespace)
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
        peer = pybreaker.CircuitBreaker(
            fail_max=FAIL_MAX, reset_timeout=3600, state_storage=storage
        )
        cases.append(
            Case(
                bench,
                "pybreaker",
                sync_timer(peer(ok)),
                ops_for(SHARED_PEER_OPS),
                "CircuitRedisStorage: state read from Redis on every call",
            )
        )
    except ImportError:
        pass
    return cases


def trip_propagation(names: list[str], stores: list[RedisBreakerStore]) -> Result:
    """Median time from a trip in one breaker to another breaker (own store) seeing OPEN."""
    tripper_store, watcher_store = RedisBreakerStore(REDIS_URL), RedisBreakerStore(REDIS_URL)
    stores += [tripper_store, watcher_store]
    samples = []
    for _ in range(ops_for(TRIPS, scale=min(1.0, max(0.2, _scale())))):
        name = f"bench-trip-{uuid.uuid4().hex[:8]}"
        names.append(name)
        tripper = seawall_breaker(name, store=tripper_store)
        watcher = seawall_breaker(name, store=watcher_store)
        seen = threading.Event()
        seen_at = [0.0]

        def on_change(event: Any, seen: threading.Event = seen, at: list[float] = seen_at) -> None:
            if event.current is CircuitState.OPEN:
                at[0] = time.perf_counter()
                seen.set()

        watcher.events.subscribe(on_change, types=(CircuitStateChanged,))
        started = 0.0
        for _ in range(FAIL_MAX):
            started = time.perf_counter()
            with contextlib.suppress(ValueError):
                tripper.call(bad)
        if seen.wait(timeout=5.0):
            samples.append((seen_at[0] - started) * 1e9)
        tripper.close()
        watcher.close()
    samples.sort()
    if not samples:
        samples = [float("inf")]
    return Result(
        bench="shared_breaker_trip_propagation",
        lib="seawall",
        ns_per_op=statistics.median(samples),
        ops=len(samples),
        reps=1,
        min_ns_per_op=samples[0],
        max_ns_per_op=samples[-1],
        config="last failing call -> another store's listener sees OPEN",
    )


def _scale() -> float:
    return float(os.environ.get("BENCH_SCALE", "1"))


def run() -> list[Result]:
    """Measure every case (ours and the peers, interleaved) and return the medians."""
    loop = asyncio.new_event_loop()
    names: list[str] = []
    stores: list[RedisBreakerStore] = []
    client = _redis_client()
    try:
        # The local rows first: the shared rows start the stores' background threads.
        results = measure(local_cases(loop))
        if client is not None:
            results += measure(shared_cases(client, names, stores))
            results.append(trip_propagation(names, stores))
        return results
    finally:
        for store in stores:
            store.close()
        if client is not None:
            for name in names:
                for key in client.scan_iter(match=f"*{name}*"):
                    client.delete(key)
            client.close()
        loop.close()


if __name__ == "__main__":
    print_table("circuit breaker", run())
