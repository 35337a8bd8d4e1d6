"""One contract, every lock store: memory, SQLite, PostgreSQL (table and advisory), Redis, Redlock, etcd.

Every engine keeps its own time, so expiry tests use short TTLs and short, bounded
real waits. Redlock runs on three throwaway ``redis-server`` processes on loopback
ports, started once for this module when the binary exists (skipped otherwise) and
stopped afterwards; the shared Redis server is never reconfigured. etcd runs as a private
server for the session (``tests/_etcd.py``); its leases last whole seconds (at least one)
and expire in a sweep every 500 ms, so its expiry waits are longer. Every Redis key and
PostgreSQL table is unique to this run and removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import REQUIRED, engine_url
from seawall.coordination import (
    FenceGuard,
    FencingError,
    LeaseInfo,
    Lock,
    LockLostError,
    LockNotHeldError,
    LockStore,
    LockTimeoutError,
    MemoryLockStore,
    SqlFence,
    asql_fence,
)
from seawall.coordination.lock.etcd import EtcdLockStore
from seawall.coordination.lock.postgres import (
    PostgresAdvisoryLockStore,
    PostgresLockStore,
)
from seawall.coordination.lock.redis import RedisLockStore
from seawall.coordination.lock.redlock import RedlockStore
from seawall.coordination.lock.sqlite import SqliteLockStore
from seawall.engines.etcd import EtcdEngine, EtcdRequestError, b64
from seawall.errors import ConfigurationError, EngineUnavailableError

RUN = uuid.uuid4().hex[:10]
TABLE = f"locks_{RUN}"
FENCES = f"fences_{RUN}"
REDIS_PREFIX = f"seawall-test:lock:{RUN}"
ETCD_PREFIX = f"seawall-test/lock/{RUN}"
TTL = 0.3
"""Short lease for expiry tests: waits stay well under a second."""
MARGIN = 0.05

ENGINES = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.engine("postgres")),
    pytest.param("postgres-advisory", marks=pytest.mark.engine("postgres")),
    pytest.param("redis", marks=pytest.mark.engine("redis")),
    pytest.param("redlock", marks=pytest.mark.engine("redis")),
    pytest.param("etcd", marks=pytest.mark.engine("etcd")),
]
ETCD_EXPIRY = 1.0 + 0.5 + 0.2
"""An abandoned etcd lease: its whole-second TTL, the 500 ms sweep, and a margin."""


# ---------------------------------------------------------------------- throwaway redis servers


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redlock_urls() -> Iterator[list[str]]:
    """Three independent redis-server processes on free loopback ports."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed: Redlock needs three throwaway servers"
        if "redis" in REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    processes: list[subprocess.Popen[bytes]] = []
    workdir = tempfile.TemporaryDirectory(prefix="seawall-redlock-")
    try:
        ports = [_free_port() for _ in range(3)]
        for port in ports:
            processes.append(
                subprocess.Popen(
                    [
                        binary,
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--save", "",
                        "--appendonly", "no",
                        "--daemonize", "no",
                        "--dir", workdir.name,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        deadline = time.monotonic() + 10.0
        while not all(_answers(port) for port in ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                pytest.fail("the throwaway redis-server processes did not start within 10 s")
            time.sleep(0.02)
        yield [f"redis://127.0.0.1:{port}/0" for port in ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        workdir.cleanup()


# ---------------------------------------------------------------------- the rig


@dataclass
class Rig:
    """One store under test and how to reach it."""

    kind: str
    store: LockStore

    @property
    def expires(self) -> bool:
        return self.store.expires

    def lock(self, name: str, **options: Any) -> Lock:
        options.setdefault("ttl", TTL)
        options.setdefault("poll_interval", 0.02)
        return Lock(name, store=self.store, **options)

    @property
    def expiry_wait(self) -> float:
        """Seconds until an abandoned lease of ``TTL`` is surely gone on this engine."""
        return ETCD_EXPIRY if self.kind == "etcd" else TTL + MARGIN

    def steal(self, name: str) -> None:
        """End the current lease behind its holder's back."""
        assert self.store.force_release(name)


def _make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> LockStore:
    if kind == "memory":
        return MemoryLockStore()
    if kind == "sqlite":
        return SqliteLockStore(f"sqlite:///{tmp_path}/locks.db")
    if kind == "postgres":
        return PostgresLockStore(request.getfixturevalue("postgres_url"), table=TABLE)
    if kind == "postgres-advisory":
        url = request.getfixturevalue("postgres_url")
        return PostgresAdvisoryLockStore(url, fences_table=FENCES)
    if kind == "redis":
        return RedisLockStore(request.getfixturevalue("redis_url"), prefix=REDIS_PREFIX)
    if kind == "etcd":
        return EtcdLockStore(request.getfixturevalue("etcd_url"), prefix=ETCD_PREFIX)
    assert kind == "redlock"
    return RedlockStore(request.getfixturevalue("redlock_urls"), prefix=REDIS_PREFIX)


@pytest.fixture(params=ENGINES)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    store = _make_store(request.param, request, tmp_path)
    try:
        yield Rig(request.param, store)
    finally:
        if isinstance(store, EtcdLockStore):
            store.engine.delete(ETCD_PREFIX, prefix=True)
        store.close()


@pytest.fixture(params=ENGINES)
async def arig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    store = _make_store(request.param, request, tmp_path)
    try:
        yield Rig(request.param, store)
    finally:
        if isinstance(store, EtcdLockStore):
            store.engine.delete(ETCD_PREFIX, prefix=True)
        await store.aclose()


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(engine_url("postgres"), autocommit=True, connect_timeout=2) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            conn.execute(f"DROP TABLE IF EXISTS {FENCES}")
            conn.execute(f"DROP TABLE IF EXISTS fence_{RUN}")
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(engine_url("redis"), socket_connect_timeout=2)
        for key in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000):
            client.delete(key)
        client.close()


def _name() -> str:
    return f"lock-{uuid.uuid4().hex[:12]}"


def _wait_until(condition: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------------------------------------- the contract (sync)


def test_acquire_is_exclusive(rig: Rig) -> None:
    name = _name()
    holder, other = rig.lock(name, ttl=5.0), rig.lock(name, ttl=5.0)
    lease = holder.acquire(wait=0)
    assert lease.fencing_token >= 1
    with pytest.raises(LockTimeoutError) as caught:
        other.acquire(wait=0)
    if rig.expires:
        assert caught.value.retry_after is not None
        assert 3.0 < caught.value.retry_after <= 5.0
    reply = rig.store.acquire(name, "intruder", 5.0)
    assert reply.fencing_token == 0
    holder.release()
    assert other.acquire(wait=0).fencing_token > lease.fencing_token
    other.release()


def test_inspect_shows_the_holder(rig: Rig) -> None:
    name = _name()
    lock = rig.lock(name, ttl=5.0)
    assert lock.inspect() is None
    lease = lock.acquire()
    info = lock.inspect()
    assert isinstance(info, LeaseInfo)
    assert (info.name, info.owner, info.fencing_token) == (name, lease.owner, lease.fencing_token)
    assert 0 < info.expires_in <= 5.0 or not rig.expires
    lock.release()
    assert lock.inspect() is None


def test_tokens_strictly_increase_across_holders(rig: Rig) -> None:
    name = _name()
    tokens = []
    for _ in range(5):
        lock = rig.lock(name, ttl=5.0)
        with lock as lease:
            tokens.append(lease.fencing_token)
    assert tokens == sorted(set(tokens))
    assert tokens[-1] - tokens[0] == 4


def test_expiry_lets_another_holder_in_with_a_higher_token(rig: Rig) -> None:
    if not rig.expires:
        pytest.skip("session-scoped leases end with their session, not by TTL")
    name = _name()
    first_lock = rig.lock(name)
    first = first_lock.acquire()
    started = time.monotonic()
    second_lock = rig.lock(name)
    second = second_lock.acquire(wait=3.0)
    assert time.monotonic() - started < 3.0
    assert second.fencing_token > first.fencing_token
    assert rig.store.inspect(name) is not None
    with pytest.raises(LockLostError):
        first_lock.extend(lease=first)
    with pytest.raises(LockLostError):
        first_lock.release(first)
    second_lock.release()


def test_tokens_increase_after_an_abandoned_lease_expires(rig: Rig) -> None:
    if not rig.expires:
        pytest.skip("session-scoped leases end with their session, not by TTL")
    name = _name()
    first = rig.lock(name).acquire()
    time.sleep(rig.expiry_wait)
    assert rig.store.inspect(name) is None
    second = rig.lock(name).acquire(wait=0)
    assert second.fencing_token == first.fencing_token + 1


def test_extend_keeps_the_lease(rig: Rig) -> None:
    name = _name()
    lock, other = rig.lock(name, ttl=1.0), rig.lock(name)
    lease = lock.acquire()
    time.sleep(0.6)
    lock.extend(ttl=1.0)
    time.sleep(0.6)  # 1.2 s after acquire: past the first TTL
    with pytest.raises(LockTimeoutError):
        other.acquire(wait=0)
    info = rig.store.inspect(name)
    assert info is not None
    assert info.owner == lease.owner
    lease.check()
    lock.release()


def test_release_and_extend_are_compare_and_set_on_the_owner(rig: Rig) -> None:
    name = _name()
    lock = rig.lock(name, ttl=5.0)
    lease = lock.acquire()
    assert not rig.store.release(name, "not-the-owner")
    assert not rig.store.extend(name, "not-the-owner", 5.0)
    info = rig.store.inspect(name)
    assert info is not None
    assert info.owner == lease.owner
    assert not rig.store.release(_name(), lease.owner)  # another name, same owner token
    lock.release()
    assert not rig.store.release(name, lease.owner)  # a second release finds nothing
    assert not rig.store.extend(name, lease.owner, 5.0)


def test_the_same_owner_acquiring_again_is_granted_afresh(rig: Rig) -> None:
    """A retry whose first reply was lost must not lock its own caller out."""
    name = _name()
    first = rig.store.acquire(name, "owner-a", 5.0)
    again = rig.store.acquire(name, "owner-a", 5.0)
    assert again.fencing_token > first.fencing_token > 0
    info = rig.store.inspect(name)
    assert info is not None
    assert info.owner == "owner-a"
    assert rig.store.acquire(name, "owner-b", 5.0).fencing_token == 0
    assert rig.store.release(name, "owner-a")


def test_releasing_a_lock_not_held_is_a_clear_error(rig: Rig) -> None:
    lock = rig.lock(_name())
    with pytest.raises(LockNotHeldError):
        lock.release()
    lock.acquire()
    lock.release()
    with pytest.raises(LockNotHeldError):
        lock.release()


def test_auto_renew_keeps_the_lease_across_several_ttls(rig: Rig) -> None:
    name = _name()
    lost: list[LockLostError] = []
    lock = rig.lock(name, ttl=0.6, auto_renew=True, on_lost=lost.append)
    with lock as lease:
        time.sleep(1.9)  # more than three TTLs
        lease.check()
        with pytest.raises(LockTimeoutError):
            rig.lock(name).acquire(wait=0)
    assert lost == []
    assert rig.store.inspect(name) is None


def test_auto_renew_reports_a_stolen_lease(rig: Rig) -> None:
    name = _name()
    told = threading.Event()
    lock = rig.lock(name, ttl=0.4, auto_renew=True, on_lost=lambda error: told.set())
    thieves: list[int] = []

    def stolen_while_held() -> None:
        with lock as lease:
            rig.steal(name)
            thieves.append(rig.lock(name, ttl=5.0).acquire(wait=2.0).fencing_token)
            assert told.wait(3.0), "the heartbeat did not report the loss"
            assert lease.lost
            with pytest.raises(LockLostError):
                lease.check()
            thieves.append(lease.fencing_token)

    with pytest.raises(LockLostError):
        stolen_while_held()  # leaving the with block raises too
    thief, holder = thieves
    assert thief > holder


def test_the_fencing_guard_refuses_the_stale_holder(rig: Rig) -> None:
    name = _name()
    guard = FenceGuard()
    stale = rig.lock(name, ttl=5.0).acquire()
    guard.check(name, stale)
    rig.steal(name)  # the stale holder "paused" and lost its lease
    fresh_lock = rig.lock(name, ttl=5.0)
    fresh = fresh_lock.acquire(wait=2.0)
    guard.check(name, fresh)
    with pytest.raises(FencingError) as caught:
        guard.check(name, stale)
    assert caught.value.last_seen == fresh.fencing_token
    fresh_lock.release()


def test_holders_in_threads_never_overlap(rig: Rig) -> None:
    name = _name()
    shared = rig.lock(name, ttl=5.0, wait=10.0)
    inside = 0
    overlaps = 0
    tokens: list[int] = []
    guard = threading.Lock()

    def worker() -> None:
        nonlocal inside, overlaps
        for _ in range(5):
            with shared as lease:
                with guard:
                    inside += 1
                    overlaps += inside > 1
                    tokens.append(lease.fencing_token)
                time.sleep(0.001)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert overlaps == 0
    assert len(tokens) == 15
    assert tokens == sorted(set(tokens))


# ---------------------------------------------------------------------- unreachable engines


def _unreachable(kind: str, tmp_path: Path) -> tuple[LockStore, Any]:
    """A store whose engine does not answer, and what to clean up afterwards."""
    if kind == "sqlite":
        path = tmp_path / "busy.db"
        blocker = sqlite3.connect(path, isolation_level=None)
        SqliteLockStore(f"sqlite:///{path}").setup()
        blocker.execute("BEGIN EXCLUSIVE")  # holds the write lock: the store cannot write
        return SqliteLockStore(f"sqlite:///{path}", timeout=0.05), blocker
    if kind in {"postgres", "postgres-advisory"}:
        url = f"postgresql://postgres@127.0.0.1:{_free_port()}/test"
        if kind == "postgres":
            return PostgresLockStore(url, table=TABLE), None
        return PostgresAdvisoryLockStore(url, fences_table=FENCES), None
    if kind == "redis":
        return RedisLockStore(f"redis://127.0.0.1:{_free_port()}/0", prefix=REDIS_PREFIX), None
    if kind == "etcd":
        return EtcdLockStore(f"etcd://127.0.0.1:{_free_port()}", prefix=ETCD_PREFIX), None
    urls = [f"redis://127.0.0.1:{_free_port()}/0" for _ in range(3)]
    return RedlockStore(urls, prefix=REDIS_PREFIX), None


@pytest.mark.parametrize(
    "kind", ["sqlite", "postgres", "postgres-advisory", "redis", "redlock", "etcd"]
)
def test_an_unreachable_engine_fails_acquire_after_the_wait(kind: str, tmp_path: Path) -> None:
    store, blocker = _unreachable(kind, tmp_path)
    lock = Lock(_name(), ttl=TTL, store=store, poll_interval=0.05)
    started = time.monotonic()
    try:
        with pytest.raises(EngineUnavailableError, match=r"gave up after 0\.300s"):
            lock.acquire(wait=0.3)
    finally:
        store.close()
        if blocker is not None:
            blocker.close()
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3.0


# ---------------------------------------------------------------------- the contract (async)


async def test_async_acquire_is_exclusive_and_tokens_increase(arig: Rig) -> None:
    name = _name()
    holder, other = arig.lock(name, ttl=5.0), arig.lock(name, ttl=5.0)
    async with holder as lease:
        with pytest.raises(LockTimeoutError):
            await other.aacquire(wait=0)
        assert (await holder.ainspect()) is not None
        await holder.aextend(ttl=5.0)
    second = await other.aacquire(wait=0)
    assert second.fencing_token > lease.fencing_token
    await other.arelease()
    with pytest.raises(LockNotHeldError):
        await other.arelease()
    assert (await arig.store.ainspect(name)) is None


async def test_async_expiry_and_compare_and_set(arig: Rig) -> None:
    if not arig.expires:
        pytest.skip("session-scoped leases end with their session, not by TTL")
    name = _name()
    first_lock = arig.lock(name)
    first = await first_lock.aacquire()
    assert not await arig.store.arelease(name, "not-the-owner")
    assert not await arig.store.aextend(name, "not-the-owner", 5.0)
    second_lock = arig.lock(name)
    second = await second_lock.aacquire(wait=3.0)
    assert second.fencing_token > first.fencing_token
    with pytest.raises(LockLostError):
        await first_lock.arelease(first)
    await second_lock.arelease()


async def test_async_auto_renew_keeps_and_reports_loss(arig: Rig) -> None:
    name = _name()
    lost: list[LockLostError] = []
    lock = arig.lock(name, ttl=0.6, auto_renew=True, on_lost=lost.append)
    lease = await lock.aacquire()
    await asyncio.sleep(0.8)  # past the first TTL
    lease.check()
    assert await arig.store.aforce_release(name)
    thief_lock = arig.lock(name, ttl=5.0)
    thief = await thief_lock.aacquire(wait=2.0)
    for _ in range(300):
        if lost:
            break
        await asyncio.sleep(0.01)
    assert lost
    assert lease.lost
    with pytest.raises(LockLostError):
        await lock.arelease()
    assert thief.fencing_token > lease.fencing_token
    await thief_lock.arelease()


# ---------------------------------------------------------------------- engine specifics


def test_sqlite_locks_exclude_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from seawall.coordination import Lock\n"
        "from seawall.coordination.lock.sqlite import SqliteLockStore\n"
        f"store = SqliteLockStore('sqlite:///{path}')\n"
        "lock = Lock('counter', ttl=5.0, store=store, wait=20.0, poll_interval=0.01)\n"
        f"counter = Path({str(counter)!r})\n"
        "for _ in range(15):\n"
        "    with lock as lease:\n"
        "        value = int(counter.read_text())\n"
        "        time.sleep(0.001)\n"
        "        counter.write_text(str(value + 1))\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    for worker in workers:
        assert worker.wait(timeout=60) == 0
    assert counter.read_text() == "45"
    store = SqliteLockStore(f"sqlite:///{path}")
    assert store.acquire("counter", "probe", 1.0).fencing_token == 46  # one token per grant
    store.close()


def test_postgres_sql_fence_refuses_a_stale_writer_in_its_transaction(postgres_url: str) -> None:
    import psycopg

    fence = SqlFence(f"fence_{RUN}")
    with (
        psycopg.connect(postgres_url, autocommit=True) as fresh,
        psycopg.connect(postgres_url, autocommit=True) as stale,
    ):
        with fresh.transaction():
            fence.check(fresh, "orders", 7)
        with stale.transaction():
            fence.check(stale, "orders", 7)  # the same holder writes twice: accepted
        with pytest.raises(FencingError) as caught, stale.transaction():
            fence.check(stale, "orders", 6)
        assert caught.value.last_seen == 7
        assert fence.last_seen(fresh, "orders") == 7


def test_postgres_sql_fence_orders_concurrent_writers(postgres_url: str) -> None:
    import psycopg

    fence = SqlFence(f"fence_{RUN}")
    with psycopg.connect(postgres_url, autocommit=True) as setup:
        fence.create(setup)
    resource = f"row-{uuid.uuid4().hex[:8]}"
    with (
        psycopg.connect(postgres_url, autocommit=True) as newer,
        psycopg.connect(postgres_url, autocommit=True) as older,
    ):
        outcome: list[object] = []
        with newer.transaction():
            fence.check(newer, resource, 10)

            def stale_writer() -> None:  # blocks on the row until the newer one commits
                try:
                    with older.transaction():
                        fence.check(older, resource, 9)
                    outcome.append("committed")
                except FencingError as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=stale_writer)
            thread.start()
            time.sleep(0.1)
            assert outcome == []  # still waiting for the row lock
        thread.join(5)
    assert len(outcome) == 1
    assert isinstance(outcome[0], FencingError)


async def test_postgres_async_sql_fence(postgres_url: str) -> None:
    import psycopg

    table = f"fence_{RUN}"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        resource = f"row-{uuid.uuid4().hex[:8]}"
        async with conn.transaction():
            await asql_fence(conn, resource, 3, table=table)
        with pytest.raises(FencingError):
            async with conn.transaction():
                await asql_fence(conn, resource, 2, table=table)


def test_postgres_advisory_lock_ends_with_the_holders_session(postgres_url: str) -> None:
    store = PostgresAdvisoryLockStore(postgres_url, fences_table=FENCES)
    name = _name()
    try:
        lock = Lock(name, ttl=5.0, store=store)
        lease = lock.acquire()
        store._sessions[lease.owner][1].close()  # the holder's process "crashes"
        successor = Lock(name, ttl=5.0, store=store, poll_interval=0.02)
        assert successor.acquire(wait=3.0).fencing_token == lease.fencing_token + 1
        with pytest.raises(LockLostError):
            lock.extend()
        successor.release()
    finally:
        store.close()


def test_redlock_tolerates_a_dead_minority(redlock_urls: list[str]) -> None:
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    store = RedlockStore([*redlock_urls[:2], dead], prefix=REDIS_PREFIX)
    try:
        lock = Lock(_name(), ttl=2.0, store=store)
        with lock as lease:
            assert lease.fencing_token >= 1
            lock.extend()
            assert lock.inspect() is not None
    finally:
        store.close()


def test_redlock_refuses_without_a_live_majority(redlock_urls: list[str]) -> None:
    dead = [f"redis://127.0.0.1:{_free_port()}/0" for _ in range(2)]
    store = RedlockStore([redlock_urls[0], *dead], prefix=REDIS_PREFIX)
    name = _name()
    try:
        with pytest.raises(EngineUnavailableError):
            Lock(name, ttl=2.0, store=store).acquire(wait=0)
        live = RedisLockStore(redlock_urls[0], prefix=REDIS_PREFIX)
        assert live.inspect(name) is None  # the partial grant was undone
        live.close()
    finally:
        store.close()


def test_redlock_tokens_stay_monotonic_when_counters_diverge(redlock_urls: list[str]) -> None:
    """The max of per-server counters alone would go backwards here; the raise step prevents it."""
    name = _name()
    servers = [RedisLockStore(url, prefix=REDIS_PREFIX) for url in redlock_urls]
    try:
        servers[0].engine.client.set(servers[0].keys(name)[1], 100)  # one server far ahead
        full = RedlockStore(servers, prefix=REDIS_PREFIX)
        first = Lock(name, ttl=2.0, store=full)
        with first as lease:
            assert lease.fencing_token == 101
        # a majority without the server that was ahead: servers 1 and 2 plus a dead one
        dead = RedisLockStore(f"redis://127.0.0.1:{_free_port()}/0", prefix=REDIS_PREFIX)
        partial = RedlockStore([servers[1], servers[2], dead], prefix=REDIS_PREFIX)
        with Lock(name, ttl=2.0, store=partial) as later:
            assert later.fencing_token > lease.fencing_token
        dead.close()
    finally:
        for server in servers:
            server.close()


# ---------------------------------------------------------------------- etcd specifics


@pytest.fixture
def etcd_store(etcd_url: str) -> Iterator[EtcdLockStore]:
    store = EtcdLockStore(etcd_url, prefix=ETCD_PREFIX)
    try:
        yield store
    finally:
        store.engine.delete(ETCD_PREFIX, prefix=True)
        store.close()


def _lease_of(store: EtcdLockStore, name: str) -> int:
    kvs = store.engine.call("/v3/kv/range", {"key": b64(store.keys(name)[0])}).get("kvs")
    assert kvs, f"{name} is not held"
    return int(kvs[0]["lease"])


def _time_to_live(store: EtcdLockStore, lease_id: int) -> int:
    reply = store.engine.call("/v3/lease/timetolive", {"ID": str(lease_id)})
    return int(reply.get("TTL", 0))


def test_etcd_reuses_an_idle_lease_instead_of_granting_one(etcd_store: EtcdLockStore) -> None:
    name = _name()
    first = etcd_store.acquire(name, "owner-1", 5.0)
    lease = _lease_of(etcd_store, name)
    assert etcd_store.release(name, "owner-1")
    second = etcd_store.acquire(name, "owner-2", 5.0)
    assert second.fencing_token == first.fencing_token + 1
    assert _lease_of(etcd_store, name) == lease  # kept alive and reused, not granted anew
    assert 4 <= _time_to_live(etcd_store, lease) <= 5
    assert etcd_store.release(name, "owner-2")


def test_etcd_replaces_an_idle_lease_that_ran_out(etcd_store: EtcdLockStore) -> None:
    name = _name()
    first = etcd_store.acquire(name, "owner-1", 5.0)
    lease = _lease_of(etcd_store, name)
    assert etcd_store.release(name, "owner-1")
    etcd_store.engine.call("/v3/lease/revoke", {"ID": str(lease)})  # gone behind its back
    second = etcd_store.acquire(name, "owner-2", 5.0)
    assert second.fencing_token == first.fencing_token + 1
    assert _lease_of(etcd_store, name) != lease
    assert etcd_store.release(name, "owner-2")


def test_etcd_extend_to_a_longer_ttl_moves_the_holding_to_a_longer_lease(
    etcd_store: EtcdLockStore,
) -> None:
    name = _name()
    token = etcd_store.acquire(name, "owner", 1.0).fencing_token
    short = _lease_of(etcd_store, name)
    assert etcd_store.extend(name, "owner", 8.0)
    longer = _lease_of(etcd_store, name)
    assert longer != short
    assert _time_to_live(etcd_store, longer) >= 7
    assert _time_to_live(etcd_store, short) == -1  # revoked: nothing was left on it
    info = etcd_store.inspect(name)
    assert info is not None
    assert (info.owner, info.fencing_token) == ("owner", token)  # same holding, same token
    assert etcd_store.release(name, "owner")


def test_etcd_another_store_can_extend_and_release_by_owner_token(
    etcd_store: EtcdLockStore, etcd_url: str
) -> None:
    name = _name()
    etcd_store.acquire(name, "owner", 5.0)
    other = EtcdLockStore(etcd_url, prefix=ETCD_PREFIX)
    try:
        assert other.extend(name, "owner", 5.0)
        assert not other.extend(name, "someone-else", 5.0)
        assert other.release(name, "owner")
        assert not etcd_store.extend(name, "owner", 5.0)
        assert not etcd_store.release(name, "owner")
    finally:
        other.close()


def test_etcd_a_force_released_holder_cannot_extend_on_its_live_lease(
    etcd_store: EtcdLockStore,
) -> None:
    name = _name()
    etcd_store.acquire(name, "owner", 5.0)
    lease = _lease_of(etcd_store, name)
    assert etcd_store.force_release(name)
    assert _time_to_live(etcd_store, lease) > 0  # the lease lives on, the holding does not
    assert not etcd_store.extend(name, "owner", 5.0)
    assert not etcd_store.force_release(name)


async def test_etcd_async_round_trips_and_fanout(etcd_url: str) -> None:
    store = EtcdLockStore(etcd_url, prefix=ETCD_PREFIX)
    name = _name()
    try:
        tokens = []
        for index in range(3):  # the second and third reuse the idle lease (a fanout)
            reply = await store.aacquire(name, f"owner-{index}", 5.0)
            tokens.append(reply.fencing_token)
            assert await store.aextend(name, f"owner-{index}", 5.0)
            assert await store.arelease(name, f"owner-{index}")
        assert tokens == [tokens[0], tokens[0] + 1, tokens[0] + 2]
        replies = await store.engine.afanout(
            [
                store.engine.request("/v3/kv/range", {"key": b64("a")}),
                store.engine.request("/v3/lease/revoke", {"ID": "1"}),
            ]
        )
        assert isinstance(replies[0], dict)
        assert isinstance(replies[1], EtcdRequestError)
        assert replies[1].code == 5
    finally:
        await store.engine.aclose()
        store.engine.delete(ETCD_PREFIX, prefix=True)
        await store.aclose()


def test_etcd_engine_reports_refusals_and_outages(etcd_url: str) -> None:
    engine = EtcdEngine(etcd_url)
    try:
        engine.ping()
        with pytest.raises(EtcdRequestError) as refused:
            engine.call("/v3/lease/revoke", {"ID": "1"})
        assert refused.value.code == 5
        assert "lease not found" in str(refused.value)
        key = f"{ETCD_PREFIX}/plain"
        assert engine.put(key, "value") > 0
        assert engine.get(key) == b"value"
        assert engine.delete(key) == 1
        assert engine.get(key) is None
    finally:
        engine.close()
    dead = EtcdEngine(f"etcd://127.0.0.1:{_free_port()}", timeout=0.5)
    with pytest.raises(EngineUnavailableError, match="unreachable"):
        dead.ping()


def test_etcd_engine_fails_over_to_the_next_endpoint(etcd_url: str) -> None:
    live = etcd_url.removeprefix("etcd://")
    engine = seawall.connect(f"etcd://127.0.0.1:{_free_port()},{live}")
    assert isinstance(engine, EtcdEngine)
    try:
        engine.ping()
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("etcd://user:secret@127.0.0.1:2379", "authentication is not supported"),
        ("etcd://127.0.0.1:port", "bad port"),
        ("etcd://127.0.0.1:2379?timeout=soon", "timeout must be seconds"),
        ("etcd://127.0.0.1:2379?timeout=0", "timeout must be seconds > 0"),
    ],
)
def test_etcd_engine_refuses_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        seawall.connect(url)


def test_etcd_store_refuses_a_bad_ttl_or_engine() -> None:
    store = EtcdLockStore("etcd://127.0.0.1:1", prefix=ETCD_PREFIX)
    with pytest.raises(ConfigurationError, match="ttl"):
        store.acquire("x", "owner", 0)
    with pytest.raises(ConfigurationError, match="etcd"):
        EtcdLockStore("redis://127.0.0.1:6379/0")
    store.close()
