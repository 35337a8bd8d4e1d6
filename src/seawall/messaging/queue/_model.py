"""The values a queue hands out and takes in: messages, receipts, stats, dead letters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from seawall.messaging.queue._queue import Queue

__all__ = [
    "NO_HEADERS",
    "DeadLetter",
    "Envelope",
    "Message",
    "OutgoingMessage",
    "QueueStats",
    "QueuedMessage",
    "Receipt",
    "ReceiptLike",
    "StoredMessage",
]

NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The shared, read-only headers of a message sent without any."""


class Receipt(NamedTuple):
    """Proof of one delivery: the message id and that delivery's token.

    Acknowledging needs both, so a consumer whose visibility timeout expired (and
    whose message went to someone else) cannot acknowledge the new delivery.
    """

    id: str
    token: str


class ReceiptLike(Protocol):
    """Anything that names one delivery: a :class:`Receipt` or a received :class:`Message`."""

    @property
    def id(self) -> str:
        """The message id."""
        ...

    @property
    def token(self) -> str:
        """The delivery token."""
        ...


class StoredMessage(NamedTuple):
    """A claimed message as a store returns it: body still encoded (store protocol)."""

    id: str
    body: bytes
    headers: Mapping[str, str] | None
    priority: int
    delivery_count: int
    enqueued_at: float
    token: str


class OutgoingMessage(NamedTuple):
    """A message as the queue hands it to a store: body encoded, options validated."""

    body: bytes
    headers: Mapping[str, str] | None
    priority: int
    delay: float
    dedup_id: str | None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A body with its own send options, for :meth:`Queue.send_many` batches."""

    body: Any
    headers: Mapping[str, str] | None = None
    priority: int = 0
    delay: float = 0.0
    dedup_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How many messages a queue holds in each state, counted at one instant.

    ``ready``: receivable now; ``in_flight``: received and not yet acknowledged
    (within their visibility timeout); ``delayed``: waiting for a send delay or a
    nack delay; ``dead``: in the dead letters.
    """

    ready: int
    in_flight: int
    delayed: int
    dead: int

    @property
    def total(self) -> int:
        """Messages still in the queue (ready, in flight or delayed), dead letters excluded."""
        return self.ready + self.in_flight + self.delayed


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message seen by ``peek``: not claimed, so it carries no receipt.

    ``body`` is decoded, or the raw bytes when the codec cannot decode it.
    """

    id: str
    body: Any
    headers: Mapping[str, str]
    priority: int
    delivery_count: int
    enqueued_at: float
    available_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message in the dead letters, with why it got there.

    ``reason`` says why it was moved (deliveries exhausted, undecodable body...);
    ``last_error`` is the last error a consumer reported with ``nack``. ``body`` is
    decoded, or the raw bytes when the codec cannot decode it.
    """

    id: str
    body: Any
    headers: Mapping[str, str]
    priority: int
    delivery_count: int
    enqueued_at: float
    dead_at: float
    reason: str
    last_error: str | None


class Message:
    """A received message: decoded body, metadata, and the receipt to settle it with.

    ``delivery_count`` is 1 on the first delivery, 2 on the second, ...;
    ``enqueued_at`` is when it was sent, on the engine's clock (epoch seconds).

    Settle each message once: :meth:`ack` when done, :meth:`nack` to retry later, or
    let the visibility timeout expire (it is then delivered again). The ``a``-prefixed
    methods are the asyncio twins.
    """

    __slots__ = (
        "_queue",
        "body",
        "delivery_count",
        "enqueued_at",
        "headers",
        "id",
        "priority",
        "token",
    )

    def __init__(
        self,
        queue: Queue,
        id: str,
        body: Any,
        headers: Mapping[str, str],
        priority: int,
        delivery_count: int,
        enqueued_at: float,
        token: str,
    ) -> None:
        self._queue = queue
        self.id = id
        self.body = body
        self.headers = headers
        self.priority = priority
        self.delivery_count = delivery_count
        self.enqueued_at = enqueued_at
        self.token = token

    @property
    def receipt(self) -> Receipt:
        """The id and delivery token; settle the message elsewhere with ``queue.ack(receipt)``."""
        return Receipt(self.id, self.token)

    @property
    def queue(self) -> Queue:
        """The queue this message was received from."""
        return self._queue

    def ack(self) -> None:
        """Acknowledge: the message is done and removed (raises StaleReceiptError if not held)."""
        self._queue.ack(self)

    async def aack(self) -> None:
        """Asyncio twin of :meth:`ack`."""
        await self._queue.aack(self)

    def nack(self, *, delay: float = 0.0, error: str | BaseException | None = None) -> None:
        """Give the message back for another delivery after ``delay`` seconds.

        On its last allowed delivery (``max_deliveries``) it moves to the dead
        letters instead, with ``error`` as the last error.
        """
        self._queue.nack(self, delay=delay, error=error)

    async def anack(self, *, delay: float = 0.0, error: str | BaseException | None = None) -> None:
        """Asyncio twin of :meth:`nack`."""
        await self._queue.anack(self, delay=delay, error=error)

    def extend_visibility(self, visibility_timeout: float) -> None:
        """Keep the message invisible to others for ``visibility_timeout`` more seconds from now."""
        self._queue.extend_visibility(self, visibility_timeout)

    async def aextend_visibility(self, visibility_timeout: float) -> None:
        """Asyncio twin of :meth:`extend_visibility`."""
        await self._queue.aextend_visibility(self, visibility_timeout)

    def __repr__(self) -> str:
        return (
            f"Message(id={self.id!r}, queue={self._queue.name!r}, priority={self.priority}, "
            f"delivery_count={self.delivery_count}, body={self.body!r:.80})"
        )
