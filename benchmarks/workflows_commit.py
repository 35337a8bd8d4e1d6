"""Two-phase commit: seawall's coordinator beside the same statements issued by hand, one run.

    python benchmarks/workflows_commit.py
    BENCH_SCALE=0.01 BENCH_REPS=1 python benchmarks/workflows_commit.py   # quick look

Each transaction inserts one row in each of two participants, one transaction after
another from one thread:

* ``2 SQLite files``: seawall's coordinator with a SQLite decision log and two
  ``SqliteParticipant`` s (WAL, ``synchronous=FULL``, read back). The floor (``by hand``)
  does the participants' own commits with no log and no coordinator: per file one
  transaction that stores the prepared row, then one that applies the insert and deletes it.
* ``2 PostgreSQL databases``: two databases of a throwaway cluster started for the run
  (``max_prepared_transactions=20``; the shared server has it at 0) and a decision log in
  a third. The floor issues ``BEGIN; INSERT; PREPARE TRANSACTION`` on both, then
  ``COMMIT PREPARED`` on both, by hand, with no log. The cluster runs with ``fsync=off``
  (throwaway data): commits cost CPU and round trips here, not disk flushes.

Commits per transaction are counted through wrappers and printed: ours adds the
decision (written before any participant commits) and the completion mark to the
participants' prepare and commit. ``SEAWALL_BENCH_PG_PREPARED_URL`` points at a server
of your own (``max_prepared_transactions`` > 0, databases ``twopc_a`` and ``twopc_b``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))

from _harness import Case, Result, dump_json, measure, ops_for, print_table, sync_timer

TRANSACTIONS = ops_for(400)
OURS = "seawall"
FLOOR = "by hand (no log)"


class _Counting:
    """Counts the durable writes (one commit each) of a log or participant."""

    def __init__(self, inner: Any, methods: tuple[str, ...], counter: list[int]) -> None:
        self._inner = inner
        self._methods = methods
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name in self._methods:

            def counted(*args: Any, **kwargs: Any) -> Any:
                self._counter[0] += 1
                return attribute(*args, **kwargs)

            return counted
        return attribute


def _commits_per_transaction(
    log: Any, participants: list[Any], work: Callable[[], dict[Any, Any]]
) -> int:
    from seawall.workflows.two_phase import TwoPhaseCoordinator

    counter = [0]
    counted_log = _Counting(log, ("decide", "complete"), counter)
    counted = [_Counting(p, ("prepare", "commit", "abort"), counter) for p in participants]
    coordinator = TwoPhaseCoordinator(counted_log, counted, name="count")  # type: ignore[arg-type]
    mapping = work()
    coordinator.run({counted[participants.index(p)]: item for p, item in mapping.items()})
    return counter[0]


# ------------------------------------------------------------------------------ SQLite


def _sqlite_cases(root: Path, stack: contextlib.ExitStack) -> list[Case]:
    from seawall.workflows.two_phase import (
        SqliteDecisionLog,
        SqliteParticipant,
        StagedWrites,
        TwoPhaseCoordinator,
    )

    participants = [SqliteParticipant(f"sqlite:///{root / f'{name}.db'}") for name in ("a", "b")]
    log = SqliteDecisionLog(f"sqlite:///{root / 'coordinator.db'}")
    for closeable in (log, *participants):
        stack.callback(closeable.close)
    for participant in participants:
        with participant.transaction() as tx:
            tx.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, v TEXT)")
    counter = iter(range(1, 1 << 62))

    def work() -> dict[Any, Any]:
        row = next(counter)

        def insert(staged: StagedWrites) -> None:
            staged.lock(f"row-{row}")
            staged.execute("INSERT INTO rows (id, v) VALUES (?, 'x')", [row])

        return dict.fromkeys(participants, insert)

    commits = _commits_per_transaction(log, participants, work)
    coordinator = TwoPhaseCoordinator(log, participants, name="bench")

    def ours() -> None:
        coordinator.run(work())

    floors = []
    for name in ("floor_a", "floor_b"):
        conn = sqlite3.connect(root / f"{name}.db", isolation_level=None)
        stack.callback(conn.close)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("CREATE TABLE prepared (txid TEXT PRIMARY KEY, statements TEXT)")
        floors.append(conn)
    floor_counter = iter(range(1, 1 << 62))

    def by_hand() -> None:
        row = next(floor_counter)
        txid = f"t{row}"
        statement = json.dumps([["INSERT INTO rows (id, v) VALUES (?, 'x')", [row]]])
        for conn in floors:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO prepared VALUES (?, ?)", (txid, statement))
            conn.execute("COMMIT")
        for conn in floors:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO rows (id, v) VALUES (?, 'x')", (row,))
            conn.execute("DELETE FROM prepared WHERE txid = ?", (txid,))
            conn.execute("COMMIT")

    synchronous = participants[0]._db.get().execute("PRAGMA synchronous").fetchone()[0]
    config = (
        f"WAL, synchronous={ {1: 'NORMAL', 2: 'FULL'}.get(synchronous, synchronous) } (read back)"
    )
    bench = "2 SQLite files"
    return [
        Case(bench, OURS, sync_timer(ours), TRANSACTIONS, f"{config}; {commits} commits/tx"),
        Case(bench, FLOOR, sync_timer(by_hand), TRANSACTIONS, f"{config}; 4 commits/tx"),
    ]


# -------------------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def _cluster() -> Iterator[str | None]:
    configured = os.environ.get("SEAWALL_BENCH_PG_PREPARED_URL")
    if configured:
        yield configured
        return
    from _pg_prepared import pg_bin_dir, start_prepared_postgres

    bin_dir = pg_bin_dir()
    if bin_dir is None:
        print("note: PostgreSQL binaries (initdb, pg_ctl) missing, skipping PostgreSQL")
        yield None
        return
    try:
        with start_prepared_postgres(bin_dir) as url:
            yield url
    except RuntimeError as exc:
        print(f"note: the throwaway PostgreSQL did not start, skipping it ({exc})")
        yield None


def _postgres_cases(url: str, stack: contextlib.ExitStack) -> list[Case]:
    import psycopg
    from psycopg import sql

    from _pg_prepared import database_url
    from seawall.engines import Transaction
    from seawall.workflows.two_phase import (
        PostgresDecisionLog,
        PostgresParticipant,
        TwoPhaseCoordinator,
    )

    table = f"bench_{uuid.uuid4().hex[:8]}"
    urls = [database_url(url, name) for name in ("twopc_a", "twopc_b")]
    connections = [psycopg.connect(u, autocommit=True) for u in urls]
    for conn in connections:
        stack.callback(conn.close)
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, v text)")
    participants = [PostgresParticipant(u) for u in urls]
    log = PostgresDecisionLog(url, table_prefix=f"{table}_")
    stack.callback(log.close)
    stack.callback(log.drop_tables)
    for participant in participants:
        stack.callback(participant.close)
    counter = iter(range(1, 1 << 62))
    insert = f"INSERT INTO {table} (id, v) VALUES (%s, 'x')"

    def work() -> dict[Any, Any]:
        row = next(counter)

        def run(transaction: Transaction) -> None:
            transaction.connection.execute(insert, (row,), prepare=True)

        return dict.fromkeys(participants, run)

    commits = _commits_per_transaction(log, participants, work)
    coordinator = TwoPhaseCoordinator(log, participants, name="bench")

    def ours() -> None:
        coordinator.run(work())

    floor_counter = iter(range(1 << 40, 1 << 62))

    def by_hand() -> None:
        row = next(floor_counter)
        gids = [sql.Literal(f"floor|{n}|{row}") for n in range(len(connections))]
        for conn, gid in zip(connections, gids, strict=True):
            conn.execute("BEGIN")
            conn.execute(insert, (row,), prepare=True)
            conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(gid))
        for conn, gid in zip(connections, gids, strict=True):
            conn.execute(sql.SQL("COMMIT PREPARED {}").format(gid))

    settings = (
        connections[0]
        .execute(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
            " current_setting('server_version')"
        )
        .fetchone()
    )
    assert settings is not None
    config = (
        f"fsync={settings[0]}, synchronous_commit={settings[1]} (read back), "
        f"PostgreSQL {settings[2]}"
    )
    bench = "2 PostgreSQL databases"
    return [
        Case(bench, OURS, sync_timer(ours), TRANSACTIONS, f"{config}; {commits} commits/tx"),
        Case(bench, FLOOR, sync_timer(by_hand), TRANSACTIONS, f"{config}; 4 commits/tx"),
    ]


def run() -> list[Result]:
    """Measure both engines; returns the results."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="seawall-bench-2pc-") as folder:
        with contextlib.ExitStack() as stack:
            results.extend(measure(_sqlite_cases(Path(folder), stack)))
        with _cluster() as url:
            if url is not None:
                with contextlib.ExitStack() as stack:
                    results.extend(measure(_postgres_cases(url, stack)))
    return results


def main() -> int:
    """Print the table (``peer ÷ seawall`` below 1: the cost of the log) and write JSON if asked."""
    started = time.perf_counter()
    results = run()
    print_table("seawall two-phase commit: transactions across two participants", results)
    dump_json(results)
    print(
        f"done in {time.perf_counter() - started:.1f}s; ours writes the decision before any "
        "commit and marks it complete after, the floor has no log and cannot recover"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
