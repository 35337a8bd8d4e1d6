"""The PostgreSQL event store: one statement per append, no table lock, no skipped events.

Tables (``seawall_`` is the default ``table_prefix``; ``schema`` qualifies them)::

    seawall_events       position bigint PRIMARY KEY, stream_id, version, type,
                         schema_version, data json, id uuid, recorded_at timestamptz,
                         causation_id, correlation_id, headers jsonb, metadata (the
                         same metadata as one JSON text, what reads use);
                         UNIQUE (stream_id, version)
    seawall_snapshots    stream_id PRIMARY KEY, version, schema_version, data jsonb, recorded_at
    seawall_checkpoints  name PRIMARY KEY, position, updated_at

**Global positions and the gap problem.** Concurrent transactions commit in any
order, so a position handed out by a sequence can become visible after a higher
one, and a reader that already moved past it would skip it forever. Here a
position is ``transaction id * 2**20 + n`` (``pg_current_xact_id()``, and ``n``
counting the transaction's events), and ``read_all`` only returns positions below
``pg_snapshot_xmin(pg_current_snapshot()) * 2**20``: every transaction with a lower
id has finished, and every transaction still running (or not yet started) has a
higher id, so nothing can later appear below what a reader has seen. Appenders
take no lock beyond the stream's unique index; the price is that ``read_all`` shows
an event only once every older writing transaction in the cluster has finished,
and positions increase with gaps rather than one by one.

An append is a single statement (one round trip for any number of events and
streams). Subscribers are woken with LISTEN/NOTIFY: after the store's own short
transaction commits, a background thread sends ``pg_notify`` (at most one per
``notify_interval``, always after the last append), so notifying never holds
PostgreSQL's database-wide notify lock across a commit.
Inside a caller's transaction the notification is queued in that transaction and
sent when it commits (PostgreSQL then orders that commit behind other notifying
ones; pass ``notify=False`` and rely on polling to avoid it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.engines.postgres import PostgresEngine, postgres_errors
from seawall.errors import ConfigurationError, EngineError
from seawall.eventsourcing.store._base import (
    AsyncEventStoreBase,
    Batch,
    EventStoreBase,
    SnapshotRow,
)
from seawall.eventsourcing.store._errors import ConcurrencyError
from seawall.eventsourcing.store._model import (
    MAX_EVENTS_PER_APPEND,
    AppendResult,
    EncodedEvent,
    metadata_parts,
)
from seawall.eventsourcing.store._store import ANY, check_identifier, conflicts
from seawall.eventsourcing.store._subscription import AsyncWakeups, Wakeups

if TYPE_CHECKING:
    import psycopg

    from seawall.clock import Clock
    from seawall.engines._base import Engine, Transaction
    from seawall.eventsourcing.store._upcasting import EventTypes

__all__ = [
    "AsyncPostgresEventStore",
    "AsyncPostgresWakeups",
    "PostgresEventStore",
    "PostgresWakeups",
]

POSITION_BITS = 20
"""Low bits of a position that count events inside one transaction."""

# ``metadata`` is the read copy of the metadata columns as one JSON array (the layout
# SQLite stores): [id, timestamp in µs, causation id, correlation id, headers]. The
# INSERT builds it around the server's timestamp; date_part's float seconds times 10**6
# rounds back to the exact microsecond (the error stays under 0.25 µs until 2112).
_MICROS = "(date_part('epoch', statement_timestamp()) * 1000000)::bigint"
_READ_COLUMNS = "position, stream_id, version, type, schema_version, data::text, metadata"
_HORIZON = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {POSITION_BITS})"
_APPEND_RETRIES = 50
_SLICE = 0.25
"""Longest single wait on LISTEN, so ``Subscription.stop`` takes effect quickly."""
_logger = logging.getLogger("seawall.eventsourcing")


_COLUMNS = (
    "position, stream_id, version, type, schema_version, data, id, causation_id,"
    " correlation_id, headers, metadata"
)
_LOW = f"(pg_current_xact_id()::text::bigint << {POSITION_BITS})"
_EVENTS_UNNEST = (
    "unnest(%(types)s::text[], %(schema_versions)s::int[], %(data)s::text[],"
    " %(ids)s::text[], %(causations)s::text[], %(correlations)s::text[],"
    " %(headers)s::text[], %(heads)s::text[], %(tails)s::text[]) WITH ORDINALITY AS"
    " n(type, schema_version, data, id, causation_id, correlation_id, headers, head, tail,"
    " ordinal)"
)


def _base_sql(events: str) -> str:
    """The transaction's position range and the last position it already used."""
    return (
        "(SELECT x.low, coalesce((SELECT max(e.position) FROM "
        f"{events} e WHERE e.position > x.low AND e.position < x.low + {1 << POSITION_BITS}),"
        f" x.low) AS last FROM (SELECT {_LOW} AS low) x) b"
    )


def _single_stream_sql(events: str, *, arrays: bool, in_transaction: bool) -> str:
    """One stream's append as one INSERT: read the head, check, insert all or nothing.

    The store's own transaction is fresh, so its positions start right after the
    transaction's base; inside a caller's transaction they continue after the last
    position that transaction already used, and the NOTIFY is queued there too.
    """
    ordinal = "n.ordinal" if arrays else "1"
    fields = (
        "n.type, n.schema_version, n.data::json, n.id::uuid, n.causation_id,"
        f" n.correlation_id, n.headers::jsonb, n.head || {_MICROS} || n.tail"
        if arrays
        else "%(type)s, %(schema_version)s, %(data)s::json, %(id)s::uuid, %(causation)s,"
        f" %(correlation)s, %(header)s::jsonb, %(head)s || {_MICROS} || %(tail)s"
    )
    sources = [
        f"(SELECT coalesce(max(e.version), 0) AS version FROM {events} e"
        " WHERE e.stream_id = %(stream)s) h"
    ]
    if arrays:
        sources.append(_EVENTS_UNNEST)
    conditions = [
        "(%(expected)s = -1 OR (%(expected)s = -2 AND h.version > 0) OR h.version = %(expected)s)"
    ]
    if in_transaction:
        sources.append(_base_sql(events))
        sources.append(
            "(SELECT CASE WHEN %(notify)s THEN pg_notify(%(channel)s, '') END) AS notified"
        )
        conditions.append(f"b.last + %(count)s::bigint < b.low + {1 << POSITION_BITS}")
        position = f"b.last + {ordinal}"
    else:
        position = f"{_LOW} + {ordinal}"
    return (
        f"INSERT INTO {events} ({_COLUMNS})\n"
        f"SELECT {position}, %(stream)s, h.version + {ordinal}, {fields}\n"
        f"FROM {' CROSS JOIN '.join(sources)}\n"
        f"WHERE {' AND '.join(conditions)}\n"
        "RETURNING position, version"
    )


def _batch_sql(events: str) -> str:
    """Many streams' appends as one statement: every head is checked before any insert."""
    return f"""
WITH requests AS (
    SELECT r.stream_id, r.expected, r.ordinal
    FROM unnest(%(streams)s::text[], %(expected)s::bigint[])
        WITH ORDINALITY AS r(stream_id, expected, ordinal)
), heads AS (
    SELECT r.ordinal, r.stream_id, r.expected,
        coalesce((SELECT max(e.version) FROM {events} e WHERE e.stream_id = r.stream_id), 0)
            AS version
    FROM requests r
), verdict AS (
    SELECT bool_and(h.expected = -1 OR (h.expected = -2 AND h.version > 0)
        OR h.version = h.expected) AS ok
    FROM heads h
), inserted AS (
    INSERT INTO {events} ({_COLUMNS})
    SELECT b.last + n.ordinal, h.stream_id, h.version + n.stream_offset, n.type,
        n.schema_version, n.data::json, n.id::uuid, n.causation_id, n.correlation_id,
        n.headers::jsonb, n.head || {_MICROS} || n.tail
    FROM unnest(%(requests)s::int[], %(offsets)s::int[], %(types)s::text[],
            %(schema_versions)s::int[], %(data)s::text[], %(ids)s::text[],
            %(causations)s::text[], %(correlations)s::text[], %(headers)s::text[],
            %(heads)s::text[], %(tails)s::text[])
        WITH ORDINALITY AS n(request, stream_offset, type, schema_version, data, id,
            causation_id, correlation_id, headers, head, tail, ordinal)
    JOIN heads h ON h.ordinal = n.request
    CROSS JOIN {_base_sql(events)}
    WHERE (SELECT ok FROM verdict) AND b.last + %(count)s::bigint < b.low + {1 << POSITION_BITS}
    RETURNING position
), summary AS (
    SELECT count(*) AS inserted, min(position) AS first FROM inserted
)
SELECT h.version, s.inserted, s.first,
    (SELECT pg_notify(%(channel)s, '') WHERE %(notify)s AND s.inserted > 0) IS NULL
FROM heads h CROSS JOIN summary s
ORDER BY h.ordinal
"""


class _Sql:
    """The statements of one store, with its (quoted) table names filled in."""

    def __init__(self, schema: str, prefix: str) -> None:
        def table(name: str) -> str:
            return f'"{schema}"."{prefix}{name}"' if schema else f'"{prefix}{name}"'

        events = table("events")
        snapshots = table("snapshots")
        checkpoints = table("checkpoints")
        self.stream_constraint = f"{prefix}events_stream_version"
        channel = f"{schema}.{prefix}events" if schema else f"{prefix}events"
        if len(channel) > 63:
            digest = hashlib.sha1(channel.encode(), usedforsecurity=False).hexdigest()[:12]
            channel = f"{channel[:50]}_{digest}"
        self.channel = channel
        self.lock_key = f"seawall.eventstore:{channel}"
        self.create = [
            *([f'CREATE SCHEMA IF NOT EXISTS "{schema}"'] if schema else []),
            f"CREATE TABLE IF NOT EXISTS {events} ("
            " position bigint PRIMARY KEY,"
            " stream_id text NOT NULL,"
            " version bigint NOT NULL,"
            " type text NOT NULL,"
            " schema_version integer NOT NULL,"
            " data json NOT NULL,"
            " id uuid NOT NULL,"
            " recorded_at timestamptz NOT NULL DEFAULT statement_timestamp(),"
            " causation_id text,"
            " correlation_id text,"
            " headers jsonb,"
            " metadata text NOT NULL,"
            f' CONSTRAINT "{self.stream_constraint}" UNIQUE (stream_id, version))',
            f"CREATE TABLE IF NOT EXISTS {snapshots} ("
            " stream_id text PRIMARY KEY,"
            " version bigint NOT NULL,"
            " schema_version integer NOT NULL,"
            " data jsonb NOT NULL,"
            " recorded_at timestamptz NOT NULL DEFAULT statement_timestamp())",
            f"CREATE TABLE IF NOT EXISTS {checkpoints} ("
            " name text PRIMARY KEY,"
            " position bigint NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT statement_timestamp())",
        ]
        self.drop = f"DROP TABLE IF EXISTS {events}, {snapshots}, {checkpoints}"
        self.append_one = _single_stream_sql(events, arrays=False, in_transaction=False)
        self.append_many = _single_stream_sql(events, arrays=True, in_transaction=False)
        self.append_one_in_transaction = _single_stream_sql(
            events, arrays=False, in_transaction=True
        )
        self.append_many_in_transaction = _single_stream_sql(
            events, arrays=True, in_transaction=True
        )
        self.append_batch = _batch_sql(events)
        self.heads = f"""
SELECT coalesce((SELECT max(e.version) FROM {events} e WHERE e.stream_id = r.stream_id), 0)
FROM unnest(%s::text[]) WITH ORDINALITY AS r(stream_id, ordinal)
ORDER BY r.ordinal
"""
        self.version = f"SELECT coalesce(max(version), 0) FROM {events} WHERE stream_id = %s"
        self.forwards = (
            f"SELECT {_READ_COLUMNS} FROM {events} WHERE stream_id = %s AND version >= %s"
            " ORDER BY version LIMIT %s"
        )
        self.backwards = (
            f"SELECT {_READ_COLUMNS} FROM {events} WHERE stream_id = %s AND version <= %s"
            " ORDER BY version DESC LIMIT %s"
        )
        # The page is taken by an ordered scan of the primary key (the planner cannot
        # misjudge it), then cut at the horizon, computed once for the statement.
        self.all = (
            f"SELECT {_READ_COLUMNS} FROM (SELECT * FROM {events} WHERE position > %s"
            f" ORDER BY position LIMIT %s) page WHERE position < (SELECT {_HORIZON})"
            " ORDER BY position"
        )
        self.all_typed = (
            f"SELECT {_READ_COLUMNS} FROM (SELECT * FROM {events} WHERE position > %s"
            " AND type = ANY(%s::text[]) ORDER BY position LIMIT %s) page"
            f" WHERE position < (SELECT {_HORIZON}) ORDER BY position"
        )
        self.put_snapshot = (
            f"INSERT INTO {snapshots} AS s (stream_id, version, schema_version, data)"
            " VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT (stream_id) DO UPDATE SET"
            " version = excluded.version, schema_version = excluded.schema_version,"
            " data = excluded.data, recorded_at = excluded.recorded_at"
            " WHERE excluded.version >= s.version"
        )
        self.get_snapshot = (
            "SELECT version, schema_version, data::text,"
            " (extract(epoch FROM recorded_at) * 1000000)::bigint"
            f" FROM {snapshots} WHERE stream_id = %s"
        )
        self.get_checkpoint = f"SELECT position FROM {checkpoints} WHERE name = %s"
        self.put_checkpoint = (
            f"INSERT INTO {checkpoints} AS c (name, position) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
            " updated_at = excluded.updated_at"
        )


def _text_array(values: Sequence[str | None]) -> str:
    """A PostgreSQL text[] literal (much cheaper than the driver adapting a list)."""
    parts = [
        "NULL" if value is None else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for value in values
    ]
    return "{" + ",".join(parts) + "}"


def _int_array(values: Sequence[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


class AppendAttempt:
    """One append's statement and how to read what it returned (no I/O).

    The shells run ``statement`` with ``parameters``; ``results(rows)`` gives the
    append's results, or ``None`` when nothing was inserted, in which case the
    shells read the stream heads and call ``check_heads``: it raises
    :class:`ConcurrencyError` for a refused expectation and returns when the
    append may simply be tried again (the stream moved on in between).
    """

    __slots__ = ("batch", "count", "in_transaction", "misses", "parameters", "statement", "streams")

    def __init__(self, sql: _Sql, batch: Batch, *, in_transaction: bool, notify: bool) -> None:
        self.batch = batch
        self.in_transaction = in_transaction
        self.streams = [stream_id for stream_id, _, _ in batch]
        self.count = sum(len(encoded) for _, _, encoded in batch)
        self.misses = 0
        self.statement, self.parameters = _statement(sql, batch, in_transaction, notify)

    def results(self, rows: Sequence[Sequence[Any]]) -> list[AppendResult] | None:
        """The append's results, or ``None`` when it inserted nothing."""
        if len(self.batch) == 1:
            if len(rows) != self.count:
                return None
            stream_id = self.batch[0][0]
            return [
                AppendResult(stream_id, max(row[1] for row in rows), max(row[0] for row in rows))
            ]
        inserted = int(rows[0][1]) if rows else 0
        if inserted != self.count:
            return None
        position = int(rows[0][2]) - 1
        results = []
        for (stream_id, _, encoded), row in zip(self.batch, rows, strict=True):
            if encoded:
                position += len(encoded)
                results.append(AppendResult(stream_id, int(row[0]) + len(encoded), position))
            else:
                results.append(AppendResult(stream_id, int(row[0]), 0))
        return results

    def check_heads(self, heads: Sequence[int]) -> None:
        """Raise for a refused expectation; return when trying again may succeed."""
        for (stream_id, expected, _), actual in zip(self.batch, heads, strict=True):
            if conflicts(expected, actual):
                raise ConcurrencyError(stream_id, expected, actual)
        self.misses += 1
        if self.misses > 2:
            raise EngineError(
                f"an append of {self.count} events was not inserted although every expected "
                f"version holds: one transaction holds at most {MAX_EVENTS_PER_APPEND} events, "
                "split the work"
            )

    def empty_results(self, heads: Sequence[int]) -> list[AppendResult]:
        """Results of an append with no events: it only checks the expected versions."""
        self.check_heads(heads)
        return [
            AppendResult(stream_id, int(head), 0)
            for (stream_id, _, _), head in zip(self.batch, heads, strict=True)
        ]


def _statement(
    sql: _Sql, batch: Batch, in_transaction: bool, notify: bool
) -> tuple[str, dict[str, Any]]:
    if len(batch) == 1:
        stream_id, expected, encoded = batch[0]
        common = {
            "stream": stream_id,
            "expected": expected,
            "count": len(encoded),
            "channel": sql.channel,
            "notify": notify,
        }
        if len(encoded) == 1:
            event = encoded[0]
            statement = sql.append_one_in_transaction if in_transaction else sql.append_one
            head, tail = metadata_parts(event)
            return statement, {
                "head": head,
                "tail": tail,
                **common,
                "type": event[0],
                "schema_version": event[1],
                "data": event[2],
                "id": event[3],
                "causation": event[4],
                "correlation": event[5],
                "header": event[6],
            }
        statement = sql.append_many_in_transaction if in_transaction else sql.append_many
        return statement, {**common, **_event_arrays(encoded)}
    requests: list[int] = []
    offsets: list[int] = []
    everything: list[EncodedEvent] = []
    for ordinal, (_, _, encoded) in enumerate(batch, 1):
        requests.extend([ordinal] * len(encoded))
        offsets.extend(range(1, len(encoded) + 1))
        everything.extend(encoded)
    return sql.append_batch, {
        "streams": _text_array([stream_id for stream_id, _, _ in batch]),
        "expected": _int_array([expected for _, expected, _ in batch]),
        "requests": _int_array(requests),
        "offsets": _int_array(offsets),
        **_event_arrays(everything),
        "count": len(everything),
        "channel": sql.channel,
        "notify": notify and in_transaction,
    }


def _event_arrays(encoded: Sequence[EncodedEvent]) -> dict[str, str]:
    parts = [metadata_parts(event) for event in encoded]
    return {
        "heads": _text_array([head for head, _ in parts]),
        "tails": _text_array([tail for _, tail in parts]),
        "types": _text_array([event[0] for event in encoded]),
        "schema_versions": _int_array([event[1] for event in encoded]),
        "data": _text_array([event[2] for event in encoded]),
        "ids": _text_array([event[3] for event in encoded]),
        "causations": _text_array([event[4] for event in encoded]),
        "correlations": _text_array([event[5] for event in encoded]),
        "headers": _text_array([event[6] for event in encoded]),
    }


def _is_stream_conflict(error: BaseException, constraint: str) -> bool:
    import psycopg.errors

    return (
        isinstance(error, psycopg.errors.UniqueViolation)
        and getattr(error.diag, "constraint_name", None) == constraint
    )


def _conflict_after_race(batch: Batch, heads: Sequence[int]) -> ConcurrencyError:
    """The error for an append that lost a race its statement's check could not see."""
    for (stream_id, expected, _), actual in zip(batch, heads, strict=True):
        if conflicts(expected, actual):
            return ConcurrencyError(stream_id, expected, actual)
    for (stream_id, expected, _), actual in zip(batch, heads, strict=True):
        if expected == ANY:
            return ConcurrencyError(stream_id, expected, actual)
    stream_id, expected, _ = batch[0]
    return ConcurrencyError(stream_id, expected, heads[0])


def _store_names(schema: str | None, table_prefix: str) -> tuple[str, str]:
    schema_name = check_identifier(schema or "", "schema")
    return schema_name, check_identifier(table_prefix, "table_prefix")


class Notifier:
    """Sends the store's NOTIFY from a background thread after the store's own commits.

    ``poke()`` costs a flag set on the append path; the thread (started on first use,
    with its own connection) sends at most one ``pg_notify`` per ``interval`` seconds,
    always after the last poke, so every commit is followed by a notification.
    Notifying outside the appending transaction keeps PostgreSQL's database-wide
    notify lock out of the commit, so concurrent appenders still commit in parallel.
    """

    def __init__(self, engine: PostgresEngine, channel: str, interval: float = 0.005) -> None:
        if not isinstance(interval, int | float) or interval < 0:
            raise ConfigurationError(f"notify_interval={interval!r} must be seconds >= 0")
        self.engine = engine
        self.channel = channel
        self.interval = float(interval)
        self._closing = threading.Event()
        self._pending = threading.Event()
        self._requested = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def poke(self) -> None:
        """Ask for a notification after the commit that just happened."""
        self._requested = True
        self._pending.set()
        if self._thread is None or self._pid != os.getpid():
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._closed or (self._thread is not None and self._pid == os.getpid()):
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name=f"seawall-notify-{self.channel}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        import psycopg

        connection: psycopg.Connection[Any] | None = None
        try:
            while True:
                self._pending.wait()
                self._pending.clear()
                if not self._requested:
                    if self._closed:
                        return
                    continue
                self._requested = False
                try:
                    if connection is None or connection.closed:
                        connection = psycopg.connect(
                            self.engine.url,
                            autocommit=True,
                            connect_timeout=max(1, int(self.engine.timeout)),
                        )
                    connection.execute("SELECT pg_notify(%s, '')", (self.channel,))
                except psycopg.Error as exc:
                    _logger.warning(
                        "event store notification on %r failed (%s); subscribers fall back "
                        "to polling until it works again",
                        self.channel,
                        exc,
                    )
                    if connection is not None:
                        connection.close()
                    connection = None
                if self._closed:
                    return
                if self.interval:
                    self._closing.wait(self.interval)
        finally:
            if connection is not None:
                connection.close()

    def close(self) -> None:
        """Stop the thread and close its connection (a pending notification is still sent)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._closing.set()
        self._pending.set()
        if thread is not None and self._pid == os.getpid():
            thread.join(5.0)


class PostgresEventStore(EventStoreBase):
    """An event store in PostgreSQL (synchronous, psycopg 3 connection pool).

    ``schema`` puts the tables in that schema (created if missing); ``notify=False``
    stops the NOTIFY that wakes subscribers (they then poll every ``poll_interval``);
    ``notify_interval`` (seconds, default 0.005) is the shortest gap between two
    notifications of the store's own appends: a burst of appends sends one.
    The tables are created when the store is built (``create=False`` skips that).
    """

    supports_transactions: ClassVar[bool] = True
    kind: ClassVar[str] = "postgres"

    def __init__(
        self,
        engine: Engine | str,
        *,
        types: EventTypes | None = None,
        table_prefix: str = "seawall_",
        schema: str | None = None,
        notify: bool = True,
        notify_interval: float = 0.005,
        create: bool = True,
    ) -> None:
        from seawall.engines import connect

        engine = connect(engine)
        super().__init__(engine, types=types, table_prefix=table_prefix)
        schema_name, prefix = _store_names(schema, table_prefix)
        self.schema = schema_name or None
        self.notify = notify
        self._sql = _Sql(schema_name, prefix)
        self._notifier = Notifier(self._postgres, self._sql.channel, notify_interval)
        if create:
            self.create_tables()

    @property
    def _postgres(self) -> PostgresEngine:
        engine = self.engine
        if not isinstance(engine, PostgresEngine):  # pragma: no cover - checked by the base
            raise TypeError(engine)
        return engine

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel that announces new events."""
        return self._sql.channel

    def _check_transaction(self, transaction: Transaction) -> None:
        super()._check_transaction(transaction)
        import psycopg

        if not isinstance(transaction.connection, psycopg.Connection):
            raise ConfigurationError(
                "this synchronous store needs a transaction from engine.transaction(), "
                "not engine.atransaction(); use the async store for that one"
            )

    @contextmanager
    def _cursor(self, transaction: Transaction | None) -> Iterator[psycopg.Connection[Any]]:
        if transaction is not None:
            with postgres_errors(self.engine.url):
                yield transaction.connection
        else:
            with self._postgres.connection() as connection:
                yield connection

    def _heads(self, connection: psycopg.Connection[Any], streams: list[str]) -> list[int]:
        return [int(row[0]) for row in connection.execute(self._sql.heads, (streams,)).fetchall()]

    def _append(self, batch: Batch, transaction: Transaction | None) -> list[AppendResult]:
        sql = self._sql
        attempt = AppendAttempt(
            sql, batch, in_transaction=transaction is not None, notify=self.notify
        )
        if transaction is not None:
            connection: psycopg.Connection[Any] = transaction.connection
            with postgres_errors(self.engine.url):
                if not attempt.count:
                    return attempt.empty_results(self._heads(connection, attempt.streams))
                while True:
                    try:
                        rows = connection.execute(attempt.statement, attempt.parameters).fetchall()
                    except Exception as exc:
                        if not _is_stream_conflict(exc, sql.stream_constraint):
                            raise
                        # The caller's transaction is aborted: read the heads elsewhere.
                        with self._postgres.connection() as other:
                            heads = self._heads(other, attempt.streams)
                        raise _conflict_after_race(batch, heads) from exc
                    results = attempt.results(rows)
                    if results is not None:
                        return results
                    attempt.check_heads(self._heads(connection, attempt.streams))
        with self._postgres.connection() as connection:
            if not attempt.count:
                return attempt.empty_results(self._heads(connection, attempt.streams))
            races = 0
            while True:
                try:
                    rows = connection.execute(attempt.statement, attempt.parameters).fetchall()
                except Exception as exc:
                    if not _is_stream_conflict(exc, sql.stream_constraint):
                        raise
                    error = _conflict_after_race(batch, self._heads(connection, attempt.streams))
                    races += 1
                    if error.expected != ANY or races >= _APPEND_RETRIES:
                        raise error from exc
                    continue
                results = attempt.results(rows)
                if results is not None:
                    break
                attempt.check_heads(self._heads(connection, attempt.streams))
        if self.notify:
            self._notifier.poke()
        return results

    def _select_stream(
        self,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        with self._cursor(transaction) as connection:
            if backwards:
                top = (1 << 62) if from_version is None else from_version
                return connection.execute(self._sql.backwards, (stream_id, top, limit)).fetchall()
            first = 1 if from_version is None else from_version
            return connection.execute(self._sql.forwards, (stream_id, first, limit)).fetchall()

    def _select_version(self, stream_id: str, transaction: Transaction | None) -> int:
        with self._cursor(transaction) as connection:
            row = connection.execute(self._sql.version, (stream_id,)).fetchone()
        return int(row[0]) if row else 0

    def _select_all(
        self,
        after: int,
        limit: int,
        stored_types: tuple[str, ...] | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        with self._cursor(transaction) as connection:
            if stored_types is None:
                return connection.execute(self._sql.all, (after, limit)).fetchall()
            return connection.execute(
                self._sql.all_typed, (after, list(stored_types), limit)
            ).fetchall()

    def _put_snapshot(
        self,
        stream_id: str,
        version: int,
        schema_version: int,
        data_json: str,
        transaction: Transaction | None,
    ) -> None:
        with self._cursor(transaction) as connection:
            connection.execute(
                self._sql.put_snapshot, (stream_id, version, schema_version, data_json)
            )

    def _get_snapshot(self, stream_id: str, transaction: Transaction | None) -> SnapshotRow | None:
        with self._cursor(transaction) as connection:
            row = connection.execute(self._sql.get_snapshot, (stream_id,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), row[2], int(row[3]))

    def _get_checkpoint(self, name: str, transaction: Transaction | None) -> int | None:
        with self._cursor(transaction) as connection:
            row = connection.execute(self._sql.get_checkpoint, (name,)).fetchone()
        return None if row is None else int(row[0])

    def _put_checkpoint(self, name: str, position: int, transaction: Transaction | None) -> None:
        with self._cursor(transaction) as connection:
            connection.execute(self._sql.put_checkpoint, (name, position))

    def create_tables(self) -> None:
        """Create the schema (if any), the tables and the stream index if missing."""
        self._postgres.run_schema(self._sql.create, self._sql.lock_key)

    def drop_tables(self) -> None:
        """Drop the store's tables and everything in them (the schema stays)."""
        with self._postgres.connection() as connection:
            connection.execute(self._sql.drop)

    def wakeups(self, clock: Clock) -> Wakeups:
        """A LISTEN connection on the store's channel (waits in real time)."""
        return PostgresWakeups(self._postgres, self._sql.channel)

    def close(self) -> None:
        """Stop the notifier thread (the engine and its pool stay open)."""
        self._notifier.close()


class PostgresWakeups:
    """Wakes a subscription when the store's NOTIFY arrives (a dedicated connection)."""

    def __init__(self, engine: PostgresEngine, channel: str) -> None:
        import psycopg

        self.url = engine.url
        self._interrupted = False
        with postgres_errors(engine.url):
            self.connection = psycopg.connect(
                engine.url, autocommit=True, connect_timeout=max(1, int(engine.timeout))
            )
            self.connection.execute(f'LISTEN "{channel}"')

    def wait(self, seconds: float) -> bool:
        """Block until a notification or ``seconds`` pass; True when notified.

        Waits in slices of at most ``_SLICE`` seconds so :meth:`interrupt` is honoured.
        """
        deadline = time.monotonic() + seconds
        with postgres_errors(self.url):
            while not self._interrupted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                for _ in self.connection.notifies(timeout=min(remaining, _SLICE), stop_after=1):
                    return True
        self._interrupted = False
        return False

    def interrupt(self) -> None:
        """Make a blocked ``wait`` return within ``_SLICE`` seconds."""
        self._interrupted = True

    def close(self) -> None:
        """Close the LISTEN connection."""
        self.connection.close()


class AsyncPostgresWakeups:
    """The asyncio twin of :class:`PostgresWakeups`."""

    def __init__(self, connection: psycopg.AsyncConnection[Any], url: str) -> None:
        self.connection = connection
        self.url = url
        self._interrupted = False

    @classmethod
    async def open(cls, engine: PostgresEngine, channel: str) -> AsyncPostgresWakeups:
        """Connect and LISTEN on ``channel``."""
        import psycopg

        with postgres_errors(engine.url):
            connection = await psycopg.AsyncConnection.connect(
                engine.url, autocommit=True, connect_timeout=max(1, int(engine.timeout))
            )
            await connection.execute(f'LISTEN "{channel}"')
        return cls(connection, engine.url)

    async def wait(self, seconds: float) -> bool:
        """Wait for a notification or ``seconds`` pass; True when notified."""
        deadline = time.monotonic() + seconds
        with postgres_errors(self.url):
            while not self._interrupted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                async for _ in self.connection.notifies(
                    timeout=min(remaining, _SLICE), stop_after=1
                ):
                    return True
        self._interrupted = False
        return False

    def interrupt(self) -> None:
        """Make a pending ``wait`` return within ``_SLICE`` seconds."""
        self._interrupted = True

    async def close(self) -> None:
        """Close the LISTEN connection."""
        await self.connection.close()


class AsyncPostgresEventStore(AsyncEventStoreBase):
    """An event store in PostgreSQL for asyncio (psycopg's async pool).

    The same tables, statements and guarantees as :class:`PostgresEventStore`;
    tables are created on first use (or by awaiting :meth:`create_tables`).
    """

    def __init__(
        self,
        engine: Engine | str,
        *,
        types: EventTypes | None = None,
        table_prefix: str = "seawall_",
        schema: str | None = None,
        notify: bool = True,
        notify_interval: float = 0.005,
        create: bool = True,
    ) -> None:
        from seawall.engines import connect

        engine = connect(engine)
        if not isinstance(engine, PostgresEngine):
            raise ConfigurationError(
                f"AsyncPostgresEventStore needs a postgres engine, got {engine!r}"
            )
        super().__init__(engine, types=types, table_prefix=table_prefix)
        schema_name, prefix = _store_names(schema, table_prefix)
        self.schema = schema_name or None
        self.notify = notify
        self._sql = _Sql(schema_name, prefix)
        self._postgres = engine
        self._notifier = Notifier(engine, self._sql.channel, notify_interval)
        self._ready = not create

    @property
    def supports_transactions(self) -> bool:
        """True: writes can join a transaction from ``engine.atransaction()``."""
        return True

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel that announces new events."""
        return self._sql.channel

    def _check_transaction(self, transaction: Transaction) -> None:
        import psycopg

        if getattr(transaction, "engine", None) is None or transaction.engine.kind != "postgres":
            raise ConfigurationError(
                f"transaction {transaction!r} does not belong to a postgres engine; "
                "open it with this store's engine.atransaction()"
            )
        if not isinstance(transaction.connection, psycopg.AsyncConnection):
            raise ConfigurationError(
                "this asyncio store needs a transaction from engine.atransaction(), "
                "not engine.transaction(); use the synchronous store for that one"
            )

    async def _ensure(self) -> None:
        if not self._ready:
            await self.create_tables()

    async def _fetch(
        self, transaction: Transaction | None, query: str, parameters: Sequence[Any]
    ) -> list[Any]:
        if transaction is not None:
            connection: psycopg.AsyncConnection[Any] = transaction.connection
            with postgres_errors(self.engine.url):
                cursor = await connection.execute(query, parameters)
                return await cursor.fetchall()
        await self._ensure()
        pool = await self._postgres.async_pool()
        with postgres_errors(self.engine.url):
            async with pool.connection() as connection:
                cursor = await connection.execute(query, parameters)
                return await cursor.fetchall()

    async def _execute(
        self, transaction: Transaction | None, query: str, parameters: Sequence[Any]
    ) -> None:
        if transaction is not None:
            with postgres_errors(self.engine.url):
                await transaction.connection.execute(query, parameters)
            return
        await self._ensure()
        pool = await self._postgres.async_pool()
        with postgres_errors(self.engine.url):
            async with pool.connection() as connection:
                await connection.execute(query, parameters)

    async def _heads(
        self, connection: psycopg.AsyncConnection[Any], streams: list[str]
    ) -> list[int]:
        cursor = await connection.execute(self._sql.heads, (streams,))
        return [int(row[0]) for row in await cursor.fetchall()]

    async def _append(self, batch: Batch, transaction: Transaction | None) -> list[AppendResult]:
        sql = self._sql
        attempt = AppendAttempt(
            sql, batch, in_transaction=transaction is not None, notify=self.notify
        )
        if transaction is not None:
            connection: psycopg.AsyncConnection[Any] = transaction.connection
            with postgres_errors(self.engine.url):
                if not attempt.count:
                    return attempt.empty_results(await self._heads(connection, attempt.streams))
                while True:
                    try:
                        cursor = await connection.execute(attempt.statement, attempt.parameters)
                        rows = await cursor.fetchall()
                    except Exception as exc:
                        if not _is_stream_conflict(exc, sql.stream_constraint):
                            raise
                        # The caller's transaction is aborted: read the heads elsewhere.
                        pool = await self._postgres.async_pool()
                        async with pool.connection() as other:
                            heads = await self._heads(other, attempt.streams)
                        raise _conflict_after_race(batch, heads) from exc
                    results = attempt.results(rows)
                    if results is not None:
                        return results
                    attempt.check_heads(await self._heads(connection, attempt.streams))
        await self._ensure()
        pool = await self._postgres.async_pool()
        with postgres_errors(self.engine.url):
            async with pool.connection() as connection:
                if not attempt.count:
                    return attempt.empty_results(await self._heads(connection, attempt.streams))
                races = 0
                while True:
                    try:
                        cursor = await connection.execute(attempt.statement, attempt.parameters)
                        rows = await cursor.fetchall()
                    except Exception as exc:
                        if not _is_stream_conflict(exc, sql.stream_constraint):
                            raise
                        heads = await self._heads(connection, attempt.streams)
                        error = _conflict_after_race(batch, heads)
                        races += 1
                        if error.expected != ANY or races >= _APPEND_RETRIES:
                            raise error from exc
                        continue
                    results = attempt.results(rows)
                    if results is not None:
                        break
                    attempt.check_heads(await self._heads(connection, attempt.streams))
        if self.notify:
            self._notifier.poke()
        return results

    async def _select_stream(
        self,
        stream_id: str,
        from_version: int | None,
        backwards: bool,
        limit: int | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        if backwards:
            top = (1 << 62) if from_version is None else from_version
            return await self._fetch(transaction, self._sql.backwards, (stream_id, top, limit))
        first = 1 if from_version is None else from_version
        return await self._fetch(transaction, self._sql.forwards, (stream_id, first, limit))

    async def _select_version(self, stream_id: str, transaction: Transaction | None) -> int:
        rows = await self._fetch(transaction, self._sql.version, (stream_id,))
        return int(rows[0][0]) if rows else 0

    async def _select_all(
        self,
        after: int,
        limit: int,
        stored_types: tuple[str, ...] | None,
        transaction: Transaction | None,
    ) -> list[Any]:
        if stored_types is None:
            return await self._fetch(transaction, self._sql.all, (after, limit))
        return await self._fetch(
            transaction, self._sql.all_typed, (after, list(stored_types), limit)
        )

    async def _put_snapshot(
        self,
        stream_id: str,
        version: int,
        schema_version: int,
        data_json: str,
        transaction: Transaction | None,
    ) -> None:
        await self._execute(
            transaction, self._sql.put_snapshot, (stream_id, version, schema_version, data_json)
        )

    async def _get_snapshot(
        self, stream_id: str, transaction: Transaction | None
    ) -> SnapshotRow | None:
        rows = await self._fetch(transaction, self._sql.get_snapshot, (stream_id,))
        if not rows:
            return None
        row = rows[0]
        return int(row[0]), int(row[1]), row[2], int(row[3])

    async def _get_checkpoint(self, name: str, transaction: Transaction | None) -> int | None:
        rows = await self._fetch(transaction, self._sql.get_checkpoint, (name,))
        return int(rows[0][0]) if rows else None

    async def _put_checkpoint(
        self, name: str, position: int, transaction: Transaction | None
    ) -> None:
        await self._execute(transaction, self._sql.put_checkpoint, (name, position))

    async def create_tables(self) -> None:
        """Create the schema (if any), the tables and the stream index if missing."""
        pool = await self._postgres.async_pool()
        with postgres_errors(self.engine.url):
            async with pool.connection() as connection, connection.transaction():
                await connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (self._sql.lock_key,)
                )
                for statement in self._sql.create:
                    await connection.execute(statement)
        self._ready = True

    async def drop_tables(self) -> None:
        """Drop the store's tables and everything in them (the schema stays)."""
        pool = await self._postgres.async_pool()
        with postgres_errors(self.engine.url):
            async with pool.connection() as connection:
                await connection.execute(self._sql.drop)
        self._ready = False

    async def wakeups(self, clock: Clock) -> AsyncWakeups:
        """A LISTEN connection on the store's channel (waits in real time)."""
        return await AsyncPostgresWakeups.open(self._postgres, self._sql.channel)

    async def close(self) -> None:
        """Stop the notifier thread (the engine and its pool stay open)."""
        await asyncio.to_thread(self._notifier.close)
