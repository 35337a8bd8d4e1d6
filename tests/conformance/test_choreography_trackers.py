"""The tracker-store contract, run against every engine that claims it (memory, SQLite, PostgreSQL).

Each test gets a store with unique tables (dropped afterwards) and a manual clock as the
store's time source, so "stuck" is judged without sleeping.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import seawall
from _engines import require_engine
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.workflows.choreography import (
    Choreography,
    Compensation,
    FlowState,
    FlowStatus,
    NewTrackedEvent,
    PostgresTrackerStore,
    Reaction,
    SqliteTrackerStore,
    TrackerStore,
    fold,
    open_tracker_store,
)


@dataclass(frozen=True)
class EngineUnderTest:
    name: str
    url: Callable[[Path], str]


ENGINES = [
    pytest.param(
        EngineUnderTest("memory", lambda tmp: f"memory://{uuid.uuid4().hex}"), id="memory"
    ),
    pytest.param(
        EngineUnderTest("sqlite", lambda tmp: f"sqlite:///{tmp / 'tracker.db'}"), id="sqlite"
    ),
    pytest.param(
        EngineUnderTest("postgres", lambda tmp: require_engine("postgres")),
        id="postgres",
        marks=pytest.mark.engine("postgres"),
    ),
]

FLOW = Choreography(
    "order",
    [
        Reaction(
            "reserve",
            on="OrderPlaced",
            emits="StockReserved",
            compensation=Compensation("release", on="PaymentDeclined", emits="StockReleased"),
        ),
        Reaction("charge", on="StockReserved", emits="PaymentCharged", fails="PaymentDeclined"),
    ],
    start="OrderPlaced",
    completed="PaymentCharged",
)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    chosen: EngineUnderTest = request.param
    opened = seawall.connect(chosen.url(tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def store(engine: Engine, clock: ManualClock) -> Iterator[TrackerStore]:
    if engine.kind == "memory":
        yield open_tracker_store(engine, clock=clock)
        return
    opened = open_tracker_store(engine, table_prefix=f"t{uuid.uuid4().hex[:10]}_", clock=clock)
    assert isinstance(opened, SqliteTrackerStore | PostgresTrackerStore)
    try:
        yield opened
    finally:
        opened.drop_tables()
        opened.close()


def event(cid: str, event_id: str, event_type: str, **fields: object) -> NewTrackedEvent:
    return NewTrackedEvent(cid, "order", event_id, event_type, **fields)  # type: ignore[arg-type]


def advance(event_type: str) -> Callable[[FlowState | None], FlowState]:
    return lambda state: fold(FLOW, state, event_type)


def record(store: TrackerStore, cid: str, event_id: str, event_type: str, **fields: object) -> bool:
    return store.record(event(cid, event_id, event_type, **fields), advance(event_type)) is not None


def test_first_event_creates_the_transaction(store: TrackerStore, clock: ManualClock) -> None:
    recorded = store.record(
        event("o-1", "e0", "OrderPlaced", data='{"sku":"A-1"}', published_at=999.5),
        advance("OrderPlaced"),
    )
    assert recorded is not None
    assert recorded.previous is None
    assert recorded.previous_state is None
    assert recorded.record.status is FlowStatus.RUNNING
    loaded = store.load("o-1")
    assert loaded is not None
    assert loaded.flow == "order"
    assert loaded.started_at == loaded.updated_at == 1000.0
    assert loaded.event_count == 1
    (only,) = loaded.events
    assert only.seq == 0
    assert only.event_id == "e0"
    assert only.type == "OrderPlaced"
    assert only.value() == {"sku": "A-1"}
    assert only.published_at == 999.5
    assert only.recorded_at == 1000.0
    assert only.step is None
    assert only.causation_id is None
    assert store.load("unknown") is None


def test_events_append_in_order_and_fold_the_state(store: TrackerStore, clock: ManualClock) -> None:
    record(store, "o-1", "e0", "OrderPlaced")
    clock.advance(2.0)
    recorded = store.record(
        event("o-1", "e1", "StockReserved", step="reserve", causation_id="e0"),
        advance("StockReserved"),
    )
    assert recorded is not None
    assert recorded.previous is FlowStatus.RUNNING
    assert recorded.previous_state == FlowState()
    clock.advance(1.0)
    record(store, "o-1", "e2", "PaymentDeclined", step="charge", causation_id="e1")
    loaded = store.load("o-1")
    assert loaded is not None
    assert loaded.status is FlowStatus.COMPENSATING
    assert loaded.reason == "step 'charge' failed (PaymentDeclined)"
    assert loaded.state.owed == ("reserve",)
    assert [e.event_id for e in loaded.events] == ["e0", "e1", "e2"]
    assert [e.seq for e in loaded.events] == [0, 1, 2]
    assert loaded.events[1].step == "reserve"
    assert loaded.events[1].causation_id == "e0"
    assert loaded.updated_at == 1003.0
    assert loaded.started_at == 1000.0
    assert loaded.timings() == {"reserve": 2.0, "charge": 1.0}
    record(store, "o-1", "e3", "StockReleased", step="release", causation_id="e2")
    final = store.load("o-1")
    assert final is not None
    assert final.status is FlowStatus.COMPENSATED
    assert final.finished


def test_a_duplicate_event_is_dropped_and_changes_nothing(store: TrackerStore) -> None:
    assert record(store, "o-1", "e0", "OrderPlaced")
    assert record(store, "o-1", "e1", "StockReserved")
    assert not record(store, "o-1", "e1", "StockReserved")
    assert not record(store, "o-1", "e0", "OrderPlaced")
    loaded = store.load("o-1")
    assert loaded is not None
    assert loaded.event_count == 2
    assert len(loaded.events) == 2
    # the same event id in another transaction is another event
    assert record(store, "o-2", "e0", "OrderPlaced")


def test_list_filters_and_orders_by_last_update(store: TrackerStore, clock: ManualClock) -> None:
    record(store, "a", "a0", "OrderPlaced")
    clock.advance(1)
    record(store, "b", "b0", "OrderPlaced")
    clock.advance(1)
    record(store, "a", "a1", "StockReserved")
    record(store, "a", "a2", "PaymentCharged")
    listed = store.list()
    assert [r.correlation_id for r in listed] == ["a", "b"]
    assert listed[0].events == ()
    assert listed[0].status is FlowStatus.COMPLETED
    assert [r.correlation_id for r in store.list(status=[FlowStatus.RUNNING])] == ["b"]
    assert store.list(status=[]) == []
    assert store.list(flow="other") == []
    assert [r.correlation_id for r in store.list(limit=1)] == ["a"]


def test_mark_stuck_marks_idle_unfinished_transactions_once(
    store: TrackerStore, clock: ManualClock
) -> None:
    record(store, "idle", "i0", "OrderPlaced")
    record(store, "done", "d0", "OrderPlaced")
    record(store, "done", "d1", "StockReserved")
    record(store, "done", "d2", "PaymentCharged")
    clock.advance(30)
    record(store, "busy", "b0", "OrderPlaced")
    clock.advance(30)
    stuck = store.mark_stuck(60.0)
    assert [r.correlation_id for r in stuck] == ["idle"]
    assert stuck[0].status is FlowStatus.STUCK
    assert stuck[0].state.status is FlowStatus.RUNNING
    assert store.mark_stuck(60.0) == []
    loaded = store.load("idle")
    assert loaded is not None
    assert loaded.status is FlowStatus.STUCK
    assert [r.correlation_id for r in store.list(status=[FlowStatus.STUCK])] == ["idle"]
    # a new event brings it back, with the stuck status as the previous one
    recorded = store.record(event("idle", "i1", "StockReserved"), advance("StockReserved"))
    assert recorded is not None
    assert recorded.previous is FlowStatus.STUCK
    assert recorded.record.status is FlowStatus.RUNNING
    clock.advance(30)
    assert [r.correlation_id for r in store.mark_stuck(60.0, limit=10)] == ["busy"]


def test_concurrent_trackers_lose_no_event(store: TrackerStore) -> None:
    record(store, "hot", "start", "OrderPlaced")
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        try:
            for n in range(15):
                record(store, "hot", f"{prefix}{n}", "Noise")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    loaded = store.load("hot")
    assert loaded is not None
    assert loaded.event_count == 46
    assert sorted(e.seq for e in loaded.events) == list(range(46))
    assert len(loaded.state.anomalies) == 20
