"""Topics with consumer groups on SQLite, PostgreSQL and Redis, beside each engine's floor.

    python benchmarks/messaging_topics.py                        # ~1 minute
    BENCH_SCALE=0.05 BENCH_REPS=1 python benchmarks/messaging_topics.py   # quick look

Every case runs in one process, interleaved per repetition (``_harness.measure``);
messages are 100-byte JSON strings, one thread.

* publish: ``topic.publish(body)``, one message per call (one commit each);
* receive+ack, 1 group: publish N (untimed), then ``group.receive(100)`` and
  ``group.ack`` each message until the group is empty;
* receive+ack, 2 groups: the same N drained by two groups (cost per message, both
  groups included).

Peers, run in the same process on the same server as the limit each engine sets:

* SQLite: a plain ``INSERT`` + commit loop at the same ``synchronous`` level
  (FULL for publishes; receives and acks commit at NORMAL, so NORMAL is shown too);
* PostgreSQL: the ``SELECT 1`` round-trip rate (no store can beat one round trip);
* Redis: raw redis-py ``XADD`` for publishes, ``XREADGROUP COUNT 100`` + one ``XACK``
  per message for receive+ack.

PostgreSQL and Redis are skipped when not reachable (``SEAWALL_BENCH_POSTGRES_URL``,
``SEAWALL_BENCH_REDIS_URL``; the standard local ports by default).
"""

from __future__ import annotations

import socket
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import os

from _harness import Case, Result, dump_json, measure, ops_for, print_table, sync_timer

MESSAGES = ops_for(2_000)
_TOPICS: list[str] = []
"""Names of the topics this run opened (deleted from Redis at the end)."""
BODY = "x" * 98  # 100 bytes as JSON
POSTGRES_URL = os.environ.get(
    "SEAWALL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SEAWALL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str, port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or port), 1):
            return True
    except OSError:
        return False


def _drain_timer(topic: Any, groups: list[Any]) -> Callable[[int], float]:
    """Publish n messages (untimed), then time every group receiving and acking them all."""
    import time

    def timer(n: int) -> float:
        for start in range(0, n, 500):
            topic.publish_many([BODY] * min(500, n - start))
        started = time.perf_counter()
        for group in groups:
            while True:
                messages = group.receive(100)
                if not messages:
                    break
                for message in messages:
                    group.ack(message)
        return time.perf_counter() - started

    return timer


def _seawall_cases(engine: Any, label: str, **options: Any) -> list[Case]:
    from seawall.messaging.topic import open_topic

    name = f"bench-{uuid.uuid4().hex[:8]}"
    _TOPICS.extend([name, name + "-p", name + "-2"])
    topic = open_topic(engine, name, **options)
    publish = open_topic(engine, name + "-p", **options)
    one = [topic.group("solo")]
    other = open_topic(engine, name + "-2", **options)
    two = [other.group("first"), other.group("second")]
    return [
        Case(f"{label} publish", "seawall", sync_timer(lambda: publish.publish(BODY)), MESSAGES),
        Case(f"{label} receive+ack, 1 group", "seawall", _drain_timer(topic, one), MESSAGES),
        Case(f"{label} receive+ack, 2 groups", "seawall", _drain_timer(other, two), MESSAGES),
    ]


def _sqlite_cases(directory: str) -> tuple[list[Case], Callable[[], None]]:
    import seawall

    engine = seawall.connect(f"sqlite:///{directory}/topics.db")
    cases = _seawall_cases(engine, "sqlite")
    connections: list[sqlite3.Connection] = []

    def insert_loop(level: str) -> Callable[[], None]:
        conn = sqlite3.connect(f"{directory}/plain-{level}.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={level}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
        connections.append(conn)
        payload = BODY.encode()

        def insert() -> None:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (body) VALUES (?)", (payload,))
            conn.execute("COMMIT")

        return insert

    cases.insert(
        1,
        Case(
            "sqlite publish",
            "sqlite3 INSERT+commit",
            sync_timer(insert_loop("FULL")),
            MESSAGES,
            "synchronous=FULL (the floor)",
        ),
    )
    cases.append(
        Case(
            "sqlite receive+ack, 1 group",
            "sqlite3 INSERT+commit",
            sync_timer(insert_loop("NORMAL")),
            MESSAGES,
            "synchronous=NORMAL (the floor)",
        )
    )

    def close() -> None:
        for conn in connections:
            conn.close()
        engine.close()

    return cases, close


def _postgres_cases() -> tuple[list[Case], Callable[[], None]]:
    import psycopg

    import seawall

    schema = f"seawall_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    engine = seawall.connect(f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}")
    cases = _seawall_cases(engine, "postgres")
    raw = psycopg.connect(POSTGRES_URL, autocommit=True)
    select_one = sync_timer(lambda: raw.execute("SELECT 1").fetchall())
    cases.insert(
        1,
        Case(
            "postgres publish",
            "psycopg SELECT 1",
            select_one,
            MESSAGES,
            "one round trip (the floor)",
        ),
    )
    cases.append(
        Case(
            "postgres receive+ack, 1 group",
            "psycopg SELECT 1",
            select_one,
            MESSAGES,
            "one round trip (the floor)",
        )
    )

    def close() -> None:
        raw.close()
        engine.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    return cases, close


def _redis_cases() -> tuple[list[Case], Callable[[], None]]:
    import time

    import redis

    import seawall
    from seawall.messaging.topic.redis import forget_topic

    engine = seawall.connect(REDIS_URL)
    cases = _seawall_cases(engine, "redis")
    client = redis.Redis.from_url(REDIS_URL)
    stream = f"seawall:bench:raw:{uuid.uuid4().hex[:8]}"
    client.xgroup_create(stream, "g", id="0", mkstream=True)
    payload = BODY.encode()

    def raw_drain(n: int) -> float:
        for start in range(0, n, 500):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(500, n - start)):
                pipe.xadd(stream, {"b": payload})
            pipe.execute()
        started = time.perf_counter()
        while True:
            read = client.xreadgroup("g", "c", {stream: ">"}, count=100)
            if not read or not read[0][1]:
                break
            for entry_id, _ in read[0][1]:
                client.xack(stream, "g", entry_id)
        return time.perf_counter() - started

    cases.insert(
        1,
        Case(
            "redis publish",
            "redis-py XADD",
            sync_timer(lambda: client.xadd(stream + ":p", {"b": payload})),
            MESSAGES,
            "one round trip (the floor)",
        ),
    )
    cases.append(
        Case(
            "redis receive+ack, 1 group",
            "redis-py XREADGROUP+XACK",
            raw_drain,
            MESSAGES,
            "no per-key order, no dead letters",
        )
    )

    def close() -> None:
        client.delete(stream, stream + ":p")
        client.close()
        for name in _TOPICS:
            forget_topic(engine, name)
        engine.close()

    return cases, close


def main() -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMPDIR")) as directory:
        sections: list[tuple[list[Case], Callable[[], None]]] = [_sqlite_cases(directory)]
        if _reachable(POSTGRES_URL, 5432):
            sections.append(_postgres_cases())
        else:
            print(f"PostgreSQL at {POSTGRES_URL} unreachable: skipped")
        if _reachable(REDIS_URL, 6379):
            sections.append(_redis_cases())
        else:
            print(f"Redis at {REDIS_URL} unreachable: skipped")
        try:
            for cases, _ in sections:
                results.extend(measure(cases))
        finally:
            for _, close in sections:
                close()
    print_table(f"Topics: {MESSAGES} messages of 100 bytes per case", results)
    dump_json(results)
    return results


if __name__ == "__main__":
    main()
