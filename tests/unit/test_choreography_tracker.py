"""The tracker's fold (events -> state) and the Tracker on the memory store, with a manual clock."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import pytest

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError
from seawall.workflows.choreography import (
    Choreography,
    ChoreographyEvent,
    Compensation,
    FlowCompensated,
    FlowCompensating,
    FlowCompleted,
    FlowFailed,
    FlowNotFoundError,
    FlowResumed,
    FlowStarted,
    FlowStatus,
    FlowStuck,
    MemoryTrackerStore,
    Reaction,
    Tracker,
    fold,
    is_stalled,
)
from seawall.workflows.choreography._model import FlowState, derived_event_id


def order_flow(*, failed: tuple[str, ...] = ()) -> Choreography:
    return Choreography(
        "order",
        [
            Reaction(
                "reserve",
                on="OrderPlaced",
                emits="StockReserved",
                fails="OutOfStock",
                compensation=Compensation(
                    "release", on=["PaymentDeclined", "ShippingFailed"], emits="StockReleased"
                ),
            ),
            Reaction(
                "charge",
                on="StockReserved",
                emits="PaymentCharged",
                fails="PaymentDeclined",
                compensation=Compensation(
                    "refund", on="ShippingFailed", emits="PaymentRefunded", fails="RefundFailed"
                ),
            ),
            Reaction("ship", on="PaymentCharged", emits="OrderShipped", fails="ShippingFailed"),
            Reaction("cancel", on=["OutOfStock", "StockReleased"], emits="OrderCancelled"),
        ],
        start="OrderPlaced",
        completed="OrderShipped",
        failed=failed,
    )


def run(flow: Choreography, *events: str) -> FlowState:
    state: FlowState | None = None
    for event in events:
        state = fold(flow, state, event)
    assert state is not None
    return state


# --------------------------------------------------------------------------------- fold


def test_the_happy_path_completes() -> None:
    state = run(order_flow(), "OrderPlaced", "StockReserved", "PaymentCharged", "OrderShipped")
    assert state.status is FlowStatus.COMPLETED
    assert state.completed == ("reserve", "charge", "ship")
    assert state.terminal == "OrderShipped"
    assert state.anomalies == ()


def test_a_failure_owes_the_completed_steps_compensations() -> None:
    flow = order_flow()
    state = run(flow, "OrderPlaced", "StockReserved", "PaymentCharged", "ShippingFailed")
    assert state.status is FlowStatus.COMPENSATING
    assert state.failed_step == "ship"
    assert state.owed == ("reserve", "charge")
    assert state.reason == "step 'ship' failed (ShippingFailed)"
    state = fold(flow, state, "PaymentRefunded")
    assert state.status is FlowStatus.COMPENSATING
    assert state.owed == ("reserve",)
    state = fold(flow, state, "StockReleased")
    assert state.status is FlowStatus.COMPENSATED
    assert state.compensated == ("charge", "reserve")


def test_a_declared_terminal_failure_event_is_awaited_too() -> None:
    flow = order_flow(failed=("OrderCancelled",))
    state = run(flow, "OrderPlaced", "StockReserved", "PaymentDeclined", "StockReleased")
    assert state.status is FlowStatus.COMPENSATING
    assert state.owed == ()
    state = fold(flow, state, "OrderCancelled")
    assert state.status is FlowStatus.COMPENSATED
    assert state.terminal == "OrderCancelled"
    # a first step's own failure owes nothing
    assert run(flow, "OrderPlaced", "OutOfStock", "OrderCancelled").status is (
        FlowStatus.COMPENSATED
    )


def test_a_failed_compensation_fails_the_transaction() -> None:
    flow = order_flow()
    state = run(flow, "OrderPlaced", "StockReserved", "PaymentCharged", "ShippingFailed")
    state = fold(flow, state, "RefundFailed")
    assert state.status is FlowStatus.FAILED
    assert "compensation of step 'charge' failed" in (state.reason or "")
    assert fold(flow, state, "StockReleased") == state


def test_anomalies_are_noted_and_change_nothing() -> None:
    flow = order_flow()
    state = run(flow, "OrderPlaced", "Surprise")
    assert state.status is FlowStatus.RUNNING
    assert state.anomalies == ("Surprise is not an event of flow 'order'",)
    done = run(flow, "OrderPlaced", "StockReserved", "PaymentCharged", "OrderShipped", "Late")
    assert done.status is FlowStatus.COMPLETED
    assert done.anomalies == ("Late after the transaction was completed",)
    early = run(flow, "OrderPlaced", "StockReleased")
    assert early.anomalies
    assert "while running" in early.anomalies[0]
    for _ in range(50):
        state = fold(flow, state, "Surprise")
    assert len(state.anomalies) == 20


def test_without_a_definition_it_stays_running() -> None:
    assert fold(None, None, "Anything").status is FlowStatus.RUNNING


def test_state_round_trips_through_json() -> None:
    state = run(order_flow(), "OrderPlaced", "StockReserved", "PaymentDeclined", "Odd")
    assert FlowState.from_json(state.to_json()) == state


def test_is_stalled_judges_on_the_given_time() -> None:
    assert is_stalled(FlowStatus.RUNNING, 100.0, 400.0, 300.0)
    assert not is_stalled(FlowStatus.RUNNING, 100.0, 399.0, 300.0)
    assert not is_stalled(FlowStatus.COMPLETED, 0.0, 1e6, 300.0)


def test_derived_event_ids_are_stable() -> None:
    assert derived_event_id("a", "reserve", 0) == derived_event_id("a", "reserve", 0)
    assert derived_event_id("a", "reserve", 0) != derived_event_id("a", "reserve", 1)
    assert len(derived_event_id("a", "b", 0)) == 32


# ------------------------------------------------------------------------------ tracker


class Events:
    """Builds the events of one business transaction, each caused by the one before."""

    def __init__(self, correlation_id: str, clock: ManualClock) -> None:
        self.correlation_id = correlation_id
        self.clock = clock
        self.last: str | None = None
        self.ids = itertools.count()

    def next(self, event_type: str, step: str | None = None, data: Any = None) -> ChoreographyEvent:
        event_id = f"{self.correlation_id}-{next(self.ids)}"
        event = ChoreographyEvent(
            type=event_type,
            data=data,
            flow="order",
            correlation_id=self.correlation_id,
            event_id=event_id,
            causation_id=self.last,
            step=step,
            published_at=self.clock.now(),
        )
        self.last = event_id
        return event


@pytest.fixture
def tracker(clock: ManualClock) -> Tracker:
    return Tracker(MemoryTrackerStore(clock=clock), [order_flow()], stuck_after=60.0)


def test_the_tracker_records_history_timings_and_transitions(
    tracker: Tracker, clock: ManualClock
) -> None:
    heard: list[Any] = []
    tracker.events.subscribe(heard.append)
    order = Events("o-1", clock)
    placed = order.next("OrderPlaced", data={"sku": "A-1"})
    assert tracker.track(placed) is not None
    clock.advance(0.5)
    tracker.track(order.next("StockReserved", "reserve"))
    clock.advance(1.5)
    tracker.track(order.next("PaymentDeclined", "charge"))
    assert tracker.track(placed) is None  # a redelivered event is recorded once
    clock.advance(0.25)
    tracker.track(order.next("StockReleased", "release"))
    record = tracker.show("o-1")
    assert record.status is FlowStatus.COMPENSATED
    assert [event.type for event in record.events] == [
        "OrderPlaced",
        "StockReserved",
        "PaymentDeclined",
        "StockReleased",
    ]
    assert [event.seq for event in record.events] == [0, 1, 2, 3]
    assert record.events[0].value() == {"sku": "A-1"}
    assert record.timings() == {"reserve": 0.5, "charge": 1.5, "release": 0.25}
    assert record.duration == pytest.approx(2.25)
    assert record.event_count == 4
    kinds = [type(event) for event in heard]
    assert kinds == [FlowStarted, FlowCompensating, FlowCompensated]
    assert heard[1].owed == ("reserve",)
    assert heard[2].duration == pytest.approx(2.25)


def test_completed_and_failed_transitions_are_announced(
    tracker: Tracker, clock: ManualClock
) -> None:
    heard: list[Any] = []
    tracker.events.subscribe(heard.append, types=(FlowCompleted, FlowFailed))
    good = Events("good", clock)
    for event_type, step in [
        ("OrderPlaced", None),
        ("StockReserved", "reserve"),
        ("PaymentCharged", "charge"),
        ("OrderShipped", "ship"),
    ]:
        tracker.track(good.next(event_type, step))
    bad = Events("bad", clock)
    for event_type, step in [
        ("OrderPlaced", None),
        ("StockReserved", "reserve"),
        ("PaymentCharged", "charge"),
        ("ShippingFailed", "ship"),
        ("RefundFailed", "refund"),
    ]:
        tracker.track(bad.next(event_type, step))
    assert [type(event) for event in heard] == [FlowCompleted, FlowFailed]
    assert tracker.show("bad").status is FlowStatus.FAILED
    assert [r.correlation_id for r in tracker.list(status=[FlowStatus.COMPLETED])] == ["good"]


def test_a_silent_transaction_becomes_stuck_and_recovers(
    tracker: Tracker, clock: ManualClock
) -> None:
    heard: list[Any] = []
    tracker.events.subscribe(heard.append, types=(FlowStuck, FlowResumed))
    order = Events("slow", clock)
    tracker.track(order.next("OrderPlaced"))
    clock.advance(59.0)
    assert tracker.sweep() == []
    clock.advance(1.0)
    stuck = tracker.sweep()
    assert [record.correlation_id for record in stuck] == ["slow"]
    assert tracker.show("slow").status is FlowStatus.STUCK
    assert tracker.show("slow").state.status is FlowStatus.RUNNING
    assert tracker.sweep() == []  # already stuck: announced once
    tracker.track(order.next("StockReserved", "reserve"))
    assert tracker.show("slow").status is FlowStatus.RUNNING
    assert [type(event) for event in heard] == [FlowStuck, FlowResumed]
    assert heard[0].status == "running"


def test_events_of_unknown_flows_are_recorded(tracker: Tracker, clock: ManualClock) -> None:
    event = ChoreographyEvent("Hello", None, "other", "x-1", "e-1")
    tracker.track(event)
    record = tracker.show("x-1")
    assert record.flow == "other"
    assert record.status is FlowStatus.RUNNING


def test_messages_without_choreography_headers_are_ignored(tracker: Tracker) -> None:
    class Plain:
        headers: ClassVar[dict[str, str]] = {}
        body = None

    assert tracker.track_message(Plain()) is None


def test_unknown_ids_and_bad_options(tracker: Tracker) -> None:
    with pytest.raises(FlowNotFoundError, match="no business transaction 'nope'"):
        tracker.show("nope")
    assert tracker.get("nope") is None
    with pytest.raises(ConfigurationError, match="stuck_after"):
        Tracker("memory://", stuck_after=0)
    with pytest.raises(ConfigurationError, match="two flows named 'order'"):
        Tracker("memory://", [order_flow(), order_flow()])
    with pytest.raises(ConfigurationError, match="clock="):
        Tracker(MemoryTrackerStore(), clock=ManualClock())
