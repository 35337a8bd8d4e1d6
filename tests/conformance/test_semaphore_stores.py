"""One contract, every semaphore store: memory, SQLite, PostgreSQL, Redis, etcd.

Engines keep their own time, so expiry tests use short TTLs and short, bounded real
waits (etcd's leases last whole seconds and expire in a 500 ms sweep: longer waits).
Every Redis key, PostgreSQL table and etcd key is unique to this run and removed
afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from _engines import engine_url
from seawall.coordination import (
    Barrier,
    LockTimeoutError,
    MemorySemaphoreStore,
    ReadWriteLock,
    Semaphore,
    SemaphoreFullError,
    SemaphoreGrant,
    SemaphoreState,
    SemaphoreStore,
)
from seawall.coordination.semaphore.etcd import EtcdSemaphoreStore
from seawall.coordination.semaphore.postgres import PostgresSemaphoreStore
from seawall.coordination.semaphore.redis import RedisSemaphoreStore
from seawall.coordination.semaphore.sqlite import SqliteSemaphoreStore
from seawall.engines import connect
from seawall.engines.postgres import PostgresEngine
from seawall.engines.redis import RedisEngine
from seawall.errors import EngineUnavailableError

RUN = uuid.uuid4().hex[:10]
TABLE = f"semaphores_{RUN}"
REDIS_PREFIX = f"seawall-test:semaphore:{RUN}"
ETCD_PREFIX = f"seawall-test/semaphore/{RUN}"
TTL = 0.3
MARGIN = 0.1
ETCD_EXPIRY = 1.0 + 0.5 + 0.3
"""An etcd lease of TTL: its whole second, the 500 ms sweep, and a margin."""

ENGINES = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.engine("postgres")),
    pytest.param("redis", marks=pytest.mark.engine("redis")),
    pytest.param("etcd", marks=pytest.mark.engine("etcd")),
]


def _expiry(store: SemaphoreStore) -> float:
    """Seconds until a holding or intent of ``TTL`` is surely gone on this engine."""
    return ETCD_EXPIRY if isinstance(store, EtcdSemaphoreStore) else TTL + MARGIN


def _make(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> SemaphoreStore:
    if kind == "memory":
        return MemorySemaphoreStore()
    if kind == "sqlite":
        return SqliteSemaphoreStore(f"sqlite:///{tmp_path}/semaphores.db")
    if kind == "postgres":
        return PostgresSemaphoreStore(request.getfixturevalue("postgres_url"), table=TABLE)
    if kind == "etcd":
        return EtcdSemaphoreStore(request.getfixturevalue("etcd_url"), prefix=ETCD_PREFIX)
    assert kind == "redis"
    return RedisSemaphoreStore(request.getfixturevalue("redis_url"), prefix=REDIS_PREFIX)


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SemaphoreStore]:
    made = _make(request.param, request, tmp_path)
    try:
        yield made
    finally:
        if isinstance(made, EtcdSemaphoreStore):
            made.engine.delete(ETCD_PREFIX, prefix=True)
        made.close()


@pytest.fixture(params=ENGINES)
async def astore(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SemaphoreStore]:
    made = _make(request.param, request, tmp_path)
    try:
        yield made
    finally:
        if isinstance(made, EtcdSemaphoreStore):
            made.engine.delete(ETCD_PREFIX, prefix=True)
            await made.engine.aclose()
        await made.aclose()


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(engine_url("postgres"), autocommit=True, connect_timeout=2) as conn:
            for suffix in ("", "_intents", "_counters"):
                conn.execute(f"DROP TABLE IF EXISTS {TABLE}{suffix}")
            conn.execute(
                f"DROP FUNCTION IF EXISTS {TABLE}_acquire(TEXT, TEXT, FLOAT8, INTEGER, BOOLEAN, FLOAT8)"
            )
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(engine_url("redis"), socket_connect_timeout=2)
        for key in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000):
            client.delete(key)
        client.close()


def _name() -> str:
    return f"sem-{uuid.uuid4().hex[:12]}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ---------------------------------------------------------------------- the store contract


def test_at_most_limit_holdings_in_distinct_slots(store: SemaphoreStore) -> None:
    name = _name()
    grants = [store.acquire(name, f"owner-{index}", 5.0, 3) for index in range(3)]
    assert [grant.slot for grant in grants] == [0, 1, 2]
    tokens = [grant.fencing_token for grant in grants]
    assert tokens == [tokens[0], tokens[0] + 1, tokens[0] + 2]
    refused = store.acquire(name, "owner-3", 5.0, 3)
    assert isinstance(refused, SemaphoreGrant)
    assert (refused.fencing_token, refused.slot) == (0, -1)
    assert refused.holder_expires_in is not None
    assert 3.0 < refused.holder_expires_in <= 5.0
    state = store.state(name)
    assert isinstance(state, SemaphoreState)
    assert [(holder.owner, holder.slot) for holder in state.holders] == [
        ("owner-0", 0),
        ("owner-1", 1),
        ("owner-2", 2),
    ]
    assert state.last_token == tokens[-1]
    assert all(not holder.exclusive and 0 < holder.expires_in <= 5.0 for holder in state.holders)
    assert store.release(name, "owner-1")
    again = store.acquire(name, "owner-3", 5.0, 3)
    assert (again.slot, again.fencing_token) == (1, tokens[-1] + 1)


def test_release_and_extend_are_compare_and_set_on_the_owner(store: SemaphoreStore) -> None:
    name = _name()
    store.acquire(name, "owner", 5.0, 2)
    assert not store.release(name, "stranger")
    assert not store.extend(name, "stranger", 5.0)
    assert not store.release(_name(), "owner")
    assert store.extend(name, "owner", 5.0)
    assert store.release(name, "owner")
    assert not store.release(name, "owner")
    assert not store.extend(name, "owner", 5.0)
    assert store.state(name).holders == ()


def test_the_same_owner_is_granted_afresh_in_its_slot(store: SemaphoreStore) -> None:
    name = _name()
    store.acquire(name, "first", 5.0, 2)
    mine = store.acquire(name, "second", 5.0, 2)
    again = store.acquire(name, "second", 5.0, 2)
    assert again.slot == mine.slot == 1
    assert again.fencing_token > mine.fencing_token
    assert len(store.state(name).holders) == 2


def test_expired_holdings_free_their_slots(store: SemaphoreStore) -> None:
    name = _name()
    first = store.acquire(name, "a", TTL, 1)
    assert store.acquire(name, "b", TTL, 1).fencing_token == 0
    time.sleep(_expiry(store))
    assert store.state(name).holders == ()
    assert not store.extend(name, "a", 5.0)
    later = store.acquire(name, "b", 5.0, 1)
    assert (later.slot, later.fencing_token) == (0, first.fencing_token + 1)


def test_exclusive_holdings_exclude_everyone(store: SemaphoreStore) -> None:
    name = _name()
    store.acquire(name, "reader", 5.0, 10)
    blocked = store.acquire(name, "writer", 5.0, 1, exclusive=True)
    assert blocked.fencing_token == 0
    assert blocked.holder_expires_in is not None
    assert store.release(name, "reader")
    writer = store.acquire(name, "writer", 5.0, 1, exclusive=True)
    assert (writer.slot, writer.fencing_token > 0) == (0, True)
    [holder] = store.state(name).holders
    assert holder.exclusive
    refused = store.acquire(name, "reader", 5.0, 10)
    assert refused.fencing_token == 0
    assert refused.holder_expires_in is not None
    assert store.acquire(name, "writer-2", 5.0, 1, exclusive=True).fencing_token == 0


def test_a_waiting_writers_intent_holds_back_readers_until_withdrawn(
    store: SemaphoreStore,
) -> None:
    name = _name()
    store.acquire(name, "reader-1", 5.0, 10)
    refused = store.acquire(name, "writer", 5.0, 1, exclusive=True, intent_ttl=5.0)
    assert refused.fencing_token == 0
    shut_out = store.acquire(name, "reader-2", 5.0, 10)
    assert shut_out.fencing_token == 0
    assert shut_out.holder_expires_in is None  # blocked by an intent: no expiry to wait for
    assert not store.release(name, "writer")  # withdraws the intent (it held nothing)
    assert store.acquire(name, "reader-2", 5.0, 10).fencing_token > 0


def test_an_intent_lapses_after_its_ttl(store: SemaphoreStore) -> None:
    name = _name()
    store.acquire(name, "reader-1", 5.0, 10)
    store.acquire(name, "writer", 5.0, 1, exclusive=True, intent_ttl=TTL)
    assert store.acquire(name, "reader-2", 5.0, 10).fencing_token == 0
    time.sleep(_expiry(store))
    assert store.acquire(name, "reader-2", 5.0, 10).fencing_token > 0


def test_a_granted_writer_clears_its_intent(store: SemaphoreStore) -> None:
    name = _name()
    store.acquire(name, "reader", 5.0, 10)
    store.acquire(name, "writer", 5.0, 1, exclusive=True, intent_ttl=5.0)
    store.release(name, "reader")
    assert store.acquire(name, "writer", 5.0, 1, exclusive=True, intent_ttl=5.0).fencing_token
    assert store.release(name, "writer")
    assert store.acquire(name, "reader", 5.0, 10).fencing_token > 0


def test_force_release_ends_one_holding(store: SemaphoreStore) -> None:
    name = _name()
    store.acquire(name, "a", 5.0, 2)
    store.acquire(name, "b", 5.0, 2)
    assert store.force_release(name, "a")
    assert not store.force_release(name, "a")
    assert [holder.owner for holder in store.state(name).holders] == ["b"]


def test_holders_in_threads_never_exceed_the_limit(store: SemaphoreStore) -> None:
    name = _name()
    semaphore = Semaphore(name, 2, ttl=5.0, store=store, wait=20.0, poll_interval=0.01)
    inside = 0
    peak = 0
    tokens: list[int] = []
    guard = threading.Lock()

    def worker() -> None:
        nonlocal inside, peak
        for _ in range(4):
            with semaphore as lease:
                with guard:
                    inside += 1
                    peak = max(peak, inside)
                    tokens.append(lease.fencing_token)
                time.sleep(0.002)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert peak <= 2
    assert len(tokens) == 16
    assert len(set(tokens)) == 16


def test_a_barrier_releases_all_parties_together(store: SemaphoreStore) -> None:
    name = _name()
    results: list[int] = []
    passed_at: list[float] = []
    arrivals: list[float] = []

    def party(delay: float) -> None:
        barrier = Barrier(name, 3, store=store, poll_interval=0.01)
        time.sleep(delay)
        arrivals.append(time.monotonic())
        results.append(barrier.arrive(wait=10.0))
        passed_at.append(time.monotonic())

    threads = [threading.Thread(target=party, args=(0.05 * index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == [0, 1, 2]
    assert min(passed_at) >= max(arrivals)  # nobody passed before the last arrival


def test_an_unreachable_engine_fails_acquire_after_the_wait() -> None:
    postgres = connect(f"postgresql://postgres@127.0.0.1:{_free_port()}/test", timeout=1.0)
    redis_engine = connect(f"redis://127.0.0.1:{_free_port()}/0", socket_connect_timeout=1.0)
    assert isinstance(postgres, PostgresEngine)
    assert isinstance(redis_engine, RedisEngine)
    stores: list[SemaphoreStore] = [
        PostgresSemaphoreStore(postgres, table=TABLE),
        RedisSemaphoreStore(redis_engine, prefix=REDIS_PREFIX),
        EtcdSemaphoreStore(f"etcd://127.0.0.1:{_free_port()}", prefix=ETCD_PREFIX),
    ]
    try:
        for store in stores:
            semaphore = Semaphore(_name(), 2, ttl=1.0, store=store, poll_interval=0.05)
            started = time.monotonic()
            with pytest.raises(EngineUnavailableError, match=r"gave up after 0\.300s"):
                semaphore.acquire(wait=0.3)
            assert time.monotonic() - started < 3.0
    finally:
        postgres.close()
        redis_engine.close()
        stores[-1].close()


# ---------------------------------------------------------------------- async


async def test_async_contract(astore: SemaphoreStore) -> None:
    name = _name()
    first = await astore.aacquire(name, "a", 5.0, 1)
    assert first.fencing_token > 0
    refused = await astore.aacquire(name, "b", 5.0, 1)
    assert refused.fencing_token == 0
    assert await astore.aextend(name, "a", 5.0)
    assert len((await astore.astate(name)).holders) == 1
    assert await astore.aforce_release(name, "a")
    assert not await astore.arelease(name, "a")
    writer = await astore.aacquire(name, "w", 5.0, 1, exclusive=True)
    assert writer.fencing_token == first.fencing_token + 1
    assert await astore.arelease(name, "w")


async def test_async_facades(astore: SemaphoreStore) -> None:
    name = _name()
    pool = Semaphore(name, 1, ttl=5.0, store=astore)
    rw = ReadWriteLock(f"{name}-rw", ttl=5.0, store=astore, intent_ttl=0.2)
    async with pool as lease:
        with pytest.raises(SemaphoreFullError):
            await Semaphore(name, 1, ttl=5.0, store=astore).aacquire(wait=0)
    assert lease.released
    entered = asyncio.Event()

    async def reader() -> int:
        async with rw.read as held:
            entered.set()
            await asyncio.sleep(0.05)
            return held.fencing_token

    readers = asyncio.gather(reader(), reader())  # each task holds its own read lease
    await entered.wait()
    with pytest.raises(LockTimeoutError):
        await rw.write.aacquire(wait=0)
    read_tokens = await readers
    await asyncio.sleep(rw.intent_ttl)  # the writer's given-up intent lapses
    async with rw.write as written:
        assert written.fencing_token > max(read_tokens)
    barrier = Barrier(f"{name}-barrier", 2, store=astore, poll_interval=0.01)
    assert sorted(await asyncio.gather(barrier.aarrive(wait=5.0), barrier.aarrive(wait=5.0))) == [
        0,
        1,
    ]
