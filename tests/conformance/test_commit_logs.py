"""The decision-log contract, run against every engine that claims it (memory, SQLite, PostgreSQL).

Each test gets a log with unique tables (dropped afterwards) and a manual clock as its
time source. The PostgreSQL log needs no prepared transactions, so it runs on the
shared test server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.workflows.two_phase import (
    Decision,
    DecisionLog,
    MemoryDecisionLog,
    MemoryParticipant,
    PostgresDecisionLog,
    SqliteDecisionLog,
    TwoPhaseCoordinator,
    open_decision_log,
)

ENGINES = [
    pytest.param(lambda tmp: "memory://", id="memory"),
    pytest.param(lambda tmp: f"sqlite:///{tmp / 'decisions.db'}", id="sqlite"),
    pytest.param(
        lambda tmp: require_engine("postgres"), id="postgres", marks=pytest.mark.engine("postgres")
    ),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url: Callable[[Path], str] = request.param
    opened = seawall.connect(url(tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def log(engine: Engine, clock: ManualClock) -> Iterator[DecisionLog]:
    if engine.kind == "memory":
        yield MemoryDecisionLog(clock=clock)
        return
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    opened = open_decision_log(engine, table_prefix=prefix, clock=clock)
    try:
        yield opened
    finally:
        opened.drop_tables()  # type: ignore[attr-defined]
        opened.close()


def test_a_decision_is_written_once_and_the_first_one_wins(log: DecisionLog) -> None:
    assert log.decision("c:1") is None
    assert log.load("c:1") is None
    stored = log.decide("c:1", Decision.COMMIT, coordinator="c", participants=["a", "b"])
    assert stored is Decision.COMMIT
    again = log.decide("c:1", Decision.ABORT, coordinator="c", participants=["a"])
    assert again is Decision.COMMIT
    assert log.decision("c:1") is Decision.COMMIT


def test_a_record_keeps_what_recovery_needs(log: DecisionLog, clock: ManualClock) -> None:
    log.decide("c:1", Decision.ABORT, coordinator="c", participants=["b", "a"])
    record = log.load("c:1")
    assert record is not None
    assert record.txid == "c:1"
    assert record.coordinator == "c"
    assert record.decision is Decision.ABORT
    assert record.participants == ("b", "a")
    assert record.decided_at == pytest.approx(clock.now())
    assert not record.completed


def test_pending_lists_unacknowledged_decisions_per_coordinator_oldest_first(
    log: DecisionLog, clock: ManualClock
) -> None:
    for number in range(4):
        log.decide(f"c:{number}", Decision.COMMIT, coordinator="c", participants=["a"])
        clock.advance(1.0)
    log.decide("d:1", Decision.COMMIT, coordinator="d", participants=["a"])
    assert [record.txid for record in log.pending("c")] == ["c:0", "c:1", "c:2", "c:3"]
    assert [record.txid for record in log.pending("c", limit=2)] == ["c:0", "c:1"]
    log.complete(["c:1", "c:3", "c:unknown"])
    log.complete([])
    assert [record.txid for record in log.pending("c")] == ["c:0", "c:2"]
    assert [record.txid for record in log.pending("d")] == ["d:1"]
    record = log.load("c:1")
    assert record is not None
    assert record.completed_at == pytest.approx(clock.now())
    assert log.pending("nobody") == []


def test_purge_deletes_only_old_completed_records(log: DecisionLog, clock: ManualClock) -> None:
    log.decide("c:old", Decision.COMMIT, coordinator="c", participants=["a"])
    log.decide("c:open", Decision.COMMIT, coordinator="c", participants=["a"])
    clock.advance(100.0)
    log.decide("c:new", Decision.COMMIT, coordinator="c", participants=["a"])
    log.complete(["c:old", "c:new"])
    assert log.purge(clock.now() - 50.0) == 1
    assert log.decision("c:old") is None  # reads as aborted from now on
    assert log.decision("c:open") is Decision.COMMIT
    assert log.decision("c:new") is Decision.COMMIT


def test_concurrent_deciders_agree_on_one_decision(log: DecisionLog) -> None:
    results: list[Decision] = []
    barrier = threading.Barrier(6)

    def decide(decision: Decision) -> None:
        barrier.wait()
        results.append(log.decide("c:race", decision, coordinator="c", participants=["a"]))

    threads = [
        threading.Thread(target=decide, args=(Decision.COMMIT if n % 2 else Decision.ABORT,))
        for n in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 6
    assert len(set(results)) == 1
    assert log.decision("c:race") is results[0]


def test_a_coordinator_on_the_log_commits_and_recovers(log: DecisionLog) -> None:
    a, b = MemoryParticipant("a"), MemoryParticipant("b")
    coordinator = TwoPhaseCoordinator(log, [a, b], name="shop")
    result = coordinator.run({a: {"x": 1}, b: {"y": 1}}, key="1")
    assert result.committed
    assert log.pending("shop") == []
    a.prepare("shop:2", {"x": 2})
    log.decide("shop:2", Decision.COMMIT, coordinator="shop", participants=["a"])
    b.prepare("shop:3", {"y": 3})
    recovered = {r.txid: r.decision for r in coordinator.recover()}
    assert recovered == {"shop:2": Decision.COMMIT, "shop:3": Decision.ABORT}
    assert a.data == {"x": 2}
    assert b.data == {"y": 1}
    assert log.pending("shop") == []


def test_open_decision_log_picks_the_engine_and_refuses_misuse(engine: Engine) -> None:
    expected: dict[str, type[Any]] = {
        "memory": MemoryDecisionLog,
        "sqlite": SqliteDecisionLog,
        "postgres": PostgresDecisionLog,
    }
    if engine.kind == "memory":
        opened = open_decision_log(engine)
    else:
        opened = open_decision_log(engine, table_prefix=f"t{uuid.uuid4().hex[:10]}_")
    try:
        assert isinstance(opened, expected[engine.kind])
        assert open_decision_log(opened) is opened
        with pytest.raises(ConfigurationError, match="with a ready log"):
            open_decision_log(opened, table_prefix="x_")
    finally:
        if engine.kind != "memory":
            opened.drop_tables()  # type: ignore[attr-defined]
        opened.close()


def test_engines_without_a_decision_log_are_refused() -> None:
    with pytest.raises(UnsupportedEngineError, match="no decision log"):
        open_decision_log(seawall.connect("redis://127.0.0.1:1/0"))
    with pytest.raises(ConfigurationError, match="table_prefix"):
        SqliteDecisionLog("sqlite://:memory:", table_prefix="Bad-Prefix")
