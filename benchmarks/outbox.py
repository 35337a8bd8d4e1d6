"""Transactional outbox and idempotency keys: seawall beside raw-driver floors, in one run.

    python benchmarks/outbox.py                                  # ~2 minutes
    BENCH_ENGINES=sqlite python benchmarks/outbox.py             # skip PostgreSQL and Redis
    BENCH_SCALE=0.05 BENCH_REPS=1 python benchmarks/outbox.py    # quick look

No library does what these patterns do end to end, so there is no peer to beat. Each
seawall case runs beside a *floor*: the same SQL statements (taken from the store, so
they are identical) executed by hand with the raw driver and no library code around
them. The floor is what the database costs; the gap is seawall's overhead.

Outbox (per message; SQLite file in WAL with ``synchronous=FULL``, i.e. an fsync per
commit, PostgreSQL with ``synchronous_commit=on``):

* write: one business transaction per message (INSERT an order row, add the outbox
  message, COMMIT);
* write x100: 100 orders and their 100 messages per transaction;
* relay -> list: publish pre-written messages to an in-memory publisher (claim a batch
  of 100 under a lease, publish in order, mark them sent);
* relay -> queue: the same, publishing into a seawall SQLite queue (``QueuePublisher``:
  one ``send_many`` per batch, each message with its outbox id as ``dedup_id``); the
  floor inserts the batch into a plain table;
* end to end: one business transaction per message while a relay thread publishes to
  a list; timed until the last message is published (the commit wakes the relay).

Idempotency keys (per key): ``claim`` then ``complete`` with a small response, each
its own commit, on memory, SQLite, PostgreSQL and Redis (the floor runs the same
statements or Lua scripts through the driver).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Case, Result, dump_json, measure, ops_for, print_table

PG_URL = os.environ.get("SEAWALL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SEAWALL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ENGINES = {
    name.strip()
    for name in os.environ.get("BENCH_ENGINES", "sqlite,postgres,redis,memory").split(",")
}
WRITES = ops_for(400)
BATCH_WRITES = ops_for(5000)
RELAYED = ops_for(5000)
END_TO_END = ops_for(400)
KEYS_SQL = ops_for(300)
KEYS_FAST = ops_for(5000)
BODY = {"order": "o-123", "sku": "book", "quantity": 1, "cents": 1999}
RESPONSE = {"status": "charged", "receipt": "r-123"}
RAW = {"sqlite": "raw sqlite3", "postgres": "raw psycopg", "redis": "raw redis-py"}


def encode(value: Any) -> bytes:
    """What a hand-written floor does to turn a body into bytes."""
    return json.dumps(value, separators=(",", ":")).encode()


def _prefix() -> str:
    return f"b{uuid.uuid4().hex[:8]}_"


class Backend:
    """One SQL engine: a seawall engine, a raw connection, and placeholders."""

    def __init__(self, kind: str, url: str, raw: Any, mark: str) -> None:
        import seawall

        self.kind = kind
        self.url = url
        self.engine: Any = seawall.connect(url)
        self.raw = raw
        self.mark = mark
        self.cleanups: list[Callable[[], None]] = []

    def raw_transaction(self, statements: Callable[[Any], None]) -> None:
        if self.kind == "sqlite":
            self.raw.execute("BEGIN IMMEDIATE")
            statements(self.raw)
            self.raw.execute("COMMIT")
        else:
            with self.raw.transaction():
                statements(self.raw)

    def orders_table(self) -> str:
        name = f"{_prefix()}orders"
        with self.engine.transaction() as tx:
            tx.execute(f"CREATE TABLE {name} (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self.cleanups.append(lambda: self.drop(name))
        return name

    def drop(self, table: str) -> None:
        with self.engine.transaction() as tx:
            tx.execute(f"DROP TABLE IF EXISTS {table}")

    def durability(self) -> str:
        if self.kind == "sqlite":
            mode = self.raw.execute("PRAGMA journal_mode").fetchone()[0]
            level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
                self.raw.execute("PRAGMA synchronous").fetchone()[0]
            ]
            return f"SQLite {mode}/{level}"
        setting = self.raw.execute("SHOW synchronous_commit").fetchone()[0]
        return f"PostgreSQL synchronous_commit={setting}"

    def close(self) -> None:
        for step in reversed(self.cleanups):
            step()
        self.engine.close()
        self.raw.close()


def sqlite_backend(root: Path) -> Backend:
    path = root / "outbox.db"
    url = f"sqlite:///{path}"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA busy_timeout=30000")
    return Backend("sqlite", url, raw, "?")


def postgres_backend() -> Backend:
    import psycopg

    raw = psycopg.connect(PG_URL, autocommit=True, connect_timeout=2)
    return Backend("postgres", PG_URL, raw, "%s")


# -- outbox cases -------------------------------------------------------------------------------


def _outbox_cases(backend: Backend, queue_root: Path) -> list[Case]:
    import seawall
    from seawall.messaging.outbox import Outbox, QueuePublisher

    kind, raw_name, p = backend.kind, RAW[backend.kind], backend.mark
    durability = backend.durability()
    outbox = Outbox(backend.engine, table_prefix=_prefix())  # written to, never relayed
    relayed = Outbox(backend.engine, table_prefix=_prefix())
    backend.cleanups.append(outbox.store.drop_tables)
    backend.cleanups.append(relayed.store.drop_tables)
    sql: Any = outbox.store._sql  # type: ignore[attr-defined]
    relayed_sql: Any = relayed.store._sql  # type: ignore[attr-defined]
    orders = backend.orders_table()
    body_text = json.dumps(BODY, separators=(",", ":"))
    counter = iter(range(10**9))
    insert_order = f"INSERT INTO {orders} (id, body) VALUES ({p}, {p})"

    # The floor's outbox insert: the store's statement, its parameters made by hand
    # (each body serialised, as any hand-written outbox must).
    if kind == "sqlite":

        def raw_insert(conn: Any, count: int) -> None:
            now = time.time()
            rows = [
                (os.urandom(16).hex(), "orders", "o-1", encode(BODY), None, now, now)
                for _ in range(count)
            ]
            conn.executemany(sql.insert, rows)

    else:

        def raw_insert(conn: Any, count: int) -> None:
            if count == 1:
                conn.execute(
                    sql.insert,
                    {
                        "id": os.urandom(16).hex(),
                        "topic": "orders",
                        "key": "o-1",
                        "body": encode(BODY),
                        "headers": None,
                        "delay": 0.0,
                        "now": None,
                    },
                )
                return
            conn.execute(
                sql.insert_many,
                {
                    "ids": [os.urandom(16).hex() for _ in range(count)],
                    "topics": ["orders"] * count,
                    "keys": ["o-1"] * count,
                    "bodies": [encode(BODY) for _ in range(count)],
                    "headers": [None] * count,
                    "delays": [0.0] * count,
                    "now": None,
                },
            )

    def write_ours(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            order_id = f"o{next(counter)}"
            with backend.engine.transaction() as tx:
                tx.execute(insert_order, [order_id, body_text])
                outbox.add("orders", BODY, key=order_id, transaction=tx)
        return time.perf_counter() - started

    def write_raw(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            order_id = f"o{next(counter)}"

            def statements(conn: Any, order_id: str = order_id) -> None:
                conn.execute(insert_order, [order_id, body_text])
                raw_insert(conn, 1)

            backend.raw_transaction(statements)
        return time.perf_counter() - started

    def batch_ours(n: int) -> float:
        started = time.perf_counter()
        for start in range(0, n, 100):
            size = min(100, n - start)
            ids = [f"o{next(counter)}" for _ in range(size)]
            with backend.engine.transaction() as tx:
                if kind == "sqlite":
                    tx.connection.executemany(insert_order, [(i, body_text) for i in ids])
                else:
                    tx.connection.cursor().executemany(insert_order, [(i, body_text) for i in ids])
                outbox.add_many("orders", [BODY] * size, key=ids[0], transaction=tx)
        return time.perf_counter() - started

    def batch_raw(n: int) -> float:
        started = time.perf_counter()
        for start in range(0, n, 100):
            size = min(100, n - start)
            ids = [f"o{next(counter)}" for _ in range(size)]

            def statements(conn: Any, ids: list[str] = ids, size: int = size) -> None:
                if kind == "sqlite":
                    conn.executemany(insert_order, [(i, body_text) for i in ids])
                else:
                    conn.cursor().executemany(insert_order, [(i, body_text) for i in ids])
                raw_insert(conn, size)

            backend.raw_transaction(statements)
        return time.perf_counter() - started

    def fill(n: int) -> None:
        for start in range(0, n, 1000):
            size = min(1000, n - start)
            with backend.engine.transaction() as tx:
                relayed.add_many(
                    "orders", [BODY] * size, key=f"o{next(counter) % 50}", transaction=tx
                )

    def clear() -> None:
        relayed.purge_sent(0.0, limit=10**9)

    published: list[Any] = []
    relay_list = relayed.relay(published.append, retry=None, batch_size=100)

    def relay_list_ours(n: int) -> float:
        fill(n)
        published.clear()
        started = time.perf_counter()
        relay_list.drain()
        elapsed = time.perf_counter() - started
        assert len(published) == n, (len(published), n)
        clear()
        return elapsed

    owner = "raw-relay"

    def raw_claim(conn: Any) -> list[Any]:
        if kind == "sqlite":
            now = time.time()
            return conn.execute(
                relayed_sql.claim,
                {"owner": owner, "until": now + 30.0, "now": now, "limit": 100},
            ).fetchall()
        with conn.transaction():
            conn.execute(relayed_sql.lock, (relayed.store._lock,))  # type: ignore[attr-defined]
            return conn.execute(
                relayed_sql.claim, {"owner": owner, "lease": 30.0, "limit": 100, "now": None}
            ).fetchall()

    def raw_mark(conn: Any, positions: list[int]) -> None:
        if kind == "sqlite":
            conn.execute(relayed_sql.mark_sent, (time.time(), json.dumps(positions)))
        else:
            conn.execute(relayed_sql.mark_sent, {"positions": positions, "now": None})

    def relay_list_raw(n: int) -> float:
        fill(n)
        sink: list[Any] = []
        conn = backend.raw
        started = time.perf_counter()
        while True:
            rows = raw_claim(conn)
            if not rows:
                break
            rows.sort()
            for row in rows:
                sink.append((row[1], json.loads(bytes(row[4]))))
            raw_mark(conn, [row[0] for row in rows])
        elapsed = time.perf_counter() - started
        assert len(sink) == n
        clear()
        return elapsed

    queue_engine = seawall.connect(f"sqlite:///{queue_root / f'queue-{kind}.db'}")
    queue = queue_engine.queue("orders")
    backend.cleanups.append(queue_engine.close)
    relay_queue = relayed.relay(QueuePublisher(queue), retry=None, batch_size=100)
    relay_queue_plain = relayed.relay(
        QueuePublisher(queue, deduplicate=False), retry=None, batch_size=100
    )

    def relay_queue_timer(relay: Any) -> Callable[[int], float]:
        def timer(n: int) -> float:
            fill(n)
            started = time.perf_counter()
            relay.drain()
            elapsed = time.perf_counter() - started
            assert queue.stats().ready == n
            queue.purge()
            clear()
            return elapsed

        return timer

    plain_queue = sqlite3.connect(queue_root / f"plain-{kind}.db", isolation_level=None)
    plain_queue.execute("PRAGMA journal_mode=WAL")
    plain_queue.execute("PRAGMA synchronous=FULL")
    plain_queue.execute(
        "CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, body BLOB, headers TEXT)"
    )
    backend.cleanups.append(plain_queue.close)

    def relay_queue_raw(n: int) -> float:
        fill(n)
        conn = backend.raw
        started = time.perf_counter()
        while True:
            rows = raw_claim(conn)
            if not rows:
                break
            rows.sort()
            plain_queue.execute("BEGIN IMMEDIATE")
            plain_queue.executemany(
                "INSERT INTO q (body, headers) VALUES (?, ?)",
                [(bytes(row[4]), json.dumps({"seawall-message-id": row[1]})) for row in rows],
            )
            plain_queue.execute("COMMIT")
            raw_mark(conn, [row[0] for row in rows])
        elapsed = time.perf_counter() - started
        plain_queue.execute("DELETE FROM q")
        clear()
        return elapsed

    def end_to_end(n: int) -> float:
        seen = []
        done = threading.Event()

        def publish(message: Any) -> None:
            seen.append(message)
            if len(seen) == n:
                done.set()

        relay = relayed.relay(publish, retry=None, batch_size=100, poll_interval=0.5)
        relay.start()
        started = time.perf_counter()
        for _ in range(n):
            order_id = f"o{next(counter)}"
            with backend.engine.transaction() as tx:
                tx.execute(insert_order, [order_id, body_text])
                relayed.add("orders", BODY, key=order_id, transaction=tx)
        finished = done.wait(120.0)
        elapsed = time.perf_counter() - started
        relay.stop()
        assert finished, f"the relay published {len(seen)} of {n}"
        clear()
        return elapsed

    engine_name = "SQLite" if kind == "sqlite" else "PostgreSQL"
    return [
        Case(f"outbox write, {engine_name}", "seawall", write_ours, WRITES, durability),
        Case(f"outbox write, {engine_name}", raw_name, write_raw, WRITES, durability),
        Case(f"outbox write x100, {engine_name}", "seawall", batch_ours, BATCH_WRITES, durability),
        Case(f"outbox write x100, {engine_name}", raw_name, batch_raw, BATCH_WRITES, durability),
        Case(f"relay -> list, {engine_name}", "seawall", relay_list_ours, RELAYED, "batch 100"),
        Case(f"relay -> list, {engine_name}", raw_name, relay_list_raw, RELAYED, "batch 100"),
        Case(
            f"relay -> SQLite queue, {engine_name}",
            "seawall",
            relay_queue_timer(relay_queue),
            RELAYED,
            "QueuePublisher, dedup ids, queue WAL/FULL",
        ),
        Case(
            f"relay -> SQLite queue, {engine_name}",
            "seawall, no dedup",
            relay_queue_timer(relay_queue_plain),
            RELAYED,
            "QueuePublisher(deduplicate=False)",
        ),
        Case(
            f"relay -> SQLite queue, {engine_name}",
            raw_name,
            relay_queue_raw,
            RELAYED,
            "plain table insert, WAL/FULL",
        ),
        Case(
            f"end to end, {engine_name}",
            "seawall",
            end_to_end,
            END_TO_END,
            f"write 1/tx + relay thread, {durability}",
        ),
    ]


# -- idempotency cases --------------------------------------------------------------------------


def _keys_cases(kind: str, url: str, root: Path, cleanups: list[Callable[[], None]]) -> list[Case]:
    import seawall
    from seawall.idempotency import IdempotencyKeys

    engine: Any = seawall.connect(url)
    cleanups.append(engine.close)
    if kind == "redis":
        keys = IdempotencyKeys(engine, prefix=f"bench:{uuid.uuid4().hex[:8]}:")
    elif kind == "memory":
        keys = IdempotencyKeys(engine)
    else:
        keys = IdempotencyKeys(engine, table_prefix=_prefix())
    cleanups.append(keys.store.drop_tables)
    store: Any = keys.store
    counter = iter(range(10**9))
    fingerprint = "f" * 64

    def ours(n: int) -> float:
        claim, complete = keys.claim, keys.complete
        started = time.perf_counter()
        for _ in range(n):
            key = f"k{next(counter)}"
            complete(claim(key, fingerprint), RESPONSE)
        return time.perf_counter() - started

    if kind == "memory":
        records: dict[str, list[Any]] = {}
        lock = threading.Lock()

        def floor_once(key: str) -> None:
            now = time.monotonic()
            with lock:
                if key not in records:
                    records[key] = [fingerprint, 0, "t", None, now, now + 60.0, now + 86400.0]
            response = encode(RESPONSE)
            with lock:
                record = records[key]
                if record[1] == 0 and record[2] == "t":
                    record[1], record[3], record[5] = 1, response, None

        name = "raw dict + lock"
    elif kind == "sqlite":
        raw = sqlite3.connect(Path(engine.path), isolation_level=None)
        raw.execute("PRAGMA busy_timeout=30000")
        cleanups.append(raw.close)

        def floor_once(key: str) -> None:
            now = time.time()
            row = raw.execute(
                store._claim,
                {
                    "key": key,
                    "fingerprint": fingerprint,
                    "token": "t",
                    "now": now,
                    "lease": 60.0,
                    "ttl": 86400.0,
                },
            ).fetchone()
            assert row is not None
            raw.execute(store._complete, (encode(RESPONSE), time.time() + 86400.0, key, "t"))

        name = RAW["sqlite"]
    elif kind == "postgres":
        import psycopg

        pg = psycopg.connect(url, autocommit=True)
        cleanups.append(pg.close)

        def floor_once(key: str) -> None:
            pg.execute(
                store._claim,
                {
                    "key": key,
                    "fingerprint": fingerprint,
                    "token": "t",
                    "lease": 60.0,
                    "ttl": 86400.0,
                    "now": None,
                },
            ).fetchall()
            pg.execute(
                store._complete,
                {
                    "key": key,
                    "token": "t",
                    "response": encode(RESPONSE),
                    "ttl": 86400.0,
                    "now": None,
                },
            )

        name = RAW["postgres"]
    else:
        import redis

        client = redis.Redis.from_url(url)
        cleanups.append(client.close)
        claim_script = client.register_script(store._sources["claim"])
        settle_script = client.register_script(store._sources["settle"])
        prefix = store.prefix

        def floor_once(key: str) -> None:
            claim_script(keys=[prefix + key], args=[fingerprint, "t", 60.0, 86400.0, ""])
            settle_script(
                keys=[prefix + key], args=["complete", "t", 86400.0, encode(RESPONSE), ""]
            )

        name = RAW["redis"]

    def floor(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            floor_once(f"k{next(counter)}")
        return time.perf_counter() - started

    ops = KEYS_SQL if kind == "sqlite" else KEYS_FAST if kind == "memory" else ops_for(2000)
    label = {"memory": "memory", "sqlite": "SQLite", "postgres": "PostgreSQL", "redis": "Redis"}[
        kind
    ]
    config = {
        "sqlite": "WAL/FULL, 2 commits per key",
        "postgres": "synchronous_commit=on, 2 commits",
        "redis": "2 EVALSHA per key",
        "memory": "in process",
    }[kind]
    return [
        Case(f"idempotency claim+complete, {label}", "seawall", ours, ops, config),
        Case(f"idempotency claim+complete, {label}", name, floor, ops, config),
    ]


def _reachable(what: str, check: Callable[[], None]) -> bool:
    try:
        check()
    except Exception as error:
        print(f"{what} is not reachable ({error}); skipping its cases")
        return False
    return True


def run() -> list[Result]:
    """Measure every case: SQLite, then PostgreSQL and Redis when they answer."""
    results: list[Result] = []
    root = Path(
        tempfile.mkdtemp(prefix="seawall-outbox-bench-", dir=os.environ.get("BENCH_TMPDIR"))
    )
    backends: list[Backend] = []
    cleanups: list[Callable[[], None]] = []
    try:
        cases: list[Case] = []
        if "sqlite" in ENGINES:
            backends.append(sqlite_backend(root))
        if "postgres" in ENGINES:
            holder: list[Backend] = []
            if _reachable(f"PostgreSQL at {PG_URL}", lambda: holder.append(postgres_backend())):
                backends.extend(holder)
        for backend in backends:
            cases.extend(_outbox_cases(backend, root))
        if "memory" in ENGINES:
            cases.extend(_keys_cases("memory", "memory://", root, cleanups))
        if "sqlite" in ENGINES:
            cases.extend(_keys_cases("sqlite", f"sqlite:///{root / 'keys.db'}", root, cleanups))
        if any(backend.kind == "postgres" for backend in backends):
            cases.extend(_keys_cases("postgres", PG_URL, root, cleanups))
        if "redis" in ENGINES:

            def ping() -> None:
                import redis

                redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()

            if _reachable(f"Redis at {REDIS_URL}", ping):
                cases.extend(_keys_cases("redis", REDIS_URL, root, cleanups))
        results = measure(cases)
    finally:
        for step in reversed(cleanups):
            step()
        for backend in backends:
            backend.close()
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    measured = run()
    print_table("seawall outbox relay and idempotency keys beside raw-driver floors", measured)
    dump_json(measured)
