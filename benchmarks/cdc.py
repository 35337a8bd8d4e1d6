"""Change data capture: changes captured per second beside the raw write rate, one run.

Capture has to keep up with the writes it follows, so each engine is measured both ways:

* ``<engine>: write rate``: inserting rows, 100 per transaction. ``raw insert`` has no
  capture; ``seawall`` is the same insert with capture on (SQLite: the triggers write a
  change row each; PostgreSQL: a slot and publication exist, the WAL is the same).
  ``peer ÷ seawall`` below 1 is the write overhead of capturing.
* ``<engine>: capture rate``: ``poll(1000)`` + ``confirm`` until every change written
  before the timed part has been delivered (SQLite: read and delete the change rows;
  PostgreSQL: peek and decode the slot, advance it; the slot moves at most once a second
  and once at the end, as ``run`` does). ``raw insert`` is the row's write
  cost again, so ``peer ÷ seawall`` above 1 means capture outruns the writers.

SQLite is a file in WAL mode (``synchronous=NORMAL`` for both sides). PostgreSQL is a
throwaway cluster with ``wal_level=logical`` started for the run (the shared server runs
``wal_level=replica``); ``PG_LOGICAL_DSN`` points at a server of your own instead. When
neither is possible the PostgreSQL part is skipped with a note. The raw inserts go to a
second database, because a slot decodes all WAL of its own database. ``per op`` is per row.

    python benchmarks/cdc.py
    BENCH_SCALE=0.01 BENCH_REPS=1 python benchmarks/cdc.py   # smoke size
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))

import seawall
from _harness import Case, Result, dump_json, measure, ops_for, print_table
from seawall.engines.postgres import PostgresEngine
from seawall.engines.sqlite import SqliteEngine
from seawall.eventsourcing.cdc import ChangeCapture, capture

RAW = "raw insert (no capture)"
BATCH = 100
POLL = 1000


def _drain(cdc: ChangeCapture, count: int) -> None:
    seen = 0
    while seen < count:
        events = cdc.poll(POLL)
        if not events:
            raise RuntimeError(f"capture stopped after {seen} of {count} changes")
        seen += len(events)
        cdc.confirm(events[-1])


# -- SQLite --------------------------------------------------------------------------------------


def _sqlite_cases(root: Path, stack: contextlib.ExitStack) -> list[Case]:
    path = root / "cdc.db"
    engine = seawall.connect(f"sqlite:///{path}")
    assert isinstance(engine, SqliteEngine)
    stack.callback(engine.close)
    conn = sqlite3.connect(path, isolation_level=None)
    stack.callback(conn.close)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for table in ("plain", "captured"):
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)")
    cdc = capture(engine, ["captured"], slot="bench", snapshot=False)
    cdc.open()
    stack.callback(cdc.close)
    next_id = iter(range(1, 1 << 62))

    def insert(table: str, count: int, batch: int = BATCH) -> None:
        for start in range(0, count, batch):
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO {table} VALUES (?, 'tea', 1)",
                [(next(next_id),) for _ in range(min(batch, count - start))],
            )
            conn.execute("COMMIT")

    def timed_insert(table: str, batch: int = BATCH) -> Callable[[int], float]:
        def timer(count: int) -> float:
            started = time.perf_counter()
            insert(table, count, batch)
            elapsed = time.perf_counter() - started
            if table == "captured":
                _drain(cdc, count)  # keep the change table from growing between cases
            return elapsed

        return timer

    def capture_timer(count: int) -> float:
        insert("captured", count)
        started = time.perf_counter()
        _drain(cdc, count)
        return time.perf_counter() - started

    ops = ops_for(20_000)
    single = ops_for(5_000)
    config = "file, WAL, synchronous=NORMAL, 100 rows per transaction"
    one = "file, WAL, synchronous=NORMAL, 1 row per transaction"
    return [
        Case("sqlite: write rate", RAW, timed_insert("plain"), ops, config),
        Case("sqlite: write rate", "seawall", timed_insert("captured"), ops, config + ", triggers"),
        Case("sqlite: write rate, 1 row/tx", RAW, timed_insert("plain", 1), single, one),
        Case(
            "sqlite: write rate, 1 row/tx",
            "seawall",
            timed_insert("captured", 1),
            single,
            one + ", triggers",
        ),
        Case("sqlite: capture rate", RAW, timed_insert("plain"), ops, config),
        Case("sqlite: capture rate", "seawall", capture_timer, ops, f"poll({POLL}) + confirm"),
    ]


# -- PostgreSQL ----------------------------------------------------------------------------------


def _postgres_url(stack: contextlib.ExitStack) -> str | None:
    configured = os.environ.get("PG_LOGICAL_DSN")
    if configured:
        return configured
    from _pg_logical import pg_bin_dir, start_logical_postgres

    bin_dir = pg_bin_dir()
    if bin_dir is None:
        print("note: PostgreSQL server binaries are not installed and PG_LOGICAL_DSN is not set;")
        print("      the PostgreSQL capture cases are skipped")
        return None
    try:
        return stack.enter_context(start_logical_postgres(bin_dir))
    except Exception as error:  # any failure to start: report and go on with SQLite
        print(f"note: the throwaway wal_level=logical cluster did not start ({error});")
        print("      the PostgreSQL capture cases are skipped")
        return None


def _raw_engine(url: str, engine: PostgresEngine, stack: contextlib.ExitStack) -> PostgresEngine:
    """An engine on a second database, so that raw inserts add no WAL for the slots to read.

    A logical slot decodes every WAL record of its database, captured table or not; raw
    inserts in the same database would slow the capture cases down (see the docs).
    """
    name = f"seawall_cdc_raw_{uuid.uuid4().hex[:8]}"
    try:
        with engine.connection() as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except Exception as error:  # no CREATEDB right: share the database, and say so
        print(f"note: could not create a second database ({error}); raw inserts share it")
        return engine
    raw = seawall.connect(url.rsplit("/", 1)[0] + f"/{name}")
    assert isinstance(raw, PostgresEngine)

    def drop() -> None:
        raw.close()
        with engine.connection() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")

    stack.callback(drop)
    return raw


def _postgres_cases(url: str, stack: contextlib.ExitStack) -> list[Case]:
    engine = seawall.connect(url)
    assert isinstance(engine, PostgresEngine)
    stack.callback(engine.close)
    raw_engine = _raw_engine(url, engine, stack)
    suffix = uuid.uuid4().hex[:8]
    plain, captured = f"plain_{suffix}", f"captured_{suffix}"
    for db, table in ((raw_engine, plain), (engine, captured)):
        with db.connection() as conn:
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, item text, qty int)")
        stack.callback(_drop_table, db, table)
    captures: dict[str, ChangeCapture] = {}
    for plugin in ("pgoutput", "test_decoding"):
        cdc = capture(
            engine, [captured], slot=f"bench_{plugin}_{suffix}", plugin=plugin, snapshot=False
        )
        cdc.open()
        stack.callback(cdc.drop)
        captures[plugin] = cdc
    next_id = iter(range(1, 1 << 62))

    def insert(table: str, count: int) -> None:
        with (raw_engine if table == plain else engine).connection() as conn:
            for start in range(0, count, BATCH):
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.executemany(
                        f"INSERT INTO {table} VALUES (%s, 'tea', 1)",
                        [(next(next_id),) for _ in range(min(BATCH, count - start))],
                    )

    def insert_timer(table: str) -> Callable[[int], float]:
        def timer(count: int) -> float:
            started = time.perf_counter()
            insert(table, count)
            elapsed = time.perf_counter() - started
            if table == captured:
                for cdc in captures.values():
                    _drain(cdc, count)
            return elapsed

        return timer

    def capture_timer(plugin: str) -> Callable[[int], float]:
        def timer(count: int) -> float:
            insert(captured, count)
            others = [cdc for name, cdc in captures.items() if name != plugin]
            started = time.perf_counter()
            _drain(captures[plugin], count)
            captures[plugin].flush()
            elapsed = time.perf_counter() - started
            for cdc in others:
                _drain(cdc, count)
            return elapsed

        return timer

    ops = ops_for(20_000)
    config = "wal_level=logical, fsync=off, 100 rows per transaction"
    return [
        Case("postgres: write rate", RAW, insert_timer(plain), ops, config),
        Case("postgres: write rate", "seawall", insert_timer(captured), ops, config + ", 2 slots"),
        Case("postgres: capture rate (pgoutput)", RAW, insert_timer(plain), ops, config),
        Case("postgres: capture rate (pgoutput)", "seawall", capture_timer("pgoutput"), ops,
             f"peek binary + decode, poll({POLL}) + confirm"),
        Case("postgres: capture rate (test_decoding)", RAW, insert_timer(plain), ops, config),
        Case("postgres: capture rate (test_decoding)", "seawall", capture_timer("test_decoding"),
             ops, f"peek text + parse, poll({POLL}) + confirm"),
    ]  # fmt: skip


def _drop_table(engine: PostgresEngine, table: str) -> None:
    with engine.connection() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@contextlib.contextmanager
def _workspace() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="seawall-cdc-bench-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run() -> list[Result]:
    """Measure SQLite, then PostgreSQL when a wal_level=logical server can be had."""
    results: list[Result] = []
    with _workspace() as root, contextlib.ExitStack() as stack:
        results.extend(measure(_sqlite_cases(root, stack)))
        url = _postgres_url(stack)
        if url is not None:
            results.extend(measure(_postgres_cases(url, stack)))
    return results


def print_summary(results: list[Result]) -> None:
    """Captured changes per second beside the rate the same rows were written at."""
    groups: dict[str, dict[str, Result]] = {}
    for result in results:
        groups.setdefault(result.bench, {})[result.lib] = result
    print("capture keeps up when it delivers changes faster than plain writes produce them:")
    for bench, libs in groups.items():
        ours, raw = libs.get("seawall"), libs.get(RAW)
        if ours is None or raw is None:
            continue
        if "capture rate" in bench:
            print(
                f"  {bench}: {ours.ops_per_s:,.0f} changes/s captured vs {raw.ops_per_s:,.0f} "
                f"rows/s written ({ours.ops_per_s / raw.ops_per_s:,.1f}x)"
            )
        else:
            print(
                f"  {bench}: {ours.ops_per_s:,.0f} rows/s with capture vs {raw.ops_per_s:,.0f} "
                f"without ({raw.ns_per_op / ours.ns_per_op:,.2f}x the speed)"
            )


if __name__ == "__main__":
    measured = run()
    print_table("seawall change data capture (per row)", measured)
    print_summary(measured)
    dump_json(measured)
