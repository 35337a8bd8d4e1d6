"""Choreography: event-driven sagas over topics, with a tracker that shows where each one stands.

::

    from seawall.workflows.choreography import Choreography, Compensation, Reaction

    order = Choreography(
        "order",
        [
            Reaction("reserve", on="OrderPlaced", emits="StockReserved", fails="OutOfStock",
                     compensation=Compensation("release", on="PaymentDeclined",
                                               emits="StockReleased")),
            Reaction("charge", on="StockReserved", emits="PaymentCharged",
                     fails="PaymentDeclined"),
            Reaction("confirm", on="PaymentCharged", emits="OrderConfirmed"),
        ],
        start="OrderPlaced",
        completed="OrderConfirmed",
    )

    @order.on("OrderPlaced")
    def reserve(event, emit):
        emit("StockReserved", {"order": event.data["order"]})

Each participant runs its reactions as one consumer group of the topic
(:class:`Participant`); a :class:`Tracker` records every event in its own group and
derives each business transaction's status. See ``docs/workflows/choreography.md``.
"""

from __future__ import annotations

from seawall.workflows.choreography._core import fold, is_stalled
from seawall.workflows.choreography._definition import (
    Choreography,
    Compensation,
    Emit,
    Handler,
    Reaction,
)
from seawall.workflows.choreography._errors import (
    ChoreographyError,
    FlowNotFoundError,
    UndeclaredEventError,
)
from seawall.workflows.choreography._events import (
    FlowCompensated,
    FlowCompensating,
    FlowCompleted,
    FlowFailed,
    FlowResumed,
    FlowStarted,
    FlowStuck,
    FlowTransition,
    ReactionDuplicateSkipped,
    ReactionFailed,
    ReactionHandled,
)
from seawall.workflows.choreography._loop import ConsumerLoop
from seawall.workflows.choreography._model import (
    CAUSATION_HEADER,
    CORRELATION_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    FLOW_HEADER,
    STEP_HEADER,
    ChoreographyEvent,
    FlowRecord,
    FlowState,
    FlowStatus,
    NewTrackedEvent,
    TrackedEvent,
    event_from_message,
)
from seawall.workflows.choreography._open import open_tracker_store
from seawall.workflows.choreography._participant import Participant, publish_events
from seawall.workflows.choreography._store import Recorded, TrackerStore
from seawall.workflows.choreography._tracker import TRACKER_GROUP, Tracker
from seawall.workflows.choreography.memory import MemoryTrackerStore
from seawall.workflows.choreography.postgres import PostgresTrackerStore
from seawall.workflows.choreography.sqlite import SqliteTrackerStore

__all__ = [
    "CAUSATION_HEADER",
    "CORRELATION_HEADER",
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "FLOW_HEADER",
    "STEP_HEADER",
    "TRACKER_GROUP",
    "Choreography",
    "ChoreographyError",
    "ChoreographyEvent",
    "Compensation",
    "ConsumerLoop",
    "Emit",
    "FlowCompensated",
    "FlowCompensating",
    "FlowCompleted",
    "FlowFailed",
    "FlowNotFoundError",
    "FlowRecord",
    "FlowResumed",
    "FlowStarted",
    "FlowState",
    "FlowStatus",
    "FlowStuck",
    "FlowTransition",
    "Handler",
    "MemoryTrackerStore",
    "NewTrackedEvent",
    "Participant",
    "PostgresTrackerStore",
    "Reaction",
    "ReactionDuplicateSkipped",
    "ReactionFailed",
    "ReactionHandled",
    "Recorded",
    "SqliteTrackerStore",
    "TrackedEvent",
    "Tracker",
    "TrackerStore",
    "UndeclaredEventError",
    "event_from_message",
    "fold",
    "is_stalled",
    "open_tracker_store",
    "publish_events",
]
