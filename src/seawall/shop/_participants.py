"""Inventory, payments and shipping: the order saga's participants, each its own process.

Each answers ``POST /op/<operation>`` by running the pure logic on its own database in
one transaction. Payments sits behind the ``Idempotency-Key`` middleware; shipping and
inventory also consume a queue through an inbox (a duplicated or redelivered message
takes effect once), and shipping publishes its "ship" commands through its outbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from seawall.engines import Engine, connect
from seawall.shop import logic
from seawall.shop._config import INVENTORY_COMMANDS, SHIPPING_EVENTS
from seawall.shop._records import SqlRecords, create_records_table, read_records
from seawall.shop._runtime import ChaosMiddleware, ChaosPublisher, ServiceState, base_routes

if TYPE_CHECKING:
    from seawall.engines import Transaction
    from seawall.messaging.queue import Queue

__all__ = ["TABLE", "build_participant", "open_run_queue"]

TABLE = "shop_records"

OPERATIONS = {
    "inventory": ("reserve", "release", "ship"),
    "payments": ("charge", "refund"),
    "shipping": ("schedule", "cancel"),
}


def open_run_queue(state: ServiceState, name: str) -> Queue:
    """Open queue ``name`` of this run (short visibility: a killed consumer's work returns fast)."""
    from seawall.messaging.queue import open_queue

    return open_queue(
        state.config.queue_url,
        state.config.queue_name(name),
        visibility_timeout=3.0,
        max_deliveries=50,
    )


def transact(engine: Engine, service: str, operation: str, payload: dict[str, Any]) -> Any:
    """Run one logic operation in one transaction of the service's database."""
    with engine.transaction() as tx:
        return logic.handle(service, operation, SqlRecords(tx, TABLE), payload)


def _operation_route(engine: Engine, service: str) -> Route:
    allowed = OPERATIONS[service]

    async def operation(request: Request) -> Response:
        name = request.path_params["operation"]
        if name not in allowed:
            return JSONResponse({"ok": False, "reason": f"unknown operation {name}"}, 404)
        try:
            payload = await request.json()
        except ClientDisconnect:  # the caller was killed mid-request: nothing to answer
            return Response(status_code=499)
        except ValueError:
            return JSONResponse({"ok": False, "reason": "the body must be JSON"}, 400)
        if not isinstance(payload, dict):
            return JSONResponse({"ok": False, "reason": "the body must be a JSON object"}, 400)
        reply = await asyncio.to_thread(transact, engine, service, name, payload)
        return JSONResponse(reply)

    return Route("/op/{operation}", operation, methods=["POST"])


def build_participant(service: str, state: ServiceState) -> tuple[Starlette, Callable[[], None]]:
    """The service's ASGI app and the function that stops its background work."""
    from seawall.messaging.inbox import Inbox
    from seawall.messaging.outbox import Outbox
    from seawall.messaging.queue import Worker

    engine = connect(state.config.database_url(service))
    create_records_table(engine, TABLE)
    if service == "inventory":
        with engine.transaction() as tx:
            logic.setup_inventory(SqlRecords(tx, TABLE))

    stoppers: list[Callable[[], None]] = []
    middleware = [Middleware(ChaosMiddleware, state=state)]
    if service == "payments":
        from seawall.idempotency import IdempotencyKeys, IdempotencyMiddleware

        keys = IdempotencyKeys(engine, lease=10.0)
        middleware.append(Middleware(IdempotencyMiddleware, keys=keys))

    consumed: Queue | None = None
    outbox: Outbox | None = None
    if service == "shipping":
        outbox = Outbox(engine)
        relay = outbox.relay(
            ChaosPublisher(state, lambda topic: open_run_queue(state, topic)),
            poll_interval=0.1,
            retention=0.0,
        )
        relay.start()
        stoppers.append(lambda: relay.stop(timeout=2.0))
        consumed = open_run_queue(state, SHIPPING_EVENTS)
        inbox = Inbox(engine, "shipping")
        shipping_outbox = outbox

        def on_order_event(body: Any, tx: Transaction | None) -> None:
            if tx is None or body.get("type") != "OrderConfirmed":
                return
            reply = logic.dispatch(SqlRecords(tx, TABLE), body["order_id"])
            if not reply["ok"]:
                raise RuntimeError(f"cannot dispatch {body['order_id']}: {reply['reason']}")
            if reply["dispatched"]:
                shipping_outbox.add(
                    INVENTORY_COMMANDS,
                    {"type": "ShipOrder", "order_id": body["order_id"]},
                    key=body["order_id"],
                    transaction=tx,
                )

        handler = inbox.handler(on_order_event)
    elif service == "inventory":
        consumed = open_run_queue(state, INVENTORY_COMMANDS)
        inbox = Inbox(engine, "inventory")

        def on_command(body: Any, tx: Transaction | None) -> None:
            if tx is None or body.get("type") != "ShipOrder":
                return
            reply = logic.ship(SqlRecords(tx, TABLE), body["order_id"])
            if not reply["ok"]:
                raise RuntimeError(f"cannot ship {body['order_id']}: {reply['reason']}")

        handler = inbox.handler(on_command)

    if consumed is not None:
        worker = Worker(
            consumed,
            handler,
            concurrency=2,
            heartbeat=1.0,
            retry_wait=0.2,
            poll_wait=0.2,
            grace=1.0,
            name=f"{service}-worker",
        )
        worker_task: list[Any] = []

        def run_worker() -> None:
            worker.run()

        import threading

        thread = threading.Thread(target=run_worker, name=f"{service}-worker", daemon=True)
        thread.start()
        worker_task.append(thread)

        def stop_worker() -> None:
            worker.stop(grace=1.0)
            thread.join(timeout=3.0)

        stoppers.append(stop_worker)

    def gauges() -> dict[str, Any]:
        result: dict[str, Any] = {}
        if outbox is not None:
            result["outbox_pending"] = outbox.stats().pending
        return result

    async def snapshot() -> dict[str, Any]:
        return {"records": await asyncio.to_thread(read_records, engine, TABLE)}

    state.gauges = gauges
    state.snapshot = snapshot

    def stop() -> None:
        for stopper in reversed(stoppers):
            stopper()
        engine.close()

    routes = [*base_routes(state), _operation_route(engine, service)]
    return Starlette(routes=routes, middleware=middleware), stop
