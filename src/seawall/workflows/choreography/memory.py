"""The in-memory tracker store: the test double, and a tracker that need not outlive the process.

Everything sits in dicts behind one mutex, so ``record`` is atomic like the SQL stores'
transactions. Two :class:`~seawall.engines.memory.MemoryEngine` objects opened on the
same ``memory://name`` share one store.
"""

from __future__ import annotations

import builtins
import dataclasses
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from seawall.clock import Clock
from seawall.errors import ConfigurationError
from seawall.workflows.choreography._model import (
    FlowRecord,
    FlowStatus,
    NewTrackedEvent,
    TrackedEvent,
)
from seawall.workflows.choreography._store import Advance, Recorded
from seawall.workflows.saga._log import time_source

if TYPE_CHECKING:
    from seawall.engines._base import Engine

__all__ = ["MemoryTrackerStore"]


@dataclass
class _Flows:
    """The shared state of one memory store."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: dict[str, FlowRecord] = field(default_factory=dict)
    events: dict[str, list[TrackedEvent]] = field(default_factory=dict)
    ids: dict[str, set[str]] = field(default_factory=dict)


class MemoryTrackerStore:
    """A tracker store in this process's memory (lost when it exits)."""

    kind: ClassVar[str] = "memory"

    def __init__(self, engine: Engine | str | None = None, *, clock: Clock | None = None) -> None:
        self._now = time_source(clock)
        self._engine: Engine | None = None
        if engine is None:
            self._flows = _Flows()
            return
        from seawall.engines import connect
        from seawall.engines.memory import MemoryEngine

        opened = connect(engine)
        if not isinstance(opened, MemoryEngine):
            raise ConfigurationError(
                f"MemoryTrackerStore needs a memory:// engine, got {opened!r}; use "
                "open_tracker_store()"
            )
        self._engine = opened
        self._flows = opened.namespace("seawall.workflows.choreography", _Flows)

    @property
    def engine(self) -> Engine | None:
        """The memory engine holding the store, if one was given."""
        return self._engine

    def record(self, event: NewTrackedEvent, advance: Advance) -> Recorded | None:
        """Append the event and store the folded state, unless it was recorded before."""
        flows = self._flows
        with flows.lock:
            ids = flows.ids.setdefault(event.correlation_id, set())
            if event.event_id in ids:
                return None
            now = self._now()
            row = flows.rows.get(event.correlation_id)
            state = advance(None if row is None else row.state)
            history = flows.events.setdefault(event.correlation_id, [])
            history.append(
                TrackedEvent(
                    len(history),
                    event.event_id,
                    event.type,
                    event.step,
                    event.causation_id,
                    event.data,
                    event.published_at,
                    now,
                )
            )
            ids.add(event.event_id)
            if row is None:
                updated = FlowRecord(
                    event.correlation_id, event.flow, state.status, state.reason, state, now, now, 1
                )
            else:
                updated = dataclasses.replace(
                    row,
                    status=state.status,
                    reason=state.reason,
                    state=state,
                    updated_at=now,
                    event_count=row.event_count + 1,
                )
            flows.rows[event.correlation_id] = updated
            return Recorded(
                None if row is None else row.status, None if row is None else row.state, updated
            )

    def load(self, correlation_id: str) -> FlowRecord | None:
        """The business transaction and its history."""
        flows = self._flows
        with flows.lock:
            row = flows.rows.get(correlation_id)
            if row is None:
                return None
            return dataclasses.replace(row, events=tuple(flows.events[correlation_id]))

    def list(
        self,
        *,
        status: Collection[FlowStatus] | None = None,
        flow: str | None = None,
        limit: int = 100,
    ) -> list[FlowRecord]:
        """Business transactions without history, most recently updated first."""
        wanted = None if status is None else {FlowStatus(value) for value in status}
        with self._flows.lock:
            rows = [
                row
                for row in self._flows.rows.values()
                if (wanted is None or row.status in wanted) and (flow is None or row.flow == flow)
            ]
        rows.sort(key=lambda row: (row.updated_at, row.correlation_id), reverse=True)
        return rows[: max(0, int(limit))]

    def mark_stuck(self, idle: float, limit: int = 1000) -> builtins.list[FlowRecord]:
        """Mark idle running or compensating transactions stuck; those newly marked."""
        flows = self._flows
        marked: list[FlowRecord] = []
        with flows.lock:
            now = self._now()
            candidates = sorted(flows.rows.values(), key=lambda row: row.updated_at)
            for row in candidates:
                if len(marked) >= limit:
                    break
                if row.status not in (FlowStatus.RUNNING, FlowStatus.COMPENSATING):
                    continue
                if now - row.updated_at < idle:
                    continue
                stuck = dataclasses.replace(row, status=FlowStatus.STUCK)
                flows.rows[row.correlation_id] = stuck
                marked.append(stuck)
        return marked

    def create_tables(self) -> None:
        """Nothing to create in memory."""

    def drop_tables(self) -> None:
        """Forget every business transaction."""
        with self._flows.lock:
            self._flows.rows.clear()
            self._flows.events.clear()
            self._flows.ids.clear()

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryTrackerStore({self._engine!r})"
