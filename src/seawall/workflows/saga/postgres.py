"""The PostgreSQL saga log: one statement (one round trip, one commit) per saga write.

Tables (``seawall_`` is the default ``table_prefix``; ``schema`` qualifies them)::

    seawall_sagas         id PRIMARY KEY, name, status, plan, input, reason, created_at,
                          updated_at, deadline_at, owner, lease_until, cancel_requested
    seawall_saga_entries  (saga_id, seq) PRIMARY KEY, kind, step, data, at

Writes run on pooled autocommit connections, each as a single statement whose
data-modifying CTEs update the saga row and insert its entries together; inside a
caller's :class:`~seawall.engines._base.Transaction` they commit with it instead.
Leases and deadlines are judged on the server's clock (``clock_timestamp()``), so
orchestrators on hosts with skewed clocks agree. A claim takes one row with ``FOR
UPDATE SKIP LOCKED``: concurrent resumers never take the same saga and never wait for
each other. Durability is the server's: with ``fsync`` and ``synchronous_commit`` on,
every returned write is on disk.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

from seawall.clock import Clock
from seawall.errors import ConfigurationError
from seawall.workflows.saga._log import check_prefix, decode_plan, encode_plan, time_source
from seawall.workflows.saga._model import (
    UNFINISHED,
    EntryKind,
    NewEntry,
    SagaEntry,
    SagaRecord,
    SagaStatus,
    Signals,
)

if TYPE_CHECKING:
    import psycopg

    from seawall.engines._base import Engine, Transaction
    from seawall.engines.postgres import PostgresEngine

__all__ = ["PostgresSagaLog"]

_ROW = (
    "id, name, status, plan, input, reason, created_at, updated_at, deadline_at, owner,"
    " lease_until, cancel_requested"
)
_NOW = (
    "t AS (SELECT coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp())::float8) AS now)"
)
_UNNEST = (
    "unnest(%(seqs)s::int[], %(kinds)s::text[], %(steps)s::text[], %(data)s::text[])"
    " AS u(seq, kind, step, data)"
)
_NO_ROWS = (
    "(SELECT NULL::int, NULL::text, NULL::text, NULL::text WHERE false) AS u(seq, kind, step, data)"
)
_MAX_VALUES = 4
"""Up to this many entries go as scalar parameters (cheaper than arrays); more as arrays."""


def _rows(count: int) -> str:
    """The entries' row source for ``count`` entries."""
    if count == 0:
        return _NO_ROWS
    if count > _MAX_VALUES:
        return _UNNEST
    rows = ", ".join(
        f"(%(q{n})s::int, %(k{n})s::text, %(s{n})s::text, %(d{n})s::text)" for n in range(count)
    )
    return f"(VALUES {rows}) AS u(seq, kind, step, data)"


def _entry_parameters(entries: Sequence[NewEntry]) -> dict[str, Any]:
    if len(entries) > _MAX_VALUES:
        return {
            "seqs": [entry.seq for entry in entries],
            "kinds": [entry.kind.value for entry in entries],
            "steps": [entry.step for entry in entries],
            "data": [entry.data for entry in entries],
        }
    parameters: dict[str, Any] = {}
    for n, entry in enumerate(entries):
        parameters[f"q{n}"] = entry.seq
        parameters[f"k{n}"] = entry.kind.value
        parameters[f"s{n}"] = entry.step
        parameters[f"d{n}"] = entry.data
    return parameters


_UNFINISHED_SQL: Final = ", ".join(f"'{status.value}'" for status in UNFINISHED)


class _Sql:
    """The statements of one log, with its (quoted) table names filled in."""

    def with_entries(self, statement: str, count: int) -> str:
        """``create``, ``append`` or ``transition`` for ``count`` entries (cached)."""
        key = (statement, min(count, _MAX_VALUES + 1))
        sql = self._cache.get(key)
        if sql is None:
            template: str = getattr(self, f"_{statement}")
            sql = self._cache[key] = template.replace("{rows}", _rows(count))
        return sql

    def __init__(self, schema: str | None, prefix: str) -> None:
        def table(name: str) -> str:
            quoted = f'"{prefix}{name}"'
            return f'"{schema}".{quoted}' if schema else quoted

        sagas = table("sagas")
        entries = table("saga_entries")
        self.lock_key = f"{schema or ''}.{prefix}sagas"
        self._cache: dict[tuple[str, int], str] = {}
        self.create_tables = [
            f"CREATE TABLE IF NOT EXISTS {sagas} ("
            " id text PRIMARY KEY,"
            " name text NOT NULL,"
            " status text NOT NULL,"
            " plan text NOT NULL,"
            " input text NOT NULL,"
            " reason text,"
            " created_at float8 NOT NULL,"
            " updated_at float8 NOT NULL,"
            " deadline_at float8,"
            " owner text,"
            " lease_until float8,"
            " cancel_requested boolean NOT NULL DEFAULT false) WITH (fillfactor = 80)",
            f'CREATE INDEX IF NOT EXISTS "{prefix}sagas_unfinished" ON {sagas} (status)'
            f" WHERE status IN ({_UNFINISHED_SQL})",
            f"CREATE TABLE IF NOT EXISTS {entries} ("
            " saga_id text NOT NULL,"
            " seq integer NOT NULL,"
            " kind text NOT NULL,"
            " step text,"
            " data text,"
            " at float8 NOT NULL,"
            " PRIMARY KEY (saga_id, seq))",
        ]
        self.drop_tables = [f"DROP TABLE IF EXISTS {entries}", f"DROP TABLE IF EXISTS {sagas}"]
        self._create = (
            f"WITH {_NOW}, s AS ("
            f" INSERT INTO {sagas} ({_ROW})"
            " SELECT %(id)s, %(name)s, 'running', %(plan)s, %(input)s, NULL, t.now, t.now,"
            " t.now + %(deadline)s::float8, %(owner)s::text,"
            " CASE WHEN %(owner)s::text IS NULL THEN NULL ELSE t.now + %(lease)s::float8 END,"
            " false FROM t ON CONFLICT (id) DO NOTHING RETURNING id, created_at"
            f"), e AS (INSERT INTO {entries} (saga_id, seq, kind, step, data, at)"
            f" SELECT s.id, u.seq, u.kind, u.step, u.data, s.created_at FROM s, {{rows}})"
            " SELECT count(*) FROM s"
        )
        self._append = (
            f"WITH {_NOW}, s AS ("
            f" UPDATE {sagas} SET status = %(status)s, reason = %(reason)s, updated_at = t.now,"
            " owner = CASE WHEN %(release)s THEN NULL ELSE owner END,"
            " lease_until = CASE WHEN %(release)s THEN NULL ELSE t.now + %(lease)s::float8 END"
            " FROM t WHERE id = %(id)s AND owner = %(owner)s"
            " RETURNING cancel_requested, deadline_at IS NOT NULL AND deadline_at <= t.now AS late,"
            " t.now AS now"
            f"), e AS (INSERT INTO {entries} (saga_id, seq, kind, step, data, at)"
            f" SELECT %(id)s, u.seq, u.kind, u.step, u.data, s.now FROM s, {{rows}})"
            " SELECT cancel_requested, late FROM s"
        )
        self.claim = (
            f"WITH {_NOW}, c AS ("
            f" SELECT id FROM {sagas} WHERE status IN ({_UNFINISHED_SQL})"
            " AND (%(names)s::text[] IS NULL OR name = ANY(%(names)s::text[]))"
            " AND (%(saga_id)s::text IS NULL OR id = %(saga_id)s::text)"
            " AND (%(ignore)s OR owner IS NULL OR lease_until IS NULL"
            " OR lease_until <= (SELECT now FROM t))"
            " ORDER BY updated_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
            f" UPDATE {sagas} AS g SET owner = %(owner)s, lease_until = t.now + %(lease)s::float8"
            " FROM c, t WHERE g.id = c.id RETURNING "
            + ", ".join(f"g.{column.strip()}" for column in _ROW.split(","))
            + ", g.deadline_at IS NOT NULL AND g.deadline_at <= t.now"
        )
        self.release = (
            f"UPDATE {sagas} SET owner = NULL, lease_until = NULL"
            " WHERE id = %(id)s AND owner = %(owner)s"
        )
        self.load = (
            f"WITH {_NOW} SELECT {_ROW}, deadline_at IS NOT NULL AND deadline_at <= t.now"
            f" FROM {sagas}, t WHERE id = %(id)s"
        )
        self.history = (
            f"SELECT seq, kind, step, data, at FROM {entries} WHERE saga_id = %(id)s ORDER BY seq"
        )
        self.list = (
            f"WITH {_NOW} SELECT {_ROW}, deadline_at IS NOT NULL AND deadline_at <= t.now"
            f" FROM {sagas}, t WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))"
            " AND (%(name)s::text IS NULL OR name = %(name)s::text)"
            " ORDER BY updated_at DESC, id DESC LIMIT %(limit)s"
        )
        self.cancel = (
            f"WITH u AS (UPDATE {sagas} SET cancel_requested = true"
            " WHERE id = %(id)s AND status = 'running' RETURNING id)"
            f" SELECT status FROM {sagas} WHERE id = %(id)s"
        )
        self._transition = (
            f"WITH {_NOW}, s AS ("
            f" UPDATE {sagas} SET status = %(status)s, reason = %(reason)s, updated_at = t.now"
            " FROM t WHERE id = %(id)s AND status = %(expected)s AND owner IS NULL"
            " RETURNING t.now AS now"
            f"), e AS (INSERT INTO {entries} (saga_id, seq, kind, step, data, at)"
            f" SELECT %(id)s, u.seq, u.kind, u.step, u.data, s.now FROM s, {{rows}})"
            " SELECT count(*) FROM s"
        )


class PostgresSagaLog:
    """A saga log in PostgreSQL; tables are created when the log is built (``create=False`` skips it).

    ``clock`` replaces the server's clock for leases and deadlines (tests only: with
    it, hosts no longer share one clock).
    """

    kind: ClassVar[str] = "postgres"
    supports_transactions: ClassVar[bool] = True
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
        from seawall.engines import connect
        from seawall.engines.postgres import PostgresEngine

        opened = connect(engine)
        if not isinstance(opened, PostgresEngine):
            raise ConfigurationError(
                f"PostgresSagaLog needs a postgresql:// engine, got {opened!r}; use open_saga_log()"
            )
        self._engine: PostgresEngine = opened
        self._owns_engine = opened is not engine
        self.table_prefix = check_prefix(table_prefix)
        if schema is not None:
            check_prefix(schema)
            if not schema:
                raise ConfigurationError("schema='' is invalid: pass None or a schema name")
        self.schema = schema
        self._clock = None if clock is None else time_source(clock)
        self._sql = _Sql(schema, self.table_prefix)
        self._local = threading.local()
        self._guard = threading.Lock()
        self._connections: list[psycopg.Connection[Any]] = []
        if create:
            self.create_tables()

    @property
    def engine(self) -> Engine:
        """The PostgreSQL engine the log lives in."""
        return self._engine

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()

    def _connection(self) -> psycopg.Connection[Any]:
        """This thread's own autocommit connection (opened on first use).

        The log keeps one connection per thread instead of borrowing from the engine's
        pool on every write: a write is then one round trip and nothing else.
        """
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            import psycopg

            conn = psycopg.connect(
                self._engine.url,
                autocommit=True,
                connect_timeout=max(1, int(self._engine.timeout)),
            )
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    def _execute(
        self, sql: str, parameters: dict[str, Any], transaction: Transaction | None = None
    ) -> list[tuple[Any, ...]]:
        import psycopg

        from seawall.engines.postgres import postgres_errors

        with postgres_errors(self._engine.url):
            if transaction is not None:
                return list(transaction.connection.execute(sql, parameters).fetchall())
            conn = self._connection()
            try:
                return list(conn.execute(sql, parameters, prepare=True).fetchall())
            except psycopg.OperationalError:
                conn.close()  # a broken connection: the next call opens a fresh one
                raise

    def create_tables(self) -> None:
        """Create the tables and index if they do not exist (safe to race: an advisory lock)."""
        self._engine.run_schema(self._sql.create_tables, self._sql.lock_key)

    def drop_tables(self) -> None:
        """Drop the log's tables and everything in them (tests, teardown)."""
        self._engine.run_schema(self._sql.drop_tables)

    def durability(self) -> dict[str, str]:
        """The server's version and ``fsync`` / ``synchronous_commit`` settings, read back."""
        from seawall.engines.postgres import postgres_errors

        with postgres_errors(self._engine.url), self._engine.connection() as conn:
            return {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in ("server_version", "fsync", "synchronous_commit")
            }

    # --------------------------------------------------------------- the contract

    def create(
        self,
        saga_id: str,
        name: str,
        plan: tuple[tuple[str, ...], ...],
        input: str,
        *,
        deadline: float | None,
        owner: str | None,
        lease: float,
        entries: Sequence[NewEntry],
        transaction: Transaction | None = None,
    ) -> bool:
        """Insert the saga row and its first entries in one statement."""
        parameters = {
            "now": self._now(),
            "id": saga_id,
            "name": name,
            "plan": encode_plan(plan),
            "input": input,
            "deadline": deadline,
            "owner": owner,
            "lease": lease,
            **_entry_parameters(entries),
        }
        rows = self._execute(
            self._sql.with_entries("create", len(entries)), parameters, transaction
        )
        return bool(rows[0][0])

    def append(
        self,
        saga_id: str,
        entries: Sequence[NewEntry],
        *,
        owner: str,
        status: SagaStatus,
        reason: str | None,
        lease: float,
        release: bool = False,
        transaction: Transaction | None = None,
    ) -> Signals | None:
        """Update the saga row (only while ``owner`` holds it) and add the entries: one statement."""
        parameters = {
            "now": self._now(),
            "id": saga_id,
            "owner": owner,
            "status": status.value,
            "reason": reason,
            "lease": lease,
            "release": release,
            **_entry_parameters(entries),
        }
        rows = self._execute(
            self._sql.with_entries("append", len(entries)), parameters, transaction
        )
        if not rows:
            return None
        return Signals(bool(rows[0][0]), bool(rows[0][1]))

    def claim(
        self,
        owner: str,
        lease: float,
        *,
        names: Collection[str] | None = None,
        saga_id: str | None = None,
        ignore_leases: bool = False,
    ) -> SagaRecord | None:
        """Take one unfinished saga nobody holds (``SKIP LOCKED``) and load its history."""
        parameters = {
            "now": self._now(),
            "names": None if names is None else list(names),
            "saga_id": saga_id,
            "ignore": ignore_leases,
            "owner": owner,
            "lease": lease,
        }
        rows = self._execute(self._sql.claim, parameters)
        if not rows:
            return None
        history = self._execute(self._sql.history, {"id": rows[0][0]})
        return _record(rows[0], history)

    def release(self, saga_id: str, owner: str) -> None:
        """Drop ``owner``'s lease on the saga, if it holds it."""

        self._execute(self._sql.release + " RETURNING id", {"id": saga_id, "owner": owner})

    def load(self, saga_id: str) -> SagaRecord | None:
        """The saga and its history, read in one repeatable-read snapshot."""
        from seawall.engines.postgres import postgres_errors

        parameters = {"id": saga_id, "now": self._now()}
        with postgres_errors(self._engine.url):
            conn = self._connection()
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                row = conn.execute(self._sql.load, parameters).fetchone()
                if row is None:
                    return None
                history = conn.execute(self._sql.history, parameters).fetchall()
        return _record(row, history)

    def list(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Sagas without their history, most recently updated first."""
        parameters = {
            "now": self._now(),
            "statuses": None if status is None else [SagaStatus(value).value for value in status],
            "name": name,
            "limit": max(0, int(limit)),
        }
        return [_record(row, ()) for row in self._execute(self._sql.list, parameters)]

    def request_cancel(self, saga_id: str) -> SagaStatus | None:
        """Flag a running saga for cancellation; its status, or ``None`` if unknown."""
        rows = self._execute(self._sql.cancel, {"id": saga_id})
        return SagaStatus(rows[0][0]) if rows else None

    def transition(
        self,
        saga_id: str,
        *,
        expected: SagaStatus,
        status: SagaStatus,
        reason: str | None,
        entries: Sequence[NewEntry],
    ) -> bool:
        """Move an unowned saga from ``expected`` to ``status``, adding ``entries``."""
        parameters = {
            "now": self._now(),
            "id": saga_id,
            "expected": expected.value,
            "status": status.value,
            "reason": reason,
            **_entry_parameters(entries),
        }
        sql = self._sql.with_entries("transition", len(entries))
        return bool(self._execute(sql, parameters)[0][0])

    def close(self) -> None:
        """Close the log's connections, and the engine if the log opened it from a URL."""
        with self._guard:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
        if self._owns_engine:
            self._engine.close()

    def __repr__(self) -> str:
        return f"PostgresSagaLog({self._engine!r}, table_prefix={self.table_prefix!r})"


def _record(row: Sequence[Any], history: Sequence[Sequence[Any]]) -> SagaRecord:
    return SagaRecord(
        id=row[0],
        name=row[1],
        status=SagaStatus(row[2]),
        plan=decode_plan(row[3]),
        input=row[4],
        reason=row[5],
        created_at=row[6],
        updated_at=row[7],
        deadline_at=row[8],
        owner=row[9],
        lease_until=row[10],
        cancel_requested=bool(row[11]),
        entries=tuple(
            SagaEntry(seq, EntryKind(kind), step, data, at) for seq, kind, step, data, at in history
        ),
        deadline_passed=bool(row[12]),
    )
