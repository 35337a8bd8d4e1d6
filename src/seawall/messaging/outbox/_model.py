"""The records the outbox stores and hands out, and the checks on what callers pass in."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from seawall.errors import ConfigurationError

__all__ = [
    "NO_HEADERS",
    "DeadMessage",
    "NewMessage",
    "OutboxMessage",
    "OutboxStats",
    "StoredDead",
    "StoredMessage",
    "check_delay",
    "check_headers",
    "check_key",
    "check_topic",
    "decode_headers",
    "encode_headers",
]

MAX_NAME = 200
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One encoded message on its way into the outbox table."""

    id: str
    topic: str
    key: str | None
    body: bytes
    headers: str | None
    """JSON object text, or ``None`` when there are no headers."""
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A claimed row as a store returns it (body still encoded)."""

    position: int
    id: str
    topic: str
    key: str | None
    body: bytes
    headers: str | None
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message the relay hands to a publisher.

    ``id`` is unique and stable across re-publishing: consumers deduplicate on it (see
    :class:`seawall.messaging.inbox.Inbox`). ``position`` orders messages within the
    outbox; ``attempts`` counts the relay's claims of it, this one included.
    """

    id: str
    topic: str
    key: str | None
    body: Any
    headers: Mapping[str, str]
    position: int
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class StoredDead:
    """A message set aside after ``max_attempts`` failures (body still encoded)."""

    position: int
    id: str
    topic: str
    key: str | None
    body: bytes
    headers: str | None
    created_at: float
    attempts: int
    dead_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """A message the relay gave up on; ``body`` is decoded (raw bytes if it cannot be)."""

    id: str
    topic: str
    key: str | None
    body: Any
    headers: Mapping[str, str]
    position: int
    created_at: float
    attempts: int
    dead_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """How many messages the outbox holds in each state, counted at one instant.

    ``ready``: waiting for a relay; ``in_flight``: claimed by a relay right now;
    ``delayed``: waiting for a send delay or a retry after a failed publish;
    ``sent``: published and kept until retention cleanup; ``dead``: set aside.
    ``oldest_pending_age``: seconds since the oldest unsent message was written
    (the relay's lag), or ``None`` when nothing is pending.
    """

    ready: int
    in_flight: int
    delayed: int
    sent: int
    dead: int
    oldest_pending_age: float | None

    @property
    def pending(self) -> int:
        """Messages not yet published (ready, in flight or delayed)."""
        return self.ready + self.in_flight + self.delayed


def check_topic(topic: object) -> str:
    """A topic: a non-empty string of at most 200 characters."""
    if not isinstance(topic, str) or not 0 < len(topic) <= MAX_NAME or "\x00" in topic:
        raise ConfigurationError(
            f"topic={topic!r} must be a non-empty string of at most {MAX_NAME} characters "
            "naming where the message goes (e.g. 'orders')"
        )
    return topic


def check_key(key: object) -> str | None:
    """An ordering key: ``None`` (no order) or a non-empty string of at most 200 characters."""
    if key is None:
        return None
    if not isinstance(key, str) or not 0 < len(key) <= MAX_NAME or "\x00" in key:
        raise ConfigurationError(
            f"key={key!r} must be None or a non-empty string of at most {MAX_NAME} characters "
            "(the aggregate id whose messages keep their order)"
        )
    return key


def check_delay(delay: object) -> float:
    """A send delay: seconds >= 0."""
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or delay < 0
    ):
        raise ConfigurationError(f"delay={delay!r} must be seconds >= 0")
    return float(delay)


def check_headers(headers: object) -> Mapping[str, str] | None:
    """A mapping of str to str, or ``None``; an empty mapping counts as ``None``."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise ConfigurationError(
            f"headers={headers!r} must be a mapping of str to str, e.g. {{'trace-id': 'abc'}}"
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigurationError(
                f"headers must map str to str; {name!r}: {value!r} is "
                f"{type(name).__name__}: {type(value).__name__}"
            )
    return headers or None


def encode_headers(headers: Mapping[str, str] | None) -> str | None:
    """Headers as compact JSON text (``None`` for none)."""
    if not headers:
        return None
    return json.dumps(dict(headers), separators=(",", ":"), ensure_ascii=False)


def decode_headers(text: str | None) -> Mapping[str, str]:
    """Stored header text back as a read-only mapping."""
    if not text:
        return NO_HEADERS
    return MappingProxyType(json.loads(text))
