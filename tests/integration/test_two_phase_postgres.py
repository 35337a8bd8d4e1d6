"""Two-phase commit on real PostgreSQL databases: PREPARE TRANSACTION, crashes, recovery, blocking.

Runs on a private cluster with ``max_prepared_transactions=20`` (``tests/_pg_prepared.py``);
the shared server (``max_prepared_transactions=0``) only shows the clear refusal.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _engines import require_engine
from _pg_prepared import database_url, pg_prepared_url  # noqa: F401  (fixture)
from seawall.engines import Transaction
from seawall.errors import ConfigurationError
from seawall.workflows.two_phase import (
    Decision,
    HeuristicOutcomeError,
    ParticipantState,
    PostgresDecisionLog,
    PostgresParticipant,
    SqliteParticipant,
    StagedWrites,
    TransactionAbortedError,
    TwoPhaseCoordinator,
    Vote,
    resolve_in_doubt,
)

pytestmark = pytest.mark.engine("postgres")


class Crash(BaseException):
    """Stands for kill -9 of the coordinator."""


class CrashOnCommit(PostgresParticipant):
    crash = True

    def commit(self, txid: str) -> None:
        if self.crash:
            raise Crash
        super().commit(txid)


def _rollback_leftovers(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        gids = [row[0] for row in conn.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
        )]  # fmt: skip
        for gid in gids:
            conn.execute(f"ROLLBACK PREPARED '{gid}'")


@pytest.fixture
def databases(pg_prepared_url: str) -> Iterator[tuple[str, str, str]]:  # noqa: F811
    """Two database URLs with an ``accounts`` table each, and the table's unique name."""
    table = f"accounts_{uuid.uuid4().hex[:8]}"
    urls = (database_url(pg_prepared_url, "twopc_a"), database_url(pg_prepared_url, "twopc_b"))
    for url in urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, cents int NOT NULL)")
            conn.execute(f"INSERT INTO {table} VALUES ('ada', 100)")
    yield urls[0], urls[1], table
    for url in urls:
        _rollback_leftovers(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")


def _cents(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT cents FROM {table} WHERE id = 'ada'").fetchone()
        assert row is not None
        return int(row[0])


def _move(table: str, cents: int) -> Any:
    def work(transaction: Transaction) -> None:
        transaction.execute(f"UPDATE {table} SET cents = cents + %s WHERE id = 'ada'", [cents])

    return work


def test_the_shared_server_without_prepared_transactions_is_refused_clearly() -> None:
    url = require_engine("postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW max_prepared_transactions").fetchone()
    if row is None or int(row[0]) > 0:
        pytest.skip("the test server allows prepared transactions")
    with pytest.raises(ConfigurationError, match="max_prepared_transactions = 0"):
        PostgresParticipant(url)


def test_one_transaction_commits_across_two_databases_and_a_sqlite_file(
    databases: tuple[str, str, str], tmp_path: Path
) -> None:
    url_a, url_b, table = databases
    a = PostgresParticipant(url_a)
    b = PostgresParticipant(url_b)
    ledger = SqliteParticipant(f"sqlite:///{tmp_path / 'ledger.db'}")
    with ledger.transaction() as tx:
        tx.execute("CREATE TABLE moves (id TEXT PRIMARY KEY, cents INTEGER)")

    def record(staged: StagedWrites) -> None:
        staged.lock("move-1")
        staged.execute("INSERT INTO moves VALUES ('move-1', 30)")

    log = PostgresDecisionLog(url_a, table_prefix=f"t{uuid.uuid4().hex[:8]}_")
    coordinator = TwoPhaseCoordinator(log, [a, b, ledger], name="bank")
    try:
        assert a.name == "twopc_a"
        result = coordinator.run(
            {a: _move(table, -30), b: _move(table, 30), ledger: record}, key="move-1"
        )
        assert result.committed
        assert (_cents(url_a, table), _cents(url_b, table)) == (70, 130)
        for participant in (a, b, ledger):
            assert participant.status("bank:move-1") is ParticipantState.COMMITTED
            assert participant.in_doubt() == []
        record_ = log.load("bank:move-1")
        assert record_ is not None
        assert record_.completed
    finally:
        log.drop_tables()
        for closeable in (log, a, b, ledger):
            closeable.close()


def test_a_failing_database_aborts_the_other_one_too(databases: tuple[str, str, str]) -> None:
    url_a, url_b, table = databases
    a, b = PostgresParticipant(url_a), PostgresParticipant(url_b)
    coordinator = TwoPhaseCoordinator("memory://", [a, b], name="bank")

    def overdraw(transaction: Transaction) -> None:
        transaction.execute(f"UPDATE {table} SET cents = cents - 500 WHERE id = 'ada'")
        transaction.execute(f"ALTER TABLE {table} ADD CHECK (cents >= 0)")

    try:
        with pytest.raises(TransactionAbortedError) as caught:
            coordinator.run({a: _move(table, 10), b: overdraw}, key="bad")
        assert caught.value.participant == "twopc_b"
        assert (_cents(url_a, table), _cents(url_b, table)) == (100, 100)
        assert a.in_doubt() == []
        assert b.in_doubt() == []
        assert a.status("bank:bad") is ParticipantState.ABORTED
        assert a.prepare("bank:nothing", lambda transaction: None) is Vote.READ_ONLY
        assert a.prepare("bank:no", lambda transaction: Vote.NO) is Vote.NO
    finally:
        a.close()
        b.close()


def test_a_coordinator_crash_between_the_phases_is_finished_after_restart(
    databases: tuple[str, str, str],
) -> None:
    url_a, url_b, table = databases
    log = PostgresDecisionLog(url_a, table_prefix=f"t{uuid.uuid4().hex[:8]}_")
    a, b = PostgresParticipant(url_a), CrashOnCommit(url_b)
    try:
        with pytest.raises(Crash):  # decision logged, nobody told yet
            TwoPhaseCoordinator(log, [b, a], name="bank").run(
                {b: _move(table, 5), a: _move(table, -5)}, key="t1"
            )
        assert log.decision("bank:t1") is Decision.COMMIT
        # the prepared work survives the connections that made it
        a.close()
        b.close()
        a, b = PostgresParticipant(url_a), CrashOnCommit(url_b)
        assert a.in_doubt("bank:") == ["bank:t1"]
        assert b.status("bank:t1") is ParticipantState.PREPARED
        assert _cents(url_a, table) == 100
        b.crash = False
        recovered = TwoPhaseCoordinator(log, [a, b], name="bank").recover()
        assert [(r.txid, r.decision, r.unacknowledged) for r in recovered] == [
            ("bank:t1", Decision.COMMIT, ())
        ]
        assert (_cents(url_a, table), _cents(url_b, table)) == (95, 105)
        assert log.pending("bank") == []
    finally:
        log.drop_tables()
        for closeable in (log, a, b):
            closeable.close()


def test_prepared_work_before_any_decision_is_aborted_by_recovery(
    databases: tuple[str, str, str],
) -> None:
    url_a, _, table = databases
    a = PostgresParticipant(url_a)
    other = PostgresParticipant(url_a, name="other-app")
    try:
        assert a.prepare("bank:t2", _move(table, 1)) is Vote.YES
        assert other.prepare("bank:t2", lambda tx: tx.execute(f"SELECT 1 FROM {table}")) in (
            Vote.READ_ONLY,
        )
        assert other.in_doubt() == []
        recovered = TwoPhaseCoordinator("memory://", [a], name="bank").recover()
        assert [(r.txid, r.decision) for r in recovered] == [("bank:t2", Decision.ABORT)]
        assert a.status("bank:t2") is ParticipantState.ABORTED
        assert _cents(url_a, table) == 100
    finally:
        a.close()
        other.close()


def test_the_blocking_case_locks_stay_held_until_the_coordinator_returns(
    databases: tuple[str, str, str],
) -> None:
    url_a, url_b, table = databases
    log = PostgresDecisionLog(url_a, table_prefix=f"t{uuid.uuid4().hex[:8]}_")
    a = PostgresParticipant(url_a, lock_timeout=0.2)
    b = PostgresParticipant(url_b, lock_timeout=0.2)
    try:
        # phase one done, then the coordinator vanishes before deciding
        assert a.prepare("bank:t3", _move(table, -1)) is Vote.YES
        assert b.prepare("bank:t3", _move(table, 1)) is Vote.YES
        # each participant alone cannot know the outcome: the log has none yet ...
        assert resolve_in_doubt(a, log) == {"bank:t3": None}
        # ... and every writer of the locked row is stuck behind the prepared transaction
        with pytest.raises(Exception, match="lock timeout"):
            a.prepare("bank:t4", _move(table, -1))
        assert a.status("bank:t3") is ParticipantState.PREPARED
        # the coordinator (or an operator through its log) comes back and settles it
        recovered = TwoPhaseCoordinator(log, [a, b], name="bank").recover()
        assert [r.decision for r in recovered] == [Decision.ABORT]
        assert a.prepare("bank:t4", _move(table, -1)) is Vote.YES
        a.abort("bank:t4")
    finally:
        log.drop_tables()
        for closeable in (log, a, b):
            closeable.close()


def test_an_outcome_settled_by_hand_is_reported_as_heuristic(
    databases: tuple[str, str, str],
) -> None:
    url_a, _, table = databases
    a = PostgresParticipant(url_a)
    try:
        a.prepare("bank:t5", _move(table, 7))
        with psycopg.connect(url_a, autocommit=True) as conn:
            conn.execute("ROLLBACK PREPARED 'seawall|twopc_a|bank:t5'")
        with pytest.raises(HeuristicOutcomeError, match="found it aborted"):
            a.commit("bank:t5")
        a.prepare("bank:t6", _move(table, 7))
        a.commit("bank:t6")
        a.commit("bank:t6")  # already committed: fine
        with pytest.raises(HeuristicOutcomeError, match="found it committed"):
            a.abort("bank:t6")
        assert a.purge(1e12) >= 1
        assert a.status("bank:t6") is ParticipantState.ABORTED
    finally:
        a.close()
