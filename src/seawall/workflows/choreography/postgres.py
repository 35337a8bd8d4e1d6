"""The PostgreSQL tracker store: many trackers (one consumer group) on one server.

Tables (``seawall_`` is the default ``table_prefix``; ``schema`` qualifies them)::

    seawall_choreography_flows   correlation_id PRIMARY KEY, flow, status, reason, state,
                                 started_at, updated_at, event_count
    seawall_choreography_events  (correlation_id, event_id) PRIMARY KEY, seq, type, step,
                                 causation_id, data, published_at, recorded_at

``record`` is one transaction on a pooled connection: it makes sure the flow row exists,
locks it (``FOR UPDATE``, so trackers of one group serialise on a business transaction
while others proceed), inserts the event unless it is known, and writes the folded
state. Times are the server's (``clock_timestamp()``) unless ``clock=`` replaces it in
tests, so trackers on hosts with skewed clocks judge "stuck" alike.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

from seawall.clock import Clock
from seawall.errors import ConfigurationError
from seawall.workflows.choreography._model import (
    FlowRecord,
    FlowState,
    FlowStatus,
    NewTrackedEvent,
    TrackedEvent,
)
from seawall.workflows.choreography._store import Advance, Recorded
from seawall.workflows.saga._log import check_prefix, time_source

if TYPE_CHECKING:
    from seawall.engines._base import Engine
    from seawall.engines.postgres import PostgresEngine

__all__ = ["PostgresTrackerStore"]

_ROW: Final = "correlation_id, flow, status, reason, state, started_at, updated_at, event_count"
_EVENT: Final = "seq, event_id, type, step, causation_id, data, published_at, recorded_at"
_NOW: Final = "coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8)"


class _Sql:
    """The statements of one store, with its (quoted) table names filled in."""

    def __init__(self, schema: str | None, prefix: str) -> None:
        def table(name: str) -> str:
            quoted = f'"{prefix}{name}"'
            return f'"{schema}".{quoted}' if schema else quoted

        flows = table("choreography_flows")
        events = table("choreography_events")
        self.lock_key = f"{schema or ''}.{prefix}choreography"
        self.create_tables = [
            *([f'CREATE SCHEMA IF NOT EXISTS "{schema}"'] if schema else []),
            f"CREATE TABLE IF NOT EXISTS {flows} ("
            " correlation_id text PRIMARY KEY,"
            " flow text NOT NULL,"
            " status text NOT NULL,"
            " reason text,"
            " state text NOT NULL,"
            " started_at float8 NOT NULL,"
            " updated_at float8 NOT NULL,"
            " event_count integer NOT NULL)",
            f'CREATE INDEX IF NOT EXISTS "{prefix}choreography_flows_updated"'
            f" ON {flows} (updated_at)",
            f"CREATE TABLE IF NOT EXISTS {events} ("
            " correlation_id text NOT NULL,"
            " event_id text NOT NULL,"
            " seq integer NOT NULL,"
            " type text NOT NULL,"
            " step text,"
            " causation_id text,"
            " data text,"
            " published_at float8,"
            " recorded_at float8 NOT NULL,"
            " PRIMARY KEY (correlation_id, event_id))",
        ]
        self.drop_tables = [f"DROP TABLE IF EXISTS {events}", f"DROP TABLE IF EXISTS {flows}"]
        self.ensure = (
            f"INSERT INTO {flows} ({_ROW}) VALUES (%(id)s, %(flow)s, 'running', NULL, '',"
            f" {_NOW}, {_NOW}, 0) ON CONFLICT (correlation_id) DO NOTHING"
        )
        self.lock = f"SELECT {_ROW}, {_NOW} FROM {flows} WHERE correlation_id = %(id)s FOR UPDATE"
        self.insert_event = (
            f"INSERT INTO {events} (correlation_id, {_EVENT}) VALUES (%(id)s, %(seq)s,"
            " %(event_id)s, %(type)s, %(step)s, %(causation_id)s, %(data)s, %(published_at)s,"
            " %(at)s) ON CONFLICT DO NOTHING RETURNING 1"
        )
        self.update_flow = (
            f"UPDATE {flows} SET status = %(status)s, reason = %(reason)s, state = %(state)s,"
            " updated_at = %(at)s, event_count = event_count + 1,"
            " started_at = CASE WHEN event_count = 0 THEN %(at)s ELSE started_at END"
            f" WHERE correlation_id = %(id)s RETURNING {_ROW}"
        )
        self.row = f"SELECT {_ROW} FROM {flows} WHERE correlation_id = %(id)s AND event_count > 0"
        self.history = f"SELECT {_EVENT} FROM {events} WHERE correlation_id = %(id)s ORDER BY seq"
        self.list = (
            f"SELECT {_ROW} FROM {flows} WHERE event_count > 0"
            " AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))"
            " AND (%(flow)s::text IS NULL OR flow = %(flow)s::text)"
            " ORDER BY updated_at DESC, correlation_id DESC LIMIT %(limit)s"
        )
        self.mark_stuck = (
            f"UPDATE {flows} SET status = 'stuck' WHERE correlation_id IN ("
            f" SELECT correlation_id FROM {flows} WHERE status IN ('running', 'compensating')"
            f" AND event_count > 0 AND updated_at <= {_NOW} - %(idle)s::float8"
            " ORDER BY updated_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_ROW}"
        )


class PostgresTrackerStore:
    """A tracker store in PostgreSQL; tables are created when the store is built."""

    kind: ClassVar[str] = "postgres"

    def __init__(
        self,
        engine: Engine | str,
        *,
        table_prefix: str = "seawall_",
        schema: str | None = None,
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines._base import engine_for
        from seawall.engines.postgres import PostgresEngine

        opened: Any
        opened, self._owns_engine = engine_for(
            engine, PostgresEngine, "PostgresTrackerStore", "postgresql://"
        )
        self._engine: PostgresEngine = opened
        self.table_prefix = check_prefix(table_prefix)
        if schema is not None:
            check_prefix(schema)
            if not schema:
                raise ConfigurationError("schema='' is invalid: pass None or a schema name")
        self.schema = schema
        self._clock = None if clock is None else time_source(clock)
        self._sql = _Sql(schema, self.table_prefix)
        if create:
            self.create_tables()

    @property
    def engine(self) -> Engine:
        """The PostgreSQL engine the store lives in."""
        return self._engine

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()

    def create_tables(self) -> None:
        """Create the tables and index if they do not exist (safe to race: an advisory lock)."""
        self._engine.run_schema(self._sql.create_tables, self._sql.lock_key)

    def drop_tables(self) -> None:
        """Drop the store's tables and everything in them (tests, teardown)."""
        self._engine.run_schema(self._sql.drop_tables)

    def record(self, event: NewTrackedEvent, advance: Advance) -> Recorded | None:
        """Append the event and store the folded state in one transaction (duplicates: ``None``)."""
        from seawall.engines.postgres import postgres_errors

        sql = self._sql
        parameters: dict[str, Any] = {
            "now": self._now(),
            "id": event.correlation_id,
            "flow": event.flow,
        }
        with (
            postgres_errors(self._engine.url),
            self._engine.connection() as conn,
            conn.transaction(),
        ):
            conn.execute(sql.ensure, parameters)
            row = conn.execute(sql.lock, parameters).fetchone()
            if row is None:  # pragma: no cover - ensured just above, in this transaction
                raise ConfigurationError(f"flow row {event.correlation_id!r} vanished")
            now = float(row[8])
            first = int(row[7]) == 0
            inserted = conn.execute(
                sql.insert_event,
                {
                    "id": event.correlation_id,
                    "seq": int(row[7]),
                    "event_id": event.event_id,
                    "type": event.type,
                    "step": event.step,
                    "causation_id": event.causation_id,
                    "data": event.data,
                    "published_at": event.published_at,
                    "at": now,
                },
            ).fetchone()
            if inserted is None:
                return None
            previous = None if first else _record(row, ())
            state = advance(None if previous is None else previous.state)
            changed = conn.execute(
                sql.update_flow,
                {
                    "status": state.status.value,
                    "reason": state.reason,
                    "state": state.to_json(),
                    "at": now,
                    "id": event.correlation_id,
                },
            ).fetchone()
            if changed is None:  # pragma: no cover - the row is locked by this transaction
                raise ConfigurationError(f"flow row {event.correlation_id!r} vanished")
        return Recorded(
            None if previous is None else previous.status,
            None if previous is None else previous.state,
            _record(changed, ()),
        )

    def load(self, correlation_id: str) -> FlowRecord | None:
        """The business transaction and its history, read in one repeatable-read snapshot."""
        from seawall.engines.postgres import postgres_errors

        parameters = {"id": correlation_id}
        with (
            postgres_errors(self._engine.url),
            self._engine.connection() as conn,
            conn.transaction(),
        ):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute(self._sql.row, parameters).fetchone()
            if row is None:
                return None
            history = conn.execute(self._sql.history, parameters).fetchall()
        return _record(row, history)

    def list(
        self,
        *,
        status: Collection[FlowStatus] | None = None,
        flow: str | None = None,
        limit: int = 100,
    ) -> list[FlowRecord]:
        """Business transactions without history, most recently updated first."""
        from seawall.engines.postgres import postgres_errors

        parameters = {
            "statuses": None if status is None else [FlowStatus(value).value for value in status],
            "flow": flow,
            "limit": max(0, int(limit)),
        }
        with postgres_errors(self._engine.url), self._engine.connection() as conn:
            rows = conn.execute(self._sql.list, parameters).fetchall()
        return [_record(row, ()) for row in rows]

    def mark_stuck(self, idle: float, limit: int = 1000) -> builtins.list[FlowRecord]:
        """Mark idle running or compensating transactions stuck; those newly marked."""
        from seawall.engines.postgres import postgres_errors

        parameters = {"now": self._now(), "idle": float(idle), "limit": int(limit)}
        with postgres_errors(self._engine.url), self._engine.connection() as conn:
            rows = conn.execute(self._sql.mark_stuck, parameters).fetchall()
        return sorted((_record(row, ()) for row in rows), key=lambda record: record.updated_at)

    def close(self) -> None:
        """Close the engine if the store opened it from a URL."""
        if self._owns_engine:
            self._engine.close()

    def __repr__(self) -> str:
        return f"PostgresTrackerStore({self._engine!r}, table_prefix={self.table_prefix!r})"


def _record(row: Sequence[Any], history: Sequence[Sequence[Any]]) -> FlowRecord:
    return FlowRecord(
        correlation_id=row[0],
        flow=row[1],
        status=FlowStatus(row[2]),
        reason=row[3],
        state=FlowState.from_json(row[4]),
        started_at=row[5],
        updated_at=row[6],
        event_count=int(row[7]),
        events=tuple(TrackedEvent(*event) for event in history),
    )
