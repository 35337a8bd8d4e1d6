"""Projections, their runner and the read-model helper, on SQLite files and the memory store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.engines._base import Transaction
from seawall.errors import ConfigurationError, SeawallError
from seawall.eventsourcing import (
    AsyncExternalProjection,
    AsyncProjection,
    AsyncProjectionRunner,
    AsyncReadModel,
    EventStore,
    EventTypes,
    ExternalProjection,
    NewEvent,
    Projection,
    ProjectionBatchApplied,
    ProjectionError,
    ProjectionHandlerError,
    ProjectionReset,
    ProjectionRunner,
    ReadModel,
    RecordedEvent,
    handles,
    open_async_event_store,
    open_event_store,
)


@dataclass
class Deposited:
    account: str
    amount: int


@dataclass
class Withdrawn:
    account: str
    amount: int


@dataclass
class Renamed:
    account: str
    name: str


class Balances(Projection):
    """Balance per account, and a log of every applied position (to catch doubles)."""

    name = "balances"

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on

    def setup(self, tx: Transaction) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, total INT)")
        tx.execute("CREATE TABLE IF NOT EXISTS applied (position INT)")

    def _add(self, event: RecordedEvent, tx: Transaction, amount: int) -> None:
        if event.data["amount"] == self.fail_on:
            raise ValueError("poison")
        tx.execute(
            "INSERT INTO balances VALUES (?, ?) ON CONFLICT (account)"
            " DO UPDATE SET total = total + excluded.total",
            [event.data["account"], amount],
        )
        tx.execute("INSERT INTO applied VALUES (?)", [event.position])

    @handles(Deposited)
    def _deposited(self, event: RecordedEvent, tx: Transaction) -> None:
        self._add(event, tx, event.data["amount"])

    @handles("Withdrawn")
    def _withdrawn(self, event: RecordedEvent, tx: Transaction) -> None:
        self._add(event, tx, -event.data["amount"])

    def reset(self, tx: Transaction) -> None:
        tx.execute("DELETE FROM balances")
        tx.execute("DELETE FROM applied")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    opened = seawall.connect(f"sqlite:///{tmp_path / 'p.db'}")
    yield opened
    opened.close()


@pytest.fixture
def store(engine: Engine) -> EventStore:
    return open_event_store(engine)


def write(store: EventStore, count: int, *, start: int = 0) -> dict[str, int]:
    """``count`` deposits and withdrawals over three accounts; returns the expected totals."""
    totals: dict[str, int] = {}
    for n in range(start, start + count):
        account = f"acct-{n % 3}"
        event: Any = Deposited(account, n + 1) if n % 4 else Withdrawn(account, 1)
        store.append(account, [event])
        totals[account] = totals.get(account, 0) + (n + 1 if n % 4 else -1)
    return totals


def balances(engine: Engine) -> dict[str, int]:
    rows = ReadModel(engine).query("SELECT account, total FROM balances")
    return {row["account"]: row["total"] for row in rows}


def applied(engine: Engine) -> list[int]:
    rows = ReadModel(engine).query("SELECT position FROM applied ORDER BY position")
    return [row["position"] for row in rows]


# --- applying events -----------------------------------------------------------------------


def test_catch_up_applies_every_event_once(engine: Engine, store: EventStore) -> None:
    expected = write(store, 25)
    runner = ProjectionRunner(store, Balances(), batch_size=10)
    batches: list[ProjectionBatchApplied] = []
    runner.events.subscribe(batches.append)
    assert runner.catch_up() == 25
    assert balances(engine) == expected
    assert applied(engine) == list(range(1, 26))
    assert store.load_checkpoint("balances") == 25
    assert [(batch.count, batch.position) for batch in batches] == [(10, 10), (10, 20), (5, 25)]
    assert batches[0].source == "balances"
    assert runner.catch_up() == 0
    more = write(store, 3, start=25)
    assert runner.run_once() == 3
    assert balances(engine) == {
        account: expected.get(account, 0) + more.get(account, 0) for account in expected
    }
    assert runner.position == 28


def test_a_failing_handler_rolls_back_the_batch_and_its_checkpoint(
    engine: Engine, store: EventStore
) -> None:
    expected = write(store, 12)
    ProjectionRunner(store, Balances(), batch_size=5).run_once()
    runner = ProjectionRunner(store, Balances(fail_on=8), batch_size=5)
    with pytest.raises(ProjectionHandlerError) as caught:
        runner.catch_up()
    error = caught.value
    assert (error.projection, error.position, error.version) == ("balances", 8, 3)
    assert (error.event_type, error.stream_id, error.rolled_back) == ("Deposited", "acct-1", True)
    assert isinstance(error.__cause__, ValueError)
    assert "rolled back" in str(error)
    assert store.load_checkpoint("balances") == 5
    assert applied(engine) == [1, 2, 3, 4, 5]  # events 6 and 7 of the failed batch are undone
    fixed = ProjectionRunner(store, Balances(), batch_size=5)
    assert fixed.catch_up() == 7
    assert balances(engine) == expected
    assert applied(engine) == list(range(1, 13))


def test_only_the_handled_types_are_read(engine: Engine, store: EventStore) -> None:
    seen: list[str] = []

    class DepositsOnly(Projection):
        name = "deposits"

        @handles(Deposited)
        def _deposited(self, event: RecordedEvent, tx: Transaction) -> None:
            seen.append(event.type)

    class MoreDeposits(DepositsOnly):
        name = "more"

        def _deposited(self, event: RecordedEvent, tx: Transaction) -> None:  # keeps the mark
            seen.append(f"more {event.type}")

    store.append("x", [Renamed("x", "y"), Deposited("x", 1), Withdrawn("x", 1)])
    runner = ProjectionRunner(store, DepositsOnly())
    assert runner.core.types == ("Deposited",)
    assert runner.catch_up() == 1
    assert seen == ["Deposited"]
    assert store.load_checkpoint("deposits") == 2
    assert ProjectionRunner(store, MoreDeposits()).catch_up() == 1
    assert seen == ["Deposited", "more Deposited"]


def test_an_overridden_handle_sees_every_event(engine: Engine, store: EventStore) -> None:
    seen: list[tuple[str, int]] = []

    class Everything(Projection):
        name = "everything"

        def handle(self, event: RecordedEvent, tx: Transaction) -> None:
            seen.append((event.type, event.position))

    store.append("x", [Renamed("x", "y"), Deposited("x", 1)])
    runner = ProjectionRunner(store, Everything())
    assert runner.core.types is None
    assert runner.catch_up() == 2
    assert seen == [("Renamed", 1), ("Deposited", 2)]


def test_an_explicit_type_filter_wins(engine: Engine, store: EventStore) -> None:
    seen: list[str] = []

    class Renames(Projection):
        name = "renames"
        types = ("Renamed",)

        def handle(self, event: RecordedEvent, tx: Transaction) -> None:
            seen.append(event.data["name"])

    store.append("x", [Renamed("x", "a"), Deposited("x", 1), Renamed("x", "b")])
    assert ProjectionRunner(store, Renames()).catch_up() == 2
    assert seen == ["a", "b"]
    assert store.load_checkpoint("renames") == 3


def test_registry_names_and_upcasters_reach_the_handlers(tmp_path: Path) -> None:
    types = EventTypes()
    types.register(Deposited, name="bank.deposited")
    types.register(Withdrawn, name="bank.withdrawn")
    types.rename("OldDeposit", "bank.deposited")
    engine = seawall.connect(f"sqlite:///{tmp_path / 'r.db'}")
    store = open_event_store(engine, types=types)
    store.append("acct-1", [NewEvent("OldDeposit", {"account": "acct-1", "amount": 5})])
    store.append("acct-1", [Deposited("acct-1", 2), Withdrawn("acct-1", 1)])

    class Typed(Projection):
        name = "typed"

        def setup(self, tx: Transaction) -> None:
            Balances().setup(tx)

        @handles(Deposited)
        def _deposited(self, event: RecordedEvent, tx: Transaction) -> None:
            Balances()._add(event, tx, event.event.amount)

        @handles("bank.withdrawn")
        def _withdrawn(self, event: RecordedEvent, tx: Transaction) -> None:
            assert isinstance(event.event, Withdrawn)
            Balances()._add(event, tx, -event.data["amount"])

    runner = ProjectionRunner(store, Typed())
    assert set(runner.core.types or ()) == {"bank.deposited", "bank.withdrawn"}
    assert runner.catch_up() == 3
    assert balances(engine) == {"acct-1": 6}
    engine.close()


# --- rebuild and lag -----------------------------------------------------------------------


def test_rebuild_starts_from_zero(engine: Engine, store: EventStore) -> None:
    expected = write(store, 20)
    runner = ProjectionRunner(store, Balances(), batch_size=7)
    runner.catch_up()
    engine.connection.execute("UPDATE balances SET total = -999")  # the read model drifted
    resets: list[ProjectionReset] = []
    runner.events.subscribe(resets.append, types=(ProjectionReset,))
    assert runner.rebuild() == 20
    assert balances(engine) == expected
    assert applied(engine) == list(range(1, 21))
    assert len(resets) == 1
    other = ProjectionRunner(store, Balances(), batch_size=7)  # a second runner, same name
    assert other.catch_up() == 0


def test_rebuild_needs_a_reset(engine: Engine, store: EventStore) -> None:
    class NoReset(Projection):
        name = "no-reset"

        @handles(Deposited)
        def _deposited(self, event: RecordedEvent, tx: Transaction) -> None:
            pass

    write(store, 5)
    runner = ProjectionRunner(store, NoReset())
    runner.catch_up()
    with pytest.raises(NotImplementedError, match="override reset"):
        runner.rebuild()
    assert store.load_checkpoint("no-reset") == 4  # nothing changed (5 is a withdrawal)


def test_lag_counts_events_and_their_age(engine: Engine, store: EventStore) -> None:
    write(store, 10)
    store.append("x", [Renamed("x", "n")])  # not a type the projection reads
    runner = ProjectionRunner(store, Balances(), batch_size=4)
    first = store.read_all(limit=1)[0]
    lag = runner.lag(now=first.timestamp + timedelta(seconds=30))
    assert (lag.name, lag.checkpoint, lag.events) == ("balances", 0, 10)
    assert lag.seconds == pytest.approx(30.0)
    runner.run_once()
    fifth = store.read_all(after=4, limit=1)[0]
    lag = runner.lag(now=fifth.timestamp + timedelta(seconds=2))
    assert (lag.checkpoint, lag.events) == (4, 6)
    assert lag.seconds == pytest.approx(2.0)
    runner.catch_up()
    lag = runner.lag()
    assert (lag.checkpoint, lag.events, lag.seconds) == (10, 0, 0.0)


# --- following the log ---------------------------------------------------------------------


def test_run_follows_new_events_on_the_clock(
    engine: Engine, store: EventStore, clock: ManualClock
) -> None:
    runner = ProjectionRunner(store, Balances(), batch_size=5, poll_interval=2.0, clock=clock)
    polls = 0

    def stop_when() -> bool:
        nonlocal polls
        polls += 1
        if polls == 2:
            write(store, 7)  # arrives while the runner waits
        return polls >= 6

    runner.run(stop_when=stop_when)
    assert applied(engine) == list(range(1, 8))
    assert clock.now() > 1000.0  # it waited on the manual clock, not in real time
    runner.stop()


def test_two_runners_on_one_database_never_apply_an_event_twice(tmp_path: Path) -> None:
    """Each runner's cached position goes stale as the other moves on; the checkpoint
    read inside the batch's transaction is what counts."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engines = [seawall.connect(url), seawall.connect(url)]
    stores = [open_event_store(engine) for engine in engines]
    expected = write(stores[0], 40)
    runners = [ProjectionRunner(store, Balances(), batch_size=3) for store in stores]
    counts = [0, 0]
    turn = 0
    while True:
        applied_now = runners[turn % 2].run_once()
        counts[turn % 2] += applied_now
        turn += 1
        if applied_now == 0 and runners[turn % 2].run_once() == 0:
            break
    assert counts[0] > 0
    assert counts[1] > 0
    assert sum(counts) == 40
    assert balances(engines[0]) == expected
    assert applied(engines[0]) == list(range(1, 41))
    for engine in engines:
        engine.close()


# --- external read models (at least once) ----------------------------------------------------


class Totals(ExternalProjection):
    """A dict read model that remembers the last position it applied (idempotent)."""

    name = "totals"

    def __init__(self, fail_on: int | None = None) -> None:
        self.totals: dict[str, int] = {}
        self.last = 0
        self.calls: list[int] = []
        self.fail_on = fail_on
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    @handles(Deposited, Withdrawn)
    def _changed(self, event: RecordedEvent) -> None:
        self.calls.append(event.position)
        if event.position == self.fail_on:
            raise ValueError("poison")
        if event.position <= self.last:
            return
        sign = 1 if event.type == "Deposited" else -1
        account = event.data["account"]
        self.totals[account] = self.totals.get(account, 0) + sign * event.data["amount"]
        self.last = event.position

    def reset(self) -> None:
        self.totals = {}
        self.last = 0


def test_an_external_projection_on_the_memory_store() -> None:
    store = open_event_store("memory://")
    expected = write(store, 9)
    totals = Totals(fail_on=6)
    runner = ProjectionRunner(store, totals, batch_size=4)
    with pytest.raises(ProjectionHandlerError) as caught:
        runner.catch_up()
    assert (caught.value.position, caught.value.rolled_back) == (6, False)
    assert "checkpoint stays" in str(caught.value)
    assert store.load_checkpoint("totals") == 5  # stored up to the event before the failure
    totals.fail_on = None
    assert runner.catch_up() == 4
    assert totals.totals == expected
    assert totals.calls == [1, 2, 3, 4, 5, 6, 6, 7, 8, 9]
    assert totals.setups == 1
    totals.totals["acct-0"] = 0
    assert runner.rebuild() == 9
    assert totals.totals == expected
    assert runner.lag().events == 0


def test_a_transactional_projection_needs_sql_transactions() -> None:
    with pytest.raises(ConfigurationError, match="ExternalProjection"):
        ProjectionRunner(open_event_store("memory://"), Balances())


# --- declarations --------------------------------------------------------------------------


def test_bad_projections_are_refused(store: EventStore) -> None:
    class Nameless(Balances):
        name = ""

    with pytest.raises(ConfigurationError, match="names the projection's checkpoint"):
        ProjectionRunner(store, Nameless())

    class Idle(Projection):
        name = "idle"

    with pytest.raises(ConfigurationError, match="handles nothing"):
        ProjectionRunner(store, Idle())
    with pytest.raises(ConfigurationError, match="two handlers"):

        class Twice(Projection):
            name = "twice"

            @handles(Deposited)
            def _a(self, event: RecordedEvent, tx: Transaction) -> None: ...

            @handles(Deposited)
            def _b(self, event: RecordedEvent, tx: Transaction) -> None: ...

    class ByClassAndName(Projection):
        name = "both"

        @handles(Deposited)
        def _a(self, event: RecordedEvent, tx: Transaction) -> None: ...

        @handles("Deposited")
        def _b(self, event: RecordedEvent, tx: Transaction) -> None: ...

    with pytest.raises(ConfigurationError, match="two handlers for event type 'Deposited'"):
        ProjectionRunner(store, ByClassAndName())

    class StringTypes(Balances):
        types = "Deposited"

    with pytest.raises(ConfigurationError, match="not a string"):
        ProjectionRunner(store, StringTypes())
    with pytest.raises(ConfigurationError):
        handles()
    with pytest.raises(ConfigurationError):
        handles(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="AsyncProjectionRunner"):
        ProjectionRunner(store, AsyncBalances())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="batch_size"):
        ProjectionRunner(store, Balances(), batch_size=0)
    assert issubclass(ProjectionHandlerError, ProjectionError)
    assert issubclass(ProjectionError, SeawallError)


def test_calling_handle_directly_dispatches_to_the_marked_method(
    engine: Engine, store: EventStore
) -> None:
    store.append("acct-1", [Deposited("acct-1", 4)])
    projection = Balances()
    event = store.read_all()[0]
    with engine.transaction() as tx:
        projection.setup(tx)
        projection.handle(event, tx)
        projection.handle(store.read_all()[0], tx)
    assert balances(engine) == {"acct-1": 8}


# --- the read model helper -----------------------------------------------------------------


def test_read_model_queries(engine: Engine, store: EventStore) -> None:
    write(store, 8)
    ProjectionRunner(store, Balances()).catch_up()
    read = ReadModel(engine)
    rows = read.query("SELECT account, total FROM balances ORDER BY account")
    assert [row["account"] for row in rows] == ["acct-0", "acct-1", "acct-2"]
    assert read.one("SELECT total FROM balances WHERE account = ?", ["acct-1"]) == {"total": 9}
    assert read.one("SELECT total FROM balances WHERE account = ?", ["none"]) is None
    assert read.scalar("SELECT count(*) FROM applied") == 8
    assert read.scalar("SELECT total FROM balances WHERE account = :a", {"a": "none"}) is None
    with engine.transaction() as tx:
        tx.execute("DELETE FROM balances")
        assert read.query("SELECT * FROM balances", transaction=tx) == []
    assert read.query("DELETE FROM applied") == []
    with pytest.raises(ConfigurationError):
        ReadModel("memory://")
    with pytest.raises(SeawallError, match="no such table"):
        read.query("SELECT * FROM missing")


# --- async ---------------------------------------------------------------------------------


class AsyncBalances(AsyncProjection):
    name = "balances"

    async def setup(self, tx: Transaction) -> None:
        Balances().setup(tx)

    @handles(Deposited, Withdrawn)
    async def _changed(self, event: RecordedEvent, tx: Transaction) -> None:
        sign = 1 if event.type == "Deposited" else -1
        Balances()._add(event, tx, sign * event.data["amount"])

    async def reset(self, tx: Transaction) -> None:
        Balances().reset(tx)


async def test_the_async_runner_on_sqlite(engine: Engine, clock: ManualClock) -> None:
    store = open_async_event_store(engine)
    expected = write(store.sync, 15)  # type: ignore[attr-defined]
    runner = AsyncProjectionRunner(store, AsyncBalances(), batch_size=4, clock=clock)
    assert await runner.catch_up() == 15
    assert balances(engine) == expected
    assert (await runner.lag()).events == 0
    assert await runner.rebuild() == 15
    assert applied(engine) == list(range(1, 16))
    read = AsyncReadModel(engine)
    assert await read.scalar("SELECT count(*) FROM applied") == 15
    assert (await read.one("SELECT total FROM balances WHERE account = ?", ["acct-1"])) == {
        "total": expected["acct-1"]
    }
    polls = 0

    def stop_when() -> bool:
        nonlocal polls
        polls += 1
        return polls >= 3

    write(store.sync, 2, start=15)  # type: ignore[attr-defined]
    await runner.run(stop_when=stop_when)
    assert applied(engine)[-1] == 17
    runner.stop()


async def test_the_async_external_runner_on_memory() -> None:
    store = open_async_event_store(f"memory://{uuid.uuid4().hex}")
    expected = write(store.sync, 6)  # type: ignore[attr-defined]
    totals: dict[str, int] = {}

    class AsyncTotals(AsyncExternalProjection):
        name = "totals"

        async def handle(self, event: RecordedEvent) -> None:
            sign = 1 if event.type == "Deposited" else -1
            account = event.data["account"]
            totals[account] = totals.get(account, 0) + sign * event.data["amount"]

        async def reset(self) -> None:
            totals.clear()

    runner = AsyncProjectionRunner(store, AsyncTotals(), batch_size=4)
    assert await runner.catch_up() == 6
    assert totals == expected
    lag = await runner.lag()
    assert (lag.checkpoint, lag.events) == (6, 0)
    assert await runner.rebuild() == 6
    assert totals == expected
    with pytest.raises(ConfigurationError, match="ProjectionRunner"):
        AsyncProjectionRunner(store, Balances())  # type: ignore[arg-type]
