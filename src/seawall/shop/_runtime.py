"""What every shop service process shares: fault injection, counters, the base endpoints, serving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from seawall.events import Event, hub
from seawall.shop._config import ChaosSettings, ShopConfig

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from seawall.messaging.outbox import OutboxMessage
    from seawall.messaging.queue import Queue

__all__ = [
    "ChaosMiddleware",
    "ChaosPublisher",
    "Counters",
    "ServiceState",
    "base_routes",
    "serve",
]

_logger = logging.getLogger("seawall.shop")


class Counters:
    """What happened in this process, counted from seawall's events (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {}
        self.breakers: dict[str, str] = {}

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``."""
        with self._lock:
            self.values[name] = self.values.get(name, 0) + amount

    def listen(self) -> Callable[[], None]:
        """Count seawall's events on the global hub; returns the unsubscribe function."""
        from seawall.idempotency import IdempotentReplayed
        from seawall.messaging.inbox._events import InboxDuplicateIgnored
        from seawall.messaging.queue import MessageDeduplicated, MessageRedelivered
        from seawall.resilience import (
            CircuitState,
            CircuitStateChanged,
            RateLimitRejected,
            RetryScheduled,
        )

        names: dict[type[Event], str] = {
            RetryScheduled: "retries",
            MessageRedelivered: "redelivered",
            MessageDeduplicated: "deduplicated",
            InboxDuplicateIgnored: "deduplicated",
            IdempotentReplayed: "replayed",
            RateLimitRejected: "rate_limited",
        }

        def on_event(event: Event) -> None:
            if isinstance(event, CircuitStateChanged):
                with self._lock:
                    self.breakers[event.source] = event.current.value
                if event.current is CircuitState.OPEN:
                    self.add("breaker_trips")
                return
            name = names.get(type(event))
            if name is not None:
                self.add(name)

        return hub.subscribe(on_event)

    def to_json(self) -> dict[str, Any]:
        """The counters and breaker states as JSON."""
        with self._lock:
            return {"counters": dict(self.values), "breakers": dict(self.breakers)}


class ServiceState:
    """The mutable state of one service process: its faults and counters."""

    def __init__(self, service: str, config: ShopConfig) -> None:
        self.service = service
        self.config = config
        self.chaos = ChaosSettings()
        self.counters = Counters()
        self.random = random.Random()
        self.gauges: Callable[[], Mapping[str, Any]] = dict
        self.snapshot: Callable[[], Awaitable[dict[str, Any]]] | None = None
        self.start: Callable[[], Awaitable[None]] | None = None


class ChaosMiddleware:
    """Adds latency and 503 answers to business requests, as the launcher's chaos settings say.

    Half the injected errors come before the handler runs, half after it (the effect
    happened, the reply is lost): the caller's retry must then be deduplicated.
    """

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chaos = self.state.chaos
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith("/op/") or path == "/orders") or chaos == _NO_CHAOS:
            await self.app(scope, receive, send)
            return
        chance = self.state.random
        if chaos.latency_rate and chance.random() < chaos.latency_rate:
            await asyncio.sleep(chance.uniform(0.0, chaos.latency))
        if chaos.error_rate and chance.random() < chaos.error_rate:
            self.state.counters.add("injected_errors")
            if chance.random() < 0.5:

                async def swallow(message: Message) -> None:
                    return None

                await self.app(scope, receive, swallow)
            response = JSONResponse({"ok": False, "reason": "injected fault"}, status_code=503)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


_NO_CHAOS = ChaosSettings()


class ChaosPublisher:
    """Publishes outbox messages onto the run's queues, sometimes twice or late (chaos).

    The copy carries the same outbox id in its headers but another queue dedup id,
    so it reaches the consumer, whose inbox drops it.
    """

    def __init__(self, state: ServiceState, open_queue: Callable[[str], Queue]) -> None:
        self.state = state
        self._open = open_queue
        self._queues: dict[str, Queue] = {}

    def __call__(self, message: OutboxMessage) -> None:
        from seawall.messaging.outbox import QueuePublisher

        queue = self._queues.get(message.topic)
        if queue is None:
            queue = self._queues[message.topic] = self._open(message.topic)
        headers = QueuePublisher.headers(message)
        chaos = self.state.chaos
        chance = self.state.random
        delay = 0.0
        if chaos.delay_rate and chance.random() < chaos.delay_rate:
            delay = chance.uniform(0.0, chaos.delay)
            self.state.counters.add("delayed")
        queue.send(message.body, headers=headers, dedup_id=message.id, delay=delay)
        if chaos.duplicate_rate and chance.random() < chaos.duplicate_rate:
            self.state.counters.add("duplicated")
            queue.send(message.body, headers=headers, dedup_id=f"{message.id}:copy")


def base_routes(state: ServiceState) -> list[Route]:
    """``GET /health``, ``GET /stats``, ``POST /chaos`` and ``GET /snapshot``."""

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "service": state.service, "pid": os.getpid()})

    async def stats(request: Request) -> Response:
        gauges = await asyncio.to_thread(state.gauges)
        return JSONResponse(
            {"service": state.service, "pid": os.getpid(), **state.counters.to_json(), **gauges}
        )

    async def chaos(request: Request) -> Response:
        state.chaos = ChaosSettings.from_json(await request.json())
        return JSONResponse({"ok": True, "chaos": state.chaos.to_json()})

    async def snapshot(request: Request) -> Response:
        if state.snapshot is None:
            return JSONResponse({})
        return JSONResponse(await state.snapshot())

    return [
        Route("/health", health),
        Route("/stats", stats),
        Route("/chaos", chaos, methods=["POST"]),
        Route("/snapshot", snapshot),
    ]


async def _watch_launcher(launcher_pid: int, server: Any) -> None:
    """Stop serving when the launcher is gone (a service never outlives its launcher)."""
    while True:
        await asyncio.sleep(0.5)
        if launcher_pid and os.getppid() != launcher_pid:
            _logger.warning("launcher %s is gone; stopping", launcher_pid)
            server.should_exit = True
            return


async def serve(app: ASGIApp, state: ServiceState, stop: Callable[[], None]) -> None:
    """Serve ``app`` on the service's port until SIGTERM/SIGINT or the launcher's death."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=state.config.ports[state.service],
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    if state.start is not None:
        await state.start()
    watcher = asyncio.create_task(_watch_launcher(state.config.launcher_pid, server))
    try:
        await server.serve()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await asyncio.to_thread(stop)
