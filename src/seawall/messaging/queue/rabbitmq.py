"""The RabbitMQ queue store: a quorum queue per queue, a dead-letter queue, TTL delay queues.

Queue ``name`` is, on the broker:

* ``seawall.q.<name>``: a durable **quorum** queue (``x-queue-type=quorum``) with
  ``x-delivery-limit=max_deliveries`` and **at-least-once dead-lettering**
  (``x-dead-letter-strategy=at-least-once``, ``x-overflow=reject-publish``) through the
  default exchange into
* ``seawall.dlq.<name>``: a durable classic queue holding the dead letters in the order
  they died (classic, so browsing it keeps their order);
* ``seawall.delay.<name>.<ms>``: twelve durable classic queues with a message TTL of
  10 ms x 4^k (10 ms ... 11.6 h) that dead-letter back into the main queue. A delayed
  message goes to the longest of them not longer than its remaining delay, and is
  delayed again on arrival until it is due: no plugin needed;
* one message in ``seawall.queues`` naming it (the registry ``list_queues`` reads).

Every message is persistent and every publish waits for its **publisher confirm**.
``receive`` takes messages with ``basic.get`` (nothing is pushed to the consumer ahead
of time). Delivery tags belong to the channel that received them: a receipt is valid
in the process that received it, until the message is settled or its channel closes
(a dropped connection makes it stale). The visibility timeout is a timer in that
process: when it fires the delivery is rejected with requeue, which raises the quorum
queue's ``x-delivery-count``; a process that dies releases its deliveries when its
connection closes. The delivery count is ``x-delivery-count`` + 1, plus the deliveries
of earlier copies (a nack with an error or a delay republishes the message carrying its
last error and count in headers, then acknowledges the old copy).

Not available on RabbitMQ 3.x (refused or documented in docs/messaging/brokers.md):
priorities in quorum queues (carried, not honoured), deduplication (``dedup_id`` is
refused), ``peek`` of ready messages (browsing a quorum queue counts as a delivery),
transactions; ``stats().in_flight`` counts this process's deliveries only.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from seawall.clock import Clock
from seawall.engines._base import redact
from seawall.engines.amqp import AmqpEngine
from seawall.errors import (
    ConfigurationError,
    EngineError,
    EngineUnavailableError,
    UnsupportedEngineError,
)
from seawall.events import EventHub, hub
from seawall.messaging.queue._broker import (
    HEADER_DEAD_AT,
    HEADER_DELIVERIES,
    HEADER_ENQUEUED_AT,
    HEADER_HEADERS,
    HEADER_LAST_ERROR,
    HEADER_NOT_BEFORE,
    HEADER_PRIORITY,
    HEADER_REASON,
    AsyncStore,
    SyncStore,
    decode_error,
    decode_headers,
    doorbell_for,
    encode_error,
    encode_headers,
    expired_reason,
    nacked_reason,
    now,
)
from seawall.messaging.queue._errors import UnknownQueueError
from seawall.messaging.queue._events import MessageDeadLettered
from seawall.messaging.queue._model import (
    DeadLetter,
    OutgoingMessage,
    QueuedMessage,
    QueueStats,
    ReceiptLike,
    StoredMessage,
)
from seawall.messaging.queue._polling import apoll
from seawall.messaging.queue._store import NackOutcome

if TYPE_CHECKING:
    import aio_pika.abc
    import aiormq.abc

__all__ = [
    "DELAY_STEPS_MS",
    "REGISTRY_QUEUE",
    "AsyncRabbitQueueStore",
    "RabbitQueueStore",
    "forget_queue",
    "queue_names_of",
    "rabbitmq_queue_names",
]

T = TypeVar("T")

REGISTRY_QUEUE = "seawall.queues"
"""A classic queue holding one message per declared seawall queue (its name)."""
DELAY_STEPS_MS = tuple(10 * 4**step for step in range(12))
"""TTLs of the delay queues: 10 ms, 40 ms, ... 41,943 s (about 11.6 hours)."""
_TIMEOUT = 10.0


def queue_names_of(name: str) -> tuple[str, str, list[str]]:
    """The broker queues of seawall queue ``name``: main, dead letters, delay steps."""
    return (
        f"seawall.q.{name}",
        f"seawall.dlq.{name}",
        [f"seawall.delay.{name}.{step}" for step in DELAY_STEPS_MS],
    )


@contextlib.asynccontextmanager
async def _amqp_errors(url: str) -> AsyncIterator[None]:
    """Translate aio-pika/aiormq errors into seawall's, naming the server and the fix."""
    import aiormq.exceptions

    try:
        yield
    except (EngineError, UnknownQueueError, ConfigurationError):
        raise
    except (aiormq.exceptions.AMQPConnectionError, ConnectionError, TimeoutError) as exc:
        raise EngineUnavailableError(
            f"RabbitMQ at {redact(url)} is unreachable ({exc!r}); check that it runs", url=url
        ) from exc
    except (RuntimeError, aiormq.exceptions.ChannelInvalidStateError) as exc:
        # aio-pika's robust connection is closed while it reconnects.
        raise EngineUnavailableError(
            f"RabbitMQ at {redact(url)}: the connection is being re-established ({exc}); "
            "try again shortly",
            url=url,
        ) from exc
    except aiormq.exceptions.AMQPError as exc:
        raise EngineError(f"RabbitMQ at {redact(url)} failed: {exc!r}", url=url) from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Delivery:
    """One message received in this process and not settled yet."""

    __slots__ = (
        "base",
        "body",
        "channel",
        "core",
        "deliveries",
        "enqueued_at",
        "headers",
        "id",
        "loop",
        "priority",
        "raw",
        "tag",
        "timer",
        "token",
    )

    def __init__(self, core: _RabbitCore, message: Any, token: str) -> None:
        properties = message.header.properties
        raw = {
            key: _text(value)
            for key, value in (properties.headers or {}).items()
            if not isinstance(value, (list, dict))
        }
        self.core = core
        self.loop = asyncio.get_running_loop()
        self.channel = message.channel
        self.tag: int = message.delivery_tag
        self.token = token
        self.raw = raw
        self.body: bytes = message.body
        self.id = _text(properties.message_id or "")
        self.priority = int(raw.get(HEADER_PRIORITY, "0"))
        self.enqueued_at = float(raw.get(HEADER_ENQUEUED_AT, "0"))
        self.headers = decode_headers(raw.get(HEADER_HEADERS))
        self.base = int(raw.get(HEADER_DELIVERIES, "0"))
        self.deliveries = self.base + int(raw.get("x-delivery-count", "0")) + 1
        self.timer: asyncio.TimerHandle | None = None

    @property
    def live(self) -> bool:
        return not self.channel.is_closed


_deliveries: dict[str, _Delivery] = {}
_deliveries_lock = threading.Lock()


def _take(token: str, message_id: str) -> _Delivery | None:
    """Remove and return the live delivery ``token`` names (None: stale)."""
    with _deliveries_lock:
        delivery = _deliveries.get(token)
        if delivery is None or delivery.id != message_id:
            return None
        del _deliveries[token]
    if delivery.timer is not None:
        delivery.timer.cancel()
    return delivery if delivery.live else None


def _peek(token: str, message_id: str) -> _Delivery | None:
    with _deliveries_lock:
        delivery = _deliveries.get(token)
    if delivery is None or delivery.id != message_id or not delivery.live:
        return None
    return delivery


async def _on_owner(delivery: _Delivery, action: Callable[[], Awaitable[T]]) -> T:
    """Run ``action`` on the loop that received the delivery (its channel lives there)."""
    if delivery.loop is asyncio.get_running_loop():
        return await action()
    if not delivery.loop.is_running():
        raise UnsupportedEngineError(
            "this RabbitMQ delivery was received on an event loop that is not running any "
            "more; settle it on the loop (or thread) that received it"
        )

    async def call() -> T:
        return await action()

    future = asyncio.run_coroutine_threadsafe(call(), delivery.loop)
    return await asyncio.wrap_future(future)


class _RabbitCore:
    """One queue's operations on one event loop (see the module docstring)."""

    def __init__(
        self,
        engine: AmqpEngine,
        name: str,
        *,
        max_deliveries: int,
        clock: Clock | None,
        events: EventHub,
        create: bool,
    ) -> None:
        self.engine = engine
        self.name = name
        self.max_deliveries = max_deliveries
        self.clock = clock
        self.events = events
        self.create = create
        self.queue, self.dead_queue, self.delay_queues = queue_names_of(name)
        self.bell = doorbell_for(engine.url, name)
        self._channel: aio_pika.abc.AbstractChannel | None = None

    # -- plumbing --------------------------------------------------------------------------

    async def _raw(self) -> aiormq.abc.AbstractChannel:
        """This core's channel (publisher confirms on), reopened after a reconnect."""
        if self._channel is None or self._channel.is_closed:
            connection = await self.engine.connection()
            self._channel = await connection.channel(publisher_confirms=True)
        return await self._channel.get_underlay_channel()

    @contextlib.asynccontextmanager
    async def _scratch(self) -> AsyncIterator[aiormq.abc.AbstractChannel]:
        """A short-lived channel for calls that may close it (passive declares, browsing)."""
        connection = await self.engine.connection()
        channel = await connection.channel(publisher_confirms=True)
        try:
            yield await channel.get_underlay_channel()
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _publish(
        self,
        channel: aiormq.abc.AbstractChannel,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: dict[str, str],
    ) -> None:
        """Publish a persistent message and wait for the broker's confirm."""
        from aiormq.exceptions import DeliveryError, PublishError
        from pamqp.commands import Basic

        try:
            confirmation: Any = await channel.basic_publish(
                body,
                routing_key=routing_key,
                properties=Basic.Properties(
                    message_id=message_id, headers=dict(headers), delivery_mode=2
                ),
                mandatory=True,
                timeout=_TIMEOUT,
            )
        except (DeliveryError, PublishError) as exc:
            confirmation = exc
        if not isinstance(confirmation, Basic.Ack):
            raise EngineError(
                f"RabbitMQ at {redact(self.engine.url)} did not confirm a message for queue "
                f"{self.name!r} ({confirmation!r}); nothing was lost on the broker, send again",
                url=self.engine.url,
            )

    def _headers(
        self,
        priority: int,
        enqueued_at: float,
        headers: str | None,
        deliveries: int = 0,
        last_error: str | None = None,
    ) -> dict[str, str]:
        out = {HEADER_PRIORITY: str(priority), HEADER_ENQUEUED_AT: repr(enqueued_at)}
        if headers:
            out[HEADER_HEADERS] = headers
        if deliveries:
            out[HEADER_DELIVERIES] = str(deliveries)
        if last_error is not None:
            out[HEADER_LAST_ERROR] = last_error
        return out

    def _route(self, headers: dict[str, str]) -> str:
        """The main queue, or the delay queue for what remains of a delay."""
        not_before = headers.get(HEADER_NOT_BEFORE)
        if not_before is None:
            return self.queue
        remaining_ms = (float(not_before) - now(self.clock)) * 1000
        fitting = [index for index, step in enumerate(DELAY_STEPS_MS) if step <= remaining_ms]
        if not fitting:
            headers.pop(HEADER_NOT_BEFORE, None)
            return self.queue
        return self.delay_queues[fitting[-1]]

    async def declare(self) -> None:
        """Declare the queues (or check the main one exists when ``create`` is False)."""
        import aiormq.exceptions

        async with _amqp_errors(self.engine.url):
            if not self.create:
                try:
                    async with self._scratch() as channel:
                        await channel.queue_declare(self.queue, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    raise UnknownQueueError(self.name, await _names(self.engine)) from None
                return
            arguments: dict[str, Any] = {
                "x-queue-type": "quorum",
                "x-delivery-limit": self.max_deliveries,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.dead_queue,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
            async with self._scratch() as channel:
                await channel.queue_declare(self.dead_queue, durable=True)
                await channel.queue_declare(REGISTRY_QUEUE, durable=True)
                for step, delay_queue in zip(DELAY_STEPS_MS, self.delay_queues, strict=True):
                    await channel.queue_declare(
                        delay_queue,
                        durable=True,
                        arguments={
                            "x-message-ttl": step,
                            "x-dead-letter-exchange": "",
                            "x-dead-letter-routing-key": self.queue,
                        },
                    )
                try:
                    ok = await channel.queue_declare(self.queue, passive=True)
                    exists = ok is not None
                except aiormq.exceptions.ChannelNotFoundEntity:
                    exists = False
            if exists:
                return
            async with self._scratch() as channel:
                # Declared once: a later open with another max_deliveries keeps the first
                # x-delivery-limit (queue arguments are fixed); seawall counts on its own.
                await channel.queue_declare(self.queue, durable=True, arguments=arguments)
                await self._publish(channel, REGISTRY_QUEUE, self.name.encode(), self.name, {})

    # -- sending ---------------------------------------------------------------------------

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Publish every message (persistent) and wait for all the confirms."""
        if any(message.dedup_id is not None for message in messages):
            raise UnsupportedEngineError(
                f"dedup_id is not supported on RabbitMQ (queue {self.name!r}): the broker keeps "
                "no deduplication record; make consumers idempotent, or use a NATS, "
                "PostgreSQL, SQLite or Redis queue for deduplication"
            )
        async with _amqp_errors(self.engine.url):
            channel = await self._raw()
            stamp = now(self.clock)
            ids: list[str] = []
            publishes = []
            for message in messages:
                message_id = uuid.uuid4().hex
                ids.append(message_id)
                headers = self._headers(message.priority, stamp, encode_headers(message.headers))
                if message.delay > 0:
                    headers[HEADER_NOT_BEFORE] = repr(stamp + message.delay)
                publishes.append(
                    self._publish(channel, self._route(headers), message.body, message_id, headers)
                )
            if len(publishes) == 1:
                await publishes[0]
            else:
                await asyncio.gather(*publishes)
        self.bell.ring()
        return ids

    # -- receiving -------------------------------------------------------------------------

    async def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """Claim up to ``max_messages`` with ``basic.get``; long-polls on the doorbell."""

        async def look() -> list[StoredMessage]:
            return await self._claim(max_messages, visibility_timeout)

        if wait <= 0:
            return await look()
        return await apoll(look, wait, self.bell, self.clock)

    async def _claim(self, max_messages: int, visibility_timeout: float) -> list[StoredMessage]:
        async with _amqp_errors(self.engine.url):
            channel = await self._raw()
            claimed: list[StoredMessage] = []
            while len(claimed) < max_messages:
                message = await channel.basic_get(self.queue, no_ack=False, timeout=_TIMEOUT)
                if message.delivery_tag is None:  # Basic.GetEmpty
                    break
                token = secrets.token_hex(12)
                delivery = _Delivery(self, message, token)
                not_before = delivery.raw.get(HEADER_NOT_BEFORE)
                if not_before is not None and float(not_before) > now(self.clock) + 0.001:
                    await self._republish(channel, delivery, dict(delivery.raw))
                    continue
                if delivery.deliveries > self.max_deliveries:
                    spent = delivery.deliveries - 1
                    await self._kill(
                        channel,
                        delivery,
                        expired_reason(spent, self.max_deliveries),
                        decode_error(delivery.raw.get(HEADER_LAST_ERROR)),
                        spent,
                    )
                    continue
                delivery.timer = delivery.loop.call_later(visibility_timeout, self._expire, token)
                with _deliveries_lock:
                    _deliveries[token] = delivery
                claimed.append(
                    StoredMessage(
                        delivery.id,
                        delivery.body,
                        delivery.headers,
                        delivery.priority,
                        delivery.deliveries,
                        delivery.enqueued_at,
                        token,
                    )
                )
            return claimed

    def _expire(self, token: str) -> None:
        """The visibility timeout passed: give the delivery back (count raised by the queue)."""
        with _deliveries_lock:
            delivery = _deliveries.pop(token, None)
        if delivery is None or not delivery.live:
            return
        task = asyncio.ensure_future(self._reject(delivery))
        task.add_done_callback(lambda done: done.exception())

    async def _reject(self, delivery: _Delivery) -> None:
        await delivery.channel.basic_reject(delivery.tag, requeue=True)
        self.bell.ring()

    async def _republish(
        self, channel: aiormq.abc.AbstractChannel, delivery: _Delivery, headers: dict[str, str]
    ) -> None:
        """Publish a new copy (confirmed), then acknowledge the delivered one."""
        headers = {key: value for key, value in headers.items() if not key.startswith("x-")}
        await self._publish(channel, self._route(headers), delivery.body, delivery.id, headers)
        await delivery.channel.basic_ack(delivery.tag)

    # -- settling --------------------------------------------------------------------------

    async def ack_many(self, receipts: Sequence[ReceiptLike]) -> list[ReceiptLike]:
        """Acknowledge every delivery this process holds; return the stale receipts."""
        stale: list[ReceiptLike] = []
        held: list[_Delivery] = []
        for receipt in receipts:
            delivery = _take(receipt.token, receipt.id)
            if delivery is None:
                stale.append(receipt)
            else:
                held.append(delivery)
        async with _amqp_errors(self.engine.url):
            for delivery in held:
                await _on_owner(delivery, _acker(delivery))
        return stale

    async def nack(
        self, message_id: str, token: str, delay: float, error: str | None
    ) -> NackOutcome:
        """Reject with requeue, or republish with the error / after a delay, or dead-letter."""
        delivery = _take(token, message_id)
        if delivery is None:
            return "stale"
        last_error = (
            encode_error(error) if error is not None else delivery.raw.get(HEADER_LAST_ERROR)
        )

        async def settle() -> NackOutcome:
            channel = await delivery.core._raw()
            if delivery.deliveries >= self.max_deliveries:
                await self._kill(
                    channel,
                    delivery,
                    nacked_reason(delivery.deliveries, self.max_deliveries),
                    decode_error(last_error),
                    delivery.deliveries,
                )
                return "dead_lettered"
            if error is None and delay <= 0:
                await delivery.channel.basic_reject(delivery.tag, requeue=True)
                return "requeued"
            headers = self._headers(
                delivery.priority,
                delivery.enqueued_at,
                delivery.raw.get(HEADER_HEADERS),
                delivery.deliveries,
                last_error,
            )
            if delay > 0:
                headers[HEADER_NOT_BEFORE] = repr(now(self.clock) + delay)
            await self._republish(channel, delivery, headers)
            return "requeued"

        async with _amqp_errors(self.engine.url):
            outcome = await _on_owner(delivery, settle)
        if outcome == "requeued":
            self.bell.ring()
        return outcome

    async def extend_visibility(
        self, message_id: str, token: str, visibility_timeout: float
    ) -> bool:
        """Restart the delivery's visibility timer at ``visibility_timeout`` from now."""
        delivery = _peek(token, message_id)
        if delivery is None:
            return False

        async def restart() -> None:
            if delivery.timer is not None:
                delivery.timer.cancel()
            delivery.timer = delivery.loop.call_later(
                visibility_timeout, delivery.core._expire, token
            )

        await _on_owner(delivery, restart)
        return True

    async def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """Move a held message to the dead-letter queue with ``reason``."""
        delivery = _take(token, message_id)
        if delivery is None:
            return False

        async def kill() -> None:
            await self._kill(
                await delivery.core._raw(),
                delivery,
                reason,
                decode_error(delivery.raw.get(HEADER_LAST_ERROR)),
                delivery.deliveries,
            )

        async with _amqp_errors(self.engine.url):
            await _on_owner(delivery, kill)
        return True

    async def _kill(
        self,
        channel: aiormq.abc.AbstractChannel,
        delivery: _Delivery,
        reason: str,
        last_error: str | None,
        deliveries: int,
    ) -> None:
        """Publish the dead letter (confirmed), then acknowledge the live copy."""
        headers = self._headers(
            delivery.priority,
            delivery.enqueued_at,
            delivery.raw.get(HEADER_HEADERS),
            deliveries,
            encode_error(last_error) if last_error is not None else None,
        )
        headers[HEADER_REASON] = encode_error(reason)
        headers[HEADER_DEAD_AT] = repr(now(self.clock))
        await self._publish(channel, self.dead_queue, delivery.body, delivery.id, headers)
        await delivery.channel.basic_ack(delivery.tag)
        if self.events.active:
            self.events.emit(MessageDeadLettered(self.name, delivery.id, reason, deliveries))

    # -- inspecting ------------------------------------------------------------------------

    async def peek(self, limit: int) -> list[QueuedMessage]:
        """Refused: browsing a quorum queue is a delivery (it would raise delivery counts)."""
        raise UnsupportedEngineError(
            f"peek is not supported on RabbitMQ (queue {self.name!r}): reading a quorum queue "
            "without consuming counts as a delivery; use stats(), or the management UI"
        )

    async def _count(self, channel: aiormq.abc.AbstractChannel, queue: str) -> int:
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)

    async def stats(self) -> QueueStats:
        """Ready, delayed and dead from the broker; in flight: this process's deliveries."""
        async with _amqp_errors(self.engine.url), self._scratch() as channel:
            ready = await self._count(channel, self.queue)
            delayed = 0
            for delay_queue in self.delay_queues:
                delayed += await self._count(channel, delay_queue)
            dead = await self._count(channel, self.dead_queue)
        with _deliveries_lock:
            in_flight = sum(
                1
                for delivery in _deliveries.values()
                if delivery.core.queue == self.queue and delivery.live
            )
        return QueueStats(ready, in_flight, delayed, dead)

    async def purge(self) -> int:
        """Purge ready and delayed messages, and acknowledge this process's deliveries."""
        with _deliveries_lock:
            mine = [
                token
                for token, delivery in _deliveries.items()
                if delivery.core.queue == self.queue
            ]
        held = [
            delivery
            for token in mine
            if (delivery := _take_any(token)) is not None and delivery.loop.is_running()
        ]
        async with _amqp_errors(self.engine.url):
            for delivery in held:
                await _on_owner(delivery, _acker(delivery))
            count = len(held)
            async with self._scratch() as channel:
                for queue in (self.queue, *self.delay_queues):
                    ok = await channel.queue_purge(queue)
                    count += int(ok.message_count or 0)
        return count

    async def _with_dead_letters(
        self,
        visit: Callable[[aiormq.abc.AbstractChannel, Any], Awaitable[bool]],
        limit: int | None = None,
    ) -> None:
        """Call ``visit`` on each dead letter in order (until it returns False or ``limit``).

        The letters are taken without acks on a scratch channel; closing it puts back
        every one ``visit`` did not acknowledge, in its place.
        """
        async with self._scratch() as channel:
            seen = 0
            while limit is None or seen < limit:
                message = await channel.basic_get(self.dead_queue, no_ack=False, timeout=_TIMEOUT)
                if message.delivery_tag is None:
                    return
                seen += 1
                if not await visit(channel, message):
                    return

    async def dead_letters(self, limit: int, message_id: str | None = None) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, or the one with ``message_id`` (a scan)."""
        found: list[DeadLetter] = []

        async def visit(channel: aiormq.abc.AbstractChannel, message: Any) -> bool:
            letter = self._dead_letter(message)
            if message_id is None:
                found.append(letter)
                return len(found) < limit
            if letter.id == message_id:
                found.append(letter)
                return False
            return True

        async with _amqp_errors(self.engine.url):
            await self._with_dead_letters(visit, None if message_id is not None else limit)
        return found

    def _dead_letter(self, message: Any) -> DeadLetter:
        properties = message.header.properties
        headers: Mapping[str, Any] = properties.headers or {}
        raw = {
            key: _text(value) for key, value in headers.items() if isinstance(value, (str, bytes))
        }
        reason = decode_error(raw.get(HEADER_REASON))
        dead_at = float(raw.get(HEADER_DEAD_AT, "0"))
        deliveries = int(raw.get(HEADER_DELIVERIES, "0"))
        if reason is None:  # dead-lettered by the broker: x-delivery-limit passed
            deaths = headers.get("x-death") or [{}]
            death = deaths[0] if isinstance(deaths, list) and deaths else {}
            cause = _text(death.get("reason", "delivery_limit"))
            when: Any = death.get("time")
            dead_at = when.timestamp() if hasattr(when, "timestamp") else dead_at
            deliveries = deliveries + int(raw.get("x-delivery-count", "0") or 0) or (
                self.max_deliveries
            )
            reason = (
                expired_reason(deliveries, self.max_deliveries)
                if cause == "delivery_limit"
                else f"dead-lettered by RabbitMQ ({cause})"
            )
        return DeadLetter(
            _text(properties.message_id or ""),
            message.body,
            decode_headers(raw.get(HEADER_HEADERS)) or {},
            int(raw.get(HEADER_PRIORITY, "0")),
            deliveries,
            float(raw.get(HEADER_ENQUEUED_AT, "0")),
            dead_at,
            reason,
            decode_error(raw.get(HEADER_LAST_ERROR)),
        )

    async def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Publish dead letters back to the main queue (count reset), then drop them."""
        wanted = None if message_ids is None else set(message_ids)
        moved = 0

        async def visit(channel: aiormq.abc.AbstractChannel, message: Any) -> bool:
            nonlocal moved
            letter = self._dead_letter(message)
            if wanted is None or letter.id in wanted:
                headers = self._headers(
                    letter.priority, letter.enqueued_at, encode_headers(letter.headers)
                )
                await self._publish(channel, self.queue, message.body, letter.id, headers)
                await channel.basic_ack(message.delivery_tag)
                moved += 1
                if wanted is not None:
                    wanted.discard(letter.id)
            return wanted is None or bool(wanted)

        async with _amqp_errors(self.engine.url):
            await self._with_dead_letters(visit)
        if moved:
            self.bell.ring()
        return moved

    async def purge_dead_letters(self) -> int:
        """Purge the dead-letter queue; return how many it held."""
        async with _amqp_errors(self.engine.url), self._scratch() as channel:
            ok = await channel.queue_purge(self.dead_queue)
            return int(ok.message_count or 0)

    async def close(self) -> None:
        """Close this core's channel (its unsettled deliveries go back to the queue)."""
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


def _acker(delivery: _Delivery) -> Callable[[], Awaitable[object]]:
    """A call that acknowledges ``delivery`` on its own channel."""

    async def ack() -> None:
        await delivery.channel.basic_ack(delivery.tag)

    return ack


def _take_any(token: str) -> _Delivery | None:
    with _deliveries_lock:
        delivery = _deliveries.pop(token, None)
    if delivery is None:
        return None
    if delivery.timer is not None:
        delivery.timer.cancel()
    return delivery if delivery.live else None


async def _names(engine: AmqpEngine) -> list[str]:
    """The registry's names, read by taking every message and putting them all back."""
    import aiormq.exceptions

    connection = await engine.connection()
    channel = await connection.channel()
    names: set[str] = set()
    try:
        raw = await channel.get_underlay_channel()
        while True:
            message = await raw.basic_get(REGISTRY_QUEUE, no_ack=False, timeout=_TIMEOUT)
            if message.delivery_tag is None:
                break
            names.add(message.body.decode())
    except aiormq.exceptions.ChannelNotFoundEntity:
        pass
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return sorted(names)


def rabbitmq_queue_names(engine: AmqpEngine) -> list[str]:
    """The names of the seawall queues declared on this RabbitMQ server."""

    async def names() -> list[str]:
        async with _amqp_errors(engine.url):
            return await _names(engine)

    return engine.run(names())


def forget_queue(engine: AmqpEngine, name: str) -> None:
    """Delete queue ``name`` for good: its broker queues and its registry entry."""

    async def delete() -> None:
        async with _amqp_errors(engine.url):
            connection = await engine.connection()
            main, dead, delays = queue_names_of(name)
            for queue in (main, dead, *delays):
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    raw = await channel.get_underlay_channel()
                    await raw.queue_delete(queue)
                with contextlib.suppress(Exception):
                    await channel.close()
            channel = await connection.channel()
            try:
                raw = await channel.get_underlay_channel()
                while True:
                    message = await raw.basic_get(REGISTRY_QUEUE, no_ack=False, timeout=_TIMEOUT)
                    if message.delivery_tag is None:
                        break
                    if message.body.decode() == name:
                        await raw.basic_ack(message.delivery_tag)
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()

    engine.run(delete())


def _check_engine(engine: Any) -> AmqpEngine:
    if not isinstance(engine, AmqpEngine):
        raise ConfigurationError(f"the RabbitMQ queue store needs an AmqpEngine, got {engine!r}")
    return engine


def _core(
    engine: AmqpEngine,
    name: str,
    max_deliveries: int,
    clock: Clock | None,
    events: EventHub | None,
    create: bool,
) -> _RabbitCore:
    return _RabbitCore(
        _check_engine(engine),
        name,
        max_deliveries=max_deliveries,
        clock=clock,
        events=events if events is not None else EventHub(parent=hub),
        create=create,
    )


class RabbitQueueStore(SyncStore):
    """A :class:`~seawall.messaging.queue.QueueStore` on RabbitMQ (see the module doc).

    ``dedup_window`` is accepted for the common signature and unused: RabbitMQ refuses
    ``dedup_id``.
    """

    broker = "RabbitMQ"

    def __init__(
        self,
        engine: AmqpEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(engine, _core(engine, name, max_deliveries, clock, events, create))


class AsyncRabbitQueueStore(AsyncStore):
    """The native asyncio twin of :class:`RabbitQueueStore` (declared on first use)."""

    broker = "RabbitMQ"

    def __init__(
        self,
        engine: AmqpEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(_core(engine, name, max_deliveries, clock, events, create))
