"""Rate-limiter acquire cost, seawall beside limits, pyrate-limiter and aiolimiter.

The limit is so high (10**9 per second) that no acquire ever blocks, so the table shows
the pure cost of asking. Three benches:

* ``rate_acquire_memory``: in-process ``try_acquire`` (limits ``hit``, pyrate
  ``try_acquire``) next to a plain call returning True;
* ``rate_acquire_memory_async``: ``await limiter.aacquire()`` next to aiolimiter's
  ``await acquire()`` and an await of a no-op coroutine;
* ``rate_acquire_redis``: one client, one thread, sequential acquires on Redis, next to
  redis-py's ``PING`` from the same client and, as the physical limit, the
  ``redis-benchmark -c 1 -P 1 -t ping`` tool. Skipped when Redis does not answer
  (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``); every key written is prefixed
  and deleted afterwards.

    python benchmarks/resilience_ratelimit.py
    BENCH_SCALE=0.01 BENCH_REPS=1 python benchmarks/resilience_ratelimit.py   # smoke size
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    REPS,
    SCALE,
    Case,
    Result,
    async_timer,
    measure,
    ops_for,
    print_table,
    sync_timer,
)
from seawall.engines import connect
from seawall.resilience.ratelimit import (
    GCRA,
    FixedWindow,
    RateLimitAlgorithm,
    RateLimiter,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from seawall.resilience.ratelimit.redis import RedisRateLimitStore

LIMIT = 10**9
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = f"seawall-bench-rl-{os.getpid()}"

# operations per repetition at BENCH_SCALE=1, sized for roughly 0.2-0.4 s each
MEMORY_OPS = {"fast": 1_000_000, "peer": 100_000, "log": 40_000}
ASYNC_OPS = {"fast": 1_000_000, "peer": 400_000}
REDIS_OPS = 1_000
REDIS_REPS = 3 * REPS
"""Network round trips are noisy on a shared machine: more, shorter, interleaved reps."""

OURS: list[tuple[str, RateLimitAlgorithm]] = [
    ("seawall", FixedWindow(LIMIT, 1.0)),
    ("seawall (gcra)", GCRA(LIMIT)),
    ("seawall (token bucket)", TokenBucket(LIMIT)),
    ("seawall (sliding window counter)", SlidingWindowCounter(LIMIT, 1.0)),
    ("seawall (sliding window log)", SlidingWindowLog(LIMIT, 1.0)),
]


def _checked(lib: str, operation: Callable[[], object]) -> Callable[[], object]:
    """``operation`` after checking that it grants (a refusing limiter would cheat)."""
    if not operation():
        raise RuntimeError(f"{lib} refused an acquire under a limit of {LIMIT}/s")
    return operation


def _memory_cases() -> tuple[list[Case], list[Callable[[], None]]]:
    bench = "rate_acquire_memory"
    cases = [
        Case(
            bench,
            "plain",
            sync_timer(lambda: True),
            ops_for(MEMORY_OPS["fast"]),
            "a call returning True",
        )
    ]
    closers: list[Callable[[], None]] = []
    for lib, algorithm in OURS:
        limiter = RateLimiter(algorithm, name=lib)
        operation = _checked(lib, lambda limiter=limiter: limiter.try_acquire("key"))  # type: ignore[misc]
        size = "log" if isinstance(algorithm, SlidingWindowLog) else "fast"
        config = f"{algorithm.describe()}, memory, try_acquire('key')"
        cases.append(Case(bench, lib, sync_timer(operation), ops_for(MEMORY_OPS[size]), config))
    try:
        from limits import RateLimitItemPerSecond, storage, strategies

        item = RateLimitItemPerSecond(LIMIT)
        for label, strategy in (
            ("limits (fixed window)", strategies.FixedWindowRateLimiter),
            ("limits (moving window)", strategies.MovingWindowRateLimiter),
            ("limits (sliding window counter)", strategies.SlidingWindowCounterRateLimiter),
        ):
            peer = strategy(storage.MemoryStorage())
            operation = _checked(label, lambda peer=peer: peer.hit(item, "bench", "key"))  # type: ignore[misc]
            size = "log" if "moving" in label else "peer"
            config = f"{strategy.__name__}(MemoryStorage), hit(item, 'bench', 'key')"
            cases.append(
                Case(bench, label, sync_timer(operation), ops_for(MEMORY_OPS[size]), config)
            )
    except ImportError:
        pass
    try:
        from pyrate_limiter import Duration, InMemoryBucket, Limiter, Rate

        pyrate = Limiter(InMemoryBucket([Rate(LIMIT, Duration.SECOND)]))
        closers.append(pyrate.close)
        operation = _checked("pyrate-limiter", lambda: pyrate.try_acquire("key"))
        config = "Limiter(InMemoryBucket) (a log), try_acquire('key')"
        cases.append(
            Case(bench, "pyrate-limiter", sync_timer(operation), ops_for(MEMORY_OPS["log"]), config)
        )
    except ImportError:
        pass
    return cases, closers


def _async_cases(loop: asyncio.AbstractEventLoop) -> list[Case]:
    bench = "rate_acquire_memory_async"

    async def nothing() -> None:
        return None

    cases = [
        Case(
            bench,
            "plain",
            async_timer(loop, nothing),
            ops_for(ASYNC_OPS["fast"]),
            "await of a no-op coroutine",
        )
    ]
    for lib, algorithm in OURS[:2]:
        limiter = RateLimiter(algorithm, name=f"{lib} async")
        operation: Callable[[], Awaitable[object]] = limiter.aacquire
        config = f"{algorithm.describe()}, memory, await aacquire()"
        cases.append(
            Case(bench, lib, async_timer(loop, operation), ops_for(ASYNC_OPS["fast"]), config)
        )
    try:
        from aiolimiter import AsyncLimiter

        async def make() -> Any:
            return AsyncLimiter(LIMIT, 1)

        peer = loop.run_until_complete(make())
        cases.append(
            Case(
                bench,
                "aiolimiter",
                async_timer(loop, peer.acquire),
                ops_for(ASYNC_OPS["peer"]),
                f"AsyncLimiter({LIMIT}, 1), await acquire()",
            )
        )
    except ImportError:
        pass
    return cases


def _redis_reachable() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
    except Exception:  # any failure means: skip the Redis part
        return False
    return True


def _redis_cases(closers: list[Callable[[], None]]) -> list[Case]:
    import redis

    bench = "rate_acquire_redis"
    client = redis.Redis.from_url(REDIS_URL)
    closers.append(client.close)
    engine = connect(REDIS_URL)
    store = RedisRateLimitStore(engine, prefix=PREFIX)  # type: ignore[arg-type]
    closers.extend([store.close, engine.close])
    ops = ops_for(REDIS_OPS)
    cases = []
    for lib, algorithm in OURS:
        limiter = RateLimiter(algorithm, store, name="bench")
        operation = _checked(lib, lambda limiter=limiter: limiter.try_acquire("key"))  # type: ignore[misc]
        config = f"{algorithm.describe()}, one EVALSHA, try_acquire('key')"
        cases.append(Case(bench, lib, sync_timer(operation), ops, config))
    try:
        from limits import RateLimitItemPerSecond, strategies
        from limits.storage import RedisStorage

        item = RateLimitItemPerSecond(LIMIT)
        for label, strategy in (
            ("limits (fixed window)", strategies.FixedWindowRateLimiter),
            ("limits (moving window)", strategies.MovingWindowRateLimiter),
            ("limits (sliding window counter)", strategies.SlidingWindowCounterRateLimiter),
        ):
            peer_storage = RedisStorage(REDIS_URL, key_prefix=PREFIX)
            peer = strategy(peer_storage)
            operation = _checked(
                label,
                lambda peer=peer, key=strategy.__name__: peer.hit(item, "bench", key),  # type: ignore[misc]
            )
            cases.append(
                Case(bench, label, sync_timer(operation), ops, f"{strategy.__name__}(RedisStorage)")
            )
    except ImportError:
        pass
    try:
        from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

        bucket = RedisBucket.init([Rate(LIMIT, Duration.SECOND)], client, f"{PREFIX}:pyrate")
        pyrate = Limiter(bucket)
        closers.append(pyrate.close)
        operation = _checked("pyrate-limiter", lambda: pyrate.try_acquire("key"))
        cases.append(
            Case(
                bench, "pyrate-limiter", sync_timer(operation), ops, "Limiter(RedisBucket) (a log)"
            )
        )
    except ImportError:
        pass
    cases.append(
        Case(
            bench, "redis-py PING", sync_timer(_checked("PING", client.ping)), ops, "client.ping()"
        )
    )
    return cases


def _redis_benchmark() -> Result | None:
    """The physical limit: ``redis-benchmark -c 1 -P 1 -t ping`` (one client, no pipelining)."""
    executable = shutil.which("redis-benchmark")
    if executable is None:
        return None
    parts = urlsplit(REDIS_URL)
    command = [executable, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    if parts.password:
        command += ["-a", parts.password]
    requests = max(1000, int(20_000 * SCALE))
    command += ["-c", "1", "-P", "1", "-t", "ping", "-n", str(requests), "--csv"]
    rates: list[float] = []
    for _ in range(REPS):
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows = list(csv.reader(io.StringIO(output)))
        header = rows[0]
        for row in rows[1:]:
            record = dict(zip(header, row, strict=False))
            if record.get("test") == "PING_MBULK":
                rates.append(float(record["rps"]))
    if not rates:
        return None
    ns = [1e9 / rate for rate in sorted(rates, reverse=True)]
    return Result(
        bench="rate_acquire_redis",
        lib="redis-benchmark PING (physical)",
        ns_per_op=statistics.median(ns),
        ops=requests,
        reps=len(ns),
        min_ns_per_op=ns[0],
        max_ns_per_op=ns[-1],
        config="redis-benchmark -c 1 -P 1 -t ping (PING_MBULK), a C client",
    )


def _delete_keys() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"*{PREFIX}*", count=1000):
            client.delete(key)
    finally:
        client.close()


def run() -> list[Result]:
    """Measure every case: memory sync, memory async, then Redis when it answers."""
    memory_cases, closers = _memory_cases()
    try:
        results = measure(memory_cases)
        loop = asyncio.new_event_loop()
        try:
            results.extend(measure(_async_cases(loop)))
        finally:
            loop.close()
        if _redis_reachable():
            try:
                results.extend(measure(_redis_cases(closers), reps=REDIS_REPS))
                physical = _redis_benchmark()
                if physical is not None:
                    results.append(physical)
            finally:
                _delete_keys()
    finally:
        for close in closers:
            close()
    return results


if __name__ == "__main__":
    print_table("seawall resilience: ratelimit", run())
