"""The NATS JetStream queue store: a work-queue stream per queue, pull consumers per priority.

Queue ``name`` lives in two streams (``<enc>`` is the name with ``_`` doubled and ``.``
written ``_d``, so names map one to one):

* ``SEAWALL_Q_<enc>``, retention *work queue*, subjects ``seawall.q.<enc>.p0`` ... ``.p9``
  (one per priority) and ``seawall.q.<enc>.delayed``. Each subject has a durable pull
  consumer (``p0`` ... ``p9``, ``delayed``) with explicit acks; ``ack_wait`` is the
  visibility timeout and ``max_deliver`` is ``max_deliveries + 1``. An acknowledged
  message leaves the stream. ``duplicate_window`` is the queue's ``dedup_window`` and a
  ``dedup_id`` travels as ``Nats-Msg-Id``, so JetStream drops duplicates itself;
* ``SEAWALL_DLQ_<enc>``, retention *limits*: dead letters on ``seawall.dlq.<enc>.<id>``
  (looked up by id with a last-message-by-subject get), plus the consumers'
  ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES`` advisories: a message whose final
  delivery was never settled (its consumer died while dead-lettering it) is adopted
  from its advisory into the dead letters by the next inspection.

``receive`` fetches (``no_wait`` pulls) from the highest priority subject that has
messages down to the lowest; a message's id is the stream sequence of its first send
(carried in a header when it is republished). Delayed messages wait on the ``delayed``
subject with their due time in a header: each receive, peek or stats moves the due ones
(in due order) to their priority subject and hides the others with a ``nak`` delay until
they are due. ``nack`` without error or delay is a JetStream ``nak``: the message keeps
its place. ``nack`` with an error or a delay republishes the message with the error and
its delivery count in headers and acknowledges the old copy (the error survives into the
dead letters). ``extend_visibility`` is a ``+WPI``: it restarts the full ack wait.

What JetStream cannot do the way the contract says (see docs/messaging/brokers.md):
the visibility timeout is per consumer, so a receive with another timeout updates the
consumers' ``ack_wait`` for every delivery; JetStream acknowledges by stream sequence, so
a stale receipt is recognised only in the process that saw the newer delivery; a batch
send is not atomic; transactions are refused; timers run on the server's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seawall.clock import Clock
from seawall.engines._base import redact
from seawall.engines.nats import NatsEngine
from seawall.errors import ConfigurationError, EngineError, EngineUnavailableError
from seawall.events import EventHub, hub
from seawall.messaging.queue._broker import (
    HEADER_DEAD_AT,
    HEADER_DELIVERIES,
    HEADER_ENQUEUED_AT,
    HEADER_HEADERS,
    HEADER_ID,
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
from seawall.messaging.queue._events import MessageDeadLettered, MessageDeduplicated
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
    import nats.aio.client
    import nats.aio.msg
    import nats.js

__all__ = [
    "AsyncNatsQueueStore",
    "NatsQueueStore",
    "dead_letter_stream_name",
    "forget_queue",
    "nats_queue_names",
    "stream_name",
]

STREAM_PREFIX = "SEAWALL_Q_"
DEAD_STREAM_PREFIX = "SEAWALL_DLQ_"
DELAYED = "delayed"
_PRIORITIES = range(9, -1, -1)
_PROMOTE_BATCH = 256
_LIST_PAGE = 256
_REPLY_TIMEOUT = 5.0
_PULL_TIMEOUT = 1.0
_SETTLED_MEMORY = 100_000
_DELAY_SLACK = 0.001
"""A delayed message due within this many seconds counts as due."""


def _encode_name(name: str) -> str:
    return name.replace("_", "__").replace(".", "_d")


def _decode_name(encoded: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(encoded):
        char = encoded[index]
        if char == "_" and index + 1 < len(encoded):
            following = encoded[index + 1]
            out.append("_" if following == "_" else "." if following == "d" else "_" + following)
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def stream_name(name: str) -> str:
    """The work-queue stream of queue ``name``."""
    return STREAM_PREFIX + _encode_name(name)


def dead_letter_stream_name(name: str) -> str:
    """The dead-letter stream of queue ``name``."""
    return DEAD_STREAM_PREFIX + _encode_name(name)


class _Deliveries:
    """This process's view of deliveries: the newest delivery count per message and the
    receipts already settled, so that a stale receipt is refused (JetStream itself acks
    by stream sequence, whichever delivery the receipt came from)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, int], int] = {}
        self._settled: OrderedDict[str, None] = OrderedDict()

    def delivered(self, stream: str, sequence: int, delivered: int) -> None:
        with self._lock:
            key = (stream, sequence)
            if self._latest.get(key, 0) < delivered:
                self._latest[key] = delivered

    def is_stale(self, token: str, stream: str, sequence: int, delivered: int) -> bool:
        with self._lock:
            if token in self._settled:
                return True
            return self._latest.get((stream, sequence), 0) > delivered

    def settled(self, token: str, stream: str, sequence: int) -> None:
        with self._lock:
            self._latest.pop((stream, sequence), None)
            self._settled[token] = None
            while len(self._settled) > _SETTLED_MEMORY:
                self._settled.popitem(last=False)

    def forget_stream(self, stream: str) -> None:
        with self._lock:
            for key in [key for key in self._latest if key[0] == stream]:
                del self._latest[key]


_DELIVERIES = _Deliveries()


@dataclass(frozen=True)
class _Token:
    """A delivery's ack subject, parsed: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...``."""

    subject: str
    stream: str
    consumer: str
    delivered: int
    sequence: int

    @classmethod
    def parse(cls, token: str) -> _Token | None:
        parts = token.split(".")
        if len(parts) != 9 or parts[0] != "$JS" or parts[1] != "ACK":
            return None
        try:
            return cls(token, parts[2], parts[3], int(parts[4]), int(parts[5]))
        except ValueError:
            return None


@contextlib.asynccontextmanager
async def _nats_errors(url: str) -> AsyncIterator[None]:
    """Translate nats-py errors into seawall's, naming the server and the fix."""
    import nats.errors
    import nats.js.errors

    try:
        yield
    except (EngineError, UnknownQueueError, ConfigurationError):
        raise
    except (nats.errors.ConnectionClosedError, nats.errors.NoServersError) as exc:
        raise EngineUnavailableError(
            f"NATS at {redact(url)} is unreachable ({exc!r}); check that it runs", url=url
        ) from exc
    except (nats.errors.TimeoutError, TimeoutError) as exc:
        raise EngineUnavailableError(
            f"NATS at {redact(url)} did not answer in time; check that it runs with JetStream "
            "enabled (nats-server -js)",
            url=url,
        ) from exc
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        raise EngineError(f"NATS at {redact(url)} failed: {exc!r}", url=url) from exc


class _Held:
    """A delivery as received: its message's data, kept to nack or dead-letter it later."""

    __slots__ = ("base", "body", "delivered", "enqueued_at", "headers", "id", "priority", "raw")

    def __init__(self, message: nats.aio.msg.Msg) -> None:
        headers = message.headers or {}
        self.raw = dict(headers)
        self.body = message.data
        self.id = headers.get(HEADER_ID) or str(message.metadata.sequence.stream)
        self.priority = int(headers.get(HEADER_PRIORITY, "0"))
        self.enqueued_at = float(headers.get(HEADER_ENQUEUED_AT, "0"))
        self.headers = decode_headers(headers.get(HEADER_HEADERS))
        self.base = int(headers.get(HEADER_DELIVERIES, "0"))
        self.delivered = self.base + message.metadata.num_delivered


class _NatsCore:
    """One queue's operations on one event loop (see the module docstring)."""

    def __init__(
        self,
        engine: NatsEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None,
        events: EventHub,
        create: bool,
    ) -> None:
        self.engine = engine
        self.name = name
        self.max_deliveries = max_deliveries
        self.dedup_window = dedup_window
        self.clock = clock
        self.events = events
        self.create = create
        encoded = _encode_name(name)
        self.stream = stream_name(name)
        self.dead_stream = dead_letter_stream_name(name)
        self.subject_prefix = f"seawall.q.{encoded}."
        self.dead_prefix = f"seawall.dlq.{encoded}."
        self.advisories = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.*"
        self.bell = doorbell_for(engine.url, name)
        self.ack_wait: float | None = None
        self.stalled = False

    # -- plumbing --------------------------------------------------------------------------

    async def _js(self) -> tuple[nats.aio.client.Client, nats.js.JetStreamContext]:
        connection = await self.engine.connection()
        return connection, connection.jetstream(timeout=_REPLY_TIMEOUT)

    def _subject(self, priority: int) -> str:
        return f"{self.subject_prefix}p{priority}"

    def _consumer_config(self, consumer: str, ack_wait: float) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        return ConsumerConfig(
            durable_name=consumer,
            filter_subject=self.subject_prefix + consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1 if consumer == DELAYED else self.max_deliveries + 1,
            max_ack_pending=-1,
        )

    async def declare(self) -> None:
        """Check the streams exist (creating them and their consumers when asked)."""
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        async with _nats_errors(self.engine.url):
            _, js = await self._js()
            try:
                info = await js.stream_info(self.stream)
                exists = True
            except NotFoundError:
                exists = False
            if not exists and not self.create:
                raise UnknownQueueError(self.name, await _names(js))
            if exists and not self.create:
                return
            if not exists:
                await js.add_stream(
                    StreamConfig(
                        name=self.stream,
                        subjects=[self.subject_prefix + ">"],
                        retention=RetentionPolicy.WORK_QUEUE,
                        storage=StorageType.FILE,
                        duplicate_window=self.dedup_window,
                    )
                )
            elif info.config.duplicate_window != self.dedup_window:
                info.config.duplicate_window = self.dedup_window
                await js.update_stream(info.config)
            with contextlib.suppress(Exception):  # already there: same config
                await js.add_stream(
                    StreamConfig(
                        name=self.dead_stream,
                        subjects=[self.dead_prefix + ">", self.advisories],
                        retention=RetentionPolicy.LIMITS,
                        storage=StorageType.FILE,
                    )
                )
            await self._ensure_consumers(js, None)

    async def _ensure_consumers(self, js: nats.js.JetStreamContext, ack_wait: float | None) -> None:
        if ack_wait is None:
            try:
                ack_wait = (await js.consumer_info(self.stream, "p0")).config.ack_wait or 30.0
            except Exception:  # not created yet
                ack_wait = 30.0
        consumers = [f"p{priority}" for priority in _PRIORITIES] + [DELAYED]
        await asyncio.gather(
            *(js.add_consumer(self.stream, self._consumer_config(c, ack_wait)) for c in consumers)
        )
        self.ack_wait = ack_wait

    async def _set_ack_wait(self, js: nats.js.JetStreamContext, visibility_timeout: float) -> None:
        if self.ack_wait is None:
            info = await js.consumer_info(self.stream, "p0")
            self.ack_wait = info.config.ack_wait
        if self.ack_wait is None or abs(self.ack_wait - visibility_timeout) > 1e-3:
            await self._ensure_consumers(js, visibility_timeout)

    def _message_headers(
        self,
        message_id: str | None,
        priority: int,
        enqueued_at: float,
        headers: str | None,
        deliveries: int = 0,
        last_error: str | None = None,
    ) -> dict[str, str]:
        out = {HEADER_PRIORITY: str(priority), HEADER_ENQUEUED_AT: repr(enqueued_at)}
        if message_id is not None:
            out[HEADER_ID] = message_id
        if headers:
            out[HEADER_HEADERS] = headers
        if deliveries:
            out[HEADER_DELIVERIES] = str(deliveries)
        if last_error is not None:
            out[HEADER_LAST_ERROR] = last_error
        return out

    # -- sending ---------------------------------------------------------------------------

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Publish each message (in order, pipelined) and wait for every PubAck."""
        async with _nats_errors(self.engine.url):
            _, js = await self._js()
            stamp = now(self.clock)
            publishes = []
            for message in messages:
                headers = self._message_headers(
                    None, message.priority, stamp, encode_headers(message.headers)
                )
                if message.dedup_id is not None:
                    headers["Nats-Msg-Id"] = message.dedup_id
                if message.delay > 0:
                    headers[HEADER_NOT_BEFORE] = repr(stamp + message.delay)
                    subject = self.subject_prefix + DELAYED
                else:
                    subject = self._subject(message.priority)
                publishes.append(
                    js.publish(subject, message.body, stream=self.stream, headers=headers)
                )
            acks = await asyncio.gather(*publishes)
            ids = []
            for message, ack in zip(messages, acks, strict=True):
                ids.append(str(ack.seq))
                if ack.duplicate and message.dedup_id is not None:
                    first = await self._first_id(js, ack.seq)
                    ids[-1] = first
                    if self.events.active:
                        self.events.emit(MessageDeduplicated(self.name, first, message.dedup_id))
        self.bell.ring()
        return ids

    async def _first_id(self, js: nats.js.JetStreamContext, sequence: int) -> str:
        from nats.js.errors import NotFoundError

        try:
            stored = await js.get_msg(self.stream, sequence)
        except NotFoundError:  # delivered and acknowledged: its id is its sequence
            return str(sequence)
        return (stored.headers or {}).get(HEADER_ID) or str(sequence)

    # -- receiving -------------------------------------------------------------------------

    async def _pull(
        self, connection: nats.aio.client.Client, consumer: str, batch: int
    ) -> list[nats.aio.msg.Msg]:
        """One ``no_wait`` pull: the messages available now, up to ``batch``."""
        import nats.errors

        inbox = connection.new_inbox()
        subscription = await connection.subscribe(inbox)
        try:
            await connection.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{consumer}",
                json.dumps({"batch": batch, "no_wait": True}).encode(),
                reply=inbox,
            )
            messages: list[nats.aio.msg.Msg] = []
            while len(messages) < batch:
                try:
                    message = await subscription.next_msg(timeout=_PULL_TIMEOUT)
                except nats.errors.TimeoutError:
                    # JetStream does not answer a no_wait pull whose only pending message
                    # is spent (max_deliver reached): its advisory is adopted below.
                    self.stalled = True
                    break
                if message.headers and message.headers.get("Status"):
                    break
                messages.append(message)
            return messages
        finally:
            await subscription.unsubscribe()

    async def _promote_due(self, connection: nats.aio.client.Client) -> None:
        """Move delayed messages that are due to their priority subject, in due order."""
        import nats.js.errors

        pulled = await self._pull(connection, DELAYED, _PROMOTE_BATCH)
        if not pulled:
            return
        current = now(self.clock)
        due: list[tuple[float, int, nats.aio.msg.Msg]] = []
        for message in pulled:
            not_before = float((message.headers or {}).get(HEADER_NOT_BEFORE, "0"))
            if not_before <= current + _DELAY_SLACK:
                due.append((not_before, message.metadata.sequence.stream, message))
            else:
                delay = 0 if self.clock is not None else int((not_before - current) * 1e9)
                payload = b"-NAK" if not delay else b'-NAK {"delay": %d}' % delay
                await connection.request(message.reply, payload, timeout=_REPLY_TIMEOUT)
        js = connection.jetstream(timeout=_REPLY_TIMEOUT)
        for _, sequence, message in sorted(due, key=lambda entry: entry[:2]):
            headers = dict(message.headers or {})
            headers.pop(HEADER_NOT_BEFORE, None)
            headers.pop("Nats-Msg-Id", None)
            headers.setdefault(HEADER_ID, str(sequence))
            headers["Nats-Msg-Id"] = f"seawall-promote-{sequence}"
            priority = int(headers.get(HEADER_PRIORITY, "0"))
            try:
                await js.publish(self._subject(priority), message.data, headers=headers)
            except nats.js.errors.Error:
                continue  # left in place: promoted by a later look
            await connection.request(message.reply, b"+ACK", timeout=_REPLY_TIMEOUT)
        if due:
            self.bell.ring()

    async def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        """Claim up to ``max_messages``; long-polls on the doorbell and short pauses."""

        async def look() -> list[StoredMessage]:
            return await self._claim(max_messages, visibility_timeout)

        if wait <= 0:
            return await look()
        return await apoll(look, wait, self.bell, self.clock)

    async def _claim(self, max_messages: int, visibility_timeout: float) -> list[StoredMessage]:
        async with _nats_errors(self.engine.url):
            connection, js = await self._js()
            await self._set_ack_wait(js, visibility_timeout)
            every = self.subject_prefix + "*"
            counts: Mapping[str, int] = (
                await js.stream_info(self.stream, subjects_filter=every)
            ).state.subjects or {}
            if counts.get(self.subject_prefix + DELAYED):
                await self._promote_due(connection)
                counts = (
                    await js.stream_info(self.stream, subjects_filter=every)
                ).state.subjects or {}
            claimed: list[StoredMessage] = []
            for priority in _PRIORITIES:
                if not counts.get(self._subject(priority)):
                    continue
                while len(claimed) < max_messages:
                    pulled = await self._pull(
                        connection, f"p{priority}", max_messages - len(claimed)
                    )
                    if not pulled:
                        break
                    spent = False
                    for message in pulled:
                        held = _Held(message)
                        metadata = message.metadata
                        if held.delivered > self.max_deliveries:
                            spent = True
                            await self._kill(
                                connection,
                                held,
                                message.reply,
                                expired_reason(held.delivered - 1, self.max_deliveries),
                                decode_error(held.raw.get(HEADER_LAST_ERROR)),
                                held.delivered - 1,
                            )
                            continue
                        _DELIVERIES.delivered(
                            self.stream, metadata.sequence.stream, metadata.num_delivered
                        )
                        claimed.append(
                            StoredMessage(
                                held.id,
                                held.body,
                                held.headers,
                                held.priority,
                                held.delivered,
                                held.enqueued_at,
                                message.reply,
                            )
                        )
                    if not spent:
                        break
                if len(claimed) >= max_messages:
                    break
            if self.stalled:
                self.stalled = False
                await self._adopt_advisories(js)
            return claimed

    # -- settling --------------------------------------------------------------------------

    def _token(self, message_id: str, token: str) -> _Token | None:
        parsed = _Token.parse(token)
        if parsed is None or parsed.stream != self.stream:
            return None
        if _DELIVERIES.is_stale(token, parsed.stream, parsed.sequence, parsed.delivered):
            return None
        return parsed

    async def _settle(
        self, connection: nats.aio.client.Client, token: _Token, payload: bytes
    ) -> None:
        await connection.request(token.subject, payload, timeout=_REPLY_TIMEOUT)
        _DELIVERIES.settled(token.subject, token.stream, token.sequence)

    async def ack_many(self, receipts: Sequence[ReceiptLike]) -> list[ReceiptLike]:
        """Acknowledge every held receipt (double acks, awaited together); return the stale."""
        stale: list[ReceiptLike] = []
        valid: list[_Token] = []
        for receipt in receipts:
            parsed = self._token(receipt.id, receipt.token)
            if parsed is None:
                stale.append(receipt)
            else:
                valid.append(parsed)
        if valid:
            async with _nats_errors(self.engine.url):
                connection, _ = await self._js()
                await asyncio.gather(*(self._settle(connection, t, b"+ACK") for t in valid))
        return stale

    async def _held(self, token: _Token) -> _Held | None:
        """The message a delivery holds, read back from the stream (None once it is gone)."""
        from nats.aio.msg import Msg
        from nats.js.errors import NotFoundError

        connection, js = await self._js()
        try:
            stored = await js.get_msg(self.stream, token.sequence)
        except NotFoundError:
            return None
        message = Msg(
            connection,
            subject=stored.subject or "",
            reply=token.subject,
            data=stored.data or b"",
            headers=dict(stored.headers or {}),
        )
        return _Held(message)

    async def nack(
        self, message_id: str, token: str, delay: float, error: str | None
    ) -> NackOutcome:
        """Release a delivery: ``nak`` in place, or republish with the error / after a delay."""
        parsed = self._token(message_id, token)
        if parsed is None:
            return "stale"
        async with _nats_errors(self.engine.url):
            held = await self._held(parsed)
            if held is None or held.id != message_id:
                return "stale"
            connection, js = await self._js()
            last_error = (
                encode_error(error) if error is not None else held.raw.get(HEADER_LAST_ERROR)
            )
            if held.delivered >= self.max_deliveries:
                await self._kill(
                    connection,
                    held,
                    parsed.subject,
                    nacked_reason(held.delivered, self.max_deliveries),
                    decode_error(last_error),
                    held.delivered,
                )
                _DELIVERIES.settled(parsed.subject, parsed.stream, parsed.sequence)
                return "dead_lettered"
            if error is None and delay <= 0:
                await self._settle(connection, parsed, b"-NAK")
                self.bell.ring()
                return "requeued"
            headers = self._message_headers(
                held.id,
                held.priority,
                held.enqueued_at,
                held.raw.get(HEADER_HEADERS),
                held.delivered,
                last_error,
            )
            if delay > 0:
                headers[HEADER_NOT_BEFORE] = repr(now(self.clock) + delay)
                subject = self.subject_prefix + DELAYED
            else:
                subject = self._subject(held.priority)
            await js.publish(subject, held.body, stream=self.stream, headers=headers)
            await self._settle(connection, parsed, b"+ACK")
        self.bell.ring()
        return "requeued"

    async def extend_visibility(
        self, message_id: str, token: str, visibility_timeout: float
    ) -> bool:
        """``+WPI``: JetStream restarts the delivery's full ack wait."""
        parsed = self._token(message_id, token)
        if parsed is None:
            return False
        async with _nats_errors(self.engine.url):
            connection, _ = await self._js()
            await connection.request(parsed.subject, b"+WPI", timeout=_REPLY_TIMEOUT)
        return True

    async def dead_letter(self, message_id: str, token: str, reason: str) -> bool:
        """Move a held message to the dead-letter stream with ``reason``."""
        parsed = self._token(message_id, token)
        if parsed is None:
            return False
        async with _nats_errors(self.engine.url):
            held = await self._held(parsed)
            if held is None or held.id != message_id:
                return False
            connection, _ = await self._js()
            await self._kill(
                connection,
                held,
                parsed.subject,
                reason,
                decode_error(held.raw.get(HEADER_LAST_ERROR)),
                held.delivered,
            )
            _DELIVERIES.settled(parsed.subject, parsed.stream, parsed.sequence)
        return True

    async def _kill(
        self,
        connection: nats.aio.client.Client,
        held: _Held,
        reply: str | None,
        reason: str,
        last_error: str | None,
        deliveries: int,
    ) -> None:
        """Publish the dead letter, then acknowledge the live copy (at least once)."""
        js = connection.jetstream(timeout=_REPLY_TIMEOUT)
        headers = self._message_headers(
            held.id,
            held.priority,
            held.enqueued_at,
            held.raw.get(HEADER_HEADERS),
            deliveries,
            encode_error(last_error) if last_error is not None else None,
        )
        headers[HEADER_REASON] = encode_error(reason)
        headers[HEADER_DEAD_AT] = repr(now(self.clock))
        await js.publish(
            self.dead_prefix + held.id, held.body, stream=self.dead_stream, headers=headers
        )
        if reply:
            await connection.request(reply, b"+ACK", timeout=_REPLY_TIMEOUT)
        if self.events.active:
            self.events.emit(MessageDeadLettered(self.name, held.id, reason, deliveries))

    # -- inspecting ------------------------------------------------------------------------

    async def peek(self, limit: int) -> list[QueuedMessage]:
        """Stored messages of the priority subjects, highest first (in flight ones included)."""
        from nats.js.errors import NotFoundError

        async with _nats_errors(self.engine.url):
            connection, js = await self._js()
            await self._promote_due(connection)
            found: list[QueuedMessage] = []
            for priority in _PRIORITIES:
                sequence = 1
                while len(found) < limit:
                    try:
                        stored = await js.get_msg(
                            self.stream, sequence, subject=self._subject(priority), next=True
                        )
                    except NotFoundError:
                        break
                    headers = stored.headers or {}
                    found.append(
                        QueuedMessage(
                            headers.get(HEADER_ID) or str(stored.seq),
                            stored.data or b"",
                            decode_headers(headers.get(HEADER_HEADERS)) or {},
                            int(headers.get(HEADER_PRIORITY, "0")),
                            int(headers.get(HEADER_DELIVERIES, "0")),
                            float(headers.get(HEADER_ENQUEUED_AT, "0")),
                            float(headers.get(HEADER_ENQUEUED_AT, "0")),
                            decode_error(headers.get(HEADER_LAST_ERROR)),
                        )
                    )
                    sequence = (stored.seq or sequence) + 1
                if len(found) >= limit:
                    break
            return found

    async def stats(self) -> QueueStats:
        """Ready and in-flight counts from the consumers, delayed ones, dead letters."""
        async with _nats_errors(self.engine.url):
            connection, js = await self._js()
            await self._promote_due(connection)
            await self._adopt_advisories(js)
            consumers = [f"p{priority}" for priority in _PRIORITIES]
            infos = await asyncio.gather(
                *(js.consumer_info(self.stream, c) for c in [*consumers, DELAYED])
            )
            ready = sum(info.num_pending or 0 for info in infos[:-1])
            in_flight = sum(info.num_ack_pending or 0 for info in infos[:-1])
            delayed = (infos[-1].num_pending or 0) + (infos[-1].num_ack_pending or 0)
            dead = await self._dead_count(js)
            return QueueStats(ready, in_flight, delayed, dead)

    async def _dead_count(self, js: nats.js.JetStreamContext) -> int:
        info = await js.stream_info(self.dead_stream, subjects_filter=self.dead_prefix + ">")
        return sum((info.state.subjects or {}).values())

    async def purge(self) -> int:
        """Purge the work stream (in-flight and delayed messages too); return how many."""
        async with _nats_errors(self.engine.url):
            _, js = await self._js()
            count = (await js.stream_info(self.stream)).state.messages
            await js.purge_stream(self.stream)
            _DELIVERIES.forget_stream(self.stream)
            return count

    async def _adopt_advisories(self, js: nats.js.JetStreamContext) -> None:
        """Turn MAX_DELIVERIES advisories into dead letters (a consumer died mid-way)."""
        from nats.js.errors import NotFoundError

        while True:
            try:
                advisory = await js.get_msg(self.dead_stream, 1, subject=self.advisories, next=True)
            except NotFoundError:
                return
            event = json.loads(advisory.data or b"{}")
            sequence = int(event.get("stream_seq", 0))
            try:
                stored = await js.get_msg(self.stream, sequence)
            except NotFoundError:
                stored = None
            if stored is not None:
                from nats.aio.msg import Msg

                connection, _ = await self._js()
                held = _Held(
                    Msg(
                        connection,
                        subject=stored.subject or "",
                        reply=f"$JS.ACK.{self.stream}.p0.1.{sequence}.1.0.0",
                        data=stored.data or b"",
                        headers=dict(stored.headers or {}),
                    )
                )
                deliveries = held.base + int(event.get("deliveries", 0)) - 1
                await self._kill(
                    connection,
                    held,
                    None,
                    expired_reason(deliveries, self.max_deliveries),
                    decode_error(held.raw.get(HEADER_LAST_ERROR)),
                    deliveries,
                )
                await js.delete_msg(self.stream, sequence)
            await js.delete_msg(self.dead_stream, advisory.seq or 0)

    async def dead_letters(self, limit: int, message_id: str | None = None) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, or the one with ``message_id``."""
        from nats.js.errors import NotFoundError

        async with _nats_errors(self.engine.url):
            _, js = await self._js()
            await self._adopt_advisories(js)
            if message_id is not None:
                if not message_id.isdigit():
                    return []
                try:
                    stored = await js.get_last_msg(self.dead_stream, self.dead_prefix + message_id)
                except NotFoundError:
                    return []
                return [_dead_letter(stored)]
            found: list[DeadLetter] = []
            sequence = 1
            while len(found) < limit:
                try:
                    stored = await js.get_msg(
                        self.dead_stream, sequence, subject=self.dead_prefix + ">", next=True
                    )
                except NotFoundError:
                    break
                found.append(_dead_letter(stored))
                sequence = (stored.seq or sequence) + 1
            return found

    async def redrive(self, message_ids: Sequence[str] | None) -> int:
        """Republish dead letters to their priority subject (count reset), then delete them."""
        from nats.js.errors import NotFoundError

        async with _nats_errors(self.engine.url):
            _, js = await self._js()
            await self._adopt_advisories(js)
            records: list[Any] = []
            if message_ids is None:
                sequence = 1
                while True:
                    try:
                        stored = await js.get_msg(
                            self.dead_stream, sequence, subject=self.dead_prefix + ">", next=True
                        )
                    except NotFoundError:
                        break
                    records.append(stored)
                    sequence = (stored.seq or sequence) + 1
            else:
                for message_id in dict.fromkeys(message_ids):
                    if not message_id.isdigit():
                        continue
                    try:
                        records.append(
                            await js.get_last_msg(self.dead_stream, self.dead_prefix + message_id)
                        )
                    except NotFoundError:
                        continue
            for stored in records:
                headers = stored.headers or {}
                priority = int(headers.get(HEADER_PRIORITY, "0"))
                message_id = (stored.subject or "").rsplit(".", 1)[-1]
                fresh = self._message_headers(
                    message_id,
                    priority,
                    float(headers.get(HEADER_ENQUEUED_AT, "0")),
                    headers.get(HEADER_HEADERS),
                )
                await js.publish(
                    self._subject(priority), stored.data or b"", stream=self.stream, headers=fresh
                )
                await js.delete_msg(self.dead_stream, stored.seq or 0)
        if records:
            self.bell.ring()
        return len(records)

    async def purge_dead_letters(self) -> int:
        """Purge the dead-letter stream; return how many dead letters it held."""
        async with _nats_errors(self.engine.url):
            _, js = await self._js()
            await self._adopt_advisories(js)
            count = await self._dead_count(js)
            await js.purge_stream(self.dead_stream)
            return count

    async def close(self) -> None:
        """Nothing of its own: the engine owns the connection."""


def _dead_letter(stored: Any) -> DeadLetter:
    headers: Mapping[str, str] = stored.headers or {}
    return DeadLetter(
        (stored.subject or "").rsplit(".", 1)[-1],
        stored.data or b"",
        decode_headers(headers.get(HEADER_HEADERS)) or {},
        int(headers.get(HEADER_PRIORITY, "0")),
        int(headers.get(HEADER_DELIVERIES, "0")),
        float(headers.get(HEADER_ENQUEUED_AT, "0")),
        float(headers.get(HEADER_DEAD_AT, "0")),
        decode_error(headers.get(HEADER_REASON)) or "",
        decode_error(headers.get(HEADER_LAST_ERROR)),
    )


async def _names(js: nats.js.JetStreamContext) -> list[str]:
    names: list[str] = []
    offset = 0
    while True:
        page = await js.streams_info(offset)
        names += [
            _decode_name(info.config.name[len(STREAM_PREFIX) :])
            for info in page
            if info.config.name and info.config.name.startswith(STREAM_PREFIX)
        ]
        if len(page) < _LIST_PAGE:
            return sorted(names)
        offset += len(page)


def nats_queue_names(engine: NatsEngine) -> list[str]:
    """The names of the queues declared on this NATS server (their streams)."""

    async def names() -> list[str]:
        async with _nats_errors(engine.url):
            return await _names(await engine.jetstream())

    return engine.run(names())


def forget_queue(engine: NatsEngine, name: str) -> None:
    """Delete queue ``name`` for good: both its streams, every message and dead letter."""
    from nats.js.errors import NotFoundError

    async def delete() -> None:
        async with _nats_errors(engine.url):
            js = await engine.jetstream()
            for stream in (stream_name(name), dead_letter_stream_name(name)):
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(stream)

    engine.run(delete())


def _check_engine(engine: Any) -> NatsEngine:
    if not isinstance(engine, NatsEngine):
        raise ConfigurationError(f"the NATS queue store needs a NatsEngine, got {engine!r}")
    return engine


def _core(
    engine: NatsEngine,
    name: str,
    max_deliveries: int,
    dedup_window: float,
    clock: Clock | None,
    events: EventHub | None,
    create: bool,
) -> _NatsCore:
    return _NatsCore(
        _check_engine(engine),
        name,
        max_deliveries=max_deliveries,
        dedup_window=dedup_window,
        clock=clock,
        events=events if events is not None else EventHub(parent=hub),
        create=create,
    )


class NatsQueueStore(SyncStore):
    """A :class:`~seawall.messaging.queue.QueueStore` on NATS JetStream (see the module doc)."""

    broker = "NATS"

    def __init__(
        self,
        engine: NatsEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        core = _core(engine, name, max_deliveries, dedup_window, clock, events, create)
        super().__init__(engine, core)


class AsyncNatsQueueStore(AsyncStore):
    """The native asyncio twin of :class:`NatsQueueStore` (declared on first use)."""

    broker = "NATS"

    def __init__(
        self,
        engine: NatsEngine,
        name: str,
        *,
        max_deliveries: int,
        dedup_window: float,
        clock: Clock | None = None,
        events: EventHub | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(_core(engine, name, max_deliveries, dedup_window, clock, events, create))
