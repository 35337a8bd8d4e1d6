"""The event-store contract, run against every engine that claims it.

Each test goes through the public API (``open_event_store`` / ``open_async_event_store``)
on a store with a unique table prefix, dropped afterwards. To add an engine, add one
``pytest.param(EngineUnderTest(...))`` to ``ENGINES``.

Memory and SQLite need no waiting. PostgreSQL shows an event to ``read_all`` only
once every older writing transaction in the cluster has finished (that is how the
store avoids skipping positions), so reads of the global log on PostgreSQL retry for
a bounded time; they never wait on memory or SQLite.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.eventsourcing import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendRequest,
    AsyncEventStore,
    ConcurrencyError,
    CorruptEventError,
    EventSerializationError,
    EventStore,
    EventTypes,
    NewEvent,
    RecordedEvent,
    UnknownEventTypeError,
    open_async_event_store,
    open_event_store,
)

# --- engines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineUnderTest:
    """How to reach one engine, what it claims, and how to damage a stored row."""

    name: str
    url: Callable[[pytest.FixtureRequest, Path], str]
    transactions: bool
    corrupt_metadata: Callable[[EventStore, int], None]
    corrupt_data: Callable[[EventStore, int], None] | None
    settle: float = 0.0
    """Seconds ``read_all`` may need before a committed event shows (PostgreSQL)."""
    notifies: bool = False
    """Whether appends wake waiting subscribers (LISTEN/NOTIFY) instead of polling."""


def _memory_corrupt(column: int, value: str) -> Callable[[EventStore, int], None]:
    def corrupt(store: EventStore, position: int) -> None:
        state = store._state  # type: ignore[attr-defined]  # the memory store's rows
        old = state.log[position - 1]
        new = (*old[:column], value, *old[column + 1 :])
        state.log[position - 1] = new
        rows = state.streams[old[1]]
        rows[rows.index(old)] = new

    return corrupt


def _sqlite_corrupt(column: str, value: str) -> Callable[[EventStore, int], None]:
    def corrupt(store: EventStore, position: int) -> None:
        engine = store.engine  # type: ignore[attr-defined]
        engine.connection.execute(
            f"UPDATE {store.table_prefix}events SET {column} = ? WHERE position = ?",  # type: ignore[attr-defined]
            (value, position),
        )

    return corrupt


def _postgres_corrupt(column: str, value: str) -> Callable[[EventStore, int], None]:
    def corrupt(store: EventStore, position: int) -> None:
        with store.engine.connection() as connection:  # type: ignore[attr-defined]
            connection.execute(
                f'UPDATE "{store.table_prefix}events" SET {column} = %s'  # type: ignore[attr-defined]
                " WHERE position = %s",
                (value, position),
            )

    return corrupt


ENGINES = [
    pytest.param(
        EngineUnderTest(
            "memory",
            lambda request, tmp_path: "memory://",
            transactions=False,
            corrupt_metadata=_memory_corrupt(6, "not json"),
            corrupt_data=_memory_corrupt(5, '{"broken'),
        ),
        id="memory",
    ),
    pytest.param(
        EngineUnderTest(
            "sqlite",
            lambda request, tmp_path: f"sqlite:///{tmp_path / 'events.db'}",
            transactions=True,
            corrupt_metadata=_sqlite_corrupt("metadata", "not json"),
            corrupt_data=_sqlite_corrupt("data", '{"broken'),
        ),
        id="sqlite",
    ),
    pytest.param(
        EngineUnderTest(
            "postgres",
            lambda request, tmp_path: require_engine("postgres"),
            transactions=True,
            corrupt_metadata=_postgres_corrupt("metadata", "not json"),
            corrupt_data=None,  # the json type refuses invalid JSON
            settle=15.0,
            notifies=True,
        ),
        id="postgres",
        marks=pytest.mark.engine("postgres"),
    ),
]


@pytest.fixture(params=ENGINES)
def under_test(request: pytest.FixtureRequest) -> EngineUnderTest:
    engine: EngineUnderTest = request.param
    return engine


@pytest.fixture
def prefix() -> str:
    return f"es_{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def engine(
    under_test: EngineUnderTest, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Engine]:
    opened = seawall.connect(under_test.url(request, tmp_path))
    yield opened
    opened.close()


StoreFactory = Callable[..., EventStore]


@pytest.fixture
def make_store(engine: Engine, prefix: str) -> Iterator[StoreFactory]:
    """Stores on the engine under test sharing one unique table prefix; dropped after."""
    opened: list[EventStore] = []

    def make(**options: Any) -> EventStore:
        options.setdefault("table_prefix", prefix)
        store = open_event_store(engine, **options)
        opened.append(store)
        return store

    yield make
    if opened:
        opened[0].drop_tables()
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> EventStore:
    return make_store()


def read_everything(
    store: EventStore,
    under_test: EngineUnderTest,
    *,
    expected: int,
    types: list[str] | None = None,
    page: int = 1000,
) -> list[RecordedEvent]:
    """Page through ``read_all``; on PostgreSQL retry (bounded) until ``expected`` show."""
    deadline = time.monotonic() + under_test.settle
    while True:
        events: list[RecordedEvent] = []
        after = 0
        while True:
            batch = store.read_all(after=after, limit=page, types=types)
            if not batch:
                break
            events.extend(batch)
            after = batch[-1].position
        if len(events) >= expected or time.monotonic() >= deadline:
            return events
        time.sleep(0.05)


def noted(text: str, **metadata: Any) -> NewEvent:
    return NewEvent("Noted", {"text": text}, **metadata)


@dataclass
class Opened:
    owner: str


@dataclass
class Deposited:
    amount: int


# --- append and read a stream ------------------------------------------------------------------


def test_append_then_read_forwards(store: EventStore) -> None:
    result = store.append(
        "acct-1", [noted("a"), noted("b"), noted("c")], expected_version=NO_STREAM
    )
    assert (result.stream_id, result.version) == ("acct-1", 3)
    events = store.read_stream("acct-1")
    assert [event.version for event in events] == [1, 2, 3]
    assert [event.data for event in events] == [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    assert {event.type for event in events} == {"Noted"}
    assert {event.stream_id for event in events} == {"acct-1"}
    assert events[-1].position == result.position
    assert [event.position for event in events] == sorted({event.position for event in events})
    assert store.stream_version("acct-1") == 3


def test_read_forwards_from_a_version_with_a_limit(store: EventStore) -> None:
    store.append("s", [noted(str(n)) for n in range(1, 8)])
    assert [e.version for e in store.read_stream("s", from_version=4)] == [4, 5, 6, 7]
    assert [e.version for e in store.read_stream("s", from_version=2, limit=3)] == [2, 3, 4]
    assert store.read_stream("s", from_version=8) == []


def test_read_backwards(store: EventStore) -> None:
    store.append("s", [noted(str(n)) for n in range(1, 6)])
    assert [e.version for e in store.read_stream("s", backwards=True)] == [5, 4, 3, 2, 1]
    assert [e.version for e in store.read_stream("s", backwards=True, limit=2)] == [5, 4]
    assert [e.version for e in store.read_stream("s", from_version=3, backwards=True)] == [3, 2, 1]
    assert [
        e.data["text"] for e in store.read_stream("s", from_version=4, backwards=True, limit=2)
    ] == [
        "4",
        "3",
    ]


def test_a_missing_stream_is_empty_at_version_zero(store: EventStore) -> None:
    assert store.read_stream("nobody") == []
    assert store.read_stream("nobody", backwards=True) == []
    assert store.stream_version("nobody") == 0
    assert store.load("nobody").version == 0


def test_streams_are_independent(store: EventStore) -> None:
    store.append("a", [noted("a1")])
    store.append("b", [noted("b1"), noted("b2")])
    store.append("a", [noted("a2")], expected_version=1)
    assert [e.data["text"] for e in store.read_stream("a")] == ["a1", "a2"]
    assert [e.data["text"] for e in store.read_stream("b")] == ["b1", "b2"]


def test_dataclass_events_are_named_after_their_class(store: EventStore) -> None:
    store.append("acct", [Opened("ann"), Deposited(5)])
    events = store.read_stream("acct")
    assert [(e.type, e.data) for e in events] == [
        ("Opened", {"owner": "ann"}),
        ("Deposited", {"amount": 5}),
    ]


# --- optimistic concurrency -----------------------------------------------------------------------


def test_no_stream_succeeds_once(store: EventStore) -> None:
    store.append("s", [noted("first")], expected_version=NO_STREAM)
    with pytest.raises(ConcurrencyError) as caught:
        store.append("s", [noted("second")], expected_version=NO_STREAM)
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("s", 0, 1)
    assert "reload the stream" in str(caught.value)
    assert [e.data["text"] for e in store.read_stream("s")] == ["first"]


@pytest.mark.parametrize("expected", [1, 3, 7])
def test_a_wrong_exact_version_writes_nothing(store: EventStore, expected: int) -> None:
    store.append("s", [noted("1"), noted("2")])
    with pytest.raises(ConcurrencyError) as caught:
        store.append("s", [noted("x"), noted("y")], expected_version=expected)
    assert (caught.value.expected, caught.value.actual) == (expected, 2)
    assert store.stream_version("s") == 2
    assert [e.data["text"] for e in store.read_stream("s")] == ["1", "2"]


def test_the_exact_version_appends(store: EventStore) -> None:
    store.append("s", [noted("1")])
    result = store.append("s", [noted("2"), noted("3")], expected_version=1)
    assert result.version == 3
    assert store.append("s", [noted("4")], expected_version=3).version == 4


def test_stream_exists(store: EventStore) -> None:
    with pytest.raises(ConcurrencyError) as caught:
        store.append("s", [noted("1")], expected_version=STREAM_EXISTS)
    assert (caught.value.expected, caught.value.actual) == (STREAM_EXISTS, 0)
    assert store.stream_version("s") == 0
    store.append("s", [noted("1")])
    assert store.append("s", [noted("2")], expected_version=STREAM_EXISTS).version == 2


def test_any_never_conflicts(store: EventStore) -> None:
    assert store.append("s", [noted("1")], expected_version=ANY).version == 1
    assert store.append("s", [noted("2")], expected_version=ANY).version == 2


def test_an_empty_append_only_checks_the_version(store: EventStore) -> None:
    store.append("s", [noted("1")])
    result = store.append("s", [], expected_version=1)
    assert (result.version, result.position) == (1, 0)
    with pytest.raises(ConcurrencyError):
        store.append("s", [], expected_version=0)
    assert store.stream_version("s") == 1


def test_concurrent_exact_appends_let_exactly_one_win(store: EventStore) -> None:
    store.append("s", [noted("0")])
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def writer(n: int) -> None:
        barrier.wait()
        try:
            store.append("s", [noted(f"w{n}")], expected_version=1)
            outcomes.append("won")
        except ConcurrencyError as error:
            outcomes.append(f"lost at {error.actual}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["lost at 2", "lost at 2", "lost at 2", "won"]
    assert store.stream_version("s") == 2


def test_concurrent_any_appends_lose_nothing(store: EventStore) -> None:
    barrier = threading.Barrier(4)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(5):
            store.append("s", [noted(f"{n}-{i}")], expected_version=ANY)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    events = store.read_stream("s")
    assert [e.version for e in events] == list(range(1, 21))
    assert sorted(e.data["text"] for e in events) == sorted(
        f"{n}-{i}" for n in range(4) for i in range(5)
    )


# --- batches -------------------------------------------------------------------------------------


def test_append_batch_writes_every_stream(store: EventStore) -> None:
    store.append("b", [noted("b1")])
    results = store.append_batch(
        [
            AppendRequest("a", [noted("a1"), noted("a2")], NO_STREAM),
            AppendRequest("b", [noted("b2")], 1),
            AppendRequest("c", [], ANY),
        ]
    )
    assert [(r.stream_id, r.version) for r in results] == [("a", 2), ("b", 2), ("c", 0)]
    assert results[0].position < results[1].position
    assert results[1].position == store.read_stream("b")[-1].position
    assert [e.data["text"] for e in store.read_stream("a")] == ["a1", "a2"]
    assert store.append_batch([]) == []


def test_append_batch_is_all_or_nothing(store: EventStore) -> None:
    store.append("b", [noted("b1")])
    with pytest.raises(ConcurrencyError) as caught:
        store.append_batch(
            [AppendRequest("a", [noted("a1")], NO_STREAM), AppendRequest("b", [noted("b2")], 5)]
        )
    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("b", 5, 1)
    assert store.stream_version("a") == 0
    assert store.stream_version("b") == 1


def test_append_batch_refuses_a_stream_twice(store: EventStore) -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        store.append_batch([AppendRequest("a", [noted("1")]), AppendRequest("a", [noted("2")])])


# --- the global log ------------------------------------------------------------------------------


def test_global_positions_follow_commit_order(
    store: EventStore, under_test: EngineUnderTest
) -> None:
    appended = []
    for n in range(6):
        stream = f"s{n % 3}"
        result = store.append(stream, [noted(f"{n}a"), noted(f"{n}b")])
        appended.extend([f"{n}a", f"{n}b"])
        assert result.version == 2 * (n // 3 + 1)
    events = read_everything(store, under_test, expected=12)
    assert [e.data["text"] for e in events] == appended
    positions = [e.position for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == 12


def test_read_all_pages_cover_everything_once(
    store: EventStore, under_test: EngineUnderTest
) -> None:
    for n in range(7):
        store.append(f"s{n}", [noted(f"{n}-{i}") for i in range(3)])
    events = read_everything(store, under_test, expected=21, page=4)
    assert len(events) == 21
    assert len({e.position for e in events}) == 21
    assert [e.data["text"] for e in events] == [f"{n}-{i}" for n in range(7) for i in range(3)]
    middle = events[9].position
    rest = store.read_all(after=middle, limit=100)
    assert [e.position for e in rest] == [e.position for e in events[10:]]


def test_read_all_filters_by_type(store: EventStore, under_test: EngineUnderTest) -> None:
    store.append("a", [Opened("ann"), Deposited(1), Deposited(2)])
    store.append("b", [Opened("bob"), noted("x")])
    read_everything(store, under_test, expected=5)
    opened = store.read_all(types=["Opened"])
    assert [e.data["owner"] for e in opened] == ["ann", "bob"]
    both = store.read_all(types=["Opened", "Noted"])
    assert [e.type for e in both] == ["Opened", "Opened", "Noted"]
    assert store.read_all(types=[]) == []
    assert store.read_all(types=["Nothing"]) == []
    first, *_ = store.read_all(types=["Deposited"], limit=1)
    assert first.data == {"amount": 1}


# --- metadata ------------------------------------------------------------------------------------


def test_metadata_round_trips(store: EventStore) -> None:
    event_id = uuid.uuid4()
    before = datetime.now(UTC) - timedelta(seconds=5)
    store.append(
        "s",
        [
            NewEvent(
                "Placed",
                {"sku": "A-1", "qty": 2, "price": 9.5, "tags": ["x"], "gift": None},
                id=event_id,
                causation_id="cmd-7",
                correlation_id="order-42",
                headers={"user": "ann", "trace": "t-1"},
            ),
            noted("plain"),
        ],
    )
    after = datetime.now(UTC) + timedelta(seconds=5)
    placed, plain = store.read_stream("s")
    assert placed.id == event_id
    assert placed.type == "Placed"
    assert placed.data == {"sku": "A-1", "qty": 2, "price": 9.5, "tags": ["x"], "gift": None}
    assert placed.causation_id == "cmd-7"
    assert placed.correlation_id == "order-42"
    assert dict(placed.headers) == {"user": "ann", "trace": "t-1"}
    assert before <= placed.timestamp <= after
    assert placed.timestamp.tzinfo is not None
    assert placed.schema_version == 1
    assert (plain.causation_id, plain.correlation_id, dict(plain.headers)) == (None, None, {})
    assert plain.id.version == 4
    assert plain.id != placed.id


def test_unicode_and_nesting_round_trip(store: EventStore) -> None:
    data = {"name": "Zoë 🌊", "nested": {"list": [1, 2.5, True, None, "ü"]}, "empty": {}}
    store.append("s", [NewEvent("T", data, headers={"ключ": "значение"})])
    (event,) = store.read_stream("s")
    assert event.data == data
    assert dict(event.headers) == {"ключ": "значение"}


def test_awkward_text_round_trips_through_every_append_shape(store: EventStore) -> None:
    awkward = 'quote " backslash \\ braces {} comma , NULL null \\u0000 tab\t'
    event = NewEvent(
        'T"{,}',
        {awkward: [awkward, None]},
        causation_id="NULL",
        correlation_id=awkward,
        headers={awkward: "NULL"},
    )
    store.append("one", [event])
    store.append("many", [event, event])
    store.append_batch([AppendRequest("x", [event]), AppendRequest("y", [event, event])])
    for stream in ("one", "many", "x", "y"):
        for recorded in store.read_stream(stream):
            assert recorded.type == 'T"{,}'
            assert recorded.data == {awkward: [awkward, None]}
            assert (recorded.causation_id, recorded.correlation_id) == ("NULL", awkward)
            assert dict(recorded.headers) == {awkward: "NULL"}


def test_generated_ids_are_unique(store: EventStore) -> None:
    store.append("s", [noted(str(n)) for n in range(50)])
    assert len({e.id for e in store.read_stream("s")}) == 50


# --- schema evolution ----------------------------------------------------------------------------


def _old_types() -> EventTypes:
    types = EventTypes()
    types.register_name("Placed", "Created")
    return types


def _new_types() -> EventTypes:
    types = EventTypes()
    types.register_name("Placed")

    @types.upcaster("Placed", version=1)
    def add_currency(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

    @types.upcaster("Placed", version=2)
    def cents(data: dict[str, Any]) -> dict[str, Any]:
        rest = dict(data)
        euros = rest.pop("euros")
        return {**rest, "cents": euros * 100}

    types.rename("Created", "Placed")
    return types


def test_upcasters_turn_old_events_into_the_current_shape(make_store: StoreFactory) -> None:
    old = make_store(types=_old_types())
    old.append("o", [NewEvent("Placed", {"euros": 3}), NewEvent("Created", {"euros": 1})])
    new = make_store(types=_new_types())
    new.append("o", [NewEvent("Placed", {"cents": 700, "currency": "USD"})])
    events = new.read_stream("o")
    assert [(e.type, e.schema_version, e.stored_type, e.stored_schema_version) for e in events] == [
        ("Placed", 3, "Placed", 1),
        ("Placed", 3, "Created", 1),
        ("Placed", 3, "Placed", 3),
    ]
    assert [e.data for e in events] == [
        {"cents": 300, "currency": "EUR"},
        {"cents": 100, "currency": "EUR"},
        {"cents": 700, "currency": "USD"},
    ]
    assert [e.data for e in old.read_stream("o", limit=2)] == [{"euros": 3}, {"euros": 1}]


def test_a_type_filter_finds_renamed_events(
    make_store: StoreFactory, under_test: EngineUnderTest
) -> None:
    old = make_store(types=_old_types())
    old.append("o", [NewEvent("Created", {"euros": 1}), NewEvent("Other", {})])
    new = make_store(types=_new_types())
    read_everything(new, under_test, expected=1, types=["Placed"])
    (placed,) = new.read_all(types=["Placed"])
    assert (placed.type, placed.stored_type, placed.data) == (
        "Placed",
        "Created",
        {"cents": 100, "currency": "EUR"},
    )


def test_an_unknown_type_raises_a_clear_error(make_store: StoreFactory) -> None:
    make_store().append("s", [NewEvent("Vanished", {"a": 1})])
    strict = make_store(types=_new_types())
    with pytest.raises(UnknownEventTypeError) as caught:
        strict.read_stream("s")
    error = caught.value
    assert (error.event_type, error.schema_version, error.stream_id, error.version) == (
        "Vanished",
        1,
        "s",
        1,
    )
    assert "upcaster" in str(error)
    lenient = make_store(types=EventTypes(strict=False))
    assert lenient.read_stream("s")[0].data == {"a": 1}


def test_an_event_from_newer_code_is_unknown(make_store: StoreFactory) -> None:
    make_store(types=_new_types()).append("s", [NewEvent("Placed", {"cents": 1})])
    with pytest.raises(UnknownEventTypeError) as caught:
        make_store(types=_old_types()).read_stream("s")
    assert caught.value.schema_version == 3


def test_registered_classes_come_back_as_objects(make_store: StoreFactory) -> None:
    types = EventTypes()
    types.register(Opened)
    types.register(Deposited, name="money.deposited")
    store = make_store(types=types)
    store.append("acct", [Opened("ann"), Deposited(7)])
    opened, deposited = store.read_stream("acct")
    assert deposited.type == "money.deposited"
    assert opened.event == Opened("ann")
    assert deposited.event == Deposited(7)


def test_a_failing_upcaster_is_reported_as_corrupt(make_store: StoreFactory) -> None:
    make_store().append("s", [NewEvent("Placed", {"no euros": True})])
    store = make_store(types=_new_types())
    (event,) = store.read_stream("s")
    with pytest.raises(CorruptEventError, match="upcaster") as caught:
        _ = event.data
    assert caught.value.stream_id == "s"


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (NewEvent("Bad", {"when": object()}), "not JSON serializable"),
        (NewEvent("Bad", {"ratio": float("nan")}), "Out of range float"),
        (NewEvent("Bad", {"text": "nul\x00char"}), "NUL"),
        (NewEvent("Bad", {"text": "\ud800"}), "surrogate"),
        (NewEvent("Bad", {}, headers={"n": 1}), "headers"),  # type: ignore[dict-item]
        (NewEvent("Bad", {}, id="not-a-uuid"), "UUID"),  # type: ignore[arg-type]
        (NewEvent("", {}), "non-empty"),
        ({"type": "dict"}, "NewEvent"),
    ],
)
def test_unserialisable_events_write_nothing(
    store: EventStore, under_test: EngineUnderTest, event: Any, reason: str
) -> None:
    store.append("s", [noted("kept")])
    with pytest.raises(EventSerializationError, match=reason) as caught:
        store.append("s", [noted("good"), event], expected_version=1)
    assert caught.value.index == 1
    assert store.stream_version("s") == 1
    assert [e.data["text"] for e in store.read_stream("s")] == ["kept"]
    assert len(read_everything(store, under_test, expected=1)) == 1


def test_bad_arguments_are_refused(store: EventStore) -> None:
    with pytest.raises(ConfigurationError, match="stream_id"):
        store.append("", [noted("x")])
    with pytest.raises(ConfigurationError, match="expected_version"):
        store.append("s", [noted("x")], expected_version=-5)
    with pytest.raises(ConfigurationError, match="limit"):
        store.read_stream("s", limit=0)
    with pytest.raises(ConfigurationError, match="after"):
        store.read_all(after=-1)
    with pytest.raises(EventSerializationError, match="list"):
        store.append("s", noted("x"))  # type: ignore[arg-type]
    assert store.stream_version("s") == 0


def test_corrupt_metadata_gives_a_clear_error_and_stays(
    store: EventStore, under_test: EngineUnderTest
) -> None:
    store.append("s", [noted("a"), noted("b")])
    _first, second = store.read_stream("s")
    under_test.corrupt_metadata(store, second.position)
    damaged_first, damaged = store.read_stream("s")
    assert damaged_first.headers == {}
    assert damaged.data == {"text": "b"}
    with pytest.raises(CorruptEventError) as caught:
        _ = damaged.headers
    assert (caught.value.stream_id, caught.value.version, caught.value.position) == (
        "s",
        2,
        second.position,
    )
    assert "repair it" in str(caught.value)
    with pytest.raises(CorruptEventError):
        _ = store.read_stream("s")[1].headers


def test_corrupt_data_gives_a_clear_error(store: EventStore, under_test: EngineUnderTest) -> None:
    if under_test.corrupt_data is None:
        pytest.skip(f"{under_test.name} cannot store invalid JSON")
    store.append("s", [noted("a")])
    (event,) = store.read_stream("s")
    under_test.corrupt_data(store, event.position)
    (damaged,) = store.read_stream("s")
    assert damaged.type == "Noted"
    with pytest.raises(CorruptEventError, match="not valid JSON"):
        _ = damaged.data


# --- snapshots -----------------------------------------------------------------------------------


def test_snapshots_load_with_the_events_after_them(store: EventStore) -> None:
    store.append("s", [noted(str(n)) for n in range(1, 6)])
    assert store.load_snapshot("s") is None
    store.save_snapshot("s", 3, {"total": 6})
    snapshot = store.load_snapshot("s")
    assert snapshot is not None
    assert (snapshot.version, snapshot.data, snapshot.schema_version) == (3, {"total": 6}, 1)
    assert snapshot.timestamp is not None
    loaded = store.load("s")
    assert loaded.snapshot == snapshot
    assert [e.version for e in loaded.events] == [4, 5]
    assert loaded.version == 5


def test_an_older_snapshot_never_replaces_a_newer_one(store: EventStore) -> None:
    store.append("s", [noted(str(n)) for n in range(1, 6)])
    store.save_snapshot("s", 4, {"v": 4})
    store.save_snapshot("s", 2, {"v": 2})
    snapshot = store.load_snapshot("s")
    assert snapshot is not None
    assert snapshot.version == 4
    store.save_snapshot("s", 5, {"v": 5})
    snapshot = store.load_snapshot("s")
    assert snapshot is not None
    assert snapshot.data == {"v": 5}
    assert store.load("s").events == []


def test_a_snapshot_of_another_schema_version_is_ignored(store: EventStore) -> None:
    store.append("s", [noted("1"), noted("2")])
    store.save_snapshot("s", 2, {"v": 2}, schema_version=1)
    loaded = store.load("s", snapshot_schema_version=2)
    assert loaded.snapshot is None
    assert [e.version for e in loaded.events] == [1, 2]
    assert store.load("s", snapshot_schema_version=1).snapshot is not None


def test_an_unserialisable_snapshot_is_refused(store: EventStore) -> None:
    with pytest.raises(EventSerializationError, match="snapshot"):
        store.save_snapshot("s", 1, {"x": object()})
    assert store.load_snapshot("s") is None


# --- checkpoints and subscriptions -----------------------------------------------------------------


def test_checkpoints_are_stored(store: EventStore) -> None:
    assert store.load_checkpoint("projector") == 0
    store.save_checkpoint("projector", 42)
    store.save_checkpoint("other", 7)
    store.save_checkpoint("projector", 43)
    assert store.load_checkpoint("projector") == 43
    assert store.load_checkpoint("other") == 7


def test_a_subscription_catches_up_and_resumes_from_its_checkpoint(
    store: EventStore, under_test: EngineUnderTest, clock: ManualClock
) -> None:
    for n in range(5):
        store.append(f"s{n}", [noted(f"{n}")])
    read_everything(store, under_test, expected=5)
    seen: list[str] = []
    subscription = store.subscribe(
        "proj", lambda e: seen.append(e.data["text"]), batch_size=2, clock=clock
    )
    assert subscription.catch_up() == 5
    assert seen == ["0", "1", "2", "3", "4"]
    assert store.load_checkpoint("proj") == subscription.position
    store.append("s9", [noted("9")])
    read_everything(store, under_test, expected=6)
    again: list[str] = []
    resumed = store.subscribe("proj", lambda e: again.append(e.data["text"]), clock=clock)
    assert resumed.catch_up() == 1
    assert again == ["9"]
    assert resumed.poll() == 0


def test_a_failing_handler_keeps_the_checkpoint_of_what_it_handled(
    store: EventStore, under_test: EngineUnderTest, clock: ManualClock
) -> None:
    store.append("s", [noted(str(n)) for n in range(4)])
    events = read_everything(store, under_test, expected=4)
    handled: list[str] = []
    failures: list[int] = []

    def handler(event: RecordedEvent) -> None:
        if event.data["text"] == "2" and not failures:
            failures.append(event.position)
            raise RuntimeError("projection failed")
        handled.append(event.data["text"])

    subscription = store.subscribe("p", handler, clock=clock)
    with pytest.raises(RuntimeError, match="projection failed"):
        subscription.poll()
    assert store.load_checkpoint("p") == events[1].position
    assert subscription.catch_up() == 2
    assert handled == ["0", "1", "2", "3"]


def test_a_subscription_filters_by_type(
    store: EventStore, under_test: EngineUnderTest, clock: ManualClock
) -> None:
    store.append("a", [Opened("ann"), Deposited(1), Opened("bob")])
    read_everything(store, under_test, expected=3)
    owners: list[str] = []
    store.subscribe(
        "o", lambda e: owners.append(e.data["owner"]), types=["Opened"], clock=clock
    ).catch_up()
    assert owners == ["ann", "bob"]


def test_a_running_subscription_follows_new_events(
    store: EventStore, under_test: EngineUnderTest
) -> None:
    if not under_test.notifies:
        pytest.skip("polling engines are driven by a manual clock in the test below")
    store.append("s", [noted("before")])
    seen: list[str] = []
    arrived = threading.Event()

    def handler(event: RecordedEvent) -> None:
        seen.append(event.data["text"])
        if len(seen) == 3:
            arrived.set()

    subscription = store.subscribe("live", handler, poll_interval=0.05)
    runner = threading.Thread(target=subscription.run)
    runner.start()
    try:
        store.append("s", [noted("during-1")])
        store.append("t", [noted("during-2")])
        assert arrived.wait(10 + under_test.settle), seen
    finally:
        subscription.stop()
        runner.join(10)
    assert not runner.is_alive()
    assert seen == ["before", "during-1", "during-2"]
    assert store.load_checkpoint("live") == subscription.position


def test_notifications_wake_a_waiting_subscription(
    store: EventStore, under_test: EngineUnderTest
) -> None:
    if not under_test.notifies:
        pytest.skip(f"{under_test.name} subscribers poll")
    store.append("s", [noted("first")])
    seen: list[str] = []
    first_seen = threading.Event()
    second_seen = threading.Event()

    def handler(event: RecordedEvent) -> None:
        seen.append(event.data["text"])
        (first_seen if len(seen) == 1 else second_seen).set()

    subscription = store.subscribe("woken", handler, poll_interval=120.0)
    runner = threading.Thread(target=subscription.run)
    runner.start()
    try:
        assert first_seen.wait(5 + under_test.settle)
        started = time.monotonic()
        store.append("s", [noted("second")])
        assert second_seen.wait(5 + under_test.settle), "the notification did not wake it"
        assert time.monotonic() - started < 5 + under_test.settle
    finally:
        subscription.stop()
        runner.join(10)
    assert not runner.is_alive()
    assert seen[:2] == ["first", "second"]


def test_a_commit_of_the_callers_transaction_wakes_subscribers(
    engine: Engine, store: EventStore, under_test: EngineUnderTest
) -> None:
    if not under_test.notifies:
        pytest.skip(f"{under_test.name} subscribers poll")
    seen: list[str] = []
    ready = threading.Event()
    arrived = threading.Event()

    def handler(event: RecordedEvent) -> None:
        seen.append(event.data["text"])
        (ready if len(seen) == 1 else arrived).set()

    store.append("s", [noted("ready")])
    subscription = store.subscribe("woken-by-commit", handler, poll_interval=120.0)
    runner = threading.Thread(target=subscription.run)
    runner.start()
    try:
        assert ready.wait(5 + under_test.settle)
        with engine.transaction() as tx:
            store.append("s", [noted("committed")], transaction=tx)
        assert arrived.wait(5 + under_test.settle), "the commit did not wake the subscriber"
    finally:
        subscription.stop()
        runner.join(10)
    assert seen == ["ready", "committed"]


def test_run_polls_on_the_clock_between_batches(
    store: EventStore, under_test: EngineUnderTest
) -> None:
    if under_test.name == "postgres":
        pytest.skip("PostgreSQL waits on LISTEN in real time, covered by the running test")
    clock = ManualClock(0.0)
    seen: list[str] = []
    polls = 0

    def stop_when() -> bool:
        nonlocal polls
        polls += 1
        if polls == 2:
            store.append("s", [noted("late")])
        return polls >= 4

    store.append("s", [noted("early")])
    subscription = store.subscribe(
        "clocked", lambda e: seen.append(e.data["text"]), poll_interval=0.5, clock=clock
    )
    subscription.run(stop_when=stop_when)
    assert seen == ["early", "late"]
    assert clock.sleeps == [0.5, 0.5, 0.5]


# --- transactions --------------------------------------------------------------------------------


def test_a_rolled_back_transaction_leaves_no_events(
    engine: Engine, store: EventStore, under_test: EngineUnderTest
) -> None:
    if not under_test.transactions:
        with pytest.raises(UnsupportedEngineError, match="no transactions"):
            store.append("s", [noted("x")], transaction=object())  # type: ignore[arg-type]
        return

    def write_then_abort() -> None:
        with engine.transaction() as tx:
            result = store.append("s", [noted("x"), noted("y")], transaction=tx)
            assert result.version == 2
            assert store.stream_version("s", transaction=tx) == 2
            assert [e.data["text"] for e in store.read_stream("s", transaction=tx)] == ["x", "y"]
            store.save_snapshot("s", 2, {"n": 2}, transaction=tx)
            store.save_checkpoint("p", 99, transaction=tx)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        write_then_abort()
    assert store.stream_version("s") == 0
    assert store.read_stream("s") == []
    assert store.load_snapshot("s") is None
    assert store.load_checkpoint("p") == 0
    store.append("s", [noted("after")], expected_version=NO_STREAM)
    assert [e.data["text"] for e in read_everything(store, under_test, expected=1)] == ["after"]


def test_several_appends_in_one_transaction_keep_their_order(
    engine: Engine, store: EventStore, under_test: EngineUnderTest
) -> None:
    if not under_test.transactions:
        pytest.skip("no transactions on this engine")
    store.append("before", [noted("0")])
    with engine.transaction() as tx:
        first = store.append("a", [noted("1")], transaction=tx)
        second = store.append("b", [noted("2"), noted("3")], transaction=tx)
        third = store.append_batch(
            [AppendRequest("a", [noted("4")], 1), AppendRequest("c", [noted("5")])], transaction=tx
        )
        fourth = store.append("a", [noted("6")], expected_version=2, transaction=tx)
    positions = [first.position, second.position, third[0].position, third[1].position]
    assert positions == sorted(set(positions))
    assert fourth.position > positions[-1]
    assert fourth.version == 3
    events = read_everything(store, under_test, expected=7)
    assert [e.data["text"] for e in events] == ["0", "1", "2", "3", "4", "5", "6"]
    assert [e.position for e in events] == sorted({e.position for e in events})


def test_events_commit_with_the_callers_business_rows(
    engine: Engine, store: EventStore, under_test: EngineUnderTest, prefix: str
) -> None:
    if not under_test.transactions:
        pytest.skip("no transactions on this engine")
    table = f"{prefix}orders"
    with engine.transaction() as tx:
        tx.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY)")
    try:
        with engine.transaction() as tx:
            marker = "?" if under_test.name == "sqlite" else "%s"
            tx.execute(f"INSERT INTO {table} (id) VALUES ({marker})", ("o-1",))
            store.append("order-o-1", [noted("placed")], expected_version=NO_STREAM, transaction=tx)
        with engine.transaction() as tx:
            assert tx.execute(f"SELECT id FROM {table}").fetchall() == [("o-1",)]
        assert store.stream_version("order-o-1") == 1

        def conflicting_order() -> None:
            with engine.transaction() as tx:
                tx.execute(f"INSERT INTO {table} (id) VALUES ({marker})", ("o-2",))
                store.append(
                    "order-o-1", [noted("again")], expected_version=NO_STREAM, transaction=tx
                )

        with pytest.raises(ConcurrencyError):
            conflicting_order()
        with engine.transaction() as tx:
            assert tx.execute(f"SELECT id FROM {table}").fetchall() == [("o-1",)]
    finally:
        with engine.transaction() as tx:
            tx.execute(f"DROP TABLE {table}")


def test_a_transaction_from_another_engine_is_refused(
    store: EventStore, under_test: EngineUnderTest, tmp_path: Path
) -> None:
    if not under_test.transactions:
        pytest.skip("no transactions on this engine")
    other = seawall.connect(f"sqlite:///{tmp_path / 'other.db'}")
    if under_test.name == "sqlite":
        other = seawall.connect("memory://")
        from seawall.engines._base import Transaction

        foreign = Transaction(other, None)
        with pytest.raises(ConfigurationError, match="does not belong"):
            store.append("s", [noted("x")], transaction=foreign)
        return
    with (
        other.transaction() as tx,
        pytest.raises(ConfigurationError, match="does not belong"),
    ):
        store.append("s", [noted("x")], transaction=tx)
    other.close()


# --- asyncio ---------------------------------------------------------------------------------------


@pytest.fixture
async def async_store(engine: Engine, prefix: str) -> AsyncIterator[AsyncEventStore]:
    store = open_async_event_store(engine, table_prefix=prefix)
    await store.create_tables()
    yield store
    await store.drop_tables()
    await store.close()
    await engine.aclose()


async def test_async_append_read_and_conflict(
    async_store: AsyncEventStore, under_test: EngineUnderTest
) -> None:
    result = await async_store.append("s", [noted("a"), noted("b")], expected_version=NO_STREAM)
    assert result.version == 2
    with pytest.raises(ConcurrencyError) as caught:
        await async_store.append("s", [noted("c")], expected_version=NO_STREAM)
    assert caught.value.actual == 2
    events = await async_store.read_stream("s")
    assert [e.data["text"] for e in events] == ["a", "b"]
    assert [e.version for e in await async_store.read_stream("s", backwards=True)] == [2, 1]
    assert await async_store.stream_version("s") == 2
    batch = await async_store.append_batch([AppendRequest("t", [noted("t1")], NO_STREAM)])
    assert batch[0].version == 1
    deadline = time.monotonic() + under_test.settle
    while len(everything := await async_store.read_all()) < 3 and time.monotonic() < deadline:
        await _pause()
    assert [e.data["text"] for e in everything] == ["a", "b", "t1"]


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)


async def test_async_snapshots_and_checkpoints(async_store: AsyncEventStore) -> None:
    await async_store.append("s", [noted("1"), noted("2"), noted("3")])
    await async_store.save_snapshot("s", 2, {"n": 2})
    loaded = await async_store.load("s")
    assert loaded.snapshot is not None
    assert loaded.snapshot.data == {"n": 2}
    assert [e.version for e in loaded.events] == [3]
    await async_store.save_checkpoint("p", 5)
    assert await async_store.load_checkpoint("p") == 5


async def test_async_subscription_catches_up(
    async_store: AsyncEventStore, under_test: EngineUnderTest
) -> None:
    for n in range(3):
        await async_store.append(f"s{n}", [noted(str(n))])
    seen: list[str] = []

    async def handler(event: RecordedEvent) -> None:
        seen.append(event.data["text"])

    subscription = async_store.subscribe("async-proj", handler, batch_size=2)
    deadline = time.monotonic() + under_test.settle
    while len(seen) < 3:
        await subscription.catch_up()
        if time.monotonic() >= deadline:
            break
        if len(seen) < 3:
            await _pause()
    assert seen == ["0", "1", "2"]
    assert await async_store.load_checkpoint("async-proj") == subscription.position


async def test_async_append_joins_a_transaction(
    engine: Engine, async_store: AsyncEventStore, under_test: EngineUnderTest
) -> None:
    if not under_test.transactions:
        with pytest.raises(UnsupportedEngineError):
            await async_store.append("s", [noted("x")], transaction=object())  # type: ignore[arg-type]
        return

    async def write_then_abort() -> None:
        if under_test.name == "postgres":
            async with engine.atransaction() as tx:
                await async_store.append("s", [noted("x")], transaction=tx)
                assert await async_store.stream_version("s", transaction=tx) == 1
                raise RuntimeError("abort")
        with engine.transaction() as tx:
            await async_store.append("s", [noted("x")], transaction=tx)
            assert await async_store.stream_version("s", transaction=tx) == 1
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError, match="abort"):
        await write_then_abort()
    assert await async_store.stream_version("s") == 0


async def test_async_run_follows_new_events(
    async_store: AsyncEventStore, under_test: EngineUnderTest
) -> None:
    import asyncio

    seen: list[str] = []
    if not under_test.notifies:
        clock = ManualClock(0.0)

        async def chain(event: RecordedEvent) -> None:
            seen.append(event.data["text"])
            if event.data["text"] == "one":
                await async_store.append("s", [noted("two")])

        await async_store.append("s", [noted("one")])
        clocked = async_store.subscribe("async-live", chain, poll_interval=0.5, clock=clock)
        await clocked.run(stop_when=lambda: len(seen) >= 2)
        assert seen == ["one", "two"]
        assert clock.sleeps == [0.5]
        return
    arrived = asyncio.Event()

    async def handler(event: RecordedEvent) -> None:
        seen.append(event.data["text"])
        if len(seen) == 2:
            arrived.set()

    subscription = async_store.subscribe("async-live", handler, poll_interval=0.05)
    task = asyncio.create_task(subscription.run())
    try:
        await asyncio.sleep(0.05)
        await async_store.append("s", [noted("one")])
        await async_store.append("s", [noted("two")])
        await asyncio.wait_for(arrived.wait(), 10 + under_test.settle)
    finally:
        subscription.stop()
        await asyncio.wait_for(task, 10)
    assert seen == ["one", "two"]


def test_the_store_is_a_protocol_instance(store: EventStore) -> None:
    assert isinstance(store, EventStore)
    assert json.loads(json.dumps(store.table_prefix))  # type: ignore[attr-defined]
