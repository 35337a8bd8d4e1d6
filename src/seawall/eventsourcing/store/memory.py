"""The in-memory event store: process-local, nothing to install; also the test double.

State lives in the engine (``memory://name`` engines with the same name share it),
one namespace per ``table_prefix``. Events are kept encoded, exactly as the SQL
engines store them, so serialisation errors, upcasting and lazy decoding behave the
same everywhere. There are no transactions: ``transaction=`` is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.engines.memory import MemoryEngine
from seawall.eventsourcing.store._base import (
    Batch,
    EventStoreBase,
    SnapshotRow,
    ThreadedAsyncEventStore,
)
from seawall.eventsourcing.store._model import (
    AppendResult,
    StoredRow,
    metadata_json,
    now_micros,
)
from seawall.eventsourcing.store._store import check_version

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction
    from seawall.eventsourcing.store._upcasting import EventTypes

__all__ = ["AsyncMemoryEventStore", "MemoryEventStore"]


class _MemoryState:
    """Every stream, the global log, snapshots and checkpoints of one store."""

    __slots__ = ("checkpoints", "lock", "log", "snapshots", "streams")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[StoredRow] = []
        self.streams: dict[str, list[StoredRow]] = {}
        self.snapshots: dict[str, SnapshotRow] = {}
        self.checkpoints: dict[str, int] = {}


class MemoryEventStore(EventStoreBase):
    """An event store in this process's memory; positions are 1, 2, 3, ... with no gaps."""

    supports_transactions: ClassVar[bool] = False
    kind: ClassVar[str] = "memory"

    def __init__(
        self,
        engine: Engine | str = "memory://",
        *,
        types: EventTypes | None = None,
        table_prefix: str = "seawall_",
    ) -> None:
        from seawall.engines import connect

        engine = connect(engine)
        super().__init__(engine, types=types, table_prefix=table_prefix)
        self._state: _MemoryState = self._memory_engine.namespace(
            f"eventstore:{table_prefix}", _MemoryState
        )

    @property
    def _memory_engine(self) -> MemoryEngine:
        engine = self.engine
        if not isinstance(engine, MemoryEngine):  # pragma: no cover - checked by the base
            raise TypeError(engine)
        return engine

    def _append(self, batch: Batch, transaction: Transaction | None) -> list[AppendResult]:
        state = self._state
        timestamp = now_micros()
        with state.lock:
            streams = state.streams
            heads = []
            for stream_id, expected, _ in batch:
                events = streams.get(stream_id)
                current = events[-1][2] if events else 0
                check_version(stream_id, expected, current)
                heads.append(current)
            log = state.log
            results = []
            for (stream_id, _, encoded), version in zip(batch, heads, strict=True):
                if not encoded:
                    results.append(AppendResult(stream_id, version, 0))
                    continue
                rows = streams.setdefault(stream_id, [])
                for event in encoded:
                    version += 1
                    row = (
                        len(log) + 1,
                        stream_id,
                        version,
                        event[0],
                        event[1],
                        event[2],
                        metadata_json(event, timestamp),
                    )
                    log.append(row)
                    rows.append(row)
                results.append(AppendResult(stream_id, version, len(log)))
            return results

    def _select_stream(
        self,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        with self._state.lock:
            rows = self._state.streams.get(stream_id)
            if not rows:
                return []
            if backwards:
                top = len(rows) if from_version is None else min(from_version, len(rows))
                start = 0 if limit is None else max(0, top - limit)
                return rows[start:top][::-1]
            first = 0 if from_version is None else max(0, from_version - 1)
            return rows[first:] if limit is None else rows[first : first + limit]

    def _select_version(self, stream_id: str, transaction: Transaction | None) -> int:
        with self._state.lock:
            rows = self._state.streams.get(stream_id)
            return rows[-1][2] if rows else 0

    def _select_all(
        self,
        after: int,
        limit: int,
        stored_types: tuple[str, ...] | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        with self._state.lock:
            log = self._state.log
            if stored_types is None:
                return log[after : after + limit]
            wanted: Collection[str] = set(stored_types)
            found = []
            for index in range(after, len(log)):
                row = log[index]
                if row[3] in wanted:
                    found.append(row)
                    if len(found) == limit:
                        break
            return found

    def _put_snapshot(
        self,
        stream_id: str,
        version: int,
        schema_version: int,
        data_json: str,
        transaction: Transaction | None,
    ) -> None:
        with self._state.lock:
            existing = self._state.snapshots.get(stream_id)
            if existing is None or version >= existing[0]:
                self._state.snapshots[stream_id] = (
                    version,
                    schema_version,
                    data_json,
                    now_micros(),
                )

    def _get_snapshot(self, stream_id: str, transaction: Transaction | None) -> SnapshotRow | None:
        with self._state.lock:
            return self._state.snapshots.get(stream_id)

    def _get_checkpoint(self, name: str, transaction: Transaction | None) -> int | None:
        with self._state.lock:
            return self._state.checkpoints.get(name)

    def _put_checkpoint(self, name: str, position: int, transaction: Transaction | None) -> None:
        with self._state.lock:
            self._state.checkpoints[name] = position

    def create_tables(self) -> None:
        """Nothing to create: the state lives in the engine."""

    def drop_tables(self) -> None:
        """Forget every event, snapshot and checkpoint of this store."""
        with self._state.lock:
            self._state.log.clear()
            self._state.streams.clear()
            self._state.snapshots.clear()
            self._state.checkpoints.clear()


class AsyncMemoryEventStore(ThreadedAsyncEventStore):
    """The asyncio API over :class:`MemoryEventStore` (calls run inline: no I/O)."""

    def __init__(
        self,
        engine: Engine | str = "memory://",
        *,
        types: EventTypes | None = None,
        table_prefix: str = "seawall_",
    ) -> None:
        super().__init__(
            MemoryEventStore(engine, types=types, table_prefix=table_prefix), offload=False
        )
