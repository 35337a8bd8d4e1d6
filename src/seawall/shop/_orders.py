"""The orders service: the API clients call, the saga orchestrator, the events and the read model.

``POST /orders`` (rate-limited per client) runs the order saga with seawall's durable
orchestrator, its log in the orders database:

1. ``place-order`` (local: one commit with the saga log) records the order and appends
   ``OrderPlaced`` to the event store; its compensation marks the order compensated;
2. the three participant steps of :data:`~seawall.shop.logic.ORDER_SAGA_STEPS`, each an
   HTTP call through a resilience pipeline (timeout, retry with jitter and a budget,
   circuit breaker, bulkhead);
3. ``confirm-order`` (local, the pivot) confirms the order, appends ``OrderConfirmed``
   and puts it in the transactional outbox for shipping.

A projection builds the order-summary read model from the event store (exactly once,
in the read model's transaction). A sweeper resumes the sagas a killed process left.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from seawall.engines import Transaction, connect
from seawall.eventsourcing import (
    ANY,
    NO_STREAM,
    NewEvent,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    open_event_store,
)
from seawall.messaging.outbox import Outbox
from seawall.resilience import (
    Bulkhead,
    CircuitBreaker,
    CountWindow,
    Pipeline,
    RateLimiter,
    Retry,
    RetryBudget,
    Timeout,
    TokenBucket,
    exponential,
)
from seawall.shop import logic
from seawall.shop._config import SHIPPING_EVENTS
from seawall.shop._records import SqlRecords, create_records_table, read_records
from seawall.shop._runtime import ChaosMiddleware, ChaosPublisher, ServiceState, base_routes
from seawall.workflows.saga import (
    AsyncSagaOrchestrator,
    Saga,
    SagaBusyError,
    SagaFailedError,
    SagaStatus,
    Step,
    StepContext,
)

__all__ = ["ServiceError", "StepRefusedError", "build_orders", "participant_pipeline"]

ORDERS = "shop_orders"
SUMMARY = "shop_summary"


class ServiceError(ConnectionError):
    """A participant answered with a server error (retried by the pipeline)."""


class StepRefusedError(Exception):
    """A participant refused the request (out of stock, declined): the saga turns back."""


def participant_pipeline(service: str) -> Pipeline:
    """The policies around every call to ``service``, outermost first."""
    return Pipeline(
        Timeout(4.0, name=f"{service}-overall"),
        Retry(
            attempts=4,
            wait=exponential(0.02, cap=0.3, jitter="full"),
            on=(ConnectionError, TimeoutError, httpx.TransportError),
            budget=RetryBudget(ratio=0.5, min_per_second=20),
            name=f"{service}-retry",
        ),
        CircuitBreaker(
            service,
            window=CountWindow(20),
            failure_rate=0.5,
            minimum_calls=10,
            open_for=0.5,
            half_open_calls=3,
        ),
        Bulkhead(max_concurrent=32, max_wait=1.0, name=service),
        Timeout(1.5, name=f"{service}-attempt"),
        name=service,
    )


class _Summary(Projection):
    """The order-summary read model (CQRS query side), one row per order."""

    name = "order-summary"

    def setup(self, tx: Transaction) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {SUMMARY} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )

    def handle(self, event: RecordedEvent, tx: Transaction) -> None:
        logic.apply_summary(SqlRecords(tx, SUMMARY), event.data)

    def reset(self, tx: Transaction) -> None:
        tx.execute(f"DELETE FROM {SUMMARY}")


def build_orders(state: ServiceState) -> tuple[Starlette, Callable[[], None]]:
    """The orders service's ASGI app and the function that stops its background work."""
    config = state.config
    engine = connect(config.database_url("orders"))
    create_records_table(engine, ORDERS)
    create_records_table(engine, SUMMARY)
    events = open_event_store(engine)
    outbox = Outbox(engine)
    clients = {
        service: httpx.AsyncClient(base_url=config.service_url(service), timeout=5.0)
        for service in ("inventory", "payments", "shipping")
    }
    pipelines = {service: participant_pipeline(service) for service in clients}

    def append(tx: Transaction, reply: dict[str, Any], expected: Any) -> None:
        event = reply.get("event")
        if event is not None:
            events.append(
                f"order-{event['order_id']}",
                [NewEvent(event["type"], event)],
                expected_version=expected,
                transaction=tx,
            )

    # -- saga steps ----------------------------------------------------------------------

    def place_order(context: StepContext) -> dict[str, Any]:
        order = context.input
        if context.transaction is None:
            raise RuntimeError("place-order is a local step")
        records = SqlRecords(context.transaction, ORDERS)
        reply = logic.place(records, order["order_id"], order["items"], order["client"])
        if not reply["ok"]:
            raise StepRefusedError(reply["reason"])
        append(context.transaction, reply, NO_STREAM)
        return {"amount": reply["amount"]}

    def mark_compensated(context: StepContext) -> None:
        if context.transaction is None:
            raise RuntimeError("place-order is a local step")
        records = SqlRecords(context.transaction, ORDERS)
        reply = logic.compensated(records, context.input["order_id"], "saga compensated")
        append(context.transaction, reply, ANY)

    def confirm_order(context: StepContext) -> None:
        if context.transaction is None:
            raise RuntimeError("confirm-order is a local step")
        records = SqlRecords(context.transaction, ORDERS)
        reply = logic.confirm(records, context.input["order_id"])
        if not reply["ok"]:
            raise StepRefusedError(reply["reason"])
        append(context.transaction, reply, ANY)
        if reply["event"] is not None:
            outbox.add(
                SHIPPING_EVENTS,
                reply["event"],
                key=context.input["order_id"],
                transaction=context.transaction,
            )

    async def call(service: str, operation: str, payload: dict[str, Any], key: str) -> Any:
        client = clients[service]

        async def attempt() -> Any:
            response = await client.post(
                f"/op/{operation}", json=payload, headers={"Idempotency-Key": key}
            )
            if response.status_code >= 500 or response.status_code == 409:
                raise ServiceError(f"{service} answered {response.status_code}")
            return response.json()

        return await pipelines[service].acall(attempt)

    def participant_step(spec: logic.SagaStepSpec) -> Step:
        async def action(context: StepContext) -> Any:
            service, operation, payload = logic.step_request(spec, context.input)
            reply = await call(service, operation, payload, context.idempotency_key)
            if not reply.get("ok"):
                raise StepRefusedError(f"{spec.name}: {reply.get('reason')}")
            return reply

        async def compensation(context: StepContext) -> Any:
            service, operation, payload = logic.step_request(spec, context.input, compensating=True)
            reply = await call(service, operation, payload, f"{context.idempotency_key}:undo")
            if not reply.get("ok"):
                raise StepRefusedError(f"{spec.name} compensation: {reply.get('reason')}")
            return reply

        return Step(spec.name, action, compensation, compensate_failed=True)

    saga = Saga(
        "order",
        [
            Step("place-order", place_order, mark_compensated, local=True),
            *(participant_step(spec) for spec in logic.ORDER_SAGA_STEPS),
            Step("confirm-order", confirm_order, local=True, pivot=True),
        ],
    )
    orchestrator = AsyncSagaOrchestrator(
        engine,
        [saga],
        lease=config.lease,
        compensation_policy=Retry(
            attempts=60, wait=exponential(0.05, cap=0.5, jitter="full"), name="compensation"
        ),
    )

    # -- rate limit ----------------------------------------------------------------------

    limit_store: Any = None
    if config.engine == "postgres" and config.redis_url:
        from seawall.resilience.ratelimit.redis import RedisRateLimitStore

        limit_store = RedisRateLimitStore(
            config.redis_url, prefix=f"seawall:shop:{config.run_id}:ratelimit"
        )
    limiter = RateLimiter(
        TokenBucket(rate=config.client_rate, per=1.0, burst=config.client_burst),
        limit_store,
        name="orders-api",
    )

    # -- background work: outbox relay, projection, saga sweeper -------------------------

    relay = outbox.relay(
        ChaosPublisher(state, lambda topic: _open_queue(state, topic)),
        poll_interval=0.1,
        retention=0.0,
    )
    relay.start()
    runner = ProjectionRunner(events, _Summary(), batch_size=200, poll_interval=0.1)
    projection_thread = threading.Thread(
        target=_run_projection, args=(runner,), name="order-summary", daemon=True
    )
    projection_thread.start()
    sweeper: list[asyncio.Task[None]] = []

    async def sweep() -> None:
        while True:
            try:
                await orchestrator.resume()
                for record in await orchestrator.list(status=SagaStatus.STUCK, limit=20):
                    await orchestrator.retry(record.id, "retried by the orders sweeper")
            except Exception as exc:  # keep sweeping: the next turn tries again
                state.counters.add("sweeper_errors")
                del exc
            await asyncio.sleep(0.3)

    # -- HTTP ----------------------------------------------------------------------------

    def read_order(order_id: str) -> Any:
        with engine.transaction() as tx:
            return SqlRecords(tx, ORDERS).get(f"order:{order_id}")

    async def place(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"ok": False, "reason": "the body must be JSON"}, 400)
        order_id = body.get("order_id") if isinstance(body, dict) else None
        client = body.get("client") if isinstance(body, dict) else None
        if not isinstance(order_id, str) or not order_id or not isinstance(client, str):
            return JSONResponse(
                {"ok": False, "reason": "send {order_id, client, items}"}, status_code=422
            )
        problem = logic.validate_items(body.get("items"))
        if problem is not None:
            return JSONResponse({"ok": False, "reason": problem}, status_code=422)
        decision = await limiter.adecide(client)
        if not decision.allowed:
            retry_after = decision.retry_after or 0.05
            return JSONResponse(
                {"ok": False, "reason": "rate limited", "retry_after": retry_after},
                status_code=429,
                headers={"Retry-After": f"{retry_after:.3f}"},
            )
        items = dict(body["items"])
        order = {
            "order_id": order_id,
            "client": client,
            "items": items,
            "amount": logic.order_amount(items),
        }
        reason = None
        try:
            await orchestrator.run(saga, order, saga_id=order_id)
        except SagaFailedError as exc:
            reason = str(exc)
        except SagaBusyError:
            pass
        stored = await asyncio.to_thread(read_order, order_id)
        state_name = "pending" if stored is None else stored["state"]
        return JSONResponse(
            {"ok": True, "order_id": order_id, "state": state_name, "reason": reason},
            status_code=200 if state_name != "pending" else 202,
        )

    async def get_order(request: Request) -> Response:
        stored = await asyncio.to_thread(read_order, request.path_params["order_id"])
        if stored is None:
            return JSONResponse({"ok": False, "reason": "unknown order"}, status_code=404)
        return JSONResponse({"ok": True, **stored})

    def gauges() -> dict[str, Any]:
        breakers = {}
        for service, pipeline in pipelines.items():
            for policy in pipeline.policies:
                if isinstance(policy, CircuitBreaker):
                    breakers[service] = policy.state.value
        return {
            "outbox_pending": outbox.stats().pending,
            "projection_lag": runner.lag().events,
            "breaker_states": breakers,
        }

    def read_snapshot() -> dict[str, Any]:
        summary = read_records(engine, SUMMARY)
        published: list[dict[str, Any]] = []
        after = 0
        while True:
            page = events.read_all(after=after, limit=1000)
            if not page:
                break
            published.extend(event.data for event in page)
            after = page[-1].position
        return {
            "records": read_records(engine, ORDERS),
            "read_model": {key.removeprefix("summary:"): row for key, row in summary.items()},
            "events": published,
        }

    async def snapshot() -> dict[str, Any]:
        return await asyncio.to_thread(read_snapshot)

    state.gauges = gauges
    state.snapshot = snapshot

    def stop() -> None:
        for task in sweeper:
            task.cancel()
        relay.stop(timeout=2.0)
        runner.stop()
        projection_thread.join(timeout=3.0)
        with contextlib.suppress(Exception):
            limiter.close()
        engine.close()

    routes = [
        *base_routes(state),
        Route("/orders", place, methods=["POST"]),
        Route("/orders/{order_id}", get_order),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(ChaosMiddleware, state=state)])

    async def start() -> None:
        sweeper.append(asyncio.create_task(sweep()))

    state.start = start
    return app, stop


def _open_queue(state: ServiceState, topic: str) -> Any:
    from seawall.shop._participants import open_run_queue

    return open_run_queue(state, topic)


def _run_projection(runner: ProjectionRunner) -> None:
    import time

    while True:
        try:
            runner.run()
            return
        except Exception:  # a database hiccup: try again shortly
            time.sleep(0.2)
