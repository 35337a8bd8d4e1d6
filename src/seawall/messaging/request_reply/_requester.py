"""The requester: send a request, wait for its reply (or a timeout), drop late replies.

::

    pricing = Requester(engine, "pricing", timeout=2.0)
    quote = pricing.request({"sku": "A-1", "quantity": 3})       # blocks for the reply
    quote = await pricing.arequest({"sku": "A-1", "quantity": 3})

Over durable queues the request carries ``reply-to`` (the requester's private reply
queue) and ``correlation-id`` headers; over NATS (``nats://`` engines) it travels
as a core NATS request to an inbox. Either way many concurrent requests share one
reply channel and one receive loop, replies are matched by correlation id, and a
reply that comes after its request timed out is dropped and counted.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from seawall.clock import SYSTEM_CLOCK, Clock, MonotonicClock
from seawall.codec import Codec, resolve_codec
from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.messaging.request_reply._correlator import Correlator, Waiter
from seawall.messaging.request_reply._errors import (
    NoRespondersError,
    RemoteError,
    RequestReplyError,
    RequestTimeoutError,
)
from seawall.messaging.request_reply._events import LateReplyDropped, RequestTimedOut
from seawall.messaging.request_reply._model import NO_RESPONDERS, RequesterStats
from seawall.messaging.request_reply._transport import Transport
from seawall.resilience._timeout import wait_signalled

if TYPE_CHECKING:
    from seawall.messaging.claim_check import ClaimCheck

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "Requester"]

DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a request waits for its reply unless told otherwise."""

_CLOSED = "closed"


def _check_timeout(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{field}={value!r} must be a number of seconds > 0")
    if value != value or value == float("inf"):
        raise ConfigurationError(f"{field}={value!r} must be a finite number of seconds")
    return float(value)


class Requester:
    """Sends requests to ``destination`` (a queue, or a NATS subject) and waits for replies.

    ``engine`` is an engine or URL: durable queues on memory, SQLite, PostgreSQL and
    Redis; core NATS request-reply on ``nats://``. ``reply_queue`` names a reply
    queue this requester alone reads (default: a private one, created now and purged
    by :meth:`close`). ``timeout`` is the default wait for a reply; ``clock`` measures
    it (tests pass a ManualClock). ``codec`` and ``claim_check`` apply to requests and
    replies (give the responder the same). Use it from many threads and tasks at once.
    """

    def __init__(
        self,
        engine: Engine | str,
        destination: str,
        *,
        reply_queue: str | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        codec: Codec | str | None = None,
        claim_check: ClaimCheck | None = None,
        poll_wait: float = 1.0,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        self._owns_engine = isinstance(engine, str)
        self.engine = connect(engine)
        self.destination = destination
        self.timeout = _check_timeout("timeout", timeout)
        self.clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        if not callable(getattr(self.clock, "now", None)):
            raise ConfigurationError(f"clock={clock!r} must be a seawall Clock (now/sleep/asleep)")
        self._real_time = isinstance(self.clock, MonotonicClock)
        self.name = f"requester:{destination}" if name is None else str(name)
        self.events = EventHub(parent=hub)
        self._correlator = Correlator()
        self._closed = False
        poll_wait = _check_timeout("poll_wait", poll_wait)
        self._transport: Transport
        if self.engine.kind == "nats":
            if reply_queue is not None or claim_check is not None:
                raise ConfigurationError(
                    "reply_queue and claim_check apply to queue engines; NATS replies come "
                    "back to a private inbox and payloads travel inline"
                )
            from seawall.messaging.request_reply._nats import NatsRequestTransport

            self._transport = NatsRequestTransport(
                self.engine, destination, self._on_reply, codec=resolve_codec(codec)
            )
        else:
            from seawall.messaging.request_reply._queues import QueueTransport

            options: dict[str, Any] = {"codec": codec}
            if claim_check is not None:
                options["claim_check"] = claim_check
            self._transport = QueueTransport(
                self.engine,
                destination,
                reply_queue,
                self._on_reply,
                poll_wait=poll_wait,
                queue_options=options,
            )

    @property
    def reply_to(self) -> str:
        """Where replies come back: the reply queue's name, or the NATS inbox prefix."""
        return self._transport.reply_to

    # -- replies ---------------------------------------------------------------------------

    def _on_reply(self, correlation_id: str | None, status: str, body: Any) -> None:
        if not self._correlator.resolve(correlation_id, status, body) and self.events.active:
            self.events.emit(LateReplyDropped(self.name, self.destination, correlation_id or ""))

    def _outcome(self, waiter: Waiter, correlation_id: str) -> Any:
        status = waiter.status
        if status == "error":
            raise RemoteError(self.destination, str(waiter.body), correlation_id)
        if status == NO_RESPONDERS:
            raise NoRespondersError(self.destination, correlation_id)
        if status == _CLOSED:
            raise RequestReplyError(
                f"requester {self.name!r} was closed while request {correlation_id} waited "
                "for its reply"
            )
        return waiter.body

    def _timed_out(self, correlation_id: str, timeout: float) -> RequestTimeoutError:
        if self.events.active:
            self.events.emit(RequestTimedOut(self.name, self.destination, correlation_id, timeout))
        return RequestTimeoutError(self.destination, timeout, correlation_id)

    def _start(self, timeout: float | None, priority: int) -> float:
        if self._closed:
            raise RequestReplyError(f"requester {self.name!r} is closed; open a new one")
        if priority.__class__ is not int or not 0 <= priority <= 9:
            raise ConfigurationError(f"priority={priority!r} must be a whole number from 0 to 9")
        return self.timeout if timeout is None else _check_timeout("timeout", timeout)

    # -- requests --------------------------------------------------------------------------

    def request(
        self,
        body: Any,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int = 0,
    ) -> Any:
        """Send ``body`` and block until its reply comes; return the reply's body.

        Raises :class:`RequestTimeoutError` after ``timeout`` seconds (default: the
        requester's) and :class:`RemoteError` when the responder answered with an error.
        """
        timeout = self._start(timeout, priority)
        _refuse_blocking_in_loop(self.destination)
        clock = self.clock
        deadline = clock.now() + timeout
        correlation_id = uuid.uuid4().hex
        event = threading.Event()
        waiter = self._correlator.add(correlation_id, Waiter(event=event))
        try:
            self._transport.listen()
            self._transport.send(body, correlation_id, headers, priority)
        except BaseException:
            self._correlator.discard(correlation_id)
            raise
        self._correlator.sent_one()
        if (
            not waiter.answered
            and not wait_signalled(event.wait, deadline, clock)
            and self._correlator.expire(correlation_id)
        ):
            raise self._timed_out(correlation_id, timeout)
        return self._outcome(waiter, correlation_id)

    async def arequest(
        self,
        body: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - measured on the injected clock
        headers: Mapping[str, str] | None = None,
        priority: int = 0,
    ) -> Any:
        """Asyncio twin of :meth:`request`: the wait suspends the task."""
        timeout = self._start(timeout, priority)
        clock = self.clock
        deadline = clock.now() + timeout
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        correlation_id = uuid.uuid4().hex
        waiter = self._correlator.add(correlation_id, Waiter(future=future, loop=loop))
        try:
            await self._transport.alisten()
            await self._transport.asend(body, correlation_id, headers, priority)
            self._correlator.sent_one()
            if not future.done():
                await self._await_reply(future, deadline - clock.now())
        except BaseException:
            self._correlator.discard(correlation_id)  # cancelled: a later reply counts as late
            raise
        if not waiter.answered and self._correlator.expire(correlation_id):
            raise self._timed_out(correlation_id, timeout)
        return self._outcome(waiter, correlation_id)

    async def _await_reply(self, future: asyncio.Future[None], remaining: float) -> None:
        remaining = max(0.0, remaining)
        if self._real_time:
            timer = asyncio.get_running_loop().call_later(remaining, _settle, future)
            try:
                await future
            finally:
                timer.cancel()
            return
        sleeper = asyncio.ensure_future(self.clock.asleep(remaining))
        try:
            await asyncio.wait({future, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()

    # -- inspecting and closing ------------------------------------------------------------

    def stats(self) -> RequesterStats:
        """Counts of requests sent, replied, failed, timed out, late replies, and pending ones."""
        c = self._correlator
        return RequesterStats(c.sent, c.replied, c.failed, c.timed_out, c.late_replies, c.pending)

    def close(self) -> None:
        """Stop receiving replies, fail waiting requests, purge a private reply queue."""
        if self._closed:
            return
        self._closed = True
        self._correlator.fail_all(_CLOSED, None)
        self._transport.close()
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Asyncio twin of :meth:`close`."""
        if self._closed:
            return
        self._closed = True
        self._correlator.fail_all(_CLOSED, None)
        await self._transport.aclose()
        if self._owns_engine:
            await self.engine.aclose()

    def __enter__(self) -> Requester:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Requester:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"Requester({self.destination!r}, engine={self.engine!r}, reply_to={self.reply_to!r})"
        )


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _refuse_blocking_in_loop(destination: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    from seawall.messaging.channel import BlockingInEventLoopError

    raise BlockingInEventLoopError(destination, "request", "arequest")
