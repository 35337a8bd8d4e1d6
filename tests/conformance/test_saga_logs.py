"""The saga-log contract, run against every engine that claims it (memory, SQLite, PostgreSQL).

Each test gets a log with unique tables (dropped afterwards) and a manual clock injected
as the log's time source, so leases and deadlines expire without sleeping. SQL engines
also prove they join a caller's transaction (transactional starts and local steps).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.errors import EngineError
from seawall.resilience import Retry
from seawall.workflows import (
    EntryKind,
    MemorySagaLog,
    NewEntry,
    PostgresSagaLog,
    Saga,
    SagaFailedError,
    SagaLeaseLostError,
    SagaLog,
    SagaOrchestrator,
    SagaStatus,
    SqliteSagaLog,
    Step,
    StepContext,
    open_saga_log,
)


@dataclass(frozen=True)
class EngineUnderTest:
    """How to open one engine and its log."""

    name: str
    url: Callable[[Path], str]
    transactions: bool


ENGINES = [
    pytest.param(EngineUnderTest("memory", lambda tmp: "memory://", False), id="memory"),
    pytest.param(
        EngineUnderTest("sqlite", lambda tmp: f"sqlite:///{tmp / 'sagas.db'}", True), id="sqlite"
    ),
    pytest.param(
        EngineUnderTest("postgres", lambda tmp: require_engine("postgres"), True),
        id="postgres",
        marks=pytest.mark.engine("postgres"),
    ),
]


@pytest.fixture(params=ENGINES)
def under_test(request: pytest.FixtureRequest) -> EngineUnderTest:
    chosen: EngineUnderTest = request.param
    return chosen


@pytest.fixture
def engine(under_test: EngineUnderTest, tmp_path: Path) -> Iterator[Engine]:
    opened = seawall.connect(under_test.url(tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def log(engine: Engine, clock: ManualClock) -> Iterator[SagaLog]:
    if engine.kind == "memory":
        yield MemorySagaLog(engine, clock=clock)
        return
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    opened = open_saga_log(engine, table_prefix=prefix, clock=clock)
    assert isinstance(opened, SqliteSagaLog | PostgresSagaLog)
    try:
        yield opened
    finally:
        opened.drop_tables()
        opened.close()


def entries(start: int, *kinds: tuple[EntryKind, str | None, str | None]) -> list[NewEntry]:
    return [
        NewEntry(start + offset, kind, step, data)
        for offset, (kind, step, data) in enumerate(kinds)
    ]


def new_saga(
    log: SagaLog, saga_id: str, *, owner: str | None = "me", deadline: float | None = None
) -> bool:
    return log.create(
        saga_id,
        "order",
        (("a",), ("b", "c")),
        '{"n":1}',
        deadline=deadline,
        owner=owner,
        lease=30.0,
        entries=entries(0, (EntryKind.STARTED, "a", None)),
    )


# ------------------------------------------------------------------------------ records


def test_create_and_load_round_trip(log: SagaLog, clock: ManualClock) -> None:
    assert new_saga(log, "s1", deadline=60.0)
    record = log.load("s1")
    assert record is not None
    assert (record.id, record.name, record.status) == ("s1", "order", SagaStatus.RUNNING)
    assert record.plan == (("a",), ("b", "c"))
    assert record.input == '{"n":1}'
    assert record.created_at == record.updated_at == clock.now()
    assert record.deadline_at == clock.now() + 60.0
    assert not record.deadline_passed
    assert record.owner == "me"
    assert record.lease_until == clock.now() + 30.0
    assert not record.cancel_requested
    assert record.reason is None
    (entry,) = record.entries
    assert (entry.seq, entry.kind, entry.step, entry.data, entry.at) == (
        0,
        EntryKind.STARTED,
        "a",
        None,
        clock.now(),
    )
    assert log.load("missing") is None


def test_a_taken_id_is_not_created_twice(log: SagaLog) -> None:
    assert new_saga(log, "s1")
    assert not new_saga(log, "s1", owner="other")
    record = log.load("s1")
    assert record is not None
    assert record.owner == "me"
    assert len(record.entries) == 1


def test_append_adds_entries_sets_status_and_renews_the_lease(
    log: SagaLog, clock: ManualClock
) -> None:
    new_saga(log, "s1")
    clock.advance(5)
    signals = log.append(
        "s1",
        entries(1, (EntryKind.COMPLETED, "a", '{"x":1}'), (EntryKind.STARTED, "b", None)),
        owner="me",
        status=SagaStatus.RUNNING,
        reason=None,
        lease=30.0,
    )
    assert signals is not None
    assert not signals.cancel_requested
    assert not signals.deadline_passed
    record = log.load("s1")
    assert record is not None
    assert [(e.seq, e.kind, e.step) for e in record.entries] == [
        (0, EntryKind.STARTED, "a"),
        (1, EntryKind.COMPLETED, "a"),
        (2, EntryKind.STARTED, "b"),
    ]
    assert record.entries[1].value() == {"x": 1}
    assert record.entries[1].at == clock.now()
    assert record.lease_until == clock.now() + 30.0
    assert record.updated_at == clock.now()


def test_only_the_owner_appends(log: SagaLog) -> None:
    new_saga(log, "s1")
    assert (
        log.append(
            "s1",
            entries(1, (EntryKind.COMPLETED, "a", "1")),
            owner="intruder",
            status=SagaStatus.COMPLETED,
            reason=None,
            lease=30.0,
        )
        is None
    )
    record = log.load("s1")
    assert record is not None
    assert record.status is SagaStatus.RUNNING
    assert len(record.entries) == 1
    assert (
        log.append("nope", [], owner="me", status=SagaStatus.RUNNING, reason=None, lease=1.0)
        is None
    )


def test_a_reused_position_is_refused(log: SagaLog) -> None:
    new_saga(log, "s1")
    with pytest.raises(EngineError):
        log.append(
            "s1",
            entries(0, (EntryKind.COMPLETED, "a", "1")),
            owner="me",
            status=SagaStatus.RUNNING,
            reason=None,
            lease=30.0,
        )
    record = log.load("s1")
    assert record is not None
    assert len(record.entries) == 1


def test_release_on_append_settles_the_saga(log: SagaLog) -> None:
    new_saga(log, "s1")
    log.append(
        "s1",
        entries(1, (EntryKind.FINISHED, None, '{"status":"completed"}')),
        owner="me",
        status=SagaStatus.COMPLETED,
        reason="why",
        lease=30.0,
        release=True,
    )
    record = log.load("s1")
    assert record is not None
    assert record.status is SagaStatus.COMPLETED
    assert record.owner is None
    assert record.lease_until is None
    assert record.reason == "why"
    assert log.claim("other", 30.0, ignore_leases=True) is None


def test_signals_report_the_deadline_on_the_logs_clock(log: SagaLog, clock: ManualClock) -> None:
    new_saga(log, "s1", deadline=10.0)
    clock.advance(10.0)
    signals = log.append("s1", [], owner="me", status=SagaStatus.RUNNING, reason=None, lease=30.0)
    assert signals is not None
    assert signals.deadline_passed
    record = log.load("s1")
    assert record is not None
    assert record.deadline_passed


def test_cancel_flags_only_running_sagas(log: SagaLog) -> None:
    new_saga(log, "s1")
    assert log.request_cancel("s1") is SagaStatus.RUNNING
    signals = log.append("s1", [], owner="me", status=SagaStatus.RUNNING, reason=None, lease=30.0)
    assert signals is not None
    assert signals.cancel_requested
    log.append(
        "s1",
        [],
        owner="me",
        status=SagaStatus.COMPENSATED,
        reason="cancelled",
        lease=1,
        release=True,
    )
    new_saga(log, "s2")
    log.append(
        "s2", [], owner="me", status=SagaStatus.COMPLETED, reason=None, lease=1, release=True
    )
    assert log.request_cancel("s2") is SagaStatus.COMPLETED
    record = log.load("s2")
    assert record is not None
    assert not record.cancel_requested
    assert log.request_cancel("missing") is None


# -------------------------------------------------------------------------------- claims


def test_claim_takes_unowned_and_expired_sagas_only(log: SagaLog, clock: ManualClock) -> None:
    new_saga(log, "held", owner="me")
    clock.advance(1)
    new_saga(log, "free", owner=None)
    claimed = log.claim("other", 60.0)
    assert claimed is not None
    assert claimed.id == "free"
    assert claimed.owner == "other"
    assert claimed.lease_until == clock.now() + 60.0
    assert [e.kind for e in claimed.entries] == [EntryKind.STARTED]
    assert log.claim("third", 10.0) is None  # "held" is leased until 30 s after creation
    clock.advance(29.0)
    claimed = log.claim("third", 10.0)
    assert claimed is not None
    assert claimed.id == "held"
    assert log.claim("fourth", 10.0) is None


def test_claim_filters_by_names_and_id_and_can_ignore_leases(log: SagaLog) -> None:
    new_saga(log, "s1")
    assert log.claim("other", 10.0, names=["payment"], ignore_leases=True) is None
    assert log.claim("other", 10.0, names=[], ignore_leases=True) is None
    assert log.claim("other", 10.0, saga_id="s2", ignore_leases=True) is None
    claimed = log.claim("other", 10.0, names=["order"], saga_id="s1", ignore_leases=True)
    assert claimed is not None
    assert claimed.owner == "other"


def test_release_lets_a_claim_take_the_saga_at_once(log: SagaLog) -> None:
    new_saga(log, "s1")
    log.release("s1", "not me")
    assert log.claim("other", 10.0) is None
    log.release("s1", "me")
    claimed = log.claim("other", 10.0)
    assert claimed is not None
    assert claimed.id == "s1"


def test_concurrent_claimers_never_take_the_same_saga(log: SagaLog) -> None:
    ids = [f"s{index}" for index in range(12)]
    for saga_id in ids:
        new_saga(log, saga_id, owner=None)
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(owner: str) -> None:
        while (record := log.claim(owner, 60.0)) is not None:
            with lock:
                taken.append(record.id)

    threads = [threading.Thread(target=claimer, args=(f"o{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(taken) == sorted(ids)


def test_transition_moves_an_unowned_saga_from_the_expected_status(log: SagaLog) -> None:
    new_saga(log, "s1")
    log.append(
        "s1",
        entries(1, (EntryKind.STUCK, "a", '{"phase":"backward","error":"E"}')),
        owner="me",
        status=SagaStatus.STUCK,
        reason="E",
        lease=1,
        release=True,
    )
    retried = entries(2, (EntryKind.RETRIED, None, '{"note":""}'))
    assert not log.transition(
        "s1", expected=SagaStatus.RUNNING, status=SagaStatus.RUNNING, reason=None, entries=retried
    )
    assert log.transition(
        "s1", expected=SagaStatus.STUCK, status=SagaStatus.COMPENSATING, reason="r", entries=retried
    )
    record = log.load("s1")
    assert record is not None
    assert record.status is SagaStatus.COMPENSATING
    assert record.reason == "r"
    assert record.entries[-1].kind is EntryKind.RETRIED
    assert not log.transition(
        "s1", expected=SagaStatus.STUCK, status=SagaStatus.RESOLVED, reason=None, entries=[]
    )


def test_list_is_newest_first_with_filters(log: SagaLog, clock: ManualClock) -> None:
    for index in range(3):
        new_saga(log, f"s{index}", owner=None)
        clock.advance(1)
    log.claim("me", 10.0, saga_id="s0")
    log.append(
        "s0", [], owner="me", status=SagaStatus.COMPLETED, reason=None, lease=1, release=True
    )
    assert [r.id for r in log.list()] == ["s0", "s2", "s1"]
    assert [r.id for r in log.list(status=[SagaStatus.RUNNING])] == ["s2", "s1"]
    assert [r.id for r in log.list(status=[SagaStatus.COMPLETED], name="order")] == ["s0"]
    assert log.list(name="other") == []
    assert log.list(status=[]) == []
    assert len(log.list(limit=1)) == 1
    assert all(r.entries == () for r in log.list())


# --------------------------------------------------------------------- orchestration


def test_an_orchestrator_runs_compensates_and_resumes_on_this_log(
    log: SagaLog, clock: ManualClock
) -> None:
    undone: list[str] = []

    def ok(context: StepContext) -> str:
        return context.step

    def fail(context: StepContext) -> None:
        raise ValueError("no")

    def undo(context: StepContext) -> None:
        undone.append(context.step)

    good = Saga("good", [Step("a", ok, undo), Step("b", ok)])
    bad = Saga("bad", [Step("a", ok, undo), Step("b", ok, undo), Step("c", fail)])
    sagas = SagaOrchestrator(log, [good, bad], clock=clock)
    assert sagas.run(good, saga_id="g").completed
    with pytest.raises(SagaFailedError):
        sagas.run(bad, saga_id="b")
    assert undone == ["b", "a"]
    sagas.start(good, saga_id="later")
    (result,) = SagaOrchestrator(log, [good], clock=clock).resume()
    assert result.saga_id == "later"
    assert result.completed
    record = log.load("b")
    assert record is not None
    assert record.status is SagaStatus.COMPENSATED
    assert [e.kind for e in record.entries][-1] is EntryKind.FINISHED


# ------------------------------------------------------------------ transactions (SQL)


def _business_table(engine: Engine) -> tuple[str, Callable[[str], Any], Callable[[], list[Any]]]:
    """A table for a step's business rows; returns its name, an executor and a reader."""
    table = f"biz_{uuid.uuid4().hex[:10]}"
    if engine.kind == "sqlite":
        connection = engine.connection  # type: ignore[attr-defined]
        connection.execute(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, value TEXT)")

        def rows() -> list[Any]:
            return list(connection.execute(f"SELECT key, value FROM {table} ORDER BY key"))

        return table, connection.execute, rows
    with engine.connection() as connection:  # type: ignore[attr-defined]
        connection.execute(f"CREATE TABLE {table} (key text PRIMARY KEY, value text)")

    def execute(sql: str) -> Any:
        with engine.connection() as connection:  # type: ignore[attr-defined]
            connection.execute(sql)

    def read() -> list[Any]:
        with engine.connection() as connection:  # type: ignore[attr-defined]
            return list(connection.execute(f"SELECT key, value FROM {table} ORDER BY key"))

    return table, execute, read


def _placeholder(engine: Engine) -> str:
    return "?" if engine.kind == "sqlite" else "%s"


@pytest.fixture
def sql_engine(under_test: EngineUnderTest, engine: Engine) -> Engine:
    if not under_test.transactions:
        pytest.skip(f"the {under_test.name} log cannot join a transaction")
    return engine


def test_a_saga_started_in_a_rolled_back_transaction_does_not_exist(
    sql_engine: Engine, log: SagaLog, clock: ManualClock
) -> None:
    saga = Saga("s", Step("a", lambda context: None))
    sagas = SagaOrchestrator(log, [saga], clock=clock)

    class AbortError(Exception):
        pass

    def start_then_abort() -> None:
        with sql_engine.transaction() as transaction:
            sagas.start(saga, saga_id="gone", transaction=transaction)
            raise AbortError

    with pytest.raises(AbortError):
        start_then_abort()
    assert log.load("gone") is None
    with sql_engine.transaction() as transaction:
        sagas.start(saga, saga_id="kept", transaction=transaction)
    assert log.load("kept") is not None
    (result,) = sagas.resume()
    assert result.completed


def test_a_local_step_commits_its_writes_with_its_completion(
    sql_engine: Engine, log: SagaLog, clock: ManualClock
) -> None:
    table, execute, rows = _business_table(sql_engine)
    mark = _placeholder(sql_engine)
    try:
        attempts = 0

        def reserve(context: StepContext) -> str:
            nonlocal attempts
            attempts += 1
            assert context.transaction is not None
            context.transaction.execute(
                f"INSERT INTO {table} (key, value) VALUES ({mark}, {mark})",
                (context.idempotency_key, "reserved"),
            )
            if attempts == 1:
                raise ConnectionError("flaky")  # rolled back, then retried by the policy
            return "ok"

        def release(context: StepContext) -> None:
            assert context.transaction is not None
            context.transaction.execute(
                f"DELETE FROM {table} WHERE key = {mark}", (context.idempotency_key,)
            )

        def fail(context: StepContext) -> None:
            raise ValueError("no")

        good = Saga(
            "good",
            [
                Step("reserve", reserve, release, local=True, policy=Retry(2, wait=0, clock=clock)),
                Step("ship", lambda c: None),
            ],
        )
        sagas = SagaOrchestrator(log, [good], clock=clock)
        assert sagas.run(good, saga_id="g").completed
        assert rows() == [("g:reserve", "reserved")]
        assert attempts == 2

        attempts = 1
        bad = Saga("bad", [Step("reserve", reserve, release, local=True), Step("ship", fail)])
        sagas.register(bad)
        with pytest.raises(SagaFailedError):
            sagas.run(bad, saga_id="b")
        assert rows() == [("g:reserve", "reserved")]  # b's row came and went with its records
    finally:
        execute(f"DROP TABLE {table}")


def test_a_local_step_whose_lease_was_lost_leaves_no_writes(
    sql_engine: Engine, log: SagaLog, clock: ManualClock
) -> None:
    table, execute, rows = _business_table(sql_engine)
    mark = _placeholder(sql_engine)
    try:

        def reserve(context: StepContext) -> None:
            assert context.transaction is not None
            context.transaction.execute(
                f"INSERT INTO {table} (key, value) VALUES ({mark}, 'x')", (context.saga_id,)
            )
            # another orchestrator takes the saga over meanwhile (written through this
            # transaction's connection so that SQLite's single writer does not wait for itself)
            context.transaction.execute(
                f"UPDATE {log.table_prefix}sagas SET owner = 'thief' WHERE id = {mark}",  # type: ignore[attr-defined]
                (context.saga_id,),
            )

        saga = Saga(
            "s", [Step("reserve", reserve, lambda c: None, local=True), Step("b", lambda c: None)]
        )
        with pytest.raises(SagaLeaseLostError):
            SagaOrchestrator(log, [saga], clock=clock, lease=30.0).run(saga, saga_id="l")
        assert rows() == []
    finally:
        execute(f"DROP TABLE {table}")


async def test_the_async_orchestrator_runs_and_resumes_on_this_log(
    log: SagaLog, clock: ManualClock
) -> None:
    from seawall.workflows import AsyncSagaOrchestrator

    undone: list[str] = []

    async def ok(context: StepContext) -> str:
        return context.step

    async def undo(context: StepContext) -> None:
        undone.append(context.step)

    def fail(context: StepContext) -> None:
        raise ValueError("no")

    good = Saga("good", [Step("a", ok, undo), Step("b", lambda c: c.results["a"] * 2)])
    bad = Saga("bad", [Step("a", ok, undo), Step("b", fail)])
    sagas = AsyncSagaOrchestrator(log, [good, bad], clock=clock)
    result = await sagas.run(good, saga_id="g")
    assert dict(result.results) == {"a": "a", "b": "aa"}
    with pytest.raises(SagaFailedError):
        await sagas.run(bad, saga_id="b")
    assert undone == ["a"]
    await sagas.start(good, saga_id="later")
    (resumed,) = await sagas.resume()
    assert resumed.saga_id == "later"
    assert resumed.completed


async def test_an_async_orchestrator_runs_local_steps_in_a_thread(
    sql_engine: Engine, log: SagaLog, clock: ManualClock
) -> None:
    from seawall.workflows import AsyncSagaOrchestrator

    table, execute, rows = _business_table(sql_engine)
    mark = _placeholder(sql_engine)
    try:

        def reserve(context: StepContext) -> str:
            assert context.transaction is not None
            context.transaction.execute(
                f"INSERT INTO {table} (key, value) VALUES ({mark}, 'x')",
                (context.idempotency_key,),
            )
            return "ok"

        async def ship(context: StepContext) -> str:
            return "shipped"

        saga = Saga("s", [Step("reserve", reserve, lambda c: None, local=True), Step("ship", ship)])
        result = await AsyncSagaOrchestrator(log, [saga], clock=clock).run(saga, saga_id="a")
        assert result.completed
        assert rows() == [("a:reserve", "x")]
    finally:
        execute(f"DROP TABLE {table}")
