"""One contract, every rate-limit store: memory, Redis and PostgreSQL, each algorithm.

The memory store runs on a manual clock; Redis and PostgreSQL keep their own (server)
time, so their tests use small windows and a few short real waits. Deny-side tests use
long windows (an hour) so no refill or window boundary can interfere. Every Redis key
and PostgreSQL table is unique to this run and removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from _engines import engine_url
from seawall.clock import SYSTEM_CLOCK, Clock, ManualClock
from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, EngineUnavailableError, RateLimitedError
from seawall.resilience.ratelimit import (
    GCRA,
    FixedWindow,
    MemoryRateLimitStore,
    RateLimitAlgorithm,
    RateLimiter,
    RateLimitStore,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from seawall.resilience.ratelimit.memory import MemoryLimit
from seawall.resilience.ratelimit.postgres import KINDS, PostgresLimit, PostgresRateLimitStore
from seawall.resilience.ratelimit.redis import RedisLimit, RedisRateLimitStore

RUN = uuid.uuid4().hex[:10]
TABLE_PREFIX = f"rl_{RUN}"
REDIS_PREFIX = f"seawall-test:{RUN}"
MARGIN = 0.02
"""Extra seconds a real wait sleeps, so server time is surely past the target."""
HOUR = 3600.0

ALGORITHM_KINDS = [
    "token_bucket",
    "gcra",
    "fixed_window",
    "sliding_window_log",
    "sliding_window_counter",
]


def make(kind: str, limit: int, window: float) -> RateLimitAlgorithm:
    """``limit`` permits per ``window`` seconds in algorithm ``kind``."""
    if kind == "token_bucket":
        return TokenBucket(rate=limit, per=window, burst=limit)
    if kind == "gcra":
        return GCRA(rate=limit, per=window, burst=limit)
    if kind == "fixed_window":
        return FixedWindow(limit=limit, window=window)
    if kind == "sliding_window_log":
        return SlidingWindowLog(limit=limit, window=window)
    return SlidingWindowCounter(limit=limit, window=window)


@dataclass
class Rig:
    """One store under test, with its clock and the ways to inspect its state."""

    engine_name: str
    store: RateLimitStore
    clock: Clock
    engine: Engine | None = None
    limiters: list[RateLimiter] = field(default_factory=list)

    @property
    def manual(self) -> bool:
        return isinstance(self.clock, ManualClock)

    def limiter(self, algorithm: RateLimitAlgorithm, **options: Any) -> RateLimiter:
        limiter = RateLimiter(
            algorithm, self.store, name=f"t-{uuid.uuid4().hex[:8]}", clock=self.clock, **options
        )
        self.limiters.append(limiter)
        return limiter

    def wait(self, seconds: float) -> None:
        if isinstance(self.clock, ManualClock):
            self.clock.advance(seconds)
        else:
            time.sleep(seconds + MARGIN)

    def stored(self, limiter: RateLimiter, key: str) -> bool:
        """Whether the store holds state for ``key``."""
        bound = limiter._bound
        if isinstance(bound, MemoryLimit):
            return key in bound._states
        if isinstance(bound, RedisLimit):
            client = bound.store.engine.client
            return any(client.exists(name) for name in bound.keys(key))
        assert isinstance(bound, PostgresLimit)
        with bound.store.engine.connection() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {bound.store.table(bound.kind)} "
                "WHERE limiter = %s AND key = %s",
                (bound.name, key),
            ).fetchone()
        return bool(row and row[0])


@pytest.fixture(scope="module", autouse=True)
def _drop_postgres_tables() -> Iterator[None]:
    yield
    url = engine_url("postgres")
    try:
        with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port or 5432), 1):
            pass
    except OSError:
        return
    with connect(url) as engine, engine.connection() as conn:  # type: ignore[attr-defined]
        for kind in KINDS:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE_PREFIX}_{kind}")


@pytest.fixture(params=["memory", "redis", "postgres"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    name = request.param
    if name == "memory":
        yield Rig(name, MemoryRateLimitStore(), ManualClock(1000.0))
        return
    url = request.getfixturevalue(f"{name}_url")
    engine = connect(url)
    store: RateLimitStore
    if name == "redis":
        store = RedisRateLimitStore(engine, prefix=REDIS_PREFIX)  # type: ignore[arg-type]
    else:
        store = PostgresRateLimitStore(engine, table_prefix=TABLE_PREFIX)  # type: ignore[arg-type]
    rig = Rig(name, store, SYSTEM_CLOCK, engine)
    try:
        yield rig
    finally:
        if name == "redis":
            client = engine.client  # type: ignore[attr-defined]
            for key in client.scan_iter(match=f"*{REDIS_PREFIX}*", count=1000):
                client.delete(key)
        store.close()
        await engine.aclose()


kinds = pytest.mark.parametrize("kind", ALGORITHM_KINDS)


# --------------------------------------------------------------------------- the contract


@kinds
def test_allows_up_to_the_limit_then_denies_with_retry_after(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 3, HOUR))
    assert [limiter.try_acquire("k") for _ in range(3)] == [True, True, True]
    denied = limiter.decide("k")
    assert not denied.allowed
    assert denied.remaining == 0
    assert denied.retry_after is not None
    expected = {
        "token_bucket": (HOUR / 3 - 5, HOUR / 3),  # one permit refills in 1200 s
        "gcra": (HOUR / 3 - 5, HOUR / 3),
        "fixed_window": (0.0, HOUR),  # the rest of the current window
        "sliding_window_log": (HOUR - 5, HOUR),  # the first grant leaves the window
        "sliding_window_counter": (HOUR / 3 - 5, 2 * HOUR),
    }[kind]
    assert expected[0] < denied.retry_after <= expected[1]
    assert not limiter.try_acquire("k")
    with pytest.raises(RateLimitedError) as caught:
        limiter.acquire("k")
    assert caught.value.retry_after == pytest.approx(denied.retry_after, abs=5)


@kinds
def test_permits_come_back_after_retry_after(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 2, 0.3))
    granted = 0
    for _ in range(8):  # a window boundary may pass while we fill it
        decision = limiter.decide("k")
        if not decision.allowed:
            break
        granted += 1
    assert not decision.allowed
    assert granted >= 2
    assert decision.retry_after is not None
    assert 0 < decision.retry_after <= 0.6
    rig.wait(decision.retry_after)
    assert limiter.try_acquire("k")


@kinds
def test_acquire_waits_for_the_permit(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 1, 0.2), max_wait=1.0)
    limiter.acquire("k")
    started = rig.clock.now()
    limiter.acquire("k")
    assert 0 < rig.clock.now() - started <= 1.0


@kinds
def test_cost_takes_several_permits(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 5, HOUR))
    first = limiter.decide("k", cost=4)
    assert first.allowed
    assert first.remaining == 1
    assert first.limit == 5
    assert not limiter.try_acquire("k", cost=2)
    assert limiter.try_acquire("k", cost=1)
    peek = limiter.decide("k", cost=0)
    assert peek.allowed
    assert peek.remaining == 0
    assert peek.reset_after > 0
    with pytest.raises(ConfigurationError, match="cost must be an integer from 0 to 5"):
        limiter.try_acquire("k", cost=6)


@kinds
def test_keys_are_independent_and_reset(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 2, HOUR))
    assert limiter.try_acquire("alice", cost=2)
    assert not limiter.try_acquire("alice")
    assert limiter.try_acquire("bob", cost=2)
    assert limiter.try_acquire("bøb ☃ with spaces", cost=2)
    limiter.reset("alice")
    assert limiter.try_acquire("alice", cost=2)
    assert not limiter.try_acquire("bob")


@kinds
def test_a_fresh_key_reports_its_full_allowance(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 4, HOUR))
    peek = limiter.decide("never-used", cost=0)
    assert (peek.allowed, peek.remaining, peek.retry_after, peek.reset_after) == (True, 4, 0, 0)
    counted = [limiter.decide("k").remaining for _ in range(4)]
    assert counted == [3, 2, 1, 0]


@kinds
def test_limits_with_different_names_do_not_share_state(rig: Rig, kind: str) -> None:
    first = rig.limiter(make(kind, 1, HOUR))
    second = rig.limiter(make(kind, 1, HOUR))
    assert first.try_acquire("k")
    assert second.try_acquire("k")
    assert not first.try_acquire("k")


@kinds
def test_concurrent_threads_never_exceed_the_limit(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 20, HOUR))
    granted = [0] * 6
    start = threading.Barrier(6)

    def worker(slot: int) -> None:
        start.wait()
        for _ in range(6):
            if limiter.try_acquire("shared"):
                granted[slot] += 1

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 20


@kinds
async def test_concurrent_tasks_never_exceed_the_limit(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 15, HOUR))
    results = await asyncio.gather(*(limiter.atry_acquire("shared") for _ in range(40)))
    assert results.count(True) == 15


@kinds
async def test_async_api_follows_the_same_contract(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 2, HOUR))
    assert await limiter.atry_acquire("k")
    decision = await limiter.adecide("k")
    assert decision.allowed
    assert decision.remaining == 0
    assert not await limiter.atry_acquire("k")
    with pytest.raises(RateLimitedError):
        await limiter.aacquire("k")
    await limiter.areset("k")
    await limiter.aacquire("k", cost=2)


@kinds
async def test_async_acquire_waits_for_the_permit(rig: Rig, kind: str) -> None:
    limiter = rig.limiter(make(kind, 1, 0.2), max_wait=1.0)
    await limiter.aacquire("k")
    started = rig.clock.now()
    await limiter.aacquire("k")
    assert 0 < rig.clock.now() - started <= 1.0


@kinds
def test_idle_keys_expire(rig: Rig, kind: str) -> None:
    window = 0.2
    limiter = rig.limiter(make(kind, 2, window))
    assert limiter.try_acquire("k")
    assert rig.stored(limiter, "k")
    rig.wait(2 * window + 0.01)  # the longest: a sliding counter weighs the next window too
    removed = rig.store.cleanup()  # memory and PostgreSQL delete; Redis keys expired on their own
    assert not rig.stored(limiter, "k")
    if rig.engine_name != "redis":
        assert removed >= 1
    assert limiter.decide("k", cost=0).remaining == 2


# --------------------------------------------------------------------------- engine outages


class TcpProxy:
    """Forwards a local port to an engine until :meth:`stop` cuts every connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pipe, args=(source, target), daemon=True)
                self.threads.append(thread)
                thread.start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


def _engine_through(name: str, url: str, proxy: TcpProxy) -> Engine:
    parts = urlsplit(url)
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    proxied = parts._replace(netloc=netloc).geturl()
    if name == "redis":
        return connect(proxied, socket_timeout=2.0, socket_connect_timeout=2.0)
    return connect(proxied, timeout=1.0)


def _store_for(name: str, engine: Engine) -> RateLimitStore:
    if name == "redis":
        return RedisRateLimitStore(engine, prefix=REDIS_PREFIX)  # type: ignore[arg-type]
    return PostgresRateLimitStore(engine, table_prefix=TABLE_PREFIX)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["redis", "postgres"])
def test_an_engine_that_goes_away_mid_run_fails_fast_and_clearly(
    request: pytest.FixtureRequest, name: str
) -> None:
    url = request.getfixturevalue(f"{name}_url")
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0)
    engine = _engine_through(name, url, proxy)
    store = _store_for(name, engine)
    strict = RateLimiter(GCRA(100), store, name=f"t-{uuid.uuid4().hex[:8]}")
    lenient = RateLimiter(
        GCRA(100), store, name=f"t-{uuid.uuid4().hex[:8]}", on_store_error="fail_open"
    )
    careful = RateLimiter(
        GCRA(100), store, name=f"t-{uuid.uuid4().hex[:8]}", on_store_error="fail_closed"
    )
    try:
        assert strict.try_acquire("k")
        assert lenient.try_acquire("k")
        assert careful.try_acquire("k")
        proxy.stop()
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError, match="unreachable"):
            strict.try_acquire("k")
        assert lenient.try_acquire("k")
        assert not careful.try_acquire("k")
        with pytest.raises(RateLimitedError) as caught:
            careful.acquire("k")
        assert caught.value.retry_after is None
        assert time.monotonic() - started < 15  # bounded by the engine timeouts, never a hang
    finally:
        proxy.stop()
        store.close()
        engine.close()


@pytest.mark.parametrize("name", ["redis", "postgres"])
async def test_an_unreachable_engine_fails_fast_in_async_code(
    request: pytest.FixtureRequest, name: str
) -> None:
    request.getfixturevalue(f"{name}_url")  # only where the engine runs in this setup
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]  # closed again below: nothing listens there
    url = {
        "redis": f"redis://127.0.0.1:{port}/0",
        "postgres": f"postgresql://postgres@127.0.0.1:{port}/test",
    }[name]
    engine = connect(url, **({"timeout": 1.0} if name == "postgres" else {}))
    limiter = RateLimiter(FixedWindow(5, 1.0), _store_for(name, engine), name="down")
    try:
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError):
            await limiter.atry_acquire("k")
        with pytest.raises(EngineUnavailableError):
            limiter.try_acquire("k")
        assert time.monotonic() - started < 10
    finally:
        limiter.close()
        await engine.aclose()


def test_the_redis_store_reloads_a_flushed_script(redis_url: str) -> None:
    engine = connect(redis_url)
    store = RedisRateLimitStore(engine, prefix=REDIS_PREFIX)  # type: ignore[arg-type]
    limiter = RateLimiter(FixedWindow(5, HOUR), store, name=f"t-{uuid.uuid4().hex[:8]}")
    try:
        assert limiter.try_acquire("k")
        engine.client.script_flush()  # type: ignore[attr-defined]
        assert limiter.try_acquire("k")
        assert limiter.decide("k").remaining == 2  # three granted, the script reloaded once
    finally:
        limiter.reset("k")
        store.close()
        engine.close()


def test_redis_keys_carry_an_expiry(redis_url: str) -> None:
    engine = connect(redis_url)
    store = RedisRateLimitStore(engine, prefix=REDIS_PREFIX)  # type: ignore[arg-type]
    try:
        for kind in ALGORITHM_KINDS:
            limiter = RateLimiter(make(kind, 4, 60.0), store, name=f"t-{uuid.uuid4().hex[:8]}")
            limiter.try_acquire("k", cost=2)
            bound = limiter._bound
            assert isinstance(bound, RedisLimit)
            for key in bound.keys("k"):
                ttl = engine.client.pttl(key)  # type: ignore[attr-defined]
                assert 0 < ttl <= 120_000, (kind, key, ttl)
            limiter.reset("k")
    finally:
        store.close()
        engine.close()


def test_postgres_setup_is_idempotent_and_cleans_on_its_own(postgres_url: str) -> None:
    engine = connect(postgres_url)
    clock = ManualClock(0.0)
    store = PostgresRateLimitStore(engine, table_prefix=TABLE_PREFIX, cleanup_interval=10.0)  # type: ignore[arg-type]
    again = PostgresRateLimitStore(engine, table_prefix=TABLE_PREFIX)  # type: ignore[arg-type]
    try:
        store.setup()
        again.setup()
        limiter = RateLimiter(
            FixedWindow(1, 0.05), store, name=f"t-{uuid.uuid4().hex[:8]}", clock=clock
        )
        limiter.try_acquire("old")
        time.sleep(0.1)  # the row is idle now
        clock.advance(10.0)  # the next decision also runs the cleanup
        limiter.try_acquire("new")
        with engine.connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                f"SELECT key FROM {TABLE_PREFIX}_fixed_window WHERE limiter = %s", (limiter.name,)
            ).fetchall()
        assert "old" not in [row[0] for row in rows]  # ("new" may be idle already too)
    finally:
        store.close()
        engine.close()


@pytest.mark.parametrize("bad", ["", "Upper", "1starts_with_digit", "has-dash", "x" * 31])
def test_postgres_table_prefix_is_checked(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="table_prefix must be 1-30 lowercase"):
        PostgresRateLimitStore("postgresql://postgres@127.0.0.1:1/test", table_prefix=bad)


def test_store_urls_pick_the_engine_store() -> None:
    redis_store = RedisRateLimitStore("redis://127.0.0.1:1/0")
    assert isinstance(redis_store, RateLimitStore)
    redis_store.close()
    with pytest.raises(ConfigurationError, match="needs a redis:// URL"):
        RedisRateLimitStore("memory://")
    with pytest.raises(ConfigurationError, match="needs a postgresql:// URL"):
        PostgresRateLimitStore("memory://")
    with pytest.raises(ConfigurationError, match="resolves time to 1 microsecond"):
        RateLimiter(FixedWindow(1, 1e-7), RedisRateLimitStore("redis://127.0.0.1:1/0"))
