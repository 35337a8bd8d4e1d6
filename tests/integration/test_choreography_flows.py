"""A choreographed order end to end on memory and SQLite topics, and a participant crash mid-flow.

order placed -> reserve stock -> charge fails -> release stock -> order cancelled: the
tracker (its own consumer group, its own store) shows the business transaction
``compensated`` with its history. On SQLite each participant handles an event in one
transaction: inbox mark, business rows, emitted events and ack commit together.
Everything runs in this process with a manual clock; the "crash" is an exception that
escapes the runner, after which fresh participants take over.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.messaging.topic import Topic, open_topic
from seawall.workflows.choreography import (
    Choreography,
    ChoreographyEvent,
    Compensation,
    ConsumerLoop,
    Emit,
    FlowStatus,
    Participant,
    Reaction,
    Tracker,
)


class Crash(BaseException):
    """Stands for the process dying: nothing catches it."""


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


class Stock:
    """The inventory's rows: in the event's transaction on SQLite, in a dict on memory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows: dict[str, int] = {"free": 10, "reserved": 0}
        self.applied: set[str] = set()
        if engine.kind == "sqlite":
            with engine.transaction() as tx:
                tx.execute("CREATE TABLE stock (name TEXT PRIMARY KEY, n INTEGER)")
                tx.execute("INSERT INTO stock VALUES ('free', 10), ('reserved', 0)")

    def move(self, event: ChoreographyEvent, source: str, target: str, n: int) -> None:
        if event.transaction is None:  # no transaction to roll back: idempotent by event id
            if event.event_id in self.applied:
                return
            self.applied.add(event.event_id)
            self.rows[source] -= n
            self.rows[target] += n
            return
        event.transaction.execute("UPDATE stock SET n = n - ? WHERE name = ?", (n, source))
        event.transaction.execute("UPDATE stock SET n = n + ? WHERE name = ?", (n, target))

    def read(self) -> dict[str, int]:
        if self.engine.kind != "sqlite":
            return dict(self.rows)
        rows = self.engine.connection.execute("SELECT name, n FROM stock").fetchall()  # type: ignore[attr-defined]
        return {name: n for name, n in rows}


class Shop:
    def __init__(self, flow: Choreography, stock: Stock) -> None:
        self.crash_in: str | None = None
        self.runs: list[str] = []

        def crash_point(where: str) -> None:
            self.runs.append(where)
            if self.crash_in == where:
                self.crash_in = None
                raise Crash(where)

        @flow.on("OrderPlaced")
        def reserve(event: ChoreographyEvent, emit: Emit) -> None:
            stock.move(event, "free", "reserved", event.data["quantity"])
            crash_point("reserve")
            emit("StockReserved", event.data)

        @flow.on("PaymentDeclined")
        def release(event: ChoreographyEvent, emit: Emit) -> None:
            stock.move(event, "reserved", "free", 2)
            crash_point("release")
            emit("StockReleased")

        @flow.on("StockReserved")
        def charge(event: ChoreographyEvent, emit: Emit) -> None:
            crash_point("charge")
            if event.data["cents"] > 1000:
                emit("PaymentDeclined", {"why": "over the card's limit"})
            else:
                emit("PaymentCharged")

        @flow.on("PaymentCharged")
        def confirm(event: ChoreographyEvent, emit: Emit) -> None:
            emit("OrderConfirmed")

        @flow.on("StockReleased", reaction="cancel")
        def cancel(event: ChoreographyEvent, emit: Emit) -> None:
            emit("OrderCancelled")


@pytest.fixture(params=["memory", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = (
        f"memory://{uuid.uuid4().hex}"
        if request.param == "memory"
        else f"sqlite:///{tmp_path / 'shop.db'}"
    )
    opened = seawall.connect(url)
    yield opened
    opened.close()


def participants(
    flow: Choreography, topic: Topic, engine: Engine, clock: ManualClock
) -> list[Participant]:
    options: dict[str, Any] = {"clock": clock}
    if engine.kind == "sqlite":
        options.update(inbox=engine, join_topic=True)
    return [
        Participant(flow, topic, "inventory", reactions=["reserve", "release"], **options),
        Participant(flow, topic, "payments", reactions=["charge"], **options),
        Participant(flow, topic, "orders", reactions=["confirm", "cancel"], **options),
    ]


def settle(runners: list[Participant], tracker_loop: ConsumerLoop) -> None:
    for _ in range(30):
        moved = sum(runner.drain() for runner in runners) + tracker_loop.drain()
        if not moved:
            return
    raise AssertionError("the flow did not settle")


def tracker_for(engine: Engine, flow: Choreography, clock: ManualClock) -> Tracker:
    return Tracker(engine, [flow], clock=clock, stuck_after=120.0)


def test_a_declined_charge_is_compensated_and_tracked(engine: Engine, clock: ManualClock) -> None:
    flow = order_flow()
    stock = Stock(engine)
    Shop(flow, stock)
    topic = open_topic(engine, "orders", clock=clock)
    tracker = tracker_for(engine, flow, clock)
    tracker_loop = tracker.consumer(topic, clock=clock)
    runners = participants(flow, topic, engine, clock)
    flow.start(topic, {"quantity": 2, "cents": 5000}, correlation_id="order-declined")
    flow.start(topic, {"quantity": 1, "cents": 500}, correlation_id="order-ok")
    settle(runners, tracker_loop)
    declined = tracker.show("order-declined")
    assert declined.status is FlowStatus.COMPENSATED
    assert [event.type for event in declined.events] == [
        "OrderPlaced",
        "StockReserved",
        "PaymentDeclined",
        "StockReleased",
        "OrderCancelled",
    ]
    assert declined.state.failed_step == "charge"
    assert declined.state.compensated == ("reserve",)
    assert tracker.show("order-ok").status is FlowStatus.COMPLETED
    assert stock.read() == {"free": 9, "reserved": 1}
    listed = {record.correlation_id: record.status for record in tracker.list()}
    assert listed == {"order-declined": FlowStatus.COMPENSATED, "order-ok": FlowStatus.COMPLETED}
    for runner in runners:
        runner.close()
    tracker.close()


@pytest.mark.parametrize("crash_in", ["reserve", "charge", "release"])
def test_a_participant_crash_mid_flow_is_finished_after_restart(
    engine: Engine, clock: ManualClock, crash_in: str
) -> None:
    flow = order_flow()
    stock = Stock(engine)
    shop = Shop(flow, stock)
    topic = open_topic(engine, "orders", clock=clock)
    tracker = tracker_for(engine, flow, clock)
    tracker_loop = tracker.consumer(topic, clock=clock)
    runners = participants(flow, topic, engine, clock)
    flow.start(topic, {"quantity": 2, "cents": 5000}, correlation_id="order-1")
    shop.crash_in = crash_in
    with pytest.raises(Crash):
        settle(runners, tracker_loop)
    tracker_loop.drain()
    assert tracker.show("order-1").status in (FlowStatus.RUNNING, FlowStatus.COMPENSATING)
    # nothing heard for a while: the tracker flags it
    clock.advance(120.0)
    tracker.sweep()
    assert tracker.show("order-1").status is FlowStatus.STUCK
    # "restart": fresh participants of the same groups; the crashed delivery comes back
    restarted = participants(flow, topic, engine, clock)
    settle(restarted, tracker_loop)
    record = tracker.show("order-1")
    assert record.status is FlowStatus.COMPENSATED
    assert [event.type for event in record.events] == [
        "OrderPlaced",
        "StockReserved",
        "PaymentDeclined",
        "StockReleased",
        "OrderCancelled",
    ]
    assert stock.read() == {"free": 10, "reserved": 0}  # reserved once, released once
    assert shop.runs.count(crash_in) == 2  # the crashed run, then the one after restart
    tracker.close()
