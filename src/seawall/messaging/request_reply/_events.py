"""Typed events requesters and responders emit (only when someone listens)."""

from __future__ import annotations

from dataclasses import dataclass

from seawall.events import Event

__all__ = ["LateReplyDropped", "ReplyUndeliverable", "RequestTimedOut"]


@dataclass(frozen=True, slots=True)
class RequestTimedOut(Event):
    """A request got no reply within ``timeout`` seconds; ``source`` is the requester."""

    destination: str
    correlation_id: str
    timeout: float


@dataclass(frozen=True, slots=True)
class LateReplyDropped(Event):
    """A reply matched no waiting request (it came after its timeout) and was dropped."""

    destination: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class ReplyUndeliverable(Event):
    """A responder could not send a reply: the requester's reply queue is gone."""

    reply_to: str
    correlation_id: str
    error: str
