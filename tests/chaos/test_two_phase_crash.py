"""Kill -9 the two-phase coordinator at random points; after recovery every participant agrees.

Each round starts a real coordinator process that first recovers whatever the previous
(killed) one left in doubt, then runs new transactions across four participants: two
PostgreSQL databases of a private cluster (``PREPARE TRANSACTION``) and two SQLite files
(prepared redo rows); its decision log is a SQLite file. Every transaction inserts one
row per participant; every fourth one fails at its last participant and must abort. The
test SIGKILLs the process after a random delay, and the process also kills itself with
SIGKILL at random protocol points (after a prepare, after the decision is logged, between
two commits), so crashes land in every phase. Finally the test recovers in-process and
checks, for every transaction ever begun: all four participants report the same outcome,
their rows match it, nothing is left in doubt, and every committed one is a commit in
the log.

Small by default; ``SEAWALL_CHAOS_SCALE=10`` runs ten times as many transactions.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _pg_prepared import database_url, pg_prepared_url  # noqa: F401  (fixture)

pytestmark = [pytest.mark.chaos, pytest.mark.engine("postgres")]

SCALE = float(os.environ.get("SEAWALL_CHAOS_SCALE", "1"))
TRANSACTIONS = max(10, int(40 * SCALE))
BATCH = 12
MAX_ROUNDS = 20 + TRANSACTIONS

CHILD = r"""
import os, random, signal, sys
from seawall.workflows.two_phase import (
    PostgresParticipant, SqliteDecisionLog, SqliteParticipant, TransactionAbortedError,
    TwoPhaseCoordinator,
)

def build(pg_a, pg_b, folder, table, self_kill):
    rng = random.Random()

    def maybe_die(point):
        if self_kill and rng.random() < self_kill:
            os.kill(os.getpid(), signal.SIGKILL)

    class Pg(PostgresParticipant):
        def prepare(self, txid, work=None):
            vote = super().prepare(txid, work)
            maybe_die("prepared")
            return vote
        def commit(self, txid):
            super().commit(txid)
            maybe_die("committed one")

    class Lite(SqliteParticipant):
        def prepare(self, txid, work=None):
            vote = super().prepare(txid, work)
            maybe_die("prepared")
            return vote
        def commit(self, txid):
            super().commit(txid)
            maybe_die("committed one")

    class Log(SqliteDecisionLog):
        def decide(self, txid, decision, **kwargs):
            stored = super().decide(txid, decision, **kwargs)
            maybe_die("decided")
            return stored

    participants = [
        Pg(pg_a, name="pg-a"), Pg(pg_b, name="pg-b"),
        Lite(f"sqlite:///{folder}/lite_a.db", name="lite-a"),
        Lite(f"sqlite:///{folder}/lite_b.db", name="lite-b"),
    ]
    for lite in participants[2:]:
        with lite.transaction() as tx:
            tx.execute(f"CREATE TABLE IF NOT EXISTS {table} (tx INTEGER PRIMARY KEY)")
    log = Log(f"sqlite:///{folder}/coordinator.db")
    return TwoPhaseCoordinator(log, participants, name="chaos", delivery_timeout=5.0), participants

def work_for(participants, table, index):
    def pg(transaction):
        transaction.execute(f"INSERT INTO {table} (tx) VALUES (%s)", [index])
    def lite(staged):
        staged.lock(f"tx-{index}")
        staged.execute(f"INSERT INTO {table} (tx) VALUES (?)", [index])
    def failing(staged):
        raise RuntimeError("refused by design")
    works = [pg, pg, lite, failing if index % 4 == 0 else lite]
    return dict(zip(participants, works))

if __name__ == "__main__":
    pg_a, pg_b, folder, table = sys.argv[1:5]
    first, count, self_kill = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
    coordinator, participants = build(pg_a, pg_b, folder, table, self_kill)
    print("ready", flush=True)
    coordinator.recover()
    for index in range(first, first + count):
        print(f"begin {index}", flush=True)
        try:
            coordinator.run(work_for(participants, table, index), key=f"t{index}")
        except TransactionAbortedError:
            pass
"""


def _pg_rows(url: str, table: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {int(row[0]) for row in conn.execute(f"SELECT tx FROM {table}")}


@pytest.fixture
def setup(pg_prepared_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:  # noqa: F811
    table = f"chaos_{uuid.uuid4().hex[:8]}"
    urls = [database_url(pg_prepared_url, name) for name in ("twopc_a", "twopc_b")]
    for url in urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {table} (tx int PRIMARY KEY)")
    try:
        yield {"urls": urls, "table": table, "folder": tmp_path}
    finally:
        for url in urls:
            with psycopg.connect(url, autocommit=True) as conn:
                for (gid,) in conn.execute(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
                ).fetchall():
                    conn.execute(f"ROLLBACK PREPARED '{gid}'")
                conn.execute(f"DROP TABLE {table}")


def test_killed_coordinators_leave_every_participant_agreeing(setup: dict[str, Any]) -> None:
    from seawall.workflows.two_phase import Decision, ParticipantState

    url_a, url_b = setup["urls"]
    table: str = setup["table"]
    folder: Path = setup["folder"]
    script = folder / "coordinator.py"
    script.write_text(CHILD)
    rng = random.Random(int(os.environ.get("SEAWALL_CHAOS_SEED", "0")) or None)
    begun: set[int] = set()
    kills = 0
    started = time.monotonic()
    round_number = 0
    next_index = 0
    while next_index < TRANSACTIONS and round_number < MAX_ROUNDS:
        count = min(BATCH, TRANSACTIONS - next_index)
        arguments = [url_a, url_b, str(folder), table, str(next_index), str(count), "0.03"]
        child = subprocess.Popen(
            [sys.executable, str(script), *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        round_number += 1
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        try:
            child.wait(timeout=rng.uniform(0.05, 0.5))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
        output, errors = child.communicate(timeout=60)
        if child.returncode == -signal.SIGKILL:
            kills += 1
        assert child.returncode in (0, -signal.SIGKILL), errors[-3000:]
        indices = [int(line.split()[1]) for line in output.splitlines() if line.startswith("begin")]
        begun.update(indices)
        if indices:
            next_index = max(indices) + 1
    assert time.monotonic() - started < 600

    namespace: dict[str, Any] = {"__name__": "chaos_participants"}
    exec(compile(CHILD, str(script), "exec"), namespace)
    coordinator, participants = namespace["build"](url_a, url_b, str(folder), table, 0.0)
    try:
        coordinator.recover()
        log = coordinator.log
        assert log.pending("chaos") == []
        rows = {
            "pg-a": _pg_rows(url_a, table),
            "pg-b": _pg_rows(url_b, table),
        }
        for lite in participants[2:]:
            with lite.transaction() as tx:
                rows[lite.name] = {int(r[0]) for r in tx.execute(f"SELECT tx FROM {table}")}
        committed = 0
        for participant in participants:
            assert participant.in_doubt() == [], participant.name
        for index in sorted(begun):
            txid = f"chaos:t{index}"
            states = {p.name: p.status(txid) for p in participants}
            assert len(set(states.values())) == 1, (txid, states)
            outcome = next(iter(states.values()))
            assert outcome in (ParticipantState.COMMITTED, ParticipantState.ABORTED)
            for name, present in rows.items():
                assert (index in present) == (outcome is ParticipantState.COMMITTED), (txid, name)
            if outcome is ParticipantState.COMMITTED:
                committed += 1
                assert index % 4 != 0, txid
                assert log.decision(txid) is Decision.COMMIT, txid
            else:
                assert log.decision(txid) in (None, Decision.ABORT), txid
        assert kills >= min(3, round_number - 1)
        assert committed > 0
        print(
            f"{len(begun)} transactions ({committed} committed), {round_number} processes, "
            f"{kills} kills"
        )
    finally:
        coordinator.log.close()
        for participant in participants:
            participant.close()
