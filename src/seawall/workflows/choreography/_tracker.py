"""The tracker: its own consumer group, recording every event and deriving each flow's state.

::

    tracker = Tracker("sqlite:///shop.db", [order_flow], stuck_after=300.0)
    tracker.consumer(topic).start()          # records every event of every business transaction
    tracker.show(order_id).status            # running, compensating, completed, compensated...

A choreographed flow has no orchestrator that knows where it stands; the tracker
gives it one view: the events of each correlation id, in order, the status folded
from them (:func:`~seawall.workflows.choreography.fold`), timings per step, and
``stuck`` for a transaction that heard nothing for ``stuck_after`` seconds.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any, Literal

from seawall.clock import Clock
from seawall.engines import Engine
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.workflows.choreography._core import fold
from seawall.workflows.choreography._definition import Choreography
from seawall.workflows.choreography._errors import FlowNotFoundError
from seawall.workflows.choreography._events import (
    FlowCompensated,
    FlowCompensating,
    FlowCompleted,
    FlowFailed,
    FlowResumed,
    FlowStarted,
    FlowStuck,
)
from seawall.workflows.choreography._loop import ConsumerLoop, GroupLike
from seawall.workflows.choreography._model import (
    ChoreographyEvent,
    FlowRecord,
    FlowStatus,
    NewTrackedEvent,
    encode_data,
    event_from_message,
)
from seawall.workflows.choreography._open import open_tracker_store
from seawall.workflows.choreography._store import Recorded, TrackerStore

if TYPE_CHECKING:
    from seawall.messaging.topic import Topic

__all__ = ["TRACKER_GROUP", "Tracker"]

TRACKER_GROUP = "seawall-tracker"
"""The consumer group a tracker reads a topic with, unless told otherwise."""


class Tracker:
    """Records the events of business transactions and derives their state, history and timings.

    ``store`` is a :class:`TrackerStore`, an engine or a URL (memory, SQLite,
    PostgreSQL); ``flows`` are the definitions it knows (events of other flows are
    recorded, their status stays ``running``). ``stuck_after`` seconds without an event
    make a running or compensating transaction ``stuck`` at the next :meth:`sweep`.
    ``clock`` is the store's time source (a manual clock in tests); ``keep_data=False``
    stores events without their data.
    """

    def __init__(
        self,
        store: TrackerStore | Engine | str,
        flows: Iterable[Choreography] = (),
        *,
        name: str = "tracker",
        stuck_after: float = 300.0,
        clock: Clock | None = None,
        keep_data: bool = True,
        **store_options: Any,
    ) -> None:
        if clock is not None and not isinstance(store, str | Engine):
            raise ConfigurationError(
                "clock= goes to the store's constructor when you pass a ready store"
            )
        if clock is not None:
            store_options["clock"] = clock
        self.store = open_tracker_store(store, **store_options)
        self.flows: dict[str, Choreography] = {}
        for flow in flows:
            if not isinstance(flow, Choreography):
                raise ConfigurationError(
                    f"Tracker flows must be Choreography objects, got {flow!r}"
                )
            if flow.name in self.flows:
                raise ConfigurationError(f"Tracker got two flows named {flow.name!r}")
            self.flows[flow.name] = flow
        if (
            isinstance(stuck_after, bool)
            or not isinstance(stuck_after, int | float)
            or not 0 < stuck_after < 1e9
        ):
            raise ConfigurationError(
                f"Tracker(stuck_after={stuck_after!r}) is invalid: pass seconds > 0 (longer than "
                "the slowest step)"
            )
        self.name = name
        self.stuck_after = float(stuck_after)
        self.keep_data = keep_data
        self.events = EventHub(parent=hub)

    # ----------------------------------------------------------------- recording

    def track(self, event: ChoreographyEvent) -> Recorded | None:
        """Record one event and fold it into its transaction's state; ``None`` for a duplicate."""
        flow = self.flows.get(event.flow)
        new = NewTrackedEvent(
            correlation_id=event.correlation_id,
            flow=event.flow,
            event_id=event.event_id,
            type=event.type,
            step=event.step,
            causation_id=event.causation_id,
            data=encode_data(event.data) if self.keep_data else None,
            published_at=event.published_at,
        )
        recorded = self.store.record(new, lambda state: fold(flow, state, event.type))
        if recorded is not None and self.events.active:
            self._announce(recorded, event)
        return recorded

    def track_message(self, message: Any) -> Recorded | None:
        """Record the event a topic message carries (messages without one are ignored)."""
        event = event_from_message(message)
        if event is None:
            return None
        return self.track(event)

    def _announce(self, recorded: Recorded, event: ChoreographyEvent) -> None:
        record = recorded.record
        source, flow, cid = self.name, record.flow, record.correlation_id
        before = None if recorded.previous_state is None else recorded.previous_state.status
        after = record.state.status
        if recorded.previous is None:
            self.events.emit(FlowStarted(source, flow, cid, event.type))
        elif recorded.previous is FlowStatus.STUCK:
            self.events.emit(FlowResumed(source, flow, cid, after.value, event.type))
        if after is before:
            return
        if after is FlowStatus.COMPLETED:
            self.events.emit(FlowCompleted(source, flow, cid, event.type, self._duration(record)))
        elif after is FlowStatus.COMPENSATING:
            reason = record.state.reason or event.type
            self.events.emit(FlowCompensating(source, flow, cid, reason, record.state.owed))
        elif after is FlowStatus.COMPENSATED:
            reason = record.state.reason or event.type
            self.events.emit(FlowCompensated(source, flow, cid, reason, self._duration(record)))
        elif after is FlowStatus.FAILED:
            self.events.emit(FlowFailed(source, flow, cid, record.state.reason or event.type))

    @staticmethod
    def _duration(record: FlowRecord) -> float:
        return record.updated_at - record.started_at

    def sweep(self) -> builtins.list[FlowRecord]:
        """Mark ``stuck`` the transactions idle for ``stuck_after`` s; those newly marked."""
        stuck = self.store.mark_stuck(self.stuck_after)
        if stuck and self.events.active:
            for record in stuck:
                self.events.emit(
                    FlowStuck(
                        self.name,
                        record.flow,
                        record.correlation_id,
                        record.state.status.value,
                        self.stuck_after,
                    )
                )
        return stuck

    # ----------------------------------------------------------------- consuming

    def consumer(
        self,
        topic: Topic | GroupLike,
        *,
        group: str = TRACKER_GROUP,
        start: Literal["earliest", "latest"] | int = "earliest",
        batch: int = 64,
        poll: float = 0.5,
        sweep_every: float = 5.0,
        clock: Clock | None = None,
        **group_options: Any,
    ) -> ConsumerLoop:
        """A loop that records every event of ``topic`` through the tracker's own consumer group.

        ``topic`` is a :class:`~seawall.messaging.topic.Topic` (the group ``group`` is
        opened from ``start``, the oldest retained message by default) or a ready consumer
        group. Every ``sweep_every`` seconds (``clock``'s) the loop also runs :meth:`sweep`.
        """
        if hasattr(topic, "group"):
            consumer_group: GroupLike = topic.group(group, start=start, **group_options)
        else:
            consumer_group = topic
        from seawall.clock import SYSTEM_CLOCK

        timer = SYSTEM_CLOCK if clock is None else clock
        last = [timer.now()]

        def tick() -> None:
            now = timer.now()
            if now - last[0] >= sweep_every:
                last[0] = now
                self.sweep()

        def handle(message: Any) -> bool:
            self.track_message(message)
            return False

        return ConsumerLoop(
            consumer_group,
            handle,
            name=f"{self.name}:{group}",
            batch=batch,
            poll=poll,
            clock=clock,
            tick=tick,
        )

    # ----------------------------------------------------------------- querying

    def show(self, correlation_id: str) -> FlowRecord:
        """The business transaction with its whole history; :class:`FlowNotFoundError` if unknown."""
        record = self.store.load(correlation_id)
        if record is None:
            raise FlowNotFoundError(correlation_id)
        return record

    def get(self, correlation_id: str) -> FlowRecord | None:
        """The business transaction with its history, or ``None``."""
        return self.store.load(correlation_id)

    def list(
        self,
        *,
        status: Collection[FlowStatus] | None = None,
        flow: str | None = None,
        limit: int = 100,
    ) -> list[FlowRecord]:
        """Business transactions (without history), most recently updated first."""
        return self.store.list(status=status, flow=flow, limit=limit)

    def close(self) -> None:
        """Release the store's resources (not an engine passed in)."""
        self.store.close()

    def __repr__(self) -> str:
        return f"Tracker({self.store!r}, flows={sorted(self.flows)})"
