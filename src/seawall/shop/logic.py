"""The reference shop's business logic: pure, deterministic, no I/O, no clock, no randomness.

Four services keep their data in a :class:`Records` store (the real services back it
with a SQLite or PostgreSQL table inside one transaction per request; the simulator
with a dict). Every handler is idempotent: the same request twice gives the same
reply and has one effect, and a compensation that arrives before its action makes the
late action a refusal (so a delayed "reserve" after "release" cannot leak stock).

- inventory: :func:`reserve`, :func:`release`, :func:`ship`
- payments: :func:`charge`, :func:`refund`
- shipping: :func:`schedule`, :func:`cancel`, :func:`dispatch`
- orders: :func:`place`, :func:`confirm`, :func:`compensated` (each returns the event
  to publish through the outbox, or ``None`` on a repeat)

The order saga is data (:data:`ORDER_SAGA_STEPS`); :func:`check_invariants` checks a
:class:`ShopSnapshot` taken when the shop is quiet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "CATALOG",
    "HANDLERS",
    "ORDER_SAGA_STEPS",
    "PAYMENT_LIMIT",
    "SERVICES",
    "MemoryRecords",
    "Product",
    "Records",
    "SagaStepSpec",
    "ShopSnapshot",
    "apply_summary",
    "cancel",
    "charge",
    "check_invariants",
    "compensated",
    "confirm",
    "dispatch",
    "dump",
    "handle",
    "order_amount",
    "place",
    "project_summary",
    "refund",
    "release",
    "reserve",
    "run_order",
    "sample_items",
    "schedule",
    "setup_inventory",
    "ship",
    "step_request",
    "validate_items",
]


class Records(Protocol):
    """Key-value rows of one service; values are JSON types (dicts, lists, str, int)."""

    def get(self, key: str) -> Any | None: ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...


class MemoryRecords:
    """A dict-backed :class:`Records` (tests and the simulator)."""

    def __init__(self, rows: Mapping[str, Any] | None = None) -> None:
        self.rows: dict[str, Any] = dict(rows or {})

    def get(self, key: str) -> Any | None:
        return self.rows.get(key)

    def put(self, key: str, value: Any) -> None:
        self.rows[key] = value

    def delete(self, key: str) -> None:
        self.rows.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        return sorted(key for key in self.rows if key.startswith(prefix))

    def __repr__(self) -> str:
        return f"MemoryRecords({len(self.rows)} rows)"


def dump(records: Records, prefix: str = "") -> dict[str, Any]:
    """Every row whose key starts with ``prefix``, as a plain dict (for a snapshot)."""
    return {key: records.get(key) for key in records.keys(prefix)}


# ---------------------------------------------------------------------------------------------
# Catalog


@dataclass(frozen=True, slots=True)
class Product:
    """A SKU: its price in integer cents and the stock the shop starts with."""

    sku: str
    name: str
    price: int
    initial_stock: int


CATALOG: Mapping[str, Product] = {
    product.sku: product
    for product in (
        Product("kettle", "Copper kettle", 2_499, 120),
        Product("teapot", "Cast-iron teapot", 3_999, 80),
        Product("mug", "Stoneware mug", 899, 400),
        Product("tea-tin", "Tea tin", 1_299, 250),
    )
}
"""The shop's products; some run out under a default load, which makes sagas compensate."""

PAYMENT_LIMIT = 15_000
"""Payments decline a charge above this many cents (a deterministic business refusal)."""

MAX_QUANTITY = 100
"""Most units of one SKU in one order."""

Items = Mapping[str, int]


def validate_items(items: object, catalog: Mapping[str, Product] = CATALOG) -> str | None:
    """Why ``items`` (``{sku: quantity}``) is not a valid order, or ``None`` when it is."""
    if not isinstance(items, Mapping) or not items:
        return "items must be a non-empty object of {sku: quantity}"
    for sku, quantity in items.items():
        if sku not in catalog:
            return f"unknown sku {sku!r}"
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            return f"quantity of {sku!r} must be an integer"
        if not 1 <= quantity <= MAX_QUANTITY:
            return f"quantity of {sku!r} must be between 1 and {MAX_QUANTITY}"
    return None


def order_amount(items: Items, catalog: Mapping[str, Product] = CATALOG) -> int:
    """The price of ``items`` in cents."""
    return sum(catalog[sku].price * quantity for sku, quantity in items.items())


def sample_items(index: int, catalog: Mapping[str, Product] = CATALOG) -> dict[str, int]:
    """A deterministic order for load number ``index``: 1-3 lines of 1-3 units each.

    A small linear congruential mix of ``index`` (no randomness), so the demo, the
    benchmark and the simulator place the same orders for the same indexes.
    """
    skus = sorted(catalog)
    state = (index * 2_654_435_761 + 97) % 4_294_967_296

    def next_value(modulo: int) -> int:
        nonlocal state
        state = (state * 1_103_515_245 + 12_345) % 2_147_483_648
        return (state >> 8) % modulo

    lines = 1 + next_value(3)
    items: dict[str, int] = {}
    for _ in range(lines):
        sku = skus[next_value(len(skus))]
        items[sku] = min(MAX_QUANTITY, items.get(sku, 0) + 1 + next_value(3))
    return dict(sorted(items.items()))


# ---------------------------------------------------------------------------------------------
# Inventory: stock:<sku> -> available units; reservation:<order id> -> {state, items, reply}


def setup_inventory(records: Records, catalog: Mapping[str, Product] = CATALOG) -> None:
    """Stock every SKU of ``catalog`` that has no stock row yet (idempotent)."""
    for sku, product in catalog.items():
        if records.get(f"stock:{sku}") is None:
            records.put(f"stock:{sku}", product.initial_stock)


def reserve(records: Records, order_id: str, items: Items) -> dict[str, Any]:
    """Take ``items`` out of available stock for ``order_id``, all or nothing."""
    key = f"reservation:{order_id}"
    existing = records.get(key)
    if existing is not None:
        if existing.get("reply") is not None:
            return dict(existing["reply"])
        return {"ok": False, "order_id": order_id, "reason": f"reservation {existing['state']}"}
    problem = validate_items(items)
    if problem is not None:
        return {"ok": False, "order_id": order_id, "reason": problem}
    short = [sku for sku, quantity in sorted(items.items()) if _stock(records, sku) < quantity]
    if short:
        reply = {"ok": False, "order_id": order_id, "reason": f"out of stock: {', '.join(short)}"}
        records.put(key, {"state": "rejected", "items": {}, "reply": reply})
        return dict(reply)
    for sku, quantity in items.items():
        records.put(f"stock:{sku}", _stock(records, sku) - quantity)
    reply = {"ok": True, "order_id": order_id, "items": dict(sorted(items.items()))}
    records.put(key, {"state": "reserved", "items": dict(items), "reply": reply})
    return dict(reply)


def release(records: Records, order_id: str) -> dict[str, Any]:
    """Give a reservation's units back (compensation); before any reserve, refuse a later one."""
    key = f"reservation:{order_id}"
    existing = records.get(key)
    if existing is None:
        records.put(key, {"state": "released", "items": {}, "reply": None})
        return {"ok": True, "order_id": order_id, "released": {}}
    state = existing["state"]
    if state == "shipped":
        return {"ok": False, "order_id": order_id, "reason": "already shipped"}
    if state == "reserved":
        for sku, quantity in existing["items"].items():
            records.put(f"stock:{sku}", _stock(records, sku) + quantity)
        records.put(key, {**existing, "state": "released"})
        return {"ok": True, "order_id": order_id, "released": dict(existing["items"])}
    return {"ok": True, "order_id": order_id, "released": {}}


def ship(records: Records, order_id: str) -> dict[str, Any]:
    """Mark a reservation's units as shipped (they leave the warehouse for good)."""
    key = f"reservation:{order_id}"
    existing = records.get(key)
    if existing is None or existing["state"] not in ("reserved", "shipped"):
        state = "missing" if existing is None else existing["state"]
        return {"ok": False, "order_id": order_id, "reason": f"reservation {state}"}
    if existing["state"] == "reserved":
        records.put(key, {**existing, "state": "shipped"})
    return {"ok": True, "order_id": order_id, "shipped": dict(existing["items"])}


def _stock(records: Records, sku: str) -> int:
    value = records.get(f"stock:{sku}")
    return int(value) if value is not None else 0


# ---------------------------------------------------------------------------------------------
# Payments: payment:<order id> -> {state, amount, idempotency_key, charges, refunds, reply}


def charge(records: Records, order_id: str, amount: int, idempotency_key: str) -> dict[str, Any]:
    """Charge ``amount`` cents for ``order_id`` once, whatever the number of requests or keys."""
    key = f"payment:{order_id}"
    existing = records.get(key)
    if existing is not None:
        if existing.get("reply") is not None:
            return dict(existing["reply"])
        return {"ok": False, "order_id": order_id, "reason": f"payment {existing['state']}"}
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        return {"ok": False, "order_id": order_id, "reason": "amount must be a positive integer"}
    if amount > PAYMENT_LIMIT:
        reply = {
            "ok": False,
            "order_id": order_id,
            "reason": f"declined: {amount} cents is over the limit of {PAYMENT_LIMIT}",
        }
        records.put(
            key,
            {
                "state": "declined",
                "amount": amount,
                "idempotency_key": idempotency_key,
                "charges": 0,
                "refunds": 0,
                "reply": reply,
            },
        )
        return dict(reply)
    reply = {"ok": True, "order_id": order_id, "amount": amount, "payment_id": f"pay-{order_id}"}
    records.put(
        key,
        {
            "state": "charged",
            "amount": amount,
            "idempotency_key": idempotency_key,
            "charges": 1,
            "refunds": 0,
            "reply": reply,
        },
    )
    return dict(reply)


def refund(records: Records, order_id: str) -> dict[str, Any]:
    """Give a charge back (compensation); before any charge, refuse a later one."""
    key = f"payment:{order_id}"
    existing = records.get(key)
    if existing is None:
        records.put(
            key,
            {
                "state": "voided",
                "amount": 0,
                "idempotency_key": None,
                "charges": 0,
                "refunds": 0,
                "reply": None,
            },
        )
        return {"ok": True, "order_id": order_id, "refunded": 0}
    if existing["state"] == "charged":
        records.put(key, {**existing, "state": "refunded", "refunds": existing["refunds"] + 1})
        return {"ok": True, "order_id": order_id, "refunded": existing["amount"]}
    return {"ok": True, "order_id": order_id, "refunded": 0}


# ---------------------------------------------------------------------------------------------
# Shipping: shipment:<order id> -> {state, dispatches, reply}


def schedule(records: Records, order_id: str) -> dict[str, Any]:
    """Book a shipment for ``order_id`` (dispatched once the order is confirmed)."""
    key = f"shipment:{order_id}"
    existing = records.get(key)
    if existing is not None:
        if existing.get("reply") is not None:
            return dict(existing["reply"])
        return {"ok": False, "order_id": order_id, "reason": f"shipment {existing['state']}"}
    reply = {"ok": True, "order_id": order_id, "shipment_id": f"ship-{order_id}"}
    records.put(key, {"state": "scheduled", "dispatches": 0, "reply": reply})
    return dict(reply)


def cancel(records: Records, order_id: str) -> dict[str, Any]:
    """Cancel a scheduled shipment (compensation); before any schedule, refuse a later one."""
    key = f"shipment:{order_id}"
    existing = records.get(key)
    if existing is None:
        records.put(key, {"state": "cancelled", "dispatches": 0, "reply": None})
        return {"ok": True, "order_id": order_id, "cancelled": True}
    if existing["state"] == "shipped":
        return {"ok": False, "order_id": order_id, "reason": "already shipped"}
    if existing["state"] == "scheduled":
        records.put(key, {**existing, "state": "cancelled"})
    return {"ok": True, "order_id": order_id, "cancelled": True}


def dispatch(records: Records, order_id: str) -> dict[str, Any]:
    """Send a scheduled shipment on its way, once (on the order's confirmation)."""
    key = f"shipment:{order_id}"
    existing = records.get(key)
    if existing is None or existing["state"] not in ("scheduled", "shipped"):
        state = "missing" if existing is None else existing["state"]
        return {"ok": False, "order_id": order_id, "reason": f"shipment {state}"}
    if existing["state"] == "scheduled":
        records.put(key, {**existing, "state": "shipped", "dispatches": existing["dispatches"] + 1})
        return {"ok": True, "order_id": order_id, "dispatched": True}
    return {"ok": True, "order_id": order_id, "dispatched": False}


# ---------------------------------------------------------------------------------------------
# Orders: order:<order id> -> {order_id, client, items, amount, state, reason}
# Each handler's reply carries "event": the event to publish (None when nothing changed).


def place(records: Records, order_id: str, items: Items, client: str) -> dict[str, Any]:
    """Record a new order as ``pending``; the same order id again returns the stored order."""
    key = f"order:{order_id}"
    existing = records.get(key)
    if existing is not None:
        return {"ok": True, **_order_view(existing), "event": None}
    problem = validate_items(items)
    if problem is not None:
        return {"ok": False, "order_id": order_id, "reason": problem, "event": None}
    order = {
        "order_id": order_id,
        "client": client,
        "items": dict(sorted(items.items())),
        "amount": order_amount(items),
        "state": "pending",
        "reason": None,
    }
    records.put(key, order)
    event = {"type": "OrderPlaced", **_order_view(order)}
    return {"ok": True, **_order_view(order), "event": event}


def confirm(records: Records, order_id: str) -> dict[str, Any]:
    """Move a pending order to ``confirmed`` (the saga completed)."""
    return _finish(records, order_id, "confirmed", "OrderConfirmed", None)


def compensated(records: Records, order_id: str, reason: str = "") -> dict[str, Any]:
    """Move a pending order to ``compensated`` (the saga was undone)."""
    return _finish(records, order_id, "compensated", "OrderCompensated", reason or None)


def _finish(
    records: Records, order_id: str, state: str, event_type: str, reason: str | None
) -> dict[str, Any]:
    key = f"order:{order_id}"
    existing = records.get(key)
    if existing is None:
        return {"ok": False, "order_id": order_id, "reason": "unknown order", "event": None}
    if existing["state"] == state:
        return {"ok": True, **_order_view(existing), "event": None}
    if existing["state"] != "pending":
        return {
            "ok": False,
            **_order_view(existing),
            "reason": f"order already {existing['state']}",
            "event": None,
        }
    order = {**existing, "state": state, "reason": reason}
    records.put(key, order)
    event = {"type": event_type, **_order_view(order)}
    return {"ok": True, **_order_view(order), "event": event}


def _order_view(order: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "order_id": order["order_id"],
        "client": order["client"],
        "items": dict(order["items"]),
        "amount": order["amount"],
        "state": order["state"],
        "reason": order.get("reason"),
    }


# ---------------------------------------------------------------------------------------------
# Read model (CQRS): summary:<order id> -> {client, amount, state, units}


_STATE_RANK = {"pending": 0, "confirmed": 1, "compensated": 1}


def apply_summary(records: Records, event: Mapping[str, Any]) -> bool:
    """Fold one order event into the order-summary read model; True when a row changed.

    Idempotent and order-insensitive (a final state never goes back to pending), so a
    duplicated or delayed event leaves the same read model.
    """
    if event.get("type") not in ("OrderPlaced", "OrderConfirmed", "OrderCompensated"):
        return False
    key = f"summary:{event['order_id']}"
    row = records.get(key)
    incoming = {
        "client": event["client"],
        "amount": event["amount"],
        "state": event["state"],
        "units": sum(event["items"].values()),
    }
    if row is not None and _STATE_RANK.get(row["state"], 0) >= _STATE_RANK[incoming["state"]]:
        return False
    records.put(key, incoming)
    return True


def project_summary(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The order-summary read model computed from scratch: ``{order id: row}``."""
    model = MemoryRecords()
    for event in events:
        apply_summary(model, event)
    return {key.removeprefix("summary:"): value for key, value in model.rows.items()}


# ---------------------------------------------------------------------------------------------
# The order saga as data, and one dispatcher for every service operation


@dataclass(frozen=True, slots=True)
class SagaStepSpec:
    """One step of the order saga: which service runs ``action``, and its ``compensation``."""

    name: str
    service: str
    action: str
    compensation: str


ORDER_SAGA_STEPS: tuple[SagaStepSpec, ...] = (
    SagaStepSpec("reserve-stock", "inventory", "reserve", "release"),
    SagaStepSpec("charge-payment", "payments", "charge", "refund"),
    SagaStepSpec("schedule-shipping", "shipping", "schedule", "cancel"),
)
"""Reserve stock / release, charge payment / refund, schedule shipping / cancel; on
success the order is confirmed, on failure the completed steps are compensated in
reverse and the order is marked compensated."""

SERVICES = ("orders", "payments", "inventory", "shipping")

Handler = Callable[[Records, Mapping[str, Any]], dict[str, Any]]

HANDLERS: Mapping[tuple[str, str], Handler] = {
    ("inventory", "reserve"): lambda r, p: reserve(r, p["order_id"], p["items"]),
    ("inventory", "release"): lambda r, p: release(r, p["order_id"]),
    ("inventory", "ship"): lambda r, p: ship(r, p["order_id"]),
    ("payments", "charge"): lambda r, p: charge(
        r, p["order_id"], p["amount"], p.get("idempotency_key") or p["order_id"]
    ),
    ("payments", "refund"): lambda r, p: refund(r, p["order_id"]),
    ("shipping", "schedule"): lambda r, p: schedule(r, p["order_id"]),
    ("shipping", "cancel"): lambda r, p: cancel(r, p["order_id"]),
    ("shipping", "dispatch"): lambda r, p: dispatch(r, p["order_id"]),
    ("orders", "place"): lambda r, p: place(r, p["order_id"], p["items"], p["client"]),
    ("orders", "confirm"): lambda r, p: confirm(r, p["order_id"]),
    ("orders", "compensated"): lambda r, p: compensated(r, p["order_id"], p.get("reason") or ""),
}
"""``(service, operation) -> handler(records, payload)``: how requests reach the logic."""


def handle(
    service: str, operation: str, records: Records, payload: Mapping[str, Any]
) -> dict[str, Any]:
    """Run ``operation`` of ``service`` on ``payload``; a malformed payload gets a refusal."""
    handler = HANDLERS.get((service, operation))
    if handler is None:
        return {"ok": False, "reason": f"unknown operation {service}/{operation}"}
    order_id = payload.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        return {"ok": False, "reason": "order_id must be a non-empty string"}
    try:
        return handler(records, payload)
    except (KeyError, TypeError, AttributeError) as exc:
        return {"ok": False, "order_id": order_id, "reason": f"malformed request: {exc!r}"}


def step_request(
    step: SagaStepSpec, order: Mapping[str, Any], *, compensating: bool = False
) -> tuple[str, str, dict[str, Any]]:
    """``(service, operation, payload)`` for running ``step`` (or its compensation) for ``order``.

    The payment's idempotency key is stable per order and step, so every retry,
    resume or duplicate of the charge maps to one charge.
    """
    operation = step.compensation if compensating else step.action
    payload: dict[str, Any] = {"order_id": order["order_id"]}
    if operation == "reserve":
        payload["items"] = dict(order["items"])
    elif operation == "charge":
        payload["amount"] = order["amount"]
        payload["idempotency_key"] = f"{order['order_id']}:{step.name}"
    return step.service, operation, payload


def run_order(
    services: Mapping[str, Records],
    order_id: str,
    items: Items,
    client: str,
    events: list[dict[str, Any]],
    read_model: Records | None = None,
) -> dict[str, Any]:
    """Run one order start to finish in-process, without faults: the reference behaviour.

    ``services`` maps each name of :data:`SERVICES` to its records; published events are
    appended to ``events`` (and folded into ``read_model`` when given). Returns the
    orders service's final reply.
    """

    def publish(reply: Mapping[str, Any]) -> None:
        event = reply.get("event")
        if event is not None:
            events.append(event)
            if read_model is not None:
                apply_summary(read_model, event)

    placed = place(services["orders"], order_id, items, client)
    publish(placed)
    if not placed["ok"] or placed["state"] != "pending":
        return placed
    done: list[SagaStepSpec] = []
    failure: str | None = None
    for step in ORDER_SAGA_STEPS:
        service, operation, payload = step_request(step, placed)
        reply = handle(service, operation, services[service], payload)
        if not reply["ok"]:
            failure = f"{step.name}: {reply.get('reason')}"
            break
        done.append(step)
    if failure is not None:
        for step in reversed(done):
            service, operation, payload = step_request(step, placed, compensating=True)
            handle(service, operation, services[service], payload)
        finished = compensated(services["orders"], order_id, failure)
        publish(finished)
        return finished
    finished = confirm(services["orders"], order_id)
    publish(finished)
    dispatch(services["shipping"], order_id)
    ship(services["inventory"], order_id)
    return finished


# ---------------------------------------------------------------------------------------------
# Invariants


@dataclass(frozen=True)
class ShopSnapshot:
    """Every service's rows at one quiet moment, plus the read model and the order events.

    ``orders``, ``inventory``, ``payments`` and ``shipping`` are :func:`dump` outputs;
    ``read_model`` is ``{order id: row}`` as kept by the projection; ``events`` is every
    order event the orders service published (for a from-scratch projection).
    """

    orders: Mapping[str, Any]
    inventory: Mapping[str, Any]
    payments: Mapping[str, Any]
    shipping: Mapping[str, Any]
    read_model: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[Mapping[str, Any]] = ()
    catalog: Mapping[str, Product] = field(default_factory=lambda: CATALOG)

    def orders_by_state(self) -> dict[str, int]:
        """How many orders are in each state."""
        counts: dict[str, int] = {}
        for key, order in self.orders.items():
            if key.startswith("order:"):
                counts[order["state"]] = counts.get(order["state"], 0) + 1
        return counts


def _rows(rows: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        key.removeprefix(prefix): value for key, value in rows.items() if key.startswith(prefix)
    }


def check_invariants(snapshot: ShopSnapshot, *, limit: int = 20) -> list[str]:
    """What is wrong with the shop in ``snapshot`` (empty when every invariant holds).

    Stock never negative and stock + reserved + shipped == initial per SKU; money
    charged minus refunded equals the value of confirmed orders; no order charged
    twice; every confirmed order shipped exactly once (and its units shipped), no
    other order shipped; no order left running; the read model equals the projection
    of the events computed from scratch. At most ``limit`` problems per kind.
    """
    problems: list[str] = []
    orders = _rows(snapshot.orders, "order:")
    reservations = _rows(snapshot.inventory, "reservation:")
    payments = _rows(snapshot.payments, "payment:")
    shipments = _rows(snapshot.shipping, "shipment:")

    def report(kind: list[str], message: str) -> None:
        if len(kind) < limit:
            kind.append(message)
        elif len(kind) == limit:
            kind.append("... more problems of this kind")

    # Stock.
    stock_problems: list[str] = []
    for sku, product in sorted(snapshot.catalog.items()):
        available = snapshot.inventory.get(f"stock:{sku}")
        available = int(available) if available is not None else 0
        held = {"reserved": 0, "shipped": 0}
        for reservation in reservations.values():
            if reservation["state"] in held:
                held[reservation["state"]] += int(reservation["items"].get(sku, 0))
        if available < 0:
            report(stock_problems, f"stock of {sku} is negative: {available}")
        total = available + held["reserved"] + held["shipped"]
        if total != product.initial_stock:
            report(
                stock_problems,
                f"stock of {sku}: {available} available + {held['reserved']} reserved + "
                f"{held['shipped']} shipped = {total}, not the initial {product.initial_stock}",
            )
    problems += stock_problems

    # Money.
    money_problems: list[str] = []
    charged = sum(p["amount"] * p["charges"] for p in payments.values())
    refunded = sum(p["amount"] * p["refunds"] for p in payments.values())
    confirmed_value = sum(o["amount"] for o in orders.values() if o["state"] == "confirmed")
    if charged - refunded != confirmed_value:
        report(
            money_problems,
            f"money: charged {charged} - refunded {refunded} = {charged - refunded} cents, "
            f"but confirmed orders are worth {confirmed_value}",
        )
    for order_id, payment in sorted(payments.items()):
        if payment["charges"] > 1:
            report(money_problems, f"order {order_id} was charged {payment['charges']} times")
        if payment["refunds"] > payment["charges"]:
            report(money_problems, f"order {order_id} was refunded more often than charged")
    problems += money_problems

    # Orders, shipping and per-order consistency.
    order_problems: list[str] = []
    for order_id, order in sorted(orders.items()):
        state = order["state"]
        shipment = shipments.get(order_id)
        reservation = reservations.get(order_id)
        payment = payments.get(order_id)
        if state == "pending":
            report(order_problems, f"order {order_id} is still running (pending)")
        elif state == "confirmed":
            if shipment is None or shipment["state"] != "shipped" or shipment["dispatches"] != 1:
                dispatches = 0 if shipment is None else shipment["dispatches"]
                report(
                    order_problems,
                    f"confirmed order {order_id} shipped {dispatches} times, not exactly once",
                )
            if reservation is None or reservation["state"] != "shipped":
                report(order_problems, f"confirmed order {order_id}: its stock is not shipped")
            if payment is None or payment["state"] != "charged":
                report(order_problems, f"confirmed order {order_id} is not charged")
        elif state == "compensated":
            if shipment is not None and shipment["state"] in ("scheduled", "shipped"):
                report(order_problems, f"compensated order {order_id} has a live shipment")
            if reservation is not None and reservation["state"] in ("reserved", "shipped"):
                report(order_problems, f"compensated order {order_id} still holds stock")
            if payment is not None and payment["state"] == "charged":
                report(order_problems, f"compensated order {order_id} is still charged")
    for order_id, shipment in sorted(shipments.items()):
        order = orders.get(order_id)
        if shipment["state"] == "shipped" and (order is None or order["state"] != "confirmed"):
            report(order_problems, f"order {order_id} was shipped but is not confirmed")
    problems += order_problems

    # Read model.
    model_problems: list[str] = []
    expected = project_summary(snapshot.events)
    actual = dict(snapshot.read_model)
    for order_id in sorted(set(expected) | set(actual)):
        if expected.get(order_id) != actual.get(order_id):
            report(
                model_problems,
                f"read model row {order_id} is {actual.get(order_id)!r}, the projection from "
                f"scratch gives {expected.get(order_id)!r}",
            )
    final_events = {
        event["order_id"]
        for event in snapshot.events
        if event.get("type") in ("OrderConfirmed", "OrderCompensated")
    }
    for order_id, order in sorted(orders.items()):
        if order["state"] != "pending" and order_id not in final_events:
            report(model_problems, f"order {order_id} is {order['state']} but published no event")
    problems += model_problems
    return problems
