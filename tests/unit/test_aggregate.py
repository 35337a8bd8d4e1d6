"""Aggregates and repositories on the memory store (and SQLite where transactions matter)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.errors import ConfigurationError, RetryError, SeawallError
from seawall.eventsourcing import (
    Aggregate,
    AggregateError,
    AggregateNotFoundError,
    AsyncRepository,
    ConcurrencyError,
    CorruptEventError,
    EventSerializationError,
    EventStore,
    EventTypes,
    NewEvent,
    Repository,
    SnapshotEvery,
    SnapshotSaved,
    SnapshotStateError,
    UnhandledEventError,
    UpdateRetried,
    applies,
    open_async_event_store,
    open_event_store,
)
from seawall.resilience import Retry

# --- a small domain ------------------------------------------------------------------------


@dataclass
class Opened:
    owner: str


@dataclass
class Deposited:
    amount: int


@dataclass
class Withdrawn:
    amount: int


class InsufficientFundsError(Exception):
    pass


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.balance = 0
        self.history: list[int] = []

    def open(self, owner: str) -> None:
        if self.owner:
            raise ValueError("already open")
        self.emit(Opened(owner))

    def deposit(self, amount: int) -> None:
        self.emit(Deposited(amount))

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFundsError(amount)
        self.emit(Withdrawn(amount))

    @applies(Opened)
    def _opened(self, event: Opened) -> None:
        self.owner = event.owner

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount
        self.history.append(event.amount)

    @applies(Withdrawn)
    def _withdrawn(self, event: Withdrawn) -> None:
        self.balance -= event.amount
        self.history.append(-event.amount)


@pytest.fixture
def store() -> EventStore:
    return open_event_store("memory://")


@pytest.fixture
def accounts(store: EventStore) -> Repository[Account]:
    return Repository(store, Account)


def opened(repo: Repository[Account], id: str = "a1", *deposits: int) -> Account:
    account = repo.new(id)
    account.open("ann")
    for amount in deposits:
        account.deposit(amount)
    repo.save(account)
    return account


# --- the aggregate on its own --------------------------------------------------------------


def test_emit_applies_at_once_and_keeps_the_event_pending() -> None:
    account = Account("a1")
    account.open("ann")
    account.deposit(30)
    assert (account.owner, account.balance, account.version, account.stored_version) == (
        "ann",
        30,
        2,
        0,
    )
    assert account.pending_events == (Opened("ann"), Deposited(30))
    with pytest.raises(InsufficientFundsError):
        account.withdraw(31)
    assert account.version == 2  # a refused command records nothing
    assert account.stream_id == "Account-a1"
    assert repr(account) == "Account(id='a1', version=2)"


def test_an_event_without_an_apply_method_is_refused_with_a_fix() -> None:
    @dataclass
    class Closed:
        reason: str

    account = Account("a1")
    with pytest.raises(UnhandledEventError) as caught:
        account.emit(Closed("bye"))
    assert caught.value.event_type == "Closed"
    assert "@applies(Closed)" in str(caught.value)
    assert isinstance(caught.value, AggregateError | TypeError)
    assert account.version == 0
    assert account.pending_events == ()


def test_subclasses_inherit_and_override_apply_methods() -> None:
    @dataclass
    class BigDeposited(Deposited):
        pass

    class Doubling(Account):
        @applies(Withdrawn)
        def _withdrawn(self, event: Withdrawn) -> None:
            self.balance -= 2 * event.amount

    class Renamed(Account):
        def _deposited(self, event: Deposited) -> None:  # overrides by name, keeps the mark
            self.balance += 100 * event.amount

    doubling = Doubling("d")
    doubling.deposit(10)
    doubling.withdraw(3)
    assert doubling.balance == 4
    renamed = Renamed("r")
    renamed.deposit(1)
    assert renamed.balance == 100
    account = Account("a")
    account.emit(BigDeposited(7))  # an event subclass uses its base class's apply method
    assert account.balance == 7
    assert Doubling.stream_prefix == "Doubling-"
    assert set(Account.known_event_classes()) == {Opened, Deposited, Withdrawn}


def test_bad_declarations_are_refused_when_the_class_is_made() -> None:
    with pytest.raises(ConfigurationError, match="two apply methods"):

        class Twice(Aggregate):
            @applies(Opened)
            def _a(self, event: Opened) -> None: ...

            @applies(Opened)
            def _b(self, event: Opened) -> None: ...

    with pytest.raises(ConfigurationError, match="at least one"):
        applies()
    with pytest.raises(ConfigurationError, match="event classes"):
        applies("Opened")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="snapshot_schema_version"):

        class BadVersion(Aggregate):
            snapshot_schema_version = 0

    with pytest.raises(ConfigurationError, match="non-empty string"):
        Account("")


def test_apply_can_be_overridden_with_match() -> None:
    class Counter(Aggregate):
        event_types = (Deposited, Withdrawn)

        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.total = 0

        def apply(self, event: Any) -> None:
            match event:
                case Deposited(amount=amount):
                    self.total += amount
                case Withdrawn(amount=amount):
                    self.total -= amount
                case _:
                    raise UnhandledEventError("Counter", type(event).__name__)

    store = open_event_store("memory://")
    repo = Repository(store, Counter)
    counter = repo.new("c")
    counter.emit(Deposited(5))
    counter.emit(Withdrawn(2))
    repo.save(counter)
    assert repo.get("c").total == 3


def test_default_snapshot_round_trips_public_state_and_refuses_lossy_values() -> None:
    account = Account("a1")
    account.open("ann")
    account.deposit(5)
    state = account.snapshot()
    assert state == {"owner": "ann", "balance": 5, "history": [5]}
    fresh = Account("a1")
    fresh.restore({**state, "_version": 99})  # private names are never restored
    assert (fresh.owner, fresh.balance, fresh.history, fresh.version) == ("ann", 5, [5], 0)

    class Tagged(Account):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.tags = {"vip"}
            self.pair = (1, 2)

    with pytest.raises(SnapshotStateError, match="pair") as caught:
        Tagged("t").snapshot()
    assert "override Tagged.snapshot()" in str(caught.value)

    class Opaque(Account):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.lock = object()

    with pytest.raises(SnapshotStateError, match="not JSON serializable"):
        Opaque("o").snapshot()
    with pytest.raises(SnapshotStateError, match="expects a dict"):
        fresh.restore([1, 2])


# --- the repository ------------------------------------------------------------------------


def test_save_then_get_rebuilds_the_same_state(accounts: Repository[Account]) -> None:
    account = opened(accounts, "a1", 10, 20)
    account.withdraw(5)
    result = accounts.save(account)
    assert (result.stream_id, result.version) == ("Account-a1", 4)
    assert account.pending_events == ()
    assert account.stored_version == account.version == 4
    loaded = accounts.get("a1")
    assert (loaded.owner, loaded.balance, loaded.history) == ("ann", 25, [10, 20, -5])
    assert (loaded.version, loaded.stored_version) == (4, 4)
    assert loaded.pending_events == ()


def test_saving_nothing_writes_nothing(accounts: Repository[Account], store: EventStore) -> None:
    account = opened(accounts, "a1")
    result = accounts.save(account)
    assert (result.version, result.position) == (1, 0)
    assert store.stream_version("Account-a1") == 1


def test_missing_aggregates(accounts: Repository[Account]) -> None:
    assert accounts.find("nope") is None
    with pytest.raises(AggregateNotFoundError) as caught:
        accounts.get("nope")
    assert (caught.value.aggregate_type, caught.value.aggregate_id) == ("Account", "nope")
    assert caught.value.stream_id == "Account-nope"
    assert isinstance(caught.value, LookupError)
    fresh = accounts.get_or_new("nope")
    assert (fresh.version, fresh.balance) == (0, 0)
    opened(accounts, "there", 5)
    assert accounts.get_or_new("there").balance == 5
    with pytest.raises(ConfigurationError):
        accounts.get("")


def test_a_stale_save_raises_and_writes_nothing(
    accounts: Repository[Account], store: EventStore
) -> None:
    opened(accounts, "a1", 10)
    first = accounts.get("a1")
    second = accounts.get("a1")
    first.deposit(1)
    accounts.save(first)
    second.deposit(2)
    with pytest.raises(ConcurrencyError) as caught:
        accounts.save(second)
    assert (caught.value.expected, caught.value.actual) == (2, 3)
    assert second.pending_events == (Deposited(2),)  # kept: the caller decides
    assert accounts.get("a1").balance == 11
    assert store.stream_version("Account-a1") == 3


def test_two_new_aggregates_with_one_id_conflict(accounts: Repository[Account]) -> None:
    opened(accounts, "a1")
    duplicate = accounts.new("a1")
    duplicate.open("bob")
    with pytest.raises(ConcurrencyError) as caught:
        accounts.save(duplicate)
    assert (caught.value.expected, caught.value.actual) == (0, 1)


def test_get_at_a_version_replays_only_that_far(accounts: Repository[Account]) -> None:
    opened(accounts, "a1", 1, 2, 3, 4)
    assert accounts.get("a1", at_version=3).history == [1, 2]
    assert accounts.get("a1", at_version=3).version == 3
    with pytest.raises(ConfigurationError, match="at_version"):
        accounts.get("a1", at_version=0)


def test_save_all_writes_every_aggregate_or_none(
    accounts: Repository[Account], store: EventStore
) -> None:
    one, two, untouched = accounts.new("1"), accounts.new("2"), opened(accounts, "3")
    one.open("a")
    two.open("b")
    two.deposit(4)
    results = accounts.save_all([one, two, untouched])
    assert [(result.stream_id, result.version) for result in results] == [
        ("Account-1", 1),
        ("Account-2", 2),
    ]
    assert accounts.get("2").balance == 4
    assert accounts.save_all([untouched]) == []
    stale = accounts.get("1")
    fresh = accounts.get("1")
    fresh.deposit(1)
    accounts.save(fresh)
    stale.deposit(9)
    other = accounts.get("2")
    other.deposit(100)
    with pytest.raises(ConcurrencyError):
        accounts.save_all([other, stale])
    assert accounts.get("2").balance == 4  # nothing of the batch was written
    assert other.pending_events == (Deposited(100),)


def test_a_repository_refuses_other_aggregates(accounts: Repository[Account]) -> None:
    class Other(Aggregate):
        pass

    with pytest.raises(ConfigurationError, match="saves Account"):
        accounts.save(Other("x"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="subclass of Aggregate"):
        Repository(open_event_store("memory://"), dict)  # type: ignore[type-var]
    with pytest.raises(ConfigurationError, match="knows no event classes"):
        Repository(open_event_store("memory://"), Other)
    with pytest.raises(ConfigurationError, match="SnapshotPolicy"):
        Repository(open_event_store("memory://"), Account, snapshot_policy=50)  # type: ignore[arg-type]


def test_two_event_classes_with_one_name_need_a_registry() -> None:
    import types as module_types

    other = module_types.SimpleNamespace()
    exec("from dataclasses import dataclass\n@dataclass\nclass Opened:\n    x: int", vars(other))

    class Confused(Account):
        @applies(other.Opened)
        def _other(self, event: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="two event classes named 'Opened'"):
        Repository(open_event_store("memory://"), Confused)


# --- loading errors ------------------------------------------------------------------------


def test_a_stored_event_the_aggregate_does_not_know_is_reported(
    accounts: Repository[Account], store: EventStore
) -> None:
    opened(accounts, "a1")
    store.append("Account-a1", [NewEvent("Frozen", {"why": "audit"})])
    with pytest.raises(UnhandledEventError) as caught:
        accounts.get("a1")
    assert (caught.value.event_type, caught.value.stream_id) == ("Frozen", "Account-a1")


def test_data_that_does_not_fit_the_event_class_is_corrupt(
    accounts: Repository[Account], store: EventStore
) -> None:
    store.append("Account-a1", [NewEvent("Opened", {"owner": "ann", "extra": 1})])
    with pytest.raises(CorruptEventError, match="cannot build Opened") as caught:
        accounts.get("a1")
    assert (caught.value.stream_id, caught.value.version) == ("Account-a1", 1)


def test_stored_json_is_decoded_or_reported(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'a.db'}")
    repo = Repository(open_event_store(engine), Account)
    opened(repo, "a1", 5)
    update = "UPDATE seawall_events SET data = ? WHERE stream_id = 'Account-a1' AND version = 2"
    engine.connection.execute(update, [' {"amount": 7} '])  # valid JSON, not compact
    assert repo.get("a1").balance == 7
    engine.connection.execute(update, ['{"amount": 7'])
    with pytest.raises(CorruptEventError, match="not valid JSON") as caught:
        repo.get("a1")
    assert caught.value.version == 2
    engine.connection.execute(update, ['{"amount": 7} trailing'])
    with pytest.raises(CorruptEventError, match="not valid JSON"):
        repo.get("a1")
    engine.close()


# --- snapshots -----------------------------------------------------------------------------


def test_snapshots_are_saved_by_policy_and_used_on_load(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_policy=SnapshotEvery(3))
    seen: list[SnapshotSaved] = []
    repo.events.subscribe(seen.append, types=(SnapshotSaved,))
    account = repo.new("a1")
    account.open("ann")
    repo.save(account)  # version 1: no snapshot
    assert store.load_snapshot("Account-a1") is None
    account.deposit(1)
    account.deposit(2)
    repo.save(account)  # version 3: snapshot
    snapshot = store.load_snapshot("Account-a1")
    assert snapshot is not None
    assert (snapshot.version, snapshot.data["balance"]) == (3, 3)
    for amount in (4, 5):
        account.deposit(amount)
        repo.save(account)
    assert store.load_snapshot("Account-a1").version == 3  # type: ignore[union-attr]
    assert [event.version for event in seen] == [3]

    # Loading reads the snapshot and only the events after it: prove it by
    # rewriting the snapshot's state, which a full replay would not show.
    store.save_snapshot("Account-a1", 3, {"owner": "ann", "balance": 1000, "history": []})
    loaded = repo.get("a1")
    assert (loaded.balance, loaded.history, loaded.version) == (1009, [4, 5], 5)
    assert Repository(store, Account).get("a1").balance == 12  # no policy: full replay
    loaded.deposit(6)
    repo.save(loaded)  # version 6: three events after the snapshot
    assert store.load_snapshot("Account-a1").version == 6  # type: ignore[union-attr]


def test_a_snapshot_of_an_older_shape_is_ignored(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_policy=SnapshotEvery(1))
    opened(repo, "a1", 5)
    store.save_snapshot("Account-a1", 2, {"owner": "ann", "balance": 999, "history": []})

    class AccountV2(Account):
        stream_prefix = "Account-"
        snapshot_schema_version = 2

    assert Repository(store, AccountV2, snapshot_policy=SnapshotEvery(1)).get("a1").balance == 5
    assert repo.get("a1").balance == 999


def test_an_unsnapshottable_state_fails_the_save_before_writing(store: EventStore) -> None:
    class Tagged(Account):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.tags: set[str] = set()

    repo = Repository(store, Tagged, snapshot_policy=SnapshotEvery(2))
    tagged = repo.new("t")
    tagged.open("ann")
    repo.save(tagged)
    tagged.deposit(1)
    with pytest.raises(SnapshotStateError):
        repo.save(tagged)
    assert store.stream_version("Tagged-t") == 1
    assert tagged.pending_events == (Deposited(1),)


def test_custom_snapshot_and_restore(store: EventStore) -> None:
    class Tagged(Account):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.tags: set[int] = set()

        def _deposited(self, event: Deposited) -> None:
            super()._deposited(event)
            self.tags.add(event.amount)

        def snapshot(self) -> Any:
            return {"owner": self.owner, "balance": self.balance, "tags": sorted(self.tags)}

        def restore(self, state: Any) -> None:
            self.owner, self.balance = state["owner"], state["balance"]
            self.tags = set(state["tags"])

    repo = Repository(store, Tagged, snapshot_policy=SnapshotEvery(2))
    tagged = repo.new("t")
    tagged.open("ann")
    tagged.deposit(3)
    tagged.deposit(3)
    repo.save(tagged)
    assert store.load_snapshot("Tagged-t").data["tags"] == [3]  # type: ignore[union-attr]
    assert repo.get("t").tags == {3}


# --- update and retries --------------------------------------------------------------------


def test_update_runs_the_command_and_saves(accounts: Repository[Account]) -> None:
    opened(accounts, "a1", 10)
    assert accounts.update("a1", lambda account: account.balance) == 10
    accounts.update("a1", lambda account: account.withdraw(4))
    assert accounts.get("a1").balance == 6
    with pytest.raises(InsufficientFundsError):
        accounts.update("a1", lambda account: account.withdraw(100))
    with pytest.raises(AggregateNotFoundError):
        accounts.update("new", lambda account: account.open("x"))
    accounts.update("new", lambda account: account.open("x"), create=True)
    assert accounts.get("new").owner == "x"


def _racing(repo: Repository[Account], races: int) -> Any:
    """A command that, the first ``races`` times it runs, lets another writer win the race."""
    runs: list[int] = []

    def command(account: Account) -> int:
        runs.append(account.version)
        if len(runs) <= races:
            rival = repo.get(account.id)
            rival.deposit(1)
            repo.save(rival)
        account.withdraw(1)
        return len(runs)

    return command, runs


def test_update_reruns_the_command_on_fresh_state_after_a_conflict(
    accounts: Repository[Account],
) -> None:
    opened(accounts, "a1", 10)
    retried: list[UpdateRetried] = []
    accounts.events.subscribe(retried.append)
    command, runs = _racing(accounts, races=2)
    assert accounts.update("a1", command, retries=3) == 3
    assert runs == [2, 3, 4]  # each attempt saw the rival's new event
    assert accounts.get("a1").balance == 10 + 2 - 1
    assert [(event.attempt, event.expected, event.actual) for event in retried] == [
        (1, 2, 3),
        (2, 3, 4),
    ]
    assert retried[0].stream_id == "Account-a1"
    assert retried[0].source == "repository:Account"


def test_update_gives_up_after_its_retries(accounts: Repository[Account]) -> None:
    opened(accounts, "a1", 10)
    command, runs = _racing(accounts, races=5)
    with pytest.raises(ConcurrencyError):
        accounts.update("a1", command, retries=1)
    assert len(runs) == 2
    command, runs = _racing(accounts, races=1)
    with pytest.raises(ConcurrencyError):
        accounts.update("a1", command, retries=0)
    assert len(runs) == 1
    with pytest.raises(ConfigurationError, match="retries"):
        accounts.update("a1", command, retries=-1)


def test_update_with_a_retry_policy_waits_on_its_clock(
    accounts: Repository[Account], clock: ManualClock
) -> None:
    opened(accounts, "a1", 10)
    command, runs = _racing(accounts, races=2)
    policy = Retry(attempts=5, wait=0.25, on=ConcurrencyError, clock=clock)
    assert accounts.update("a1", command, retry=policy) == 3
    assert clock.now() == pytest.approx(1000.5)  # two waits of 0.25 s, no real sleep
    command, runs = _racing(accounts, races=9)
    with pytest.raises(RetryError):
        accounts.update("a1", command, retry=policy)
    assert len(runs) == 5


def test_update_inside_a_transaction_does_not_retry(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'a.db'}")
    store = open_event_store(engine)
    repo = Repository(store, Account)
    opened(repo, "a1", 10)
    stale = repo.get("a1")
    repo.update("a1", lambda account: account.deposit(1))
    stale.deposit(5)
    runs: list[int] = []

    def command(account: Account) -> None:
        runs.append(1)
        account.deposit(1)

    with pytest.raises(ConcurrencyError), engine.transaction() as tx:
        repo.save(stale, transaction=tx)
    with engine.transaction() as tx:
        repo.update("a1", command, transaction=tx)
    assert runs == [1]
    assert repo.get("a1").balance == 12
    engine.close()


# --- transactions, metadata, registries ---------------------------------------------------


def test_save_joins_the_callers_transaction(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'a.db'}")
    store = open_event_store(engine)
    repo = Repository(store, Account, snapshot_policy=SnapshotEvery(1))
    engine.connection.execute("CREATE TABLE audit (note TEXT)")
    account = repo.new("a1")
    account.open("ann")

    def save_then_fail() -> None:
        with engine.transaction() as tx:
            tx.execute("INSERT INTO audit VALUES ('opened')")
            repo.save(account, transaction=tx)
            assert repo.get("a1", transaction=tx).owner == "ann"
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        save_then_fail()
    assert repo.find("a1") is None
    assert store.load_snapshot("Account-a1") is None
    assert engine.connection.execute("SELECT count(*) FROM audit").fetchone()[0] == 0
    fresh = repo.new("a1")
    fresh.open("ann")
    with engine.transaction() as tx:
        tx.execute("INSERT INTO audit VALUES ('opened')")
        repo.save(fresh, transaction=tx)
    assert repo.get("a1").owner == "ann"
    assert store.load_snapshot("Account-a1") is not None
    engine.close()


def test_metadata_is_recorded_on_every_saved_event(
    accounts: Repository[Account], store: EventStore
) -> None:
    account = accounts.new("a1")
    account.open("ann")
    account.deposit(3)
    accounts.save(account, causation_id="cmd-1", correlation_id="flow-9", headers={"user": "ann"})
    events = store.read_stream("Account-a1")
    assert [(event.type, event.causation_id, event.correlation_id) for event in events] == [
        ("Opened", "cmd-1", "flow-9"),
        ("Deposited", "cmd-1", "flow-9"),
    ]
    assert events[1].headers == {"user": "ann"}
    assert events[1].data == {"amount": 3}
    assert accounts.get("a1").balance == 3


def test_a_registry_names_and_upcasts_the_events() -> None:
    types = EventTypes()
    types.register(Opened, name="account.opened")
    types.register(Deposited, name="account.deposited")
    types.register(Withdrawn, name="account.withdrawn")

    @types.upcaster("account.deposited", version=1)
    def cents_to_amount(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount": data["cents"] // 100}

    store = open_event_store("memory://", types=types)
    repo = Repository(store, Account)
    account = opened(repo, "a1", 7)
    store.append(
        "Account-a1",
        [NewEvent("account.deposited", {"cents": 500}, schema_version=1)],
        expected_version=account.version,
    )
    loaded = repo.get("a1")
    assert loaded.balance == 12
    assert [event.type for event in store.read_stream("Account-a1")][:2] == [
        "account.opened",
        "account.deposited",
    ]
    loaded.deposit(1)
    repo.save(loaded, correlation_id="c")
    assert store.read_stream("Account-a1")[-1].correlation_id == "c"

    @dataclass
    class Unregistered:
        x: int

    class Wider(Account):
        stream_prefix = "Account-"

        @applies(Unregistered)
        def _unregistered(self, event: Unregistered) -> None: ...

    wide = Repository(store, Wider)
    wider = wide.get("a1")
    wider.emit(Unregistered(1))
    with pytest.raises(EventSerializationError):
        wide.save(wider, correlation_id="c")
    with pytest.raises(EventSerializationError):
        wide.save(wider)


def test_errors_are_seawall_errors() -> None:
    assert issubclass(AggregateError, SeawallError)
    for error in (AggregateNotFoundError, UnhandledEventError, SnapshotStateError):
        assert issubclass(error, AggregateError)


# --- async ---------------------------------------------------------------------------------


async def test_the_async_repository_does_the_same(tmp_path: Path) -> None:
    store = open_async_event_store(f"sqlite:///{tmp_path / 'a.db'}")
    repo = AsyncRepository(store, Account, snapshot_policy=SnapshotEvery(2))
    account = repo.new("a1")
    account.open("ann")
    account.deposit(10)
    await repo.save(account)
    assert (await store.load_snapshot("Account-a1")) is not None
    loaded = await repo.get("a1")
    assert (loaded.balance, loaded.version) == (10, 2)
    assert await repo.find("nope") is None
    with pytest.raises(AggregateNotFoundError):
        await repo.get("nope")
    assert (await repo.get_or_new("nope")).version == 0
    stale = await repo.get("a1")
    assert await repo.update("a1", lambda acc: acc.withdraw(3)) is None
    stale.deposit(1)
    with pytest.raises(ConcurrencyError):
        await repo.save(stale)
    assert (await repo.get("a1", at_version=2)).balance == 10
    second = repo.new("a2")
    second.open("bob")
    results = await repo.save_all([second, await repo.get("a1")])
    assert [result.stream_id for result in results] == ["Account-a2"]
    await repo.update("a3", lambda acc: acc.open("cy"), create=True)
    assert (await repo.get("a3")).owner == "cy"
    await store.close()


async def test_the_async_update_retries(clock: ManualClock) -> None:
    store = open_async_event_store("memory://")
    repo = AsyncRepository(store, Account)
    sync_store = store.sync  # type: ignore[attr-defined]
    sync_repo = Repository(sync_store, Account)
    opened(sync_repo, "a1", 10)
    command, runs = _racing(sync_repo, races=2)
    retried: list[UpdateRetried] = []
    repo.events.subscribe(retried.append)
    assert await repo.update("a1", command) == 3
    assert len(retried) == 2
    command, runs = _racing(sync_repo, races=2)
    policy = Retry(attempts=3, wait=1.0, on=ConcurrencyError, clock=clock)
    assert await repo.update("a1", command, retry=policy) == 3
    assert clock.now() == pytest.approx(1002.0)
    command, runs = _racing(sync_repo, races=5)
    with pytest.raises(ConcurrencyError):
        await repo.update("a1", command, retries=1)
    assert len(runs) == 2
