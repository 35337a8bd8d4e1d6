"""The SQLite participant: prepared work as a durable redo list, advisory key locks, honest refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from seawall.codec import EncodeError
from seawall.errors import ConfigurationError
from seawall.workflows.two_phase import (
    HeuristicOutcomeError,
    KeyLockedError,
    ParticipantState,
    SqliteDecisionLog,
    SqliteParticipant,
    StagedWrites,
    TransactionAbortedError,
    TwoPhaseCoordinator,
    Vote,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    path = tmp_path / "stock.db"
    participant = SqliteParticipant(f"sqlite:///{path}")
    with participant.transaction() as tx:
        tx.execute("CREATE TABLE stock (sku TEXT PRIMARY KEY, n INTEGER NOT NULL CHECK (n >= 0))")
        tx.execute("INSERT INTO stock VALUES ('a', 5), ('b', 5)")
    participant.close()
    return f"sqlite:///{path}"


def take(sku: str, count: int) -> Callable[[StagedWrites], None]:
    def work(staged: StagedWrites) -> None:
        staged.lock(sku)
        staged.execute("UPDATE stock SET n = n - ? WHERE sku = ?", [count, sku])

    return work


def stock(participant: SqliteParticipant) -> dict[str, int]:
    with participant.transaction() as tx:
        return dict(tx.execute("SELECT sku, n FROM stock").fetchall())


def test_prepared_work_is_invisible_until_commit_and_survives_a_restart(url: str) -> None:
    participant = SqliteParticipant(url)
    assert participant.name == "stock"
    assert participant.prepare("c:1", take("a", 2)) is Vote.YES
    assert participant.prepare("c:1", take("a", 2)) is Vote.YES  # repeated: still one
    assert stock(participant) == {"a": 5, "b": 5}
    participant.close()
    restarted = SqliteParticipant(url)  # the process died: the prepared state is on disk
    assert restarted.in_doubt() == ["c:1"]
    assert restarted.in_doubt("c:") == ["c:1"]
    assert restarted.in_doubt("other:") == []
    assert restarted.status("c:1") is ParticipantState.PREPARED
    assert restarted.locked("a") == "c:1"
    restarted.commit("c:1")
    restarted.commit("c:1")  # idempotent
    assert stock(restarted) == {"a": 3, "b": 5}
    assert restarted.status("c:1") is ParticipantState.COMMITTED
    assert restarted.in_doubt() == []
    assert restarted.locked("a") is None
    restarted.close()


def test_abort_drops_the_work_and_releases_the_keys(url: str) -> None:
    participant = SqliteParticipant(url)
    participant.prepare("c:1", take("a", 2))
    participant.abort("c:1")
    participant.abort("c:1")
    participant.abort("c:never")
    assert participant.status("c:1") is ParticipantState.ABORTED
    assert stock(participant) == {"a": 5, "b": 5}
    assert participant.locked("a") is None
    with pytest.raises(HeuristicOutcomeError, match="aborted or unknown"):
        participant.commit("c:1")
    participant.close()


def test_locked_keys_refuse_other_writers_until_settled(url: str) -> None:
    participant = SqliteParticipant(url)
    participant.prepare("c:1", take("a", 2))
    with pytest.raises(KeyLockedError) as caught:
        participant.prepare("c:2", take("a", 1))
    assert caught.value.key == "a"
    assert caught.value.txid == "c:1"
    with pytest.raises(KeyLockedError), participant.transaction("a") as tx:
        tx.execute("UPDATE stock SET n = 0 WHERE sku = 'a'")
    with participant.transaction("b") as tx:  # other keys are free
        tx.execute("UPDATE stock SET n = 4 WHERE sku = 'b'")
    assert participant.prepare("c:3", take("b", 1)) is Vote.YES
    participant.commit("c:1")
    participant.commit("c:3")
    assert stock(participant) == {"a": 3, "b": 3}
    participant.close()


def test_a_failing_write_fails_the_prepare_and_leaves_nothing(url: str) -> None:
    participant = SqliteParticipant(url)
    with pytest.raises(Exception, match="CHECK constraint"):
        participant.prepare("c:1", take("a", 9))
    assert participant.in_doubt() == []
    assert participant.locked("a") is None
    participant.close()


def test_votes_no_and_read_only(url: str) -> None:
    participant = SqliteParticipant(url)

    def refuse(staged: StagedWrites) -> Vote:
        staged.execute("UPDATE stock SET n = 0 WHERE sku = 'a'")
        return Vote.NO

    def reads(staged: StagedWrites) -> None:
        assert staged.query("SELECT n FROM stock WHERE sku = 'a'") == [(5,)]

    assert participant.prepare("c:1", refuse) is Vote.NO
    assert participant.prepare("c:2", reads) is Vote.READ_ONLY
    assert participant.prepare("c:3", None) is Vote.READ_ONLY
    assert participant.in_doubt() == []
    assert stock(participant)["a"] == 5
    with pytest.raises(ConfigurationError, match="must be a function"):
        participant.prepare("c:4", "UPDATE stock SET n = 0")  # type: ignore[arg-type]
    participant.close()


def test_parameters_that_cannot_be_stored_are_refused_naming_the_type(url: str) -> None:
    participant = SqliteParticipant(url)

    def odd(staged: StagedWrites) -> None:
        staged.execute("UPDATE stock SET n = ? WHERE sku = 'a'", [object()])

    with pytest.raises(EncodeError, match="object"):
        participant.prepare("c:1", odd)
    participant.close()


def test_a_writer_that_ignores_the_locks_makes_commit_refuse(url: str) -> None:
    participant = SqliteParticipant(url)

    def delete_row(staged: StagedWrites) -> None:
        staged.lock("b")
        staged.execute("DELETE FROM stock WHERE sku = 'b'")

    participant.prepare("c:1", delete_row)
    with participant.transaction() as tx:  # names no key: the lock cannot protect it
        tx.execute("DELETE FROM stock WHERE sku = 'b'")
    with pytest.raises(HeuristicOutcomeError, match="changed under its locks"):
        participant.commit("c:1")
    assert participant.status("c:1") is ParticipantState.PREPARED
    participant.abort("c:1")
    participant.prepare("c:2", take("a", 1))
    participant.commit("c:2")
    with pytest.raises(HeuristicOutcomeError, match="found it committed"):
        participant.abort("c:2")
    participant.close()


def test_a_coordinator_commits_across_two_sqlite_files(tmp_path: Path, url: str) -> None:
    stock_db = SqliteParticipant(url)
    orders_db = SqliteParticipant(f"sqlite:///{tmp_path / 'orders.db'}")
    with orders_db.transaction() as tx:
        tx.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    log = SqliteDecisionLog(f"sqlite:///{tmp_path / 'coordinator.db'}")
    coordinator = TwoPhaseCoordinator(log, [stock_db, orders_db], name="shop")

    def order(order_id: str) -> Callable[[StagedWrites], None]:
        def work(staged: StagedWrites) -> None:
            staged.lock(f"order:{order_id}")
            staged.execute("INSERT INTO orders (id) VALUES (?)", [order_id])

        return work

    coordinator.run({stock_db: take("a", 2), orders_db: order("o1")}, key="o1")
    with pytest.raises(TransactionAbortedError):
        coordinator.run({stock_db: take("a", 4), orders_db: order("o2")}, key="o2")
    assert stock(stock_db)["a"] == 3
    with orders_db.transaction() as tx:
        assert tx.execute("SELECT id FROM orders").fetchall() == [("o1",)]
    assert orders_db.in_doubt() == stock_db.in_doubt() == []
    log.close()
    stock_db.close()
    orders_db.close()


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="synchronous"):
        SqliteParticipant(f"sqlite:///{tmp_path / 'x.db'}", synchronous="OFF")
    with pytest.raises(ConfigurationError, match="name="):
        SqliteParticipant(f"sqlite:///{tmp_path / 'x.db'}", name="no spaces")
    with pytest.raises(ConfigurationError, match="sqlite:///"):
        SqliteParticipant("memory://")
