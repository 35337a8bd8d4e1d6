"""Durable sagas: seawall's orchestrator beside DBOS Transact workflows, in one run.

    python benchmarks/workflows.py                           # ~1-2 minutes
    BENCH_SCALE=0.1 BENCH_REPS=3 python benchmarks/workflows.py   # quick look

Same work as /work/shared/peer-benchmarks/bench_dbos.py: a saga (a DBOS workflow) of 3
steps that return at once, run one after another from one thread; then the same from
4 threads at once. Each library checkpoints durably on the same engine:

* SQLite: seawall's log in WAL mode with ``synchronous=FULL`` (an fsync per commit);
  DBOS on its default SQLite system database (rollback journal, ``synchronous=FULL``).
  Both read back from the connections and printed.
* PostgreSQL: the same server for both (``fsync`` and ``synchronous_commit`` read back);
  DBOS gets a scratch database, seawall scratch tables, all dropped afterwards.

A seawall saga of n sequential steps costs n + 1 commits (the first also creates the
saga, each later one records a step's completion with the next step's start); the
count is measured through the log and printed. A raw one-row commit on the same
engine is the floor: sagas/s can never beat commits/s divided by commits per saga.
DBOS is a process-wide singleton, so it runs in a child process per engine.

Env: ``SEAWALL_BENCH_POSTGRES_URL`` (default: the test server), ``BENCH_TMPDIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Case, Result, dump_json, measure, ops_for, print_table, sync_timer

SAGAS = ops_for(300)
THREADS = 4
PG_URL = os.environ.get(
    "SEAWALL_BENCH_POSTGRES_URL",
    os.environ.get("SEAWALL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)
SEQUENTIAL = "saga of 3 steps, sequential"
CONCURRENT = f"saga of 3 steps, {THREADS} threads"
FLOOR = "one durable commit (floor)"


# ------------------------------------------------------------------------------- ours


def _saga() -> Any:
    from seawall.workflows import Saga, Step

    def undo(context: Any) -> None:
        return None

    return Saga(
        "bench",
        [
            Step("s1", lambda context: 1, undo),
            Step("s2", lambda context: context.results["s1"] + 1, undo),
            Step("s3", lambda context: context.results["s2"] + 1),
        ],
    )


class _CountingLog:
    """Counts the log writes (one commit each) of the sagas run through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.commits = 0
        self.kind = inner.kind
        self.supports_transactions = inner.supports_transactions
        self.blocking = inner.blocking

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create(self, *args: Any, **kwargs: Any) -> Any:
        self.commits += 1
        return self.inner.create(*args, **kwargs)

    def append(self, *args: Any, **kwargs: Any) -> Any:
        self.commits += 1
        return self.inner.append(*args, **kwargs)


def _commits_per_saga(log: Any) -> int:
    from seawall.workflows import SagaOrchestrator

    counting = _CountingLog(log)
    orchestrator = SagaOrchestrator(counting, [_saga()])  # type: ignore[arg-type]
    orchestrator.run("bench")
    return counting.commits


def _threaded(run_one: Callable[[], object]) -> Callable[[int], float]:
    def timer(n: int) -> float:
        share = [n // THREADS + (1 if index < n % THREADS else 0) for index in range(THREADS)]
        barrier = threading.Barrier(THREADS + 1)
        errors: list[BaseException] = []

        def work(count: int) -> None:
            barrier.wait()
            try:
                for _ in range(count):
                    run_one()
            except BaseException as exc:  # reported after the timing
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(count,)) for count in share]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        if errors:
            raise errors[0]
        return elapsed

    return timer


def _ours(engine_name: str, log: Any, floor: Callable[[], object], config: str) -> list[Case]:
    from seawall.workflows import SagaOrchestrator

    commits = _commits_per_saga(log)
    orchestrator = SagaOrchestrator(log, [_saga()])
    saga = orchestrator.sagas["bench"]

    def one() -> object:
        return orchestrator.run(saga)

    described = f"{config}; {commits} commits/saga (measured)"
    return [
        Case(f"{engine_name}: {SEQUENTIAL}", "seawall", sync_timer(one), SAGAS, described),
        Case(f"{engine_name}: {CONCURRENT}", "seawall", _threaded(one), SAGAS, described),
        Case(f"{engine_name}: {FLOOR}", "raw driver", sync_timer(floor), SAGAS, config),
    ]


def _sqlite_cases(root: str) -> tuple[list[Case], Callable[[], None]]:
    from seawall.workflows import SqliteSagaLog

    log = SqliteSagaLog(f"sqlite:///{Path(root) / 'seawall.db'}")
    durability = log.durability()
    config = (
        f"journal={durability['journal_mode']}, synchronous={durability['synchronous']} "
        f"(read back), SQLite {durability['sqlite_version']}"
    )
    floor_connection = sqlite3.connect(Path(root) / "floor.db", isolation_level=None)
    floor_connection.execute("PRAGMA journal_mode=WAL")
    floor_connection.execute("PRAGMA synchronous=FULL")
    floor_connection.execute("CREATE TABLE t (v INTEGER)")

    def floor() -> None:
        floor_connection.execute("BEGIN IMMEDIATE")
        floor_connection.execute("INSERT INTO t VALUES (1)")
        floor_connection.execute("COMMIT")

    def close() -> None:
        floor_connection.close()
        log.close()
        log.engine.close()

    return _ours("SQLite", log, floor, config), close


def _postgres_cases() -> tuple[list[Case], Callable[[], None]] | None:
    import seawall
    from seawall.errors import SeawallError
    from seawall.workflows import PostgresSagaLog

    try:
        engine = seawall.connect(PG_URL, max_size=THREADS + 2)
        prefix = f"bench_{uuid.uuid4().hex[:8]}_"
        log = PostgresSagaLog(engine, table_prefix=prefix)
    except (SeawallError, ImportError) as exc:
        print(f"note: PostgreSQL at {PG_URL} unavailable, skipping it ({exc})")
        return None
    durability = log.durability()
    config = (
        f"fsync={durability['fsync']}, synchronous_commit={durability['synchronous_commit']} "
        f"(read back), PostgreSQL {durability['server_version'].split()[0]}"
    )
    with engine.connection() as connection:  # type: ignore[attr-defined]
        connection.execute(f"CREATE TABLE {prefix}floor (v integer)")

    def floor() -> None:
        with engine.connection() as connection:  # type: ignore[attr-defined]
            connection.execute(f"INSERT INTO {prefix}floor VALUES (1)", prepare=True)

    def close() -> None:
        with engine.connection() as connection:  # type: ignore[attr-defined]
            connection.execute(f"DROP TABLE IF EXISTS {prefix}floor")
        log.drop_tables()
        engine.close()

    return _ours("PostgreSQL", log, floor, config), close


# ------------------------------------------------------------------------------- DBOS


def _dbos_worker(backend: str, url: str) -> None:
    """In a child process: one DBOS instance serving timing requests on stdin.

    It prints its durability settings, then answers each ``sequential N`` or
    ``concurrent N`` line with the seconds N workflows took, so the parent can
    interleave DBOS's repetitions with seawall's (DBOS is a process-wide singleton).
    """
    import logging

    import sqlalchemy as sa
    from dbos import DBOS, DBOSConfig

    logging.getLogger("dbos").setLevel(logging.WARNING)

    @DBOS.step()
    def s1() -> int:
        return 1

    @DBOS.step()
    def s2(x: int) -> int:
        return x + 1

    @DBOS.step()
    def s3(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    def workflow() -> int:
        return s3(s2(s1()))

    config: DBOSConfig = {
        "name": "seawall-bench",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        assert workflow() == 3
        from dbos import _dbos

        system_engine = _dbos._dbos_global_instance._sys_db.engine  # type: ignore[union-attr]
        with system_engine.connect() as connection:
            if backend == "sqlite":
                level = connection.execute(sa.text("PRAGMA synchronous")).scalar()
                journal = connection.execute(sa.text("PRAGMA journal_mode")).scalar()
                names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
                durability = f"journal={journal}, synchronous={names.get(level, level)} (read back)"
            else:
                settings = {
                    name: connection.execute(sa.text(f"SHOW {name}")).scalar()
                    for name in ("fsync", "synchronous_commit")
                }
                durability = (
                    f"fsync={settings['fsync']}, synchronous_commit="
                    f"{settings['synchronous_commit']} (read back)"
                )
        from importlib.metadata import version

        print(json.dumps({"durability": durability, "version": version("dbos")}), flush=True)
        timers = {"sequential": sync_timer(workflow), "concurrent": _threaded(workflow)}
        for line in sys.stdin:
            mode, count = line.split()
            print(timers[mode](int(count)), flush=True)
    finally:
        DBOS.destroy()


class _DbosWorker:
    """The parent's handle on one DBOS worker process."""

    def __init__(self, backend: str, url: str) -> None:
        self.errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--dbos-worker", backend, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )
        header = self._line()
        self.config = f"{header['durability']}, dbos {header['version']}"

    def _line(self) -> Any:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                self.process.wait(timeout=30)
                self.errors.seek(0)
                raise RuntimeError(f"the DBOS worker died: {self.errors.read()[-1500:]!r}")
            try:
                return json.loads(line)
            except ValueError:
                continue  # a stray line from a library

    def timer(self, mode: str) -> Callable[[int], float]:
        def timed(n: int) -> float:
            assert self.process.stdin is not None
            self.process.stdin.write(f"{mode} {n}\n")
            self.process.stdin.flush()
            return float(self._line())

        return timed

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.errors.close()


def _dbos_cases(
    engine_name: str, backend: str, url: str, closers: list[Callable[[], None]]
) -> list[Case]:
    try:
        worker = _DbosWorker(backend, url)
    except RuntimeError as exc:
        print(f"note: DBOS on {engine_name} could not start: {exc}")
        return []
    closers.append(worker.close)
    return [
        Case(
            f"{engine_name}: {SEQUENTIAL}", "dbos", worker.timer("sequential"), SAGAS, worker.config
        ),
        Case(
            f"{engine_name}: {CONCURRENT}", "dbos", worker.timer("concurrent"), SAGAS, worker.config
        ),
    ]


def _dbos_postgres_database(closers: list[Callable[[], None]]) -> str:
    """A scratch database for DBOS's system tables (dropped by a closer); its URL."""
    import psycopg
    from psycopg import conninfo

    parts = conninfo.conninfo_to_dict(PG_URL)
    database = f"seawall_bench_dbos_{os.getpid()}"
    admin = psycopg.connect(PG_URL, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {database}")
    admin.execute(f"CREATE DATABASE {database}")

    def drop() -> None:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.close()

    closers.append(drop)
    user = parts.get("user", "postgres")
    password = f":{parts['password']}" if parts.get("password") else ""
    return (
        f"postgresql://{user}{password}@{parts.get('host', '127.0.0.1')}:"
        f"{parts.get('port', 5432)}/{database}"
    )


# -------------------------------------------------------------------------------- main


def run() -> list[Result]:
    """Ours and DBOS on SQLite and PostgreSQL, every repetition interleaved across all cases."""
    root = tempfile.mkdtemp(prefix="seawall-saga-bench-", dir=os.environ.get("BENCH_TMPDIR"))
    closers: list[Callable[[], None]] = []
    try:
        try:
            import dbos  # noqa: F401

            with_dbos = True
        except ImportError:
            print("note: dbos is not installed (pip install dbos): DBOS rows skipped")
            with_dbos = False
        cases, close = _sqlite_cases(root)
        closers.append(close)
        if with_dbos:
            sqlite_url = f"sqlite:///{Path(root) / 'dbos_sys.sqlite'}"
            cases[1:1] = _dbos_cases("SQLite", "sqlite", sqlite_url, closers)
        postgres = _postgres_cases()
        if postgres is not None:
            closers.append(postgres[1])
            ours = postgres[0]
            if with_dbos:
                url = _dbos_postgres_database(closers)
                ours[1:1] = _dbos_cases("PostgreSQL", "postgres", url, closers)
            cases.extend(ours)
        results = measure(cases)
        order = {case.bench: index for index, case in enumerate(cases)}
        results.sort(key=lambda result: (order[result.bench], result.lib != "seawall"))
        return results
    finally:
        for closer in reversed(closers):
            closer()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    """Print the table, the targets (5x DBOS on each engine) and write JSON if asked."""
    results = run()
    print_table("seawall workflows: durable sagas vs DBOS Transact workflows", results)
    dump_json(results)

    from rich.console import Console
    from rich.table import Table

    table = Table(title="targets (issue 5: saga orchestration)")
    for column in ("target", "measured (seawall ÷ DBOS sagas/s)", "status"):
        table.add_column(column)
    by_key = {(result.bench, result.lib): result for result in results}
    for engine_name in ("SQLite", "PostgreSQL"):
        for mode in (SEQUENTIAL, CONCURRENT):
            bench = f"{engine_name}: {mode}"
            ours, peer = by_key.get((bench, "seawall")), by_key.get((bench, "dbos"))
            if ours is None or peer is None:
                continue
            ratio = peer.ns_per_op / ours.ns_per_op
            table.add_row(
                f">= 5x DBOS, {bench}", f"{ratio:.1f}x", "met" if ratio >= 5 else "NOT met"
            )
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--dbos-worker":
        _dbos_worker(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
