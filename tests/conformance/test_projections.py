"""Projections and repositories on every SQL engine: SQLite and PostgreSQL.

Each test uses a store with a unique table prefix and read-model tables with unique
names, all dropped afterwards. PostgreSQL shows an event to ``read_all`` only once
every older writing transaction in the cluster has finished, so catching up there
retries for a bounded time; SQLite never waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.engines import Engine
from seawall.engines._base import Transaction
from seawall.eventsourcing import (
    Aggregate,
    AsyncProjection,
    AsyncProjectionRunner,
    AsyncReadModel,
    AsyncRepository,
    ConcurrencyError,
    EventStore,
    Projection,
    ProjectionHandlerError,
    ProjectionRunner,
    ReadModel,
    RecordedEvent,
    Repository,
    SnapshotEvery,
    applies,
    handles,
    open_async_event_store,
    open_event_store,
)


@dataclass(frozen=True)
class SqlEngine:
    name: str
    placeholder: str
    settle: float


ENGINES = [
    pytest.param(SqlEngine("sqlite", "?", 0.0), id="sqlite"),
    pytest.param(
        SqlEngine("postgres", "%s", 15.0), id="postgres", marks=pytest.mark.engine("postgres")
    ),
]


@pytest.fixture(params=ENGINES)
def sql(request: pytest.FixtureRequest) -> SqlEngine:
    chosen: SqlEngine = request.param
    return chosen


@pytest.fixture
def url(sql: SqlEngine, tmp_path: Path) -> str:
    if sql.name == "postgres":
        return require_engine("postgres")
    return f"sqlite:///{tmp_path / 'cqrs.db'}"


@pytest.fixture
def tag() -> str:
    return f"cq_{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def engine(url: str, tag: str) -> Iterator[Engine]:
    opened = seawall.connect(url)
    yield opened
    with opened.transaction() as tx:
        for table in ("balances", "applied"):
            tx.execute(f"DROP TABLE IF EXISTS {tag}{table}")
    opened.close()


@pytest.fixture
def store(engine: Engine, tag: str) -> Iterator[EventStore]:
    opened = open_event_store(engine, table_prefix=tag)
    yield opened
    opened.drop_tables()
    opened.close()


@dataclass
class Deposited:
    account: str
    amount: int


@dataclass
class Withdrawn:
    account: str
    amount: int


class Balances(Projection):
    """Balance per account plus a log of every applied position (doubles would show)."""

    def __init__(self, tag: str, placeholder: str, *, fail_on: int | None = None) -> None:
        self.name = f"{tag}balances"
        self.balances = f"{tag}balances"
        self.applied = f"{tag}applied"
        self.p = placeholder
        self.fail_on = fail_on

    def setup(self, tx: Transaction) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.balances} (account TEXT PRIMARY KEY, total INT)"
        )
        tx.execute(f"CREATE TABLE IF NOT EXISTS {self.applied} (position BIGINT)")

    def _add(self, event: RecordedEvent, tx: Transaction, amount: int) -> None:
        if event.data["amount"] == self.fail_on:
            raise ValueError("poison")
        p = self.p
        tx.execute(
            f"INSERT INTO {self.balances} (account, total) VALUES ({p}, {p}) ON CONFLICT "
            f"(account) DO UPDATE SET total = {self.balances}.total + excluded.total",
            [event.data["account"], amount],
        )
        tx.execute(f"INSERT INTO {self.applied} (position) VALUES ({p})", [event.position])

    @handles(Deposited)
    def _deposited(self, event: RecordedEvent, tx: Transaction) -> None:
        self._add(event, tx, event.data["amount"])

    @handles(Withdrawn)
    def _withdrawn(self, event: RecordedEvent, tx: Transaction) -> None:
        self._add(event, tx, -event.data["amount"])

    def reset(self, tx: Transaction) -> None:
        tx.execute(f"DELETE FROM {self.balances}")
        tx.execute(f"DELETE FROM {self.applied}")


class AsyncBalances(AsyncProjection):
    """The async twin of :class:`Balances` (PostgreSQL: an async connection)."""

    def __init__(self, tag: str, placeholder: str, *, is_async: bool) -> None:
        self.sync = Balances(tag, placeholder)
        self.name = self.sync.name
        self.is_async = is_async

    async def _run(self, tx: Transaction, sql: str, parameters: Any = ()) -> None:
        if self.is_async:
            await tx.connection.execute(sql, parameters)
        else:
            tx.execute(sql, parameters)

    async def setup(self, tx: Transaction) -> None:
        await self._run(
            tx,
            f"CREATE TABLE IF NOT EXISTS {self.sync.balances} (account TEXT PRIMARY KEY, total INT)",
        )
        await self._run(tx, f"CREATE TABLE IF NOT EXISTS {self.sync.applied} (position BIGINT)")

    @handles(Deposited, Withdrawn)
    async def _changed(self, event: RecordedEvent, tx: Transaction) -> None:
        sign = 1 if event.type == "Deposited" else -1
        p = self.sync.p
        await self._run(
            tx,
            f"INSERT INTO {self.sync.balances} (account, total) VALUES ({p}, {p}) ON CONFLICT "
            f"(account) DO UPDATE SET total = {self.sync.balances}.total + excluded.total",
            [event.data["account"], sign * event.data["amount"]],
        )
        await self._run(
            tx, f"INSERT INTO {self.sync.applied} (position) VALUES ({p})", [event.position]
        )

    async def reset(self, tx: Transaction) -> None:
        await self._run(tx, f"DELETE FROM {self.sync.balances}")
        await self._run(tx, f"DELETE FROM {self.sync.applied}")


def write(store: EventStore, count: int, *, start: int = 0) -> dict[str, int]:
    totals: dict[str, int] = {}
    for n in range(start, start + count):
        account = f"acct-{n % 3}"
        event: Any = Deposited(account, n + 1) if n % 4 else Withdrawn(account, 1)
        store.append(account, [event])
        totals[account] = totals.get(account, 0) + (n + 1 if n % 4 else -1)
    return totals


def positions(store: EventStore, count: int = 0, settle: float = 0.0) -> list[int]:
    """Every visible position; waits (bounded) until ``count`` are visible (PostgreSQL)."""
    deadline = time.monotonic() + settle
    while True:
        found: list[int] = []
        after = 0
        while page := store.read_all(after=after, limit=1000):
            found.extend(event.position for event in page)
            after = page[-1].position
        if len(found) >= count or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def drain(runner: ProjectionRunner, expected: int, settle: float) -> int:
    """Catch up until ``expected`` events were applied (PostgreSQL may show them late)."""
    deadline = time.monotonic() + settle
    total = runner.catch_up()
    while total < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        total += runner.catch_up()
    return total


def balances(engine: Engine, projection: Balances) -> dict[str, int]:
    rows = ReadModel(engine).query(f"SELECT account, total FROM {projection.balances}")
    return {row["account"]: row["total"] for row in rows}


def applied(engine: Engine, projection: Balances) -> list[int]:
    rows = ReadModel(engine).query(f"SELECT position FROM {projection.applied} ORDER BY position")
    return [row["position"] for row in rows]


# --- the projection runner -----------------------------------------------------------------


def test_every_event_is_applied_once_with_its_checkpoint(
    sql: SqlEngine, engine: Engine, store: EventStore, tag: str
) -> None:
    expected = write(store, 30)
    projection = Balances(tag, sql.placeholder)
    runner = ProjectionRunner(store, projection, batch_size=8)
    assert drain(runner, 30, sql.settle) == 30
    assert balances(engine, projection) == expected
    every = positions(store, 30, sql.settle)
    assert applied(engine, projection) == every
    assert store.load_checkpoint(projection.name) == every[-1]
    assert runner.lag().events == 0


def test_a_failed_batch_leaves_no_trace(
    sql: SqlEngine, engine: Engine, store: EventStore, tag: str
) -> None:
    expected = write(store, 12)
    every = positions(store, 12, sql.settle)
    first = ProjectionRunner(store, Balances(tag, sql.placeholder), batch_size=5)
    assert first.run_once() == 5
    checkpoint = store.load_checkpoint(f"{tag}balances")
    assert checkpoint == every[4]
    poisoned = Balances(tag, sql.placeholder, fail_on=8)  # the 8th event (n=7) deposits 8
    with pytest.raises(ProjectionHandlerError) as caught:
        ProjectionRunner(store, poisoned, batch_size=5).catch_up()
    assert caught.value.position == every[7]
    assert caught.value.rolled_back
    assert store.load_checkpoint(f"{tag}balances") == checkpoint  # events 6-7 rolled back
    assert applied(engine, poisoned) == every[:5]
    fixed = ProjectionRunner(store, Balances(tag, sql.placeholder), batch_size=5)
    assert fixed.catch_up() == 7
    assert balances(engine, poisoned) == expected
    assert applied(engine, poisoned) == every


def test_rebuild_and_lag(sql: SqlEngine, engine: Engine, store: EventStore, tag: str) -> None:
    expected = write(store, 15)
    projection = Balances(tag, sql.placeholder)
    runner = ProjectionRunner(store, projection, batch_size=4)
    lag = runner.lag()
    assert (lag.checkpoint, lag.events) == (0, 15)
    assert lag.seconds >= 0.0
    drain(runner, 15, sql.settle)
    with engine.transaction() as tx:
        tx.execute(f"UPDATE {projection.balances} SET total = 0")
    applied_again = runner.rebuild()
    if applied_again < 15:
        applied_again += drain(runner, 15 - applied_again, sql.settle)
    assert applied_again == 15
    assert balances(engine, projection) == expected
    assert applied(engine, projection) == positions(store, 15, sql.settle)


def test_concurrent_runners_never_apply_an_event_twice(
    sql: SqlEngine, url: str, engine: Engine, store: EventStore, tag: str
) -> None:
    expected = write(store, 60)
    every = positions(store, 60, sql.settle)
    errors: list[BaseException] = []

    def work() -> None:
        own_engine = seawall.connect(url)
        try:
            own_store = open_event_store(own_engine, table_prefix=tag, create=False)
            runner = ProjectionRunner(own_store, Balances(tag, sql.placeholder), batch_size=4)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                runner.run_once()
                if own_store.load_checkpoint(f"{tag}balances") == every[-1]:
                    return
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            own_engine.close()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    projection = Balances(tag, sql.placeholder)
    assert applied(engine, projection) == every
    assert balances(engine, projection) == expected


async def test_the_async_runner(
    sql: SqlEngine, engine: Engine, store: EventStore, tag: str
) -> None:
    expected = write(store, 10)
    async_store = open_async_event_store(engine, table_prefix=tag)
    projection = AsyncBalances(tag, sql.placeholder, is_async=sql.name == "postgres")
    runner = AsyncProjectionRunner(async_store, projection, batch_size=3)
    deadline = time.monotonic() + sql.settle
    total = await runner.catch_up()
    while total < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        total += await runner.catch_up()
    assert total == 10
    assert balances(engine, projection.sync) == expected
    assert (await runner.lag()).events == 0
    read = AsyncReadModel(engine)
    count = await read.scalar(f"SELECT count(*) FROM {projection.sync.applied}")
    assert count == 10
    await async_store.close()
    if sql.name == "postgres":
        await engine.aclose()


# --- repositories --------------------------------------------------------------------------


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0

    def deposit(self, amount: int) -> None:
        self.emit(Deposited(self.id, amount))

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount


def test_a_repository_saves_loads_and_snapshots(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_policy=SnapshotEvery(4))
    account = repo.new("a1")
    for amount in range(1, 10):
        account.deposit(amount)
        repo.save(account)
    snapshot = store.load_snapshot("Account-a1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.data) == (8, {"balance": 36})
    loaded = repo.get("a1")
    assert (loaded.balance, loaded.version) == (45, 9)
    stale = repo.get("a1")
    repo.update("a1", lambda fresh: fresh.deposit(1))
    stale.deposit(1)
    with pytest.raises(ConcurrencyError):
        repo.save(stale)
    others = [repo.new(f"b{n}") for n in range(5)]
    for other in others:
        other.deposit(2)
    assert len(repo.save_all(others)) == 5
    assert [repo.get(f"b{n}").balance for n in range(5)] == [2] * 5


def test_saving_and_projecting_in_one_transaction(
    sql: SqlEngine, engine: Engine, store: EventStore, tag: str
) -> None:
    repo = Repository(store, Account)
    account = repo.new("a1")
    account.deposit(5)

    def save_then_fail() -> None:
        with engine.transaction() as tx:
            repo.save(account, transaction=tx)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        save_then_fail()
    assert repo.find("a1") is None  # the rolled-back object is discarded: start again
    projection = Balances(tag, sql.placeholder)
    runner = ProjectionRunner(store, projection)
    runner.setup()
    account = repo.new("a1")
    account.deposit(5)
    with engine.transaction() as tx:
        repo.save(account, transaction=tx)
        tx.execute(f"INSERT INTO {projection.applied} (position) VALUES (0)")
    assert repo.get("a1").balance == 5
    assert applied(engine, projection) == [0]


async def test_the_async_repository(sql: SqlEngine, engine: Engine, tag: str) -> None:
    async_store = open_async_event_store(engine, table_prefix=tag)
    repo = AsyncRepository(async_store, Account, snapshot_policy=SnapshotEvery(2))
    account = repo.new("a1")
    for amount in (1, 2, 3):
        account.deposit(amount)
        await repo.save(account)
    assert (await repo.get("a1")).balance == 6
    await repo.update("a1", lambda fresh: fresh.deposit(4), retries=2)
    assert (await repo.get("a1")).version == 4
    assert (await async_store.load_snapshot("Account-a1")) is not None
    await async_store.drop_tables()
    await async_store.close()
    if sql.name == "postgres":
        await engine.aclose()
