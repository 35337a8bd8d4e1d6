"""Choreography definitions: the flow as data, checked when built; handlers attached by event."""

from __future__ import annotations

from typing import Any

import pytest

from seawall.errors import ConfigurationError
from seawall.workflows.choreography import (
    Choreography,
    ChoreographyEvent,
    Compensation,
    Emit,
    Reaction,
    UndeclaredEventError,
)


def order_flow(**options: Any) -> Choreography:
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
        ],
        start="OrderPlaced",
        completed="OrderShipped",
        **options,
    )


def test_a_valid_flow_indexes_its_events() -> None:
    flow = order_flow()
    assert flow.step_of == {
        "StockReserved": "reserve",
        "PaymentCharged": "charge",
        "OrderShipped": "ship",
    }
    assert flow.failure_of == {
        "OutOfStock": "reserve",
        "PaymentDeclined": "charge",
        "ShippingFailed": "ship",
    }
    assert flow.compensated_by == {"StockReleased": "reserve", "PaymentRefunded": "charge"}
    assert flow.compensation_failure_of == {"RefundFailed": "charge"}
    assert [info.name for info in flow.reactions_to("ShippingFailed")] == ["release", "refund"]
    assert flow.describe()["reactions"][0]["compensation"]["name"] == "release"


def test_no_terminal_event_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no terminal event"):
        Choreography("x", [Reaction("a", on="Go", emits="Done")], start="Go", completed=())


def test_unknown_events_are_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'StockReserved'"):
        Choreography(
            "x",
            [
                Reaction("a", on="Go", emits="StockReserved"),
                Reaction("b", on="StockReserve", emits="Done"),
            ],
            start="Go",
            completed="Done",
        )
    with pytest.raises(ConfigurationError, match="terminal success event is 'Dne'"):
        Choreography("x", [Reaction("a", on="Go", emits="Done")], start="Go", completed="Dne")


def test_a_step_without_compensation_before_a_failure_is_refused() -> None:
    reactions = [
        Reaction("reserve", on="Go", emits="Reserved"),
        Reaction("charge", on="Reserved", emits="Charged", fails="Declined"),
    ]
    with pytest.raises(ConfigurationError, match="step 'reserve' has no compensation"):
        Choreography("x", reactions, start="Go", completed="Charged")
    flow = Choreography("x", reactions, start="Go", completed="Charged", require_compensation=False)
    assert flow.compensation_of("reserve") is None


def test_a_compensation_that_misses_a_later_failure_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="does not run after 'ShippingFailed'"):
        Choreography(
            "x",
            [
                Reaction(
                    "reserve",
                    on="Go",
                    emits="Reserved",
                    compensation=Compensation("release", on="Declined", emits="Released"),
                ),
                Reaction(
                    "charge",
                    on="Reserved",
                    emits="Charged",
                    fails="Declined",
                    compensation=Compensation("refund", on="ShippingFailed", emits="Refunded"),
                ),
                Reaction("ship", on="Charged", emits="Shipped", fails="ShippingFailed"),
            ],
            start="Go",
            completed="Shipped",
        )


def test_compensations_may_chain_in_reverse_order() -> None:
    flow = Choreography(
        "x",
        [
            Reaction(
                "reserve",
                on="Go",
                emits="Reserved",
                compensation=Compensation("release", on=["Declined", "Refunded"], emits="Released"),
            ),
            Reaction(
                "charge",
                on="Reserved",
                emits="Charged",
                fails="Declined",
                compensation=Compensation("refund", on="ShippingFailed", emits="Refunded"),
            ),
            Reaction("ship", on="Charged", emits="Shipped", fails="ShippingFailed"),
        ],
        start="Go",
        completed="Shipped",
    )
    assert flow.compensation_of("charge") is not None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Choreography("x", [], start="Go", completed="Done"), "no reactions"),
        (
            lambda: Choreography(
                "x",
                [Reaction("a", on="Go", emits="Done"), Reaction("a", on="Done", emits="More")],
                start="Go",
                completed="Done",
            ),
            "named 'a'",
        ),
        (
            lambda: Choreography(
                "x",
                [Reaction("a", on="Go", emits="Done"), Reaction("b", on="Go", emits="Done")],
                start="Go",
                completed="Done",
            ),
            "emitted by both 'a' and 'b'",
        ),
        (lambda: Reaction("a", on="Go"), "emits nothing"),
        (lambda: Reaction("a", on=(), emits="X"), "reacts to no event"),
        (lambda: Compensation("c", on=(), emits="X"), "reacts to no event"),
        (lambda: Reaction("", on="Go", emits="X"), "non-empty str"),
        (
            lambda: Choreography(
                "x",
                [Reaction("a", on="Go", emits="Go2")],
                start="Go",
                completed="Go2",
                failed="Go2",
            ),
            "both a terminal success and a terminal failure",
        ),
        (
            lambda: Choreography(
                "x",
                [Reaction("a", on="Go", emits="Done"), Reaction("b", on="Other", emits="End")],
                start=["Go", "Other"],
                completed="Never",
            ),
            "Never",
        ),
        (
            lambda: Choreography(
                "x", [Reaction("a", on="Go", emits="Go")], start="Go", completed="Go"
            ),
            "start event 'Go' is also emitted",
        ),
    ],
)
def test_bad_definitions_name_the_fix(build: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


def test_handlers_attach_by_event_and_function_name() -> None:
    flow = order_flow()

    @flow.on("OrderPlaced")
    def anything(event: ChoreographyEvent, emit: Emit) -> None:  # the only reaction to it
        emit("StockReserved")

    @flow.on("ShippingFailed")
    def refund(event: ChoreographyEvent, emit: Emit) -> None:
        emit("PaymentRefunded")

    flow.handle("release", lambda event, emit: emit("StockReleased"))
    assert set(flow.handlers) == {"reserve", "refund", "release"}
    with pytest.raises(ConfigurationError, match="reaction='release'"):
        flow.on("ShippingFailed")(lambda event, emit: None)
    with pytest.raises(ConfigurationError, match="already has a handler"):
        flow.on("OrderPlaced")(lambda event, emit: None)
    with pytest.raises(ConfigurationError, match="did you mean 'OrderPlaced'"):
        flow.on("OrderPlace")
    with pytest.raises(ConfigurationError, match="no reaction or compensation 'nope'"):
        flow.handle("nope", lambda event, emit: None)


def test_emit_refuses_undeclared_events() -> None:
    emit = Emit("charge", frozenset({"PaymentCharged", "PaymentDeclined"}))
    emit("PaymentCharged", {"cents": 100})
    with pytest.raises(UndeclaredEventError, match="add 'OrderShipped' to its emits=") as caught:
        emit("OrderShipped")
    assert caught.value.allowed == ("PaymentCharged", "PaymentDeclined")
    assert emit.emitted == [("PaymentCharged", {"cents": 100})]
