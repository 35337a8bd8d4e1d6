"""The shop's pure business logic: idempotent handlers, the saga as data, the invariants."""

from __future__ import annotations

from typing import Any

import pytest

from seawall.shop import logic
from seawall.shop.logic import (
    CATALOG,
    ORDER_SAGA_STEPS,
    PAYMENT_LIMIT,
    MemoryRecords,
    ShopSnapshot,
    check_invariants,
)


def new_shop() -> dict[str, MemoryRecords]:
    shop = {name: MemoryRecords() for name in logic.SERVICES}
    logic.setup_inventory(shop["inventory"])
    return shop


def snapshot_of(
    shop: dict[str, MemoryRecords], events: list[dict[str, Any]], read_model: MemoryRecords
) -> ShopSnapshot:
    return ShopSnapshot(
        orders=logic.dump(shop["orders"]),
        inventory=logic.dump(shop["inventory"]),
        payments=logic.dump(shop["payments"]),
        shipping=logic.dump(shop["shipping"]),
        read_model={
            key.removeprefix("summary:"): value for key, value in logic.dump(read_model).items()
        },
        events=events,
    )


def run_many(count: int) -> tuple[dict[str, MemoryRecords], list[dict[str, Any]], MemoryRecords]:
    shop = new_shop()
    events: list[dict[str, Any]] = []
    read_model = MemoryRecords()
    for index in range(count):
        logic.run_order(
            shop, f"o{index}", logic.sample_items(index), f"c{index % 3}", events, read_model
        )
    return shop, events, read_model


def test_records_protocol_on_memory_records() -> None:
    records = MemoryRecords()
    records.put("a:1", 1)
    records.put("a:2", {"x": 1})
    records.put("b:1", 3)
    assert records.get("a:1") == 1
    assert records.keys("a:") == ["a:1", "a:2"]
    records.delete("a:1")
    records.delete("missing")
    assert records.get("a:1") is None
    assert logic.dump(records) == {"a:2": {"x": 1}, "b:1": 3}
    assert "2 rows" in repr(records)


def test_sample_items_are_deterministic_and_valid() -> None:
    orders = [logic.sample_items(index) for index in range(300)]
    assert orders == [logic.sample_items(index) for index in range(300)]
    assert all(logic.validate_items(items) is None for items in orders)
    assert len({tuple(items.items()) for items in orders}) > 20
    amounts = [logic.order_amount(items) for items in orders]
    assert any(amount > PAYMENT_LIMIT for amount in amounts)
    assert any(amount <= PAYMENT_LIMIT for amount in amounts)


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ({}, "non-empty"),
        ([], "non-empty"),
        ({"ghost": 1}, "unknown sku"),
        ({"mug": 0}, "between 1"),
        ({"mug": 1.5}, "integer"),
        ({"mug": True}, "integer"),
    ],
)
def test_invalid_items_are_refused(items: Any, problem: str) -> None:
    assert problem in (logic.validate_items(items) or "")
    reply = logic.place(MemoryRecords(), "o1", items, "c")
    assert not reply["ok"]
    assert problem in reply["reason"]


def test_reserve_is_idempotent_and_all_or_nothing() -> None:
    records = MemoryRecords()
    logic.setup_inventory(records)
    first = logic.reserve(records, "o1", {"mug": 2, "kettle": 1})
    assert first["ok"]
    assert logic.reserve(records, "o1", {"mug": 2, "kettle": 1}) == first
    assert records.get("stock:mug") == CATALOG["mug"].initial_stock - 2
    too_many = {"mug": 1, "teapot": CATALOG["teapot"].initial_stock + 1}
    refused = logic.reserve(records, "o2", {k: min(v, 100) for k, v in too_many.items()})
    assert not refused["ok"]
    assert "teapot" in refused["reason"]
    assert records.get("stock:mug") == CATALOG["mug"].initial_stock - 2
    assert logic.reserve(records, "o2", {"mug": 1}) == refused


def test_release_gives_stock_back_once_and_blocks_a_late_reserve() -> None:
    records = MemoryRecords()
    logic.setup_inventory(records)
    logic.reserve(records, "o1", {"mug": 3})
    assert logic.release(records, "o1")["released"] == {"mug": 3}
    assert logic.release(records, "o1")["released"] == {}
    assert records.get("stock:mug") == CATALOG["mug"].initial_stock
    # A compensation that arrives before its action: the late action is refused.
    assert logic.release(records, "o2")["ok"]
    late = logic.reserve(records, "o2", {"mug": 1})
    assert not late["ok"]
    assert "released" in late["reason"]
    assert records.get("stock:mug") == CATALOG["mug"].initial_stock


def test_ship_moves_a_reservation_once_and_cannot_be_released() -> None:
    records = MemoryRecords()
    logic.setup_inventory(records)
    assert not logic.ship(records, "o1")["ok"]
    logic.reserve(records, "o1", {"mug": 1})
    assert logic.ship(records, "o1")["ok"]
    assert logic.ship(records, "o1")["ok"]
    assert not logic.release(records, "o1")["ok"]
    assert records.get("reservation:o1")["state"] == "shipped"


def test_charge_once_per_order_whatever_the_key() -> None:
    records = MemoryRecords()
    first = logic.charge(records, "o1", 1_000, "k1")
    assert first["ok"]
    assert logic.charge(records, "o1", 1_000, "k1") == first
    assert logic.charge(records, "o1", 1_000, "other-key") == first
    assert records.get("payment:o1")["charges"] == 1
    declined = logic.charge(records, "o2", PAYMENT_LIMIT + 1, "k2")
    assert not declined["ok"]
    assert "declined" in declined["reason"]
    assert records.get("payment:o2")["charges"] == 0
    assert not logic.charge(records, "o3", 0, "k3")["ok"]


def test_refund_once_and_void_before_charge() -> None:
    records = MemoryRecords()
    logic.charge(records, "o1", 1_000, "k1")
    assert logic.refund(records, "o1")["refunded"] == 1_000
    assert logic.refund(records, "o1")["refunded"] == 0
    assert records.get("payment:o1")["refunds"] == 1
    assert logic.refund(records, "o2")["ok"]
    late = logic.charge(records, "o2", 1_000, "k2")
    assert not late["ok"]
    assert "voided" in late["reason"]


def test_shipping_schedule_cancel_dispatch() -> None:
    records = MemoryRecords()
    assert logic.schedule(records, "o1") == logic.schedule(records, "o1")
    assert logic.dispatch(records, "o1")["dispatched"] is True
    assert logic.dispatch(records, "o1")["dispatched"] is False
    assert records.get("shipment:o1")["dispatches"] == 1
    assert not logic.cancel(records, "o1")["ok"]
    logic.schedule(records, "o2")
    assert logic.cancel(records, "o2")["ok"]
    assert not logic.dispatch(records, "o2")["ok"]
    assert logic.cancel(records, "o3")["ok"]
    assert not logic.schedule(records, "o3")["ok"]


def test_orders_emit_one_event_per_transition() -> None:
    records = MemoryRecords()
    placed = logic.place(records, "o1", {"mug": 2}, "alice")
    assert placed["state"] == "pending"
    assert placed["amount"] == 2 * CATALOG["mug"].price
    assert placed["event"]["type"] == "OrderPlaced"
    assert logic.place(records, "o1", {"mug": 5}, "bob")["event"] is None
    confirmed = logic.confirm(records, "o1")
    assert confirmed["event"]["type"] == "OrderConfirmed"
    assert logic.confirm(records, "o1")["event"] is None
    refused = logic.compensated(records, "o1", "late")
    assert not refused["ok"]
    assert refused["event"] is None
    assert not logic.confirm(records, "missing")["ok"]
    logic.place(records, "o2", {"mug": 1}, "alice")
    done = logic.compensated(records, "o2", "declined")
    assert done["state"] == "compensated"
    assert done["reason"] == "declined"


def test_handle_dispatches_and_refuses_malformed_requests() -> None:
    records = MemoryRecords()
    assert logic.handle("payments", "charge", records, {"order_id": "o1", "amount": 5})["ok"]
    assert not logic.handle("payments", "steal", records, {"order_id": "o1"})["ok"]
    assert not logic.handle("payments", "refund", records, {})["ok"]
    malformed = logic.handle("inventory", "reserve", records, {"order_id": "o2"})
    assert not malformed["ok"]
    assert "malformed" in malformed["reason"]


def test_saga_steps_and_requests() -> None:
    assert [step.service for step in ORDER_SAGA_STEPS] == ["inventory", "payments", "shipping"]
    order = logic.place(MemoryRecords(), "o1", {"mug": 1}, "c")
    charge_step = ORDER_SAGA_STEPS[1]
    service, operation, payload = logic.step_request(charge_step, order)
    assert (service, operation) == ("payments", "charge")
    assert payload == {
        "order_id": "o1",
        "amount": CATALOG["mug"].price,
        "idempotency_key": "o1:charge-payment",
    }
    assert logic.step_request(charge_step, order, compensating=True)[1] == "refund"
    for step in ORDER_SAGA_STEPS:
        assert (step.service, step.action) in logic.HANDLERS
        assert (step.service, step.compensation) in logic.HANDLERS


def test_a_run_of_orders_keeps_every_invariant() -> None:
    shop, events, read_model = run_many(300)
    snapshot = snapshot_of(shop, events, read_model)
    assert check_invariants(snapshot) == []
    states = snapshot.orders_by_state()
    assert states.get("confirmed", 0) > 0
    assert states.get("compensated", 0) > 0
    assert "pending" not in states


def test_the_projection_ignores_duplicates_and_order() -> None:
    _, events, read_model = run_many(40)
    shuffled = list(reversed(events)) + events[:10]
    assert logic.project_summary(shuffled) == logic.project_summary(events)
    assert not logic.apply_summary(read_model, {"type": "Unrelated"})


def doctor(snapshot: ShopSnapshot, **changes: Any) -> ShopSnapshot:
    fields = {
        "orders": dict(snapshot.orders),
        "inventory": dict(snapshot.inventory),
        "payments": dict(snapshot.payments),
        "shipping": dict(snapshot.shipping),
        "read_model": dict(snapshot.read_model),
        "events": list(snapshot.events),
    }
    for name, update in changes.items():
        update(fields[name])
    return ShopSnapshot(**fields)


def confirmed_order(snapshot: ShopSnapshot) -> str:
    return next(
        key.removeprefix("order:")
        for key, order in snapshot.orders.items()
        if order["state"] == "confirmed"
    )


def test_each_broken_invariant_is_reported() -> None:
    shop, events, read_model = run_many(120)
    good = snapshot_of(shop, events, read_model)
    order_id = confirmed_order(good)

    def negative_stock(rows: dict[str, Any]) -> None:
        rows["stock:mug"] = -1

    def double_charge(rows: dict[str, Any]) -> None:
        rows[f"payment:{order_id}"] = {**rows[f"payment:{order_id}"], "charges": 2}

    def ship_twice(rows: dict[str, Any]) -> None:
        rows[f"shipment:{order_id}"] = {**rows[f"shipment:{order_id}"], "dispatches": 2}

    def left_running(rows: dict[str, Any]) -> None:
        rows["order:extra"] = {**rows[f"order:{order_id}"], "order_id": "extra", "state": "pending"}

    def stale_model(rows: dict[str, Any]) -> None:
        rows[order_id] = {**rows[order_id], "state": "pending"}

    cases = {
        "negative": doctor(good, inventory=negative_stock),
        "charged 2 times": doctor(good, payments=double_charge),
        "shipped 2 times": doctor(good, shipping=ship_twice),
        "still running": doctor(good, orders=left_running),
        "read model row": doctor(good, read_model=stale_model),
    }
    for expected, snapshot in cases.items():
        problems = check_invariants(snapshot)
        assert any(expected in problem for problem in problems), (expected, problems)
    money = check_invariants(doctor(good, payments=double_charge))
    assert any(problem.startswith("money:") for problem in money)


def test_problems_are_capped_per_kind() -> None:
    shop, events, read_model = run_many(60)
    good = snapshot_of(shop, events, read_model)
    broken = ShopSnapshot(
        orders=good.orders,
        inventory=good.inventory,
        payments=good.payments,
        shipping=good.shipping,
        read_model={},
        events=good.events,
    )
    problems = check_invariants(broken, limit=3)
    assert len(problems) == 4
    assert problems[-1].startswith("...")
