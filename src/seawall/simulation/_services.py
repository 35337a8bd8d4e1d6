"""The shop's participants, read model and clients as simulated nodes.

Each service handles a request in one transaction over its disk, running the shop's
own handlers from :mod:`seawall.shop.logic` unchanged; only the records, the network
and the clock are simulated. A service may die in the middle of a request (before its
commit: the writes are lost; after it: the reply is lost), as the fault profile says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from seawall.shop import logic
from seawall.simulation._network import Message
from seawall.simulation._node import Node, RecordsTransaction

if TYPE_CHECKING:
    from seawall.simulation._world import World

__all__ = ["Client", "Participant", "ReadModel", "Service"]

PLACE_TIMEOUT = 0.1
"""Seconds a client waits for the orders service's reply before sending the order again."""


class Service(Node):
    """A node that handles each request in one transaction and may die while doing it."""

    def __init__(self, name: str, world: World, mutations: frozenset[str] = frozenset()) -> None:
        super().__init__(name, world)
        self.mutations = mutations

    def transact(self, work: Callable[[RecordsTransaction], Any]) -> tuple[bool, Any]:
        """Run ``work`` in a transaction and commit it, unless the node dies on the way.

        Returns ``(alive, result)``: ``alive`` is False when the node crashed (before
        its commit, or after it and before anything else could happen).
        """
        transaction = self.storage.begin()
        result = work(transaction)
        point = self.world.faults.crash_point(self)
        if point == "before-commit":
            transaction.rollback()
            self._die("before its commit")
            return False, result
        transaction.commit()
        if point == "after-commit":
            self._die("after its commit")
            return False, result
        return True, result

    def _die(self, where: str) -> None:
        self.crash(where)
        self.world.faults.schedule_restart(self)


def _summary(reply: dict[str, Any]) -> str:
    if reply.get("ok"):
        return "ok"
    return f"refused ({reply.get('reason')})"


class Participant(Service):
    """Inventory, payments or shipping: idempotent handlers answering the orders service."""

    def boot(self) -> None:
        """Stock the warehouse the first time (idempotent, like the real service's setup)."""
        if self.name == "inventory" and not self.storage.keys("stock:"):
            transaction = self.storage.begin()
            logic.setup_inventory(transaction)
            transaction.commit()

    def on_message(self, message: Message) -> None:
        """Handle a request and reply with the handler's answer."""
        if message.kind != "request":
            return
        body = message.body
        operation = str(body["operation"])
        payload = body["payload"]

        def work(transaction: RecordsTransaction) -> dict[str, Any]:
            if "double-charge" in self.mutations and operation == "charge":
                _charge_again(transaction, payload)
            return logic.handle(self.name, operation, transaction, payload)

        alive, reply = self.transact(work)
        self.decide(f"{operation} {payload.get('order_id')} {_summary(reply)}")
        if alive:
            self.send(message.source, "reply", {"request": body["request"], "reply": reply})


def _charge_again(transaction: RecordsTransaction, payload: dict[str, Any]) -> None:
    """The broken variant: a repeated charge takes the money again (not idempotent)."""
    key = f"payment:{payload.get('order_id')}"
    payment = transaction.get(key)
    if payment is not None and payment.get("state") == "charged":
        payment["charges"] += 1
        transaction.put(key, payment)


class ReadModel(Service):
    """The order-summary read model, fed by the orders service's outbox through an inbox."""

    def on_message(self, message: Message) -> None:
        """Apply an order event once (the inbox remembers its sequence number), then ack it."""
        if message.kind != "event":
            return
        sequence = int(message.body["sequence"])
        event = message.body["event"]

        def work(transaction: RecordsTransaction) -> bool:
            inbox_key = f"inbox:{sequence:08d}"
            if transaction.get(inbox_key) is not None:
                return False
            logic.apply_summary(transaction, event)
            transaction.put(inbox_key, True)
            return True

        alive, fresh = self.transact(work)
        self.decide(f"event {sequence} {'applied' if fresh else 'seen before'}")
        if alive:
            self.send(message.source, "ack", {"sequence": sequence})

    def read_model(self) -> dict[str, Any]:
        """``{order id: row}`` as committed."""
        return {
            key.removeprefix("summary:"): self.storage.get(key)
            for key in self.storage.keys("summary:")
        }


class Client(Node):
    """Places orders now and then, and sends each again until the orders service answers."""

    def __init__(self, name: str, world: World, *, rate: float, orders: str = "orders") -> None:
        super().__init__(name, world)
        self.rate = rate
        self.orders = orders
        self.placing = False
        self.placed = 0
        self.pending: dict[str, dict[str, Any]] = {}
        self.replies: dict[str, dict[str, Any]] = {}
        self._random = world.random(f"client:{name}")

    def begin(self) -> None:
        """Start placing orders."""
        self.placing = True
        self._schedule_next()

    def stop(self) -> None:
        """Place no new order (pending ones are still sent until answered)."""
        self.placing = False

    def _schedule_next(self) -> None:
        self.timer(self._random.expovariate(self.rate), self._place_next, "next order")

    def _place_next(self) -> None:
        if not self.placing:
            return
        self.placed += 1
        order_id = f"{self.name}-{self.placed}"
        items = logic.sample_items(self._random.randrange(1_000_000))
        self.pending[order_id] = {"order_id": order_id, "items": items, "client": self.name}
        self._send(order_id)
        self._schedule_next()

    def _send(self, order_id: str) -> None:
        body = self.pending.get(order_id)
        if body is None:
            return
        self.send(self.orders, "place", body)
        self.timer(PLACE_TIMEOUT, lambda: self._send(order_id), f"resend {order_id}")

    def on_message(self, message: Message) -> None:
        """An answer to one of this client's orders."""
        if message.kind != "placed":
            return
        reply = message.body
        order_id = str(reply.get("order_id"))
        if self.pending.pop(order_id, None) is not None:
            self.replies[order_id] = reply
