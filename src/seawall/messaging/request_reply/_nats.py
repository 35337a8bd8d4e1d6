"""Request-reply over core NATS: requests to a subject, replies to a private inbox.

Each event loop's connection gets one wildcard subscription ``<inbox>.*``; a request
is published with reply subject ``<inbox>.<correlation id>``, so any number of
concurrent requests share it. A reply whose request timed out finds no waiter and is
counted late. NATS answers a request nobody subscribes to with a "no responders"
status at once, reported as :class:`NoRespondersError`.

Blocking callers run on the engine's private event loop (``engine.run``); asyncio
callers use their own loop's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from seawall.codec import Codec, resolve_codec
from seawall.messaging.request_reply._model import (
    NO_RESPONDERS,
    REPLY_STATUS_HEADER,
)
from seawall.messaging.request_reply._transport import OnReply

__all__ = ["NatsRequestTransport", "NatsResponder", "NatsResponderStats"]

_logger = logging.getLogger("seawall.messaging.request_reply")
_STATUS = "Status"
_NO_RESPONDERS_STATUS = "503"
_SEND_TIMEOUT = 30.0
_MAX_ERROR = 4000


class NatsRequestTransport:
    """Publishes requests to ``subject``; one inbox subscription per event loop."""

    def __init__(self, engine: Any, subject: str, on_reply: OnReply, *, codec: Codec) -> None:
        self._engine = engine
        self.destination = subject
        self._on_reply = on_reply
        self._codec = codec
        self._inboxes: dict[asyncio.AbstractEventLoop, tuple[str, Any]] = {}
        self._routes: dict[asyncio.AbstractEventLoop, tuple[Any, str]] = {}
        self._lock = threading.Lock()
        self._private_loop: asyncio.AbstractEventLoop | None = None

    @property
    def reply_to(self) -> str:
        """The inbox prefix of the first listening loop (``<inbox>.<correlation id>``)."""
        for inbox, _ in self._inboxes.values():
            return inbox
        return ""

    def _deliver(self, msg: Any) -> None:
        correlation_id = msg.subject.rpartition(".")[2]
        headers = msg.headers
        if headers and headers.get(_STATUS) == _NO_RESPONDERS_STATUS and not msg.data:
            self._on_reply(correlation_id, NO_RESPONDERS, None)
            return
        status = (headers or {}).get(REPLY_STATUS_HEADER, "ok")
        try:
            body = self._codec.decode(msg.data)
        except Exception as exc:  # a reply we cannot decode answers the request with an error
            status, body = "error", f"reply cannot be decoded: {type(exc).__name__}: {exc}"
        self._on_reply(correlation_id, status, body)

    async def _route(self) -> tuple[Any, str]:
        """This loop's connection and inbox prefix (the hot path of every request)."""
        route = self._routes.get(asyncio.get_running_loop())
        if route is not None and not route[0].is_closed:
            return route
        connection = await self._engine.connection()
        route = (connection, await self._inbox())
        self._routes[asyncio.get_running_loop()] = route
        return route

    async def _inbox(self) -> str:
        """This loop's inbox prefix, subscribed on first use."""
        loop = asyncio.get_running_loop()
        entry = self._inboxes.get(loop)
        if entry is not None:
            prefix: str = entry[0]
            return prefix
        connection = await self._engine.connection()
        inbox: str = connection.new_inbox()

        async def on_message(msg: Any) -> None:
            self._deliver(msg)

        subscription = await connection.subscribe(f"{inbox}.*", cb=on_message)
        entry = self._inboxes.get(loop)
        if entry is not None:  # another task of this loop got there first
            await subscription.unsubscribe()
            return entry[0]
        self._inboxes[loop] = (inbox, subscription)
        return inbox

    async def _publish(
        self, body: Any, correlation_id: str, headers: Mapping[str, str] | None
    ) -> None:
        data = self._codec.encode(body)
        connection, inbox = await self._route()
        await connection.publish(
            self.destination,
            data,
            reply=f"{inbox}.{correlation_id}",
            headers=dict(headers) if headers else None,
        )

    def send(
        self, body: Any, correlation_id: str, headers: Mapping[str, str] | None, priority: int
    ) -> None:
        """Publish on the engine's private loop (``priority`` does not apply to NATS)."""
        self._engine.run(self._publish(body, correlation_id, headers), timeout=_SEND_TIMEOUT)

    async def asend(
        self, body: Any, correlation_id: str, headers: Mapping[str, str] | None, priority: int
    ) -> None:
        """Publish on the running loop's connection."""
        await self._publish(body, correlation_id, headers)

    def listen(self) -> None:
        """Subscribe the private loop's inbox once."""
        if self._private_loop is None:
            self._engine.run(self._remember_private_loop(), timeout=_SEND_TIMEOUT)

    async def _remember_private_loop(self) -> None:
        await self._inbox()
        self._private_loop = asyncio.get_running_loop()

    async def alisten(self) -> None:
        """Subscribe the running loop's inbox once."""
        await self._route()

    async def _unsubscribe(self, loop: asyncio.AbstractEventLoop) -> None:
        self._routes.pop(loop, None)
        entry = self._inboxes.pop(loop, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                await entry[1].unsubscribe()

    def close(self) -> None:
        """Drop the private loop's inbox subscription."""
        loop = self._private_loop
        if loop is not None:
            with contextlib.suppress(Exception):
                self._engine.run(self._unsubscribe(loop), timeout=5.0)

    async def aclose(self) -> None:
        """Drop the running loop's inbox subscription (and the private loop's)."""
        await self._unsubscribe(asyncio.get_running_loop())
        if self._private_loop is not None:
            await asyncio.to_thread(self.close)


@dataclass(frozen=True, slots=True)
class NatsResponderStats:
    """What a NATS responder did: requests ``handled`` (replied), ``failed`` (error replies)."""

    handled: int
    failed: int
    in_flight: int


class NatsResponder:
    """Answers requests on ``subject`` in queue group ``group``, ``concurrency`` at a time."""

    def __init__(
        self,
        engine: Any,
        subject: str,
        handler: Callable[[Any], Any],
        errors: tuple[type[BaseException], ...],
        *,
        codec: Codec | str | None,
        group: str,
        concurrency: int = 64,
    ) -> None:
        self._engine = engine
        self.subject = subject
        self.group = group
        self._handler = handler
        self._is_async = asyncio.iscoroutinefunction(handler) or asyncio.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004
        )
        self._errors = errors
        self._codec = resolve_codec(codec)
        self._concurrency = concurrency
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._handled = 0
        self._failed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def stats(self) -> NatsResponderStats:
        """Counters so far."""
        return NatsResponderStats(self._handled, self._failed, len(self._tasks))

    async def _answer(self, msg: Any, slots: asyncio.Semaphore) -> None:
        async with slots:
            connection = await self._engine.connection()
            status = "ok"
            try:
                body = self._codec.decode(msg.data)
                if self._is_async:
                    result = await self._handler(body)
                else:
                    result = await asyncio.get_running_loop().run_in_executor(
                        None, self._handler, body
                    )
                data = self._codec.encode(result)
            except Exception as exc:
                # Core NATS does not redeliver: every failure is answered with an error reply.
                if not isinstance(exc, self._errors):
                    _logger.warning("NATS responder on %r failed", self.subject, exc_info=True)
                status = "error"
                data = self._codec.encode(f"{type(exc).__name__}: {exc}"[:_MAX_ERROR])
            if not msg.reply:
                return
            try:
                await connection.publish(
                    msg.reply,
                    data,
                    headers={REPLY_STATUS_HEADER: status} if status != "ok" else None,
                )
            except Exception:
                _logger.warning("NATS reply to %r failed", msg.reply, exc_info=True)
                return
            if status == "ok":
                self._handled += 1
            else:
                self._failed += 1

    async def _serve(self) -> NatsResponderStats:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        slots = asyncio.Semaphore(self._concurrency)
        connection = await self._engine.connection()

        async def on_request(msg: Any) -> None:
            task = asyncio.ensure_future(self._answer(msg, slots))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        subscription = await connection.subscribe(self.subject, queue=self.group, cb=on_request)
        try:
            await connection.flush()
            await self._stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.stats()

    def run(self) -> NatsResponderStats:
        """Serve on the engine's private loop until :meth:`stop`; blocks."""
        stats: NatsResponderStats = self._engine.run(self._serve())
        return stats

    async def arun(self) -> NatsResponderStats:
        """Serve on the running loop until :meth:`stop`."""
        return await self._serve()

    def stop(self) -> None:
        """Stop serving, from any thread; requests being handled finish first."""
        self._stop_requested = True
        loop, event = self._loop, self._stop
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
