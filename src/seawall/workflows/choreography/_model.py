"""What flows between participants and what the tracker keeps: events, headers, flow records."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = [
    "CAUSATION_HEADER",
    "CORRELATION_HEADER",
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "FLOW_HEADER",
    "STEP_HEADER",
    "ChoreographyEvent",
    "FlowRecord",
    "FlowState",
    "FlowStatus",
    "NewTrackedEvent",
    "TrackedEvent",
    "derived_event_id",
    "encode_data",
    "event_from_message",
    "new_id",
]

FLOW_HEADER: Final = "seawall-flow"
"""The choreography's name."""
EVENT_TYPE_HEADER: Final = "seawall-event"
"""The event type, e.g. ``StockReserved``."""
EVENT_ID_HEADER: Final = "seawall-event-id"
"""The event's id: what inboxes and the tracker deduplicate on."""
CORRELATION_HEADER: Final = "seawall-correlation-id"
"""The business transaction's id, the same on every event of one flow instance."""
CAUSATION_HEADER: Final = "seawall-causation-id"
"""The id of the event whose handling emitted this one (absent on a start event)."""
STEP_HEADER: Final = "seawall-step"
"""The reaction or compensation that emitted the event (absent on a start event)."""


class FlowStatus(StrEnum):
    """Where a business transaction is, as the tracker derives it from its events."""

    RUNNING = "running"
    """Events are flowing forward."""
    COMPENSATING = "compensating"
    """A step failed: the completed steps' compensating events are awaited."""
    COMPLETED = "completed"
    """A terminal success event arrived."""
    COMPENSATED = "compensated"
    """After a failure every owed compensation arrived (and a terminal failure event, if declared)."""
    FAILED = "failed"
    """A compensation reported it could not undo its step: an operator must act."""
    STUCK = "stuck"
    """No event arrived within the tracker's deadline while running or compensating."""


UNFINISHED: Final = (FlowStatus.RUNNING, FlowStatus.COMPENSATING, FlowStatus.STUCK)
"""Statuses that a further event may still change (in the normal course)."""


def new_id() -> str:
    """A fresh random id (32 hex digits) for a start event or a correlation id."""
    return os.urandom(16).hex()


def derived_event_id(cause: str, reaction: str, index: int) -> str:
    """The id of the ``index``-th event ``reaction`` emits on ``cause``: the same on every rerun.

    A participant that crashes after publishing and before acknowledging handles the
    event again and emits events with the same ids, which inboxes and the tracker drop.
    """
    digest = hashlib.blake2b(f"{cause}\x1f{reaction}\x1f{index}".encode(), digest_size=16)
    return digest.hexdigest()


def encode_data(data: Any) -> str | None:
    """An event's data as JSON text for the tracker's history (``repr`` when not JSON)."""
    if data is None:
        return None
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return json.dumps(repr(data))


@dataclass(frozen=True, slots=True)
class FlowState:
    """What the tracker derived from a business transaction's events so far (a fold's value)."""

    status: FlowStatus = FlowStatus.RUNNING
    """The derived status (never ``STUCK``: being stuck is judged on time, not on events)."""
    completed: tuple[str, ...] = ()
    """Steps whose success event arrived, in order."""
    failed_step: str | None = None
    """The step whose failure turned the transaction back."""
    failure: str | None = None
    """The event that turned it back (a step's failure or a terminal failure event)."""
    owed: tuple[str, ...] = ()
    """Steps whose compensating event is awaited."""
    compensated: tuple[str, ...] = ()
    """Steps whose compensating event arrived, in order."""
    terminal: str | None = None
    """The terminal event that arrived, if any."""
    reason: str | None = None
    """Why it went back or failed."""
    anomalies: tuple[str, ...] = ()
    """Events that did not fit the definition (unknown, or after the end), as text."""

    def to_json(self) -> str:
        """The state as compact JSON text (stored by the tracker)."""
        return json.dumps(
            {
                "status": self.status.value,
                "completed": list(self.completed),
                "failed_step": self.failed_step,
                "failure": self.failure,
                "owed": list(self.owed),
                "compensated": list(self.compensated),
                "terminal": self.terminal,
                "reason": self.reason,
                "anomalies": list(self.anomalies),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> FlowState:
        """The state from its JSON text."""
        raw = json.loads(text)
        return cls(
            status=FlowStatus(raw["status"]),
            completed=tuple(raw["completed"]),
            failed_step=raw["failed_step"],
            failure=raw["failure"],
            owed=tuple(raw["owed"]),
            compensated=tuple(raw["compensated"]),
            terminal=raw["terminal"],
            reason=raw["reason"],
            anomalies=tuple(raw["anomalies"]),
        )


@dataclass(frozen=True, slots=True)
class ChoreographyEvent:
    """One event of a business transaction, as a handler receives it."""

    type: str
    data: Any
    flow: str
    correlation_id: str
    event_id: str
    causation_id: str | None = None
    step: str | None = None
    """The reaction that emitted it (``None`` for a start event)."""
    topic: str | None = None
    offset: int | None = None
    published_at: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    transaction: Transaction | None = None
    """The transaction the participant handles the event in (SQL inbox), or ``None``."""

    def event_headers(self) -> dict[str, str]:
        """The seawall headers that carry this event's identity."""
        headers = {
            FLOW_HEADER: self.flow,
            EVENT_TYPE_HEADER: self.type,
            EVENT_ID_HEADER: self.event_id,
            CORRELATION_HEADER: self.correlation_id,
        }
        if self.causation_id is not None:
            headers[CAUSATION_HEADER] = self.causation_id
        if self.step is not None:
            headers[STEP_HEADER] = self.step
        return headers


@dataclass(frozen=True, slots=True)
class NewTrackedEvent:
    """An event about to be recorded by the tracker; the store stamps it with its time."""

    correlation_id: str
    flow: str
    event_id: str
    type: str
    step: str | None = None
    causation_id: str | None = None
    data: str | None = None
    """JSON text, or ``None``."""
    published_at: float | None = None


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    """One recorded event of a business transaction."""

    seq: int
    """Position in the transaction's history as the tracker saw it, 0 first."""
    event_id: str
    type: str
    step: str | None
    causation_id: str | None
    data: str | None
    published_at: float | None
    recorded_at: float
    """When the tracker recorded it (the tracker store's clock)."""

    def value(self) -> Any:
        """``data`` decoded from JSON (``None`` when there is none)."""
        return None if self.data is None else json.loads(self.data)

    @property
    def at(self) -> float:
        """When it happened: its publication time, else when the tracker recorded it."""
        return self.recorded_at if self.published_at is None else self.published_at


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """A business transaction as the tracker knows it: status, derived state and history."""

    correlation_id: str
    flow: str
    status: FlowStatus
    reason: str | None
    state: FlowState
    started_at: float
    updated_at: float
    """When its last event was recorded (the tracker store's clock)."""
    event_count: int
    events: tuple[TrackedEvent, ...] = ()

    @property
    def finished(self) -> bool:
        """True once only an operator (or nothing) changes it."""
        return self.status not in UNFINISHED

    def timings(self) -> dict[str, float]:
        """Seconds from the event each step reacted to until the event it emitted, by step.

        A step that emitted several events is timed to its first one.
        """
        at = {event.event_id: event.at for event in self.events}
        timings: dict[str, float] = {}
        for event in self.events:
            if event.step is None or event.step in timings or event.causation_id not in at:
                continue
            timings[event.step] = event.at - at[event.causation_id]
        return timings

    @property
    def duration(self) -> float:
        """Seconds from its first event to its last (as recorded)."""
        if not self.events:
            return self.updated_at - self.started_at
        moments = [event.at for event in self.events]
        return max(moments) - min(moments)


def event_from_message(message: Any) -> ChoreographyEvent | None:
    """The choreography event a topic message carries, or ``None`` if it carries none.

    A message is an event when its headers name the flow, the event type, the event id
    and the correlation id (what :class:`~seawall.workflows.choreography.Participant`
    and :meth:`~seawall.workflows.choreography.Choreography.start` publish).
    """
    headers: Mapping[str, str] = getattr(message, "headers", None) or {}
    flow = headers.get(FLOW_HEADER)
    event_type = headers.get(EVENT_TYPE_HEADER)
    event_id = headers.get(EVENT_ID_HEADER)
    correlation_id = headers.get(CORRELATION_HEADER)
    if not (flow and event_type and event_id and correlation_id):
        return None
    return ChoreographyEvent(
        type=event_type,
        data=getattr(message, "body", None),
        flow=flow,
        correlation_id=correlation_id,
        event_id=event_id,
        causation_id=headers.get(CAUSATION_HEADER),
        step=headers.get(STEP_HEADER),
        topic=getattr(message, "topic", None),
        offset=getattr(message, "offset", None),
        published_at=getattr(message, "published_at", None),
        headers=headers,
    )
