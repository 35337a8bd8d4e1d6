"""Participants and the tracker on a memory topic: a whole choreographed order, in process."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError
from seawall.messaging.topic import Topic, open_topic
from seawall.workflows.choreography import (
    CORRELATION_HEADER,
    Choreography,
    ChoreographyEvent,
    Compensation,
    Emit,
    FlowStatus,
    FlowStuck,
    Participant,
    Reaction,
    ReactionDuplicateSkipped,
    ReactionFailed,
    ReactionHandled,
    Tracker,
    UndeclaredEventError,
)


def order_flow() -> Choreography:
    return Choreography(
        "order",
        [
            Reaction(
                "reserve",
                on="OrderPlaced",
                emits="StockReserved",
                fails="OutOfStock",
                compensation=Compensation("release", on="PaymentDeclined", emits="StockReleased"),
            ),
            Reaction("charge", on="StockReserved", emits="PaymentCharged", fails="PaymentDeclined"),
            Reaction("confirm", on="PaymentCharged", emits="OrderConfirmed"),
            Reaction("cancel", on=["OutOfStock", "StockReleased"], emits="OrderCancelled"),
        ],
        start="OrderPlaced",
        completed="OrderConfirmed",
        failed="OrderCancelled",
    )


class Shop:
    """Three services' state and handlers; ``declines`` makes the card fail."""

    def __init__(self, flow: Choreography) -> None:
        self.stock = {"A-1": 5}
        self.reserved: dict[str, int] = {}
        self.charged: dict[str, int] = {}
        self.orders: dict[str, str] = {}
        self.declines = False
        self.calls: list[str] = []

        @flow.on("OrderPlaced")
        def reserve(event: ChoreographyEvent, emit: Emit) -> None:
            self.calls.append("reserve")
            order = event.correlation_id
            if self.stock["A-1"] < event.data["quantity"]:
                emit("OutOfStock", {"sku": "A-1"})
                return
            self.stock["A-1"] -= event.data["quantity"]
            self.reserved[order] = event.data["quantity"]
            emit("StockReserved", {"cents": event.data["cents"]})

        @flow.on("PaymentDeclined")
        def release(event: ChoreographyEvent, emit: Emit) -> None:
            self.calls.append("release")
            self.stock["A-1"] += self.reserved.pop(event.correlation_id, 0)
            emit("StockReleased")

        @flow.on("StockReserved")
        def charge(event: ChoreographyEvent, emit: Emit) -> None:
            self.calls.append("charge")
            if self.declines:
                emit("PaymentDeclined", {"why": "card declined"})
                return
            self.charged[event.correlation_id] = event.data["cents"]
            emit("PaymentCharged")

        @flow.on("PaymentCharged")
        def confirm(event: ChoreographyEvent, emit: Emit) -> None:
            self.calls.append("confirm")
            self.orders[event.correlation_id] = "confirmed"
            emit("OrderConfirmed")

        @flow.on("OutOfStock", reaction="cancel")
        def cancel(event: ChoreographyEvent, emit: Emit) -> None:
            self.calls.append("cancel")
            self.orders[event.correlation_id] = "cancelled"
            emit("OrderCancelled")


@pytest.fixture
def topic(clock: ManualClock) -> Topic:
    return open_topic(f"memory://{uuid.uuid4().hex}", "orders", clock=clock)


def published(topic: Topic) -> list[Any]:
    """Every message of the topic, read (and acknowledged) by a fresh group."""
    group = topic.group(f"reader-{uuid.uuid4().hex}")
    found = []
    while batch := group.receive(10):
        for message in batch:
            found.append(message)
            group.ack(message)
    return found


def services(flow: Choreography, topic: Topic, clock: ManualClock) -> list[Participant]:
    return [
        Participant(flow, topic, "inventory", reactions=["reserve", "release"], clock=clock),
        Participant(flow, topic, "payments", reactions=["charge"], clock=clock),
        Participant(flow, topic, "orders", reactions=["confirm", "cancel"], clock=clock),
    ]


def settle(participants: list[Participant], tracker_loop: Any) -> None:
    for _ in range(20):
        moved = sum(participant.drain() for participant in participants)
        moved += tracker_loop.drain()
        if not moved:
            return
    raise AssertionError("the flow did not settle")


def test_a_declined_payment_is_compensated_and_the_tracker_shows_it(
    topic: Topic, clock: ManualClock
) -> None:
    flow = order_flow()
    shop = Shop(flow)
    shop.declines = True
    tracker = Tracker(f"memory://{uuid.uuid4().hex}", [flow], clock=clock)
    tracker_loop = tracker.consumer(topic, clock=clock)
    participants = services(flow, topic, clock)
    order_id = flow.start(topic, {"quantity": 2, "cents": 1299}, correlation_id="order-1")
    assert order_id == "order-1"
    settle(participants, tracker_loop)
    assert shop.stock == {"A-1": 5}
    assert shop.charged == {}
    assert shop.orders == {"order-1": "cancelled"}
    record = tracker.show("order-1")
    assert record.status is FlowStatus.COMPENSATED
    assert record.reason == "step 'charge' failed (PaymentDeclined)"
    assert [event.type for event in record.events] == [
        "OrderPlaced",
        "StockReserved",
        "PaymentDeclined",
        "StockReleased",
        "OrderCancelled",
    ]
    assert [event.step for event in record.events] == [
        None,
        "reserve",
        "charge",
        "release",
        "cancel",
    ]
    causes = [event.causation_id for event in record.events]
    ids = [event.event_id for event in record.events]
    assert causes[1:] == ids[:-1]
    assert set(record.timings()) == {"reserve", "charge", "release", "cancel"}


def test_the_happy_path_completes(topic: Topic, clock: ManualClock) -> None:
    flow = order_flow()
    shop = Shop(flow)
    tracker = Tracker("memory://", [flow], clock=clock)
    tracker_loop = tracker.consumer(topic, clock=clock)
    participants = services(flow, topic, clock)
    first = flow.start(topic, {"quantity": 1, "cents": 500})
    second = flow.start(topic, {"quantity": 9, "cents": 500})
    settle(participants, tracker_loop)
    assert tracker.show(first).status is FlowStatus.COMPLETED
    assert tracker.show(second).status is FlowStatus.COMPENSATED  # out of stock: nothing owed
    assert shop.orders == {first: "confirmed", second: "cancelled"}
    assert shop.charged == {first: 500}


def test_redelivered_events_are_skipped_by_the_inbox(topic: Topic, clock: ManualClock) -> None:
    flow = order_flow()
    shop = Shop(flow)
    heard: list[Any] = []
    inventory = Participant(flow, topic, "inventory", reactions=["reserve", "release"], clock=clock)
    inventory.events.subscribe(heard.append)
    flow.start(topic, {"quantity": 1, "cents": 1}, correlation_id="o")
    acked: list[Any] = []

    class LosesAcks:
        """The group's first ack is lost (the process dies before it lands)."""

        def __init__(self, group: Any) -> None:
            self.group = group

        def receive(self, *args: Any, **kwargs: Any) -> Any:
            return self.group.receive(*args, **kwargs)

        def ack(self, message: Any) -> None:
            acked.append(message.offset)
            if len(acked) > 1:
                self.group.ack(message)

        def nack(self, *args: Any, **kwargs: Any) -> None:
            self.group.nack(*args, **kwargs)

    inventory.loop.group = LosesAcks(inventory.group)
    assert inventory.drain() == 1
    clock.advance(31.0)  # past the visibility timeout: the event comes back
    assert inventory.drain() == 2  # the redelivered event (skipped) and StockReserved (not ours)
    assert shop.calls == ["reserve"]
    assert shop.stock == {"A-1": 4}
    assert [type(event) for event in heard] == [ReactionHandled, ReactionDuplicateSkipped]
    assert heard[0].emitted == ("StockReserved",)
    assert [m.body for m in published(topic)] == [{"quantity": 1, "cents": 1}, {"cents": 1}]


def test_a_handler_that_raises_is_retried_and_emits_nothing_meanwhile(
    topic: Topic, clock: ManualClock
) -> None:
    flow = order_flow()
    attempts: list[int] = []
    heard: list[Any] = []

    @flow.on("OrderPlaced")
    def reserve(event: ChoreographyEvent, emit: Emit) -> None:
        attempts.append(1)
        emit("StockReserved")
        if len(attempts) == 1:
            raise ConnectionError("stock service down")

    inventory = Participant(flow, topic, "inventory", reactions=["reserve"], clock=clock)
    inventory.events.subscribe(heard.append, types=(ReactionFailed,))
    flow.start(topic, correlation_id="o")
    assert inventory.drain() == 0
    assert heard[0].error == "ConnectionError: stock service down"
    assert [m.headers["seawall-event"] for m in published(topic)] == ["OrderPlaced"]
    clock.advance(1.0)  # the retry delay
    assert inventory.drain() == 2  # OrderPlaced, then the StockReserved it emitted (not ours)
    assert len(attempts) == 2
    events = published(topic)
    assert [m.headers["seawall-event"] for m in events] == ["OrderPlaced", "StockReserved"]
    assert events[1].key == "o"
    assert events[1].headers[CORRELATION_HEADER] == "o"


def test_undeclared_emits_fail_the_handling(topic: Topic, clock: ManualClock) -> None:
    flow = order_flow()

    @flow.on("OrderPlaced")
    def reserve(event: ChoreographyEvent, emit: Emit) -> None:
        emit("OrderConfirmed")

    inventory = Participant(flow, topic, "inventory", reactions=["reserve"], clock=clock)
    flow.start(topic)
    with pytest.raises(UndeclaredEventError):
        inventory.handle(inventory.group.receive(1)[0])


def test_participant_options_are_checked(topic: Topic) -> None:
    flow = order_flow()
    with pytest.raises(ConfigurationError, match="runs no reaction"):
        Participant(flow, topic, "nobody")
    with pytest.raises(ConfigurationError, match="no reaction or compensation 'nope'"):
        Participant(flow, topic, "x", reactions=["nope"])
    with pytest.raises(ConfigurationError, match="has no handler"):
        Participant(flow, topic, "x", reactions=["reserve"])
    with pytest.raises(ConfigurationError, match="is not a start event"):
        flow.start(topic, event="StockReserved")


def test_events_of_other_flows_and_plain_messages_are_acknowledged(
    topic: Topic, clock: ManualClock
) -> None:
    flow = order_flow()
    Shop(flow)
    inventory = Participant(flow, topic, "inventory", reactions=["reserve", "release"], clock=clock)
    topic.publish({"plain": True})
    topic.publish(
        None,
        headers={
            "seawall-flow": "other",
            "seawall-event": "OrderPlaced",
            "seawall-event-id": "e",
            "seawall-correlation-id": "c",
        },
    )
    assert inventory.drain() == 2
    assert inventory.group.lag() == 0


def test_the_tracker_consumer_sweeps_on_its_clock(topic: Topic, clock: ManualClock) -> None:
    flow = order_flow()
    tracker = Tracker("memory://", [flow], clock=clock, stuck_after=60.0)
    stuck: list[Any] = []
    tracker.events.subscribe(stuck.append, types=(FlowStuck,))
    loop = tracker.consumer(topic, clock=clock, sweep_every=10.0)
    flow.start(topic, correlation_id="quiet")
    assert loop.run_once() == 1
    clock.advance(61.0)
    loop.run_once()
    assert [event.correlation_id for event in stuck] == ["quiet"]
    assert tracker.show("quiet").status is FlowStatus.STUCK
