"""Distributed lock cost: uncontended acquire+release pairs, seawall beside the peers.

One client, one thread, the lock always free: each operation is one acquire and one
release of the same lock. Three benches:

* ``lock_pair_redis``: seawall's ``with lock:`` (one ``EVALSHA`` to acquire with a
  fencing token, one to release) next to redis-py's ``Lock``, python-redis-lock and
  pottery's ``Redlock`` with one master, set up as in
  ``/work/shared/peer-benchmarks/bench_redis_lock.py``, and the floor: two redis-py
  ``PING`` round trips, the least any acquire plus release can cost.
* ``lock_pair_postgres``: seawall's lease table next to its floors: two ``SELECT 1``
  round trips, and the same two writes issued by hand (a durable single-row upsert and
  an async-commit update), which shows the lock adds nothing beyond one round trip each.
* ``lock_pair_sqlite``: seawall on a WAL file next to two trivial write transactions,
  both at ``synchronous=FULL`` and at the lock's own modes (FULL for the grant, NORMAL
  for the release).
* ``lock_pair_etcd``: seawall's etcd store (one round trip to acquire: a keepalive of an
  idle lease and the transaction, sent at once; one transaction to release) next to its floors, through
  the same gateway client: two range requests (the issue's limit), and two single-key
  puts (two Raft writes, the least an acquire plus a release can commit).

Unreachable engines are skipped with a note (``REDIS_URL``, ``POSTGRES_URL``; ``ETCD_URL``,
else a throwaway etcd is started on free loopback ports when the binary exists); every
key and table written is unique to the run and removed afterwards.

    python benchmarks/coordination.py
    BENCH_SCALE=0.01 BENCH_REPS=1 python benchmarks/coordination.py   # smoke size
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))

from _harness import (
    REPS,
    Case,
    Result,
    async_timer,
    dump_json,
    measure,
    ops_for,
    print_table,
    sync_timer,
)
from seawall.coordination import Lock
from seawall.coordination.lock.etcd import EtcdLockStore
from seawall.coordination.lock.postgres import PostgresLockStore
from seawall.coordination.lock.redis import RedisLockStore
from seawall.coordination.lock.sqlite import SqliteLockStore
from seawall.engines import connect
from seawall.engines.etcd import EtcdEngine, b64

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ETCD_URL = os.environ.get("ETCD_URL")
RUN = uuid.uuid4().hex[:8]
PREFIX = f"seawall-bench-lock-{RUN}"
TABLE = f"seawall_bench_locks_{RUN}"
FLOOR_TABLE = f"seawall_bench_floor_{RUN}"
TTL = 60.0

# pairs per repetition at BENCH_SCALE=1, sized for roughly 0.2-0.5 s each
REDIS_OPS = 2_000
PEER_OPS = 600
POSTGRES_OPS = 400
SQLITE_OPS = 600
ETCD_OPS = 200
NETWORK_REPS = 3 * REPS
"""Round trips are noisy on a shared machine: more, shorter, interleaved repetitions."""

Closers = list[Callable[[], object]]


def _pair(lock: Lock) -> Callable[[], None]:
    def operation() -> None:
        with lock:
            pass

    return operation


def _context_pair(make: Callable[[], Any]) -> Callable[[], None]:
    def operation() -> None:
        with make():
            pass

    return operation


# ---------------------------------------------------------------------- Redis


def _redis_cases(closers: Closers) -> list[Case]:
    import redis

    bench = "lock_pair_redis"
    client = redis.Redis.from_url(REDIS_URL)
    closers.append(client.close)
    engine = connect(REDIS_URL)
    store = RedisLockStore(engine, prefix=PREFIX)  # type: ignore[arg-type]
    closers.extend([store.close, engine.close])
    ops, peer_ops = ops_for(REDIS_OPS), ops_for(PEER_OPS)
    lock = Lock(f"{PREFIX}:seawall", ttl=TTL, store=store)
    cases = [
        Case(
            bench,
            "seawall",
            sync_timer(_pair(lock)),
            ops,
            "with Lock(name, ttl=60, store=redis): one EVALSHA each, with a fencing token",
        ),
        Case(
            bench,
            "redis-py Lock",
            sync_timer(_context_pair(lambda: client.lock(f"{PREFIX}:redispy", timeout=TTL))),
            peer_ops,
            "with r.lock(name, timeout=60): SET NX PX + Lua release, no token",
        ),
    ]
    try:
        import redis_lock  # type: ignore[import-untyped]

        cases.append(
            Case(
                bench,
                "python-redis-lock",
                sync_timer(
                    _context_pair(lambda: redis_lock.Lock(client, f"{PREFIX}:prl", expire=60))
                ),
                peer_ops,
                "with redis_lock.Lock(r, name, expire=60), no token",
            )
        )
    except ImportError:
        print("note: python-redis-lock is not installed; its row is skipped")
    try:
        from pottery import Redlock

        cases.append(
            Case(
                bench,
                "pottery Redlock (1 master)",
                sync_timer(
                    _context_pair(
                        lambda: Redlock(
                            key=f"{PREFIX}:pottery", masters={client}, auto_release_time=TTL
                        )
                    )
                ),
                peer_ops,
                "with Redlock(key, masters={r}, auto_release_time=60), no token",
            )
        )
    except ImportError:
        print("note: pottery is not installed; its row is skipped")

    def two_pings() -> None:
        client.ping()
        client.ping()

    cases.append(
        Case(bench, "floor: 2x redis-py PING", sync_timer(two_pings), ops, "two round trips")
    )
    renewing = Lock(f"{PREFIX}:renewing", ttl=TTL, store=store, auto_renew=True)
    cases.append(
        Case(
            bench,
            "seawall (auto_renew)",
            sync_timer(_pair(renewing)),
            peer_ops,
            "as seawall, plus a heartbeat thread started and stopped per lease",
        )
    )
    return cases


def _redis_async_cases(loop: asyncio.AbstractEventLoop, closers: Closers) -> list[Case]:
    bench = "lock_pair_redis"
    engine = connect(REDIS_URL)
    store = RedisLockStore(engine, prefix=PREFIX)  # type: ignore[arg-type]
    closers.append(lambda: loop.run_until_complete(store.aclose()))
    closers.append(lambda: loop.run_until_complete(engine.aclose()))
    lock = Lock(f"{PREFIX}:seawall-async", ttl=TTL, store=store)

    async def pair() -> None:
        async with lock:
            pass

    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    closers.append(lambda: loop.run_until_complete(client.aclose()))

    async def two_pings() -> None:
        # redis-py types ping() as "Awaitable[bool] | bool" for both flavours
        await client.ping()  # type: ignore[misc]
        await client.ping()  # type: ignore[misc]

    return [
        Case(
            bench,
            "seawall (async)",
            async_timer(loop, pair),
            ops_for(REDIS_OPS),
            "async with lock: own redis.asyncio connections, one EVALSHA each",
        ),
        Case(
            bench,
            "floor: 2x redis.asyncio PING",
            async_timer(loop, two_pings),
            ops_for(REDIS_OPS),
            "two awaited round trips: the floor of the async flavour",
        ),
    ]


def _delete_redis_keys() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"*{PREFIX}*", count=1000):
            client.delete(key)
    finally:
        client.close()


# ---------------------------------------------------------------------- PostgreSQL


def _postgres_cases(closers: Closers) -> list[Case]:
    import psycopg

    bench = "lock_pair_postgres"
    engine = connect(POSTGRES_URL)
    store = PostgresLockStore(engine, table=TABLE)  # type: ignore[arg-type]
    store.setup()
    closers.extend([store.close, engine.close])
    raw = psycopg.connect(POSTGRES_URL, autocommit=True)
    relaxed = psycopg.connect(POSTGRES_URL, autocommit=True)
    relaxed.execute("SET synchronous_commit = off")
    closers.extend([raw.close, relaxed.close])
    raw.execute(f"CREATE TABLE {FLOOR_TABLE} (id INT PRIMARY KEY, n BIGINT NOT NULL)")
    ops = ops_for(POSTGRES_OPS)
    lock = Lock("bench", ttl=TTL, store=store)

    def two_selects() -> None:
        raw.execute("SELECT 1", prepare=True)
        raw.execute("SELECT 1", prepare=True)

    upsert = (
        f"INSERT INTO {FLOOR_TABLE} (id, n) VALUES (1, 1) "
        f"ON CONFLICT (id) DO UPDATE SET n = {FLOOR_TABLE}.n + 1"
    )
    update = f"UPDATE {FLOOR_TABLE} SET n = n + 1 WHERE id = 1"

    def two_writes() -> None:
        raw.execute(upsert, prepare=True)
        relaxed.execute(update, prepare=True)

    return [
        Case(
            bench,
            "seawall",
            sync_timer(_pair(lock)),
            ops,
            "with lock: one upsert (durable commit), one update (async commit)",
        ),
        Case(bench, "floor: 2x SELECT 1", sync_timer(two_selects), ops, "two read round trips"),
        Case(
            bench,
            "floor: 2 writes, same commit modes",
            sync_timer(two_writes),
            ops,
            "single-row upsert (durable) + update (synchronous_commit=off) by hand",
        ),
    ]


def _drop_postgres_tables() -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")


# ---------------------------------------------------------------------- SQLite


def _sqlite_cases(folder: str, closers: Closers) -> list[Case]:
    bench = "lock_pair_sqlite"
    store = SqliteLockStore(f"sqlite:///{folder}/locks.db")
    store.setup()
    closers.append(store.close)
    lock = Lock("bench", ttl=TTL, store=store)
    connections = []
    for mode in ("FULL", "NORMAL"):
        conn = sqlite3.connect(f"{folder}/floor.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={mode}")
        connections.append(conn)
        closers.append(conn.close)
    full, normal = connections
    full.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY, n INTEGER)")
    full.execute("INSERT OR IGNORE INTO floor VALUES (1, 0)")
    update = "UPDATE floor SET n = n + 1 WHERE id = 1"

    def two_full() -> None:
        full.execute(update)
        full.execute(update)

    def full_and_normal() -> None:
        full.execute(update)
        normal.execute(update)

    ops = ops_for(SQLITE_OPS)
    return [
        Case(
            bench,
            "seawall",
            sync_timer(_pair(lock)),
            ops,
            "with lock: WAL file, grant at synchronous=FULL, release at NORMAL",
        ),
        Case(
            bench,
            "floor: 2 writes (FULL)",
            sync_timer(two_full),
            ops,
            "two single-row UPDATE transactions, synchronous=FULL",
        ),
        Case(
            bench,
            "floor: 2 writes, same modes",
            sync_timer(full_and_normal),
            ops,
            "one UPDATE at synchronous=FULL, one at NORMAL",
        ),
    ]


# ---------------------------------------------------------------------- etcd


def _etcd_cases(url: str, closers: Closers) -> list[Case]:
    bench = "lock_pair_etcd"
    engine = connect(url)
    assert isinstance(engine, EtcdEngine)
    prefix = f"{PREFIX}/etcd"
    store = EtcdLockStore(engine, prefix=prefix)
    closers.extend([lambda: engine.delete(prefix, prefix=True), store.close, engine.close])
    lock = Lock("bench", ttl=TTL, store=store)
    probe = b64(f"{prefix}/floor")
    range_request = engine.request("/v3/kv/range", {"key": probe})
    put_request = engine.request("/v3/kv/put", {"key": probe, "value": b64("x")})

    def two_ranges() -> None:
        engine.pipeline([range_request])
        engine.pipeline([range_request])

    def two_puts() -> None:
        engine.pipeline([put_request])
        engine.pipeline([put_request])

    ops = ops_for(ETCD_OPS)
    return [
        Case(
            bench,
            "seawall",
            sync_timer(_pair(lock)),
            ops,
            "with lock: keepalive and txn sent at once (one round trip), txn release",
        ),
        Case(
            bench,
            "floor: 2x range",
            sync_timer(two_ranges),
            ops,
            "two linearizable range requests, same gateway client",
        ),
        Case(
            bench,
            "floor: 2 writes (put)",
            sync_timer(two_puts),
            ops,
            "two single-key puts: two Raft commits, the least a lock pair can write",
        ),
    ]


def _etcd_ping(url: str) -> None:
    engine = EtcdEngine(url, timeout=2.0)
    try:
        engine.ping()
    finally:
        engine.close()


def _etcd_url(stack: contextlib.ExitStack) -> str | None:
    if ETCD_URL:
        return ETCD_URL
    from _etcd import etcd_binary, start_etcd

    binary = etcd_binary()
    if binary is None:
        print("note: etcd is not installed and ETCD_URL is not set; lock_pair_etcd is skipped")
        return None
    try:
        return stack.enter_context(start_etcd(binary))
    except RuntimeError as exc:
        print(f"note: the throwaway etcd did not start ({exc}); lock_pair_etcd is skipped")
        return None


# ---------------------------------------------------------------------- run


def _reachable(what: str, check: Callable[[], object]) -> bool:
    try:
        check()
    except Exception as exc:
        print(f"note: {what} did not answer ({type(exc).__name__}: {exc}); its bench is skipped")
        return False
    return True


def _redis_ping() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _postgres_ping() -> None:
    import psycopg

    psycopg.connect(POSTGRES_URL, connect_timeout=2).close()


def run() -> list[Result]:
    """Measure every engine that answers: Redis (with peers), PostgreSQL, SQLite, etcd."""
    results: list[Result] = []
    closers: Closers = []
    try:
        if _reachable(f"Redis at {REDIS_URL}", _redis_ping):
            loop = asyncio.new_event_loop()
            try:
                cases = _redis_cases(closers) + _redis_async_cases(loop, closers)
                results.extend(measure(cases, reps=NETWORK_REPS))
            finally:
                for close in reversed(closers):
                    close()
                closers.clear()
                loop.close()
                _delete_redis_keys()
        if _reachable(f"PostgreSQL at {POSTGRES_URL}", _postgres_ping):
            try:
                results.extend(measure(_postgres_cases(closers), reps=NETWORK_REPS))
            finally:
                for close in reversed(closers):
                    close()
                closers.clear()
                _drop_postgres_tables()
        with tempfile.TemporaryDirectory(prefix="seawall-bench-lock-") as folder:
            try:
                results.extend(measure(_sqlite_cases(folder, closers)))
            finally:
                for close in reversed(closers):
                    close()
                closers.clear()
        with contextlib.ExitStack() as stack:
            url = _etcd_url(stack)
            if url is not None and _reachable(f"etcd at {url}", lambda: _etcd_ping(url)):
                try:
                    results.extend(measure(_etcd_cases(url, closers), reps=NETWORK_REPS))
                finally:
                    for close in reversed(closers):
                        close()
                    closers.clear()
    finally:
        for close in reversed(closers):
            close()
    return results


def _rate(results: list[Result], bench: str, lib: str) -> float | None:
    rows = [row for row in results if row.bench == bench and row.lib == lib]
    return statistics.median(row.ops_per_s for row in rows) if rows else None


def targets(results: list[Result]) -> list[str]:
    """The issue's targets, checked against this run's figures."""
    lines = []
    ours = _rate(results, "lock_pair_redis", "seawall")
    floor = _rate(results, "lock_pair_redis", "floor: 2x redis-py PING")
    peer = _rate(results, "lock_pair_redis", "redis-py Lock")
    if ours and floor and peer:
        lines.append(
            f"Redis: {ours:,.0f} pairs/s = {ours / floor:.0%} of the two-PING floor "
            f"(target >= 90%), {ours / peer:.2f}x redis-py Lock (target >= 1.2x)"
        )
    ours_async = _rate(results, "lock_pair_redis", "seawall (async)")
    floor_async = _rate(results, "lock_pair_redis", "floor: 2x redis.asyncio PING")
    if ours_async and floor_async:
        lines.append(
            f"Redis async: {ours_async:,.0f} pairs/s = {ours_async / floor_async:.0%} "
            "of the two-awaited-PING floor"
        )
    for bench, floors in (
        ("lock_pair_postgres", ("floor: 2x SELECT 1", "floor: 2 writes, same commit modes")),
        ("lock_pair_sqlite", ("floor: 2 writes (FULL)", "floor: 2 writes, same modes")),
        ("lock_pair_etcd", ("floor: 2x range", "floor: 2 writes (put)")),
    ):
        ours = _rate(results, bench, "seawall")
        if not ours:
            continue
        parts = [
            f"{ours / rate:.0%} of '{name}' ({rate:,.0f}/s)"
            for name in floors
            if (rate := _rate(results, bench, name))
        ]
        lines.append(f"{bench}: {ours:,.0f} pairs/s = " + ", ".join(parts))
    return lines


if __name__ == "__main__":
    measured = run()
    print_table("seawall coordination: lock acquire+release pairs", measured)
    print("targets (issue 6):")
    for line in targets(measured):
        print(f"  {line}")
    dump_json(measured)
