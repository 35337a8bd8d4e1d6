"""The values a topic hands out and takes in: records, messages, receipts, dead letters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

__all__ = [
    "NO_HEADERS",
    "NackOutcome",
    "OutgoingRecord",
    "Start",
    "StoredTopicMessage",
    "TopicDeadLetter",
    "TopicMessage",
    "TopicReceipt",
    "TopicRecord",
]

NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The shared, read-only headers of a message published without any."""

Start = Literal["earliest", "latest"] | int
"""Where a new group begins: the oldest retained message, the next one published, or an offset."""

NackOutcome = Literal["requeued", "dead_lettered", "stale"]
"""What a nack did: made the message ready again, moved it to the group's dead letters, or nothing."""


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """A body with its own key and headers, for :meth:`Topic.publish_many` batches."""

    body: Any
    key: str | None = None
    headers: Mapping[str, str] | None = None


class OutgoingRecord(NamedTuple):
    """A record as the topic hands it to a store: body encoded, options checked."""

    body: bytes
    key: str | None
    headers: Mapping[str, str] | None


class StoredTopicMessage(NamedTuple):
    """A claimed delivery as a store returns it: body still encoded (store protocol)."""

    offset: int
    key: str | None
    body: bytes
    headers: Mapping[str, str] | None
    published_at: float
    delivery_count: int
    token: str


class TopicReceipt(NamedTuple):
    """Proof of one delivery to one group: settle it with ``group.ack(receipt)``.

    The token changes on every delivery, so a consumer whose visibility timeout
    expired (the message went to another consumer of the group) cannot settle it.
    """

    group: str
    offset: int
    token: str


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """A message delivered to one consumer of a group: decoded body, metadata, receipt.

    ``offset`` is the message's place in the topic (strictly increasing per topic);
    ``delivery_count`` is 1 on the first delivery to this group, 2 on the next...;
    ``published_at`` is when it was published, on the engine's clock (epoch seconds).
    """

    topic: str
    group: str
    offset: int
    key: str | None
    body: Any
    headers: Mapping[str, str]
    published_at: float
    delivery_count: int
    token: str = field(repr=False)

    @property
    def receipt(self) -> TopicReceipt:
        """The group, offset and delivery token, to settle the message elsewhere."""
        return TopicReceipt(self.group, self.offset, self.token)


@dataclass(frozen=True, slots=True)
class TopicDeadLetter:
    """A message a group gave up on, with why; the topic and other groups keep theirs.

    ``reason`` says why (deliveries exhausted, undecodable body); ``last_error`` is
    the last error a consumer gave to ``nack``. ``body`` is decoded, or the raw
    bytes when the codec cannot decode it.
    """

    topic: str
    group: str
    offset: int
    key: str | None
    body: Any
    headers: Mapping[str, str]
    published_at: float
    delivery_count: int
    dead_at: float
    reason: str
    last_error: str | None
