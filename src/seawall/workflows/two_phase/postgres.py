"""The PostgreSQL decision log: one statement (one round trip, one commit) per decision.

Table (``seawall_`` is the default ``table_prefix``; ``schema`` qualifies it)::

    seawall_2pc_decisions  txid PRIMARY KEY, coordinator, decision, participants text[],
                           decided_at, completed_at

``decide`` is an ``INSERT ... ON CONFLICT DO NOTHING``: write-once, the first writer wins,
durable when it returns (with ``fsync`` and ``synchronous_commit`` on). Times come from
the server's clock unless a test injects one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from seawall.engines._base import engine_for
from seawall.workflows.saga._log import check_prefix
from seawall.workflows.two_phase._model import Decision, DecisionRecord
from seawall.workflows.two_phase._pg_base import PgConnections, check_schema, qualified

if TYPE_CHECKING:
    from seawall.clock import Clock
    from seawall.engines._base import Engine
    from seawall.engines.postgres import PostgresEngine

__all__ = ["PostgresDecisionLog"]

_COLUMNS = "txid, coordinator, decision, participants, decided_at, completed_at"
_NOW = "coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8)"


class PostgresDecisionLog:
    """A decision log in PostgreSQL; the table is created when the log is built."""

    kind: ClassVar[str] = "postgres"
    blocking: ClassVar[bool] = True

    def __init__(
        self,
        engine: Engine | str,
        *,
        table_prefix: str = "seawall_",
        schema: str | None = None,
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines.postgres import PostgresEngine

        opened, self._owns_engine = engine_for(
            cast("PostgresEngine | str", engine),
            PostgresEngine,
            "PostgresDecisionLog",
            "postgresql://",
        )
        self._engine: PostgresEngine = opened
        self.table_prefix = check_prefix(table_prefix)
        self.schema = check_schema(schema)
        self._clock: Callable[[], float] | None = None if clock is None else clock.now
        self._db = PgConnections(opened)
        table = self.table = qualified(self.schema, f"{self.table_prefix}2pc_decisions")
        self._index = f"{self.table_prefix}2pc_decisions_pending"
        self._decide = (
            f"WITH i AS (INSERT INTO {table} ({_COLUMNS})"
            f" VALUES (%(txid)s, %(coordinator)s, %(decision)s, %(participants)s, {_NOW}, NULL)"
            " ON CONFLICT (txid) DO NOTHING RETURNING decision)"
            f" SELECT decision FROM i UNION ALL SELECT decision FROM {table} WHERE txid = %(txid)s"
        )
        if create:
            self.create_tables()

    @property
    def engine(self) -> Engine:
        """The PostgreSQL engine the log lives in."""
        return self._engine

    def _parameters(self, **values: Any) -> dict[str, Any]:
        values["now"] = None if self._clock is None else self._clock()
        return values

    def create_tables(self) -> None:
        """Create the table and its index if they do not exist (safe to race: an advisory lock)."""
        from seawall.engines.postgres import postgres_errors

        with postgres_errors(self._engine.url), self._db.using() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " txid text PRIMARY KEY, coordinator text NOT NULL, decision text NOT NULL,"
                " participants text[] NOT NULL, decided_at float8 NOT NULL, completed_at float8)"
            )
            conn.execute(
                f'CREATE INDEX IF NOT EXISTS "{self._index}" ON {self.table}'
                " (coordinator, decided_at) WHERE completed_at IS NULL"
            )

    def drop_tables(self) -> None:
        """Drop the table and everything in it (tests, teardown)."""
        self._db.execute(f"DROP TABLE IF EXISTS {self.table}")

    def decide(
        self,
        txid: str,
        decision: Decision,
        *,
        coordinator: str,
        participants: Sequence[str],
    ) -> Decision:
        """Insert the decision unless one exists (one statement); return the stored one."""
        decision = Decision(decision)
        rows = self._db.execute(
            self._decide,
            self._parameters(
                txid=txid,
                coordinator=coordinator,
                decision=decision.value,
                participants=list(participants),
            ),
        )
        if not rows:  # a concurrent writer committed after this statement's snapshot
            stored = self.decision(txid)
            return decision if stored is None else stored
        return Decision(rows[0][0])

    def decision(self, txid: str) -> Decision | None:
        """The stored decision, or ``None``."""
        rows = self._db.execute(f"SELECT decision FROM {self.table} WHERE txid = %s", (txid,))
        return Decision(rows[0][0]) if rows else None

    def load(self, txid: str) -> DecisionRecord | None:
        """The record, or ``None``."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM {self.table} WHERE txid = %s", (txid,))
        return _record(rows[0]) if rows else None

    def complete(self, txids: Sequence[str]) -> None:
        """Mark the decisions acknowledged by every participant (one statement)."""
        if not txids:
            return
        self._db.execute(
            f"UPDATE {self.table} SET completed_at = {_NOW}"
            " WHERE txid = ANY(%(txids)s) AND completed_at IS NULL",
            self._parameters(txids=list(txids)),
        )

    def pending(self, coordinator: str, *, limit: int = 1000) -> list[DecisionRecord]:
        """Unacknowledged decisions of ``coordinator``, oldest first."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM {self.table} WHERE coordinator = %s AND completed_at IS NULL"
            " ORDER BY decided_at, txid LIMIT %s",
            (coordinator, max(0, int(limit))),
        )
        return [_record(row) for row in rows]

    def purge(self, before: float) -> int:
        """Delete completed records decided before ``before``."""
        rows = self._db.execute(
            f"WITH d AS (DELETE FROM {self.table} WHERE completed_at IS NOT NULL"
            " AND decided_at < %s RETURNING 1) SELECT count(*) FROM d",
            (before,),
        )
        return int(rows[0][0])

    def close(self) -> None:
        """Close the log's connections (and the engine, if the log opened it from a URL)."""
        self._db.close()
        if self._owns_engine:
            self._engine.close()

    def __repr__(self) -> str:
        return f"PostgresDecisionLog({self._engine!r}, table={self.table})"


def _record(row: Sequence[Any]) -> DecisionRecord:
    return DecisionRecord(
        txid=row[0],
        coordinator=row[1],
        decision=Decision(row[2]),
        participants=tuple(row[3]),
        decided_at=row[4],
        completed_at=row[5],
    )
