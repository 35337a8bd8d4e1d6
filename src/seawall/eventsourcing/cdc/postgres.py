"""Change data capture on PostgreSQL through logical decoding and a replication slot.

A logical replication slot keeps the write-ahead log from the slot's confirmed
position on and decodes it into row changes through an output plugin (``pgoutput``
with a publication listing the tables, or ``test_decoding``). The capture reads the
slot over plain SQL: ``pg_logical_slot_peek_binary_changes`` (or ``..._peek_changes``)
returns whole committed transactions without consuming them; only ``confirm`` moves
the slot, with ``pg_replication_slot_advance``, to the end of the last fully handled
transaction. A crash between handling and confirming delivers those changes again
(at-least-once); a confirmed change is never delivered again, even after a restart,
because the position lives in the slot on the server.

The initial snapshot is exact: the slot is created over a replication connection
with ``CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT``, and a ``REPEATABLE READ``
transaction imports that snapshot (``SET TRANSACTION SNAPSHOT``) to read the tables as
they were at the slot's starting point; every later commit comes from the slot. Without
the replication privilege the capture falls back to creating the slot with
``pg_create_logical_replication_slot`` and snapshotting right after it: nothing is lost,
but a change committed in between may be delivered twice.

The steps are written once, as generators that yield SQL requests
(:class:`_Query`) and receive the rows; a synchronous and an asyncio driver run them.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.engines._base import redact
from seawall.engines.postgres import postgres_errors
from seawall.errors import ConfigurationError
from seawall.events import EventHub
from seawall.eventsourcing.cdc._capture import DEFAULT_BATCH, AsyncChangeCapture, ChangeCapture
from seawall.eventsourcing.cdc._cursor import (
    SnapshotProgress,
    StreamTracker,
    check_max_events,
    check_position,
)
from seawall.eventsourcing.cdc._decoding import (
    LogicalDecoder,
    PgOutputDecoder,
    TestDecodingDecoder,
    convert_value,
    kind_for_oid,
    parse_lsn,
)
from seawall.eventsourcing.cdc._errors import (
    ChangeCaptureError,
    LogicalDecodingUnavailableError,
    SlotInUseError,
    SlotMismatchError,
    UncapturableTableError,
    UnknownTableError,
    format_lsn,
)
from seawall.eventsourcing.cdc._events import CaptureOpened, SnapshotCompleted
from seawall.eventsourcing.cdc._model import (
    ChangeEvent,
    ChangePosition,
    ChangeSource,
    TableInfo,
)

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.engines.postgres import PostgresEngine

__all__ = ["AsyncPostgresChangeCapture", "PostgresChangeCapture"]

POOL: Final = "pool"
SNAPSHOT: Final = "snapshot"
REPLICATION: Final = "replication"
STATE_TABLE: Final = "public.seawall_cdc_slots"
_SNAPSHOT_CURSOR: Final = "seawall_cdc_snapshot"
PEEK_ROWS: Final = 10_000
"""Rows a peek asks for at least: each peek decodes again from the slot's restart point."""
DEFAULT_ADVANCE_INTERVAL: Final = 1.0
"""Seconds between slot advances: each one decodes again from the slot's restart point."""
_SNAPSHOT_NAME = re.compile(r"[0-9A-Fa-f-]{1,64}")
_ENCODINGS: Final = {
    "UTF8": "utf-8",
    "SQL_ASCII": "utf-8",
    "LATIN1": "latin-1",
    "WIN1252": "cp1252",
}

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Query:
    """Run ``sql`` on a pooled connection, or on the capture's snapshot or replication one."""

    sql: str
    params: tuple[Any, ...] | None = None
    on: str = POOL


@dataclass(frozen=True, slots=True)
class _Close:
    """Close the capture's dedicated connection ``on``."""

    on: str


_Request = _Query | _Close
_Steps = Generator[_Request, Any, _T]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _split(spec: str) -> tuple[str, str]:
    schema, dot, table = spec.partition(".")
    return (schema, table) if dot else ("public", spec)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Core:
    """The capture's logic: every step as a generator of SQL requests (no I/O of its own)."""

    def __init__(
        self,
        *,
        server: str,
        tables: Sequence[str],
        slot: str,
        snapshot: bool,
        plugin: str,
        full_before_images: bool,
        name: str,
        events: EventHub,
        clock: Clock = SYSTEM_CLOCK,
        advance_interval: float = 1.0,
    ) -> None:
        self.server = server
        self.clock = clock
        self.advance_interval = advance_interval
        self.pending_advance: int | None = None
        self.last_advance: float | None = None
        self.specs = [_split(spec) for spec in tables]
        self.raw_specs = list(tables)
        self.slot = slot
        self.snapshot = snapshot
        self.plugin = plugin
        self.full_before_images = full_before_images
        self.name = name
        self.events = events
        self.publication = f"seawall_cdc_{slot}"
        self.opened = False
        self.database = ""
        self.infos: dict[tuple[str, str], TableInfo] = {}
        self.decoder: LogicalDecoder = TestDecodingDecoder(slot=slot, database="")
        self.tracker = StreamTracker()
        self.progress = SnapshotProgress()
        self.snapshot_lsn = 0
        self.snapshot_queue: deque[TableInfo] = deque()
        self.snapshot_info: TableInfo | None = None
        self.snapshot_open = False
        self.snapshot_exported = False
        self.slot_offset = 0
        self.delivered: ChangePosition | None = None
        self.confirmed: ChangePosition | None = None
        if plugin == "pgoutput":
            self.peek_sql = (
                "SELECT (lsn - '0/0'::pg_lsn)::bigint, xid::text::bigint, data FROM "
                "pg_logical_slot_peek_binary_changes(%s, NULL, %s, 'proto_version', '1', "
                "'publication_names', %s)"
            )
        else:
            self.peek_sql = (
                "SELECT (lsn - '0/0'::pg_lsn)::bigint, xid::text::bigint, data FROM "
                "pg_logical_slot_peek_changes(%s, NULL, %s, 'include-xids', '1', "
                "'include-timestamp', '1', 'skip-empty-xacts', '1')"
            )

    # -- opening ------------------------------------------------------------------------------

    def open_steps(self) -> _Steps[None]:
        """Check the server and tables, then create or resume the slot."""
        if self.opened:
            return
        rows = yield _Query(
            "SELECT current_setting('wal_level'), current_database(), "
            "current_setting('server_encoding')"
        )
        wal_level, database, encoding = rows[0]
        if wal_level != "logical":
            raise LogicalDecodingUnavailableError(self.server, wal_level)
        self.database = database
        infos = yield from self._describe_steps()
        state = yield from self._state_steps()
        slot_rows = yield _Query(
            "SELECT plugin::text, database::text, confirmed_flush_lsn::text, slot_type::text "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        )
        if slot_rows:
            plugin, slot_database, _, slot_type = slot_rows[0]
            if slot_type != "logical" or plugin != self.plugin:
                raise SlotMismatchError(
                    self.slot,
                    f"it is a {slot_type} slot with plugin {plugin!r}, not {self.plugin!r}",
                )
            if slot_database != database:
                raise SlotMismatchError(self.slot, f"it belongs to database {slot_database!r}")
            if state is not None and not state[1] and self.snapshot:
                # The snapshot was interrupted: start again from a new slot and snapshot.
                yield from self._drop_slot_steps()
                slot_rows = []
        self.tracker.reset()
        self.progress = SnapshotProgress()
        self.delivered = None
        self.confirmed = None
        self.pending_advance = None
        created = not slot_rows
        if self.plugin == "pgoutput":
            yield from self._publication_steps(infos)
        if created:
            yield from self._save_state_steps(snapshot_done=not self.snapshot)
            yield from self._create_slot_steps(infos)
        else:
            if state is None or not state[1]:
                yield from self._save_state_steps(snapshot_done=True)
            self.slot_offset = parse_lsn(slot_rows[0][2])
        self.infos = infos
        python_encoding = _ENCODINGS.get(str(encoding).upper(), "utf-8")
        if self.plugin == "pgoutput":
            self.decoder = PgOutputDecoder(
                slot=self.slot, database=database, tables=infos, encoding=python_encoding
            )
        else:
            self.decoder = TestDecodingDecoder(slot=self.slot, database=database, tables=infos)
        self.opened = True
        if self.events.active:
            self.events.emit(CaptureOpened(self.name, self.slot, created, self.progress.active))

    def _describe_steps(self) -> _Steps[dict[tuple[str, str], TableInfo]]:
        infos: dict[tuple[str, str], TableInfo] = {}
        missing: list[str] = []
        to_alter: list[tuple[str, str]] = []
        for spec, (schema, table) in zip(self.raw_specs, self.specs, strict=True):
            rows = yield _Query(
                "SELECT c.oid::bigint, c.relkind::text, c.relreplident::text, "
                "ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid "
                "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
                "ORDER BY a.attnum), "
                "ARRAY(SELECT a.atttypid::bigint FROM pg_attribute a WHERE a.attrelid = c.oid "
                "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
                "ORDER BY a.attnum), "
                "ARRAY(SELECT a.attname::text FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = c.oid AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (schema, table),
            )
            if not rows:
                missing.append(spec)
                continue
            _oid, relkind, identity, columns, types, primary_key = rows[0]
            if relkind not in ("r", "p"):
                raise UncapturableTableError(
                    spec, "it is not a table (a view or another relation); capture its tables"
                )
            if self.full_before_images and identity != "f":
                to_alter.append((schema, table))
                identity = "f"
            if self.plugin == "pgoutput" and (
                identity == "n" or (identity == "d" and not primary_key)
            ):
                raise UncapturableTableError(
                    spec,
                    "it has no primary key (nor another replica identity): published in a "
                    "publication, its UPDATEs and DELETEs would start failing; add a primary "
                    "key, or pass full_before_images=True (REPLICA IDENTITY FULL)",
                )
            infos[(schema, table)] = TableInfo(
                schema,
                table,
                tuple(columns),
                tuple(kind_for_oid(int(oid)) for oid in types),
                tuple(primary_key),
                identity_full=identity == "f",
            )
        if missing:
            raise UnknownTableError(missing, f"database {self.database!r} at {self.server}")
        for schema, table in to_alter:  # only once every table checked out: nothing half done
            yield _Query(f"ALTER TABLE {_quote(schema)}.{_quote(table)} REPLICA IDENTITY FULL")
        return infos

    def _state_steps(self) -> _Steps[tuple[str, bool] | None]:
        import psycopg

        # UniqueViolation / DuplicateTable: created at the same moment by another capture.
        with contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            yield _Query(
                f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (slot text PRIMARY KEY, "
                "plugin text NOT NULL, tables text NOT NULL, snapshot_done boolean NOT NULL, "
                "created_at timestamptz NOT NULL DEFAULT now())"
            )
        rows = yield _Query(
            f"SELECT plugin, snapshot_done FROM {STATE_TABLE} WHERE slot = %s", (self.slot,)
        )
        return (str(rows[0][0]), bool(rows[0][1])) if rows else None

    def _save_state_steps(self, *, snapshot_done: bool) -> _Steps[None]:
        tables = ",".join(f"{schema}.{table}" for schema, table in self.specs)
        yield _Query(
            f"INSERT INTO {STATE_TABLE} (slot, plugin, tables, snapshot_done) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (slot) DO UPDATE SET plugin = EXCLUDED.plugin, "
            "tables = EXCLUDED.tables, snapshot_done = EXCLUDED.snapshot_done",
            (self.slot, self.plugin, tables, snapshot_done),
        )

    def _publication_steps(self, infos: dict[tuple[str, str], TableInfo]) -> _Steps[None]:
        wanted = set(infos)
        listed = ", ".join(f"{_quote(schema)}.{_quote(table)}" for schema, table in infos)
        exists = yield _Query(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)
        )
        if not exists:
            yield _Query(f"CREATE PUBLICATION {_quote(self.publication)} FOR TABLE {listed}")
            return
        rows = yield _Query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = %s",
            (self.publication,),
        )
        if {(schema, table) for schema, table in rows} != wanted:
            yield _Query(f"ALTER PUBLICATION {_quote(self.publication)} SET TABLE {listed}")

    def _create_slot_steps(self, infos: dict[tuple[str, str], TableInfo]) -> _Steps[None]:
        import psycopg

        if not self.snapshot:
            rows = yield _Query(
                "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, %s)",
                (self.slot, self.plugin),
            )
            self.slot_offset = parse_lsn(rows[0][0])
            return
        exported: list[Any] = []
        try:
            exported = yield _Query(
                f"CREATE_REPLICATION_SLOT {_quote(self.slot)} LOGICAL {self.plugin} EXPORT_SNAPSHOT",
                on=REPLICATION,
            )
        except (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege):
            exported = []  # no replication connection allowed: the SQL function fallback below
        self.snapshot_open = True
        if exported and not _SNAPSHOT_NAME.fullmatch(str(exported[0][2])):
            raise ChangeCaptureError(
                f"CREATE_REPLICATION_SLOT returned an unexpected snapshot name "
                f"{exported[0][2]!r}; drop slot {self.slot!r} and report this"
            )
        if exported:
            consistent_point = parse_lsn(exported[0][1])
            self.snapshot_exported = True
            yield _Query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", on=SNAPSHOT)
            yield _Query(f"SET TRANSACTION SNAPSHOT '{exported[0][2]}'", on=SNAPSHOT)
            yield _Close(REPLICATION)
        else:
            self.snapshot_exported = False
            yield _Close(REPLICATION)
            rows = yield _Query(
                "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, %s)",
                (self.slot, self.plugin),
            )
            consistent_point = parse_lsn(rows[0][0])
            yield _Query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", on=SNAPSHOT)
            yield _Query("SELECT 1", on=SNAPSHOT)  # the snapshot is taken now, after the slot
        self.slot_offset = self.snapshot_lsn = consistent_point
        self.snapshot_queue = deque(infos.values())
        self.snapshot_info = None
        self.progress = SnapshotProgress(active=True)

    def _drop_slot_steps(self) -> _Steps[None]:
        import psycopg

        try:
            yield _Query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (self.slot,),
            )
        except psycopg.errors.ObjectInUse as exc:
            raise SlotInUseError(self.slot, str(exc).strip()) from exc

    # -- reading ------------------------------------------------------------------------------

    def poll_steps(self, max_events: int) -> _Steps[list[ChangeEvent]]:
        """The snapshot's next rows, or the slot's next changes (peeked, not consumed)."""
        yield from self.open_steps()
        progress = self.progress
        if progress.reading:
            yield from self._read_snapshot_steps(progress.wanted(max_events))
            if progress.empty:
                progress.active = False
                yield from self._snapshot_done_steps(0)
            events = progress.take(max_events)
            if events:
                self.delivered = events[-1].position
                return events
        tracker = self.tracker
        upto = 0
        while tracker.buffered < max_events:
            # A peek returns whole transactions from the slot's position: the ones held
            # already (pending_rows), then new ones. Every peek makes the server decode
            # again from the slot's restart point, so ask for plenty (PEEK_ROWS at least)
            # and keep the rest for the next polls; a full answer may mean more is waiting.
            wanted = max(2 * (max_events - tracker.buffered) + 4, PEEK_ROWS)
            upto = max(upto * 2, tracker.pending_rows + wanted)
            returned = yield from self._peek_steps(upto)
            if returned < upto:
                break
        events = tracker.take(max_events)
        if events:
            self.delivered = events[-1].position
        return events

    def _peek_steps(self, upto: int) -> _Steps[int]:
        """Peek up to about ``upto`` rows and hold what is new; returns the rows returned."""
        import psycopg

        params: tuple[Any, ...] = (
            (self.slot, upto, self.publication) if self.plugin == "pgoutput" else (self.slot, upto)
        )
        try:
            rows = yield _Query(self.peek_sql, params)
        except psycopg.errors.ObjectInUse as exc:
            raise SlotInUseError(self.slot, str(exc).strip()) from exc
        except psycopg.errors.UndefinedObject as exc:
            self.opened = False
            raise ChangeCaptureError(
                f"replication slot {self.slot!r} no longer exists ({str(exc).strip()}); the "
                "next call creates it again and takes a new snapshot"
            ) from exc
        if not rows:
            return 0
        transactions = self.decoder.decode(rows, _now_ms(), self.tracker.held_xids())
        self.tracker.accept(transactions)
        skip = self.tracker.idle_target()
        if skip is not None and skip > self.slot_offset:
            yield from self._maybe_advance_steps(skip)
        return len(rows)

    def _read_snapshot_steps(self, count: int) -> _Steps[None]:
        progress = self.progress
        now_ms = _now_ms()
        while count > 0 and not progress.exhausted:
            info = self.snapshot_info
            if info is None:
                if not self.snapshot_queue:
                    progress.exhausted = True
                    yield from self._end_snapshot_steps("COMMIT")
                    return
                info = self.snapshot_info = self.snapshot_queue.popleft()
                columns = ", ".join(f"{_quote(column)}::text" for column in info.columns)
                yield _Query(
                    f"DECLARE {_SNAPSHOT_CURSOR} NO SCROLL CURSOR FOR SELECT {columns} "
                    f"FROM {_quote(info.schema)}.{_quote(info.name)}",
                    on=SNAPSHOT,
                )
            rows = yield _Query(f"FETCH FORWARD {int(count)} FROM {_SNAPSHOT_CURSOR}", on=SNAPSHOT)
            columns_, kinds, key_columns = info.columns, info.kinds, info.primary_key
            source = ChangeSource(
                "postgresql",
                self.slot,
                self.database,
                info.schema,
                info.name,
                now_ms,
                "true",
                self.snapshot_lsn,
                None,
            )
            for row in rows:
                after = {
                    column: None if text is None else convert_value(kind, text)
                    for column, kind, text in zip(columns_, kinds, row, strict=True)
                }
                progress.buffer.append(
                    ChangeEvent(
                        "r",
                        None,
                        after,
                        source,
                        now_ms,
                        ChangePosition(0, progress.next_sequence()),
                        {column: after[column] for column in key_columns} if key_columns else None,
                    )
                )
            if len(rows) < count:
                yield _Query(f"CLOSE {_SNAPSHOT_CURSOR}", on=SNAPSHOT)
                self.snapshot_info = None
            count -= len(rows)

    def _end_snapshot_steps(self, how: str) -> _Steps[None]:
        import psycopg

        if self.snapshot_open:
            self.snapshot_open = False
            self.snapshot_info = None
            try:
                yield _Query(how, on=SNAPSHOT)
            except psycopg.Error:
                yield _Close(SNAPSHOT)
                raise
            yield _Close(SNAPSHOT)

    def _snapshot_done_steps(self, rows: int) -> _Steps[None]:
        yield _Query(f"UPDATE {STATE_TABLE} SET snapshot_done = true WHERE slot = %s", (self.slot,))
        if self.events.active:
            self.events.emit(SnapshotCompleted(self.name, self.slot, rows))

    # -- confirming ---------------------------------------------------------------------------

    def confirm_steps(self, position: ChangePosition | ChangeEvent) -> _Steps[None]:
        """Record that everything up to ``position`` is handled; advance the slot if it can."""
        target = check_position(position)
        delivered = self.delivered
        if delivered is None or target > delivered:
            raise ConfigurationError(
                f"position {tuple(target)} has not been delivered by this capture yet (last "
                f"delivered: {None if delivered is None else tuple(delivered)}); confirm only "
                "positions of events poll() returned"
            )
        if self.confirmed is not None and target <= self.confirmed:
            return
        progress = self.progress
        if progress.confirm(target):
            yield from self._snapshot_done_steps(progress.total or 0)
        if target.offset > 0:
            offset = self.tracker.advance_target(target)
            if offset is not None and offset > self.slot_offset:
                yield from self._maybe_advance_steps(offset)
        self.confirmed = target

    def _maybe_advance_steps(self, offset: int) -> _Steps[None]:
        """Advance now, or record the target when the last advance is too recent."""
        if self.pending_advance is None or offset > self.pending_advance:
            self.pending_advance = offset
        last = self.last_advance
        if last is None or self.clock.now() - last >= self.advance_interval:
            yield from self._advance_steps(self.pending_advance)

    def flush_steps(self) -> _Steps[None]:
        """Advance the slot to the last confirmed position now, if it is not there yet."""
        pending = self.pending_advance
        if pending is not None and pending > self.slot_offset and self.opened:
            yield from self._advance_steps(pending)

    def _advance_steps(self, offset: int) -> _Steps[None]:
        import psycopg

        try:
            yield _Query(
                "SELECT end_lsn::text FROM pg_replication_slot_advance(%s, %s::pg_lsn)",
                (self.slot, format_lsn(offset)),
            )
        except psycopg.errors.ObjectInUse as exc:
            raise SlotInUseError(self.slot, str(exc).strip()) from exc
        self.tracker.advanced(offset)
        self.slot_offset = offset
        self.pending_advance = None
        self.last_advance = self.clock.now()

    def unread(self, events: list[ChangeEvent], last_handled: ChangePosition | None) -> None:
        """Hand ``events`` out again on the next poll (their handler failed)."""
        snapshot = [event for event in events if event.position.offset == 0]
        stream = [event for event in events if event.position.offset > 0]
        if snapshot:
            self.progress.unread(snapshot)
        if stream:
            tracker_last = last_handled if last_handled and last_handled.offset > 0 else None
            self.tracker.unread(stream, tracker_last)
        self.delivered = last_handled

    # -- lifecycle ----------------------------------------------------------------------------

    def drop_steps(self) -> _Steps[None]:
        """Remove the slot, the publication and the stored state."""
        yield from self._end_snapshot_steps("ROLLBACK")
        yield from self._drop_slot_steps()
        yield _Query(f"DROP PUBLICATION IF EXISTS {_quote(self.publication)}")
        rows = yield _Query(f"SELECT to_regclass('{STATE_TABLE}') IS NOT NULL")
        if rows and rows[0][0]:
            yield _Query(f"DELETE FROM {STATE_TABLE} WHERE slot = %s", (self.slot,))
        self.opened = False
        self.tracker.reset()
        self.progress = SnapshotProgress()
        self.delivered = self.confirmed = None
        self.pending_advance = None

    def close_steps(self) -> _Steps[None]:
        """Advance to the last confirmation, give up an unfinished snapshot, forget the state."""
        import psycopg

        try:
            yield from self.flush_steps()
        except (psycopg.Error, ChangeCaptureError):
            yield from self._end_snapshot_steps("ROLLBACK")
            raise
        yield from self._end_snapshot_steps("ROLLBACK")
        yield _Close(REPLICATION)
        self.opened = False


def _rows(cursor: Any) -> list[Any]:
    return list(cursor.fetchall()) if cursor.description is not None else []


class _SyncDriver:
    """Runs the core's steps with psycopg's blocking API."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine
        self.connections: dict[str, Any] = {}

    def run(self, steps: _Steps[_T]) -> _T:
        import psycopg

        with postgres_errors(self.engine.url):
            reply: Any = None
            error: BaseException | None = None
            while True:
                try:
                    request = steps.send(reply) if error is None else steps.throw(error)
                except StopIteration as stop:
                    result: _T = stop.value
                    return result
                reply, error = None, None
                try:
                    reply = self._execute(request)
                except psycopg.Error as exc:
                    error = exc  # the steps may handle it (a slot in use, a race, ...)
                except BaseException:
                    steps.close()
                    raise

    def _execute(self, request: _Request) -> Any:
        if isinstance(request, _Close):
            conn = self.connections.pop(request.on, None)
            if conn is not None:
                conn.close()
            return None
        if request.on == POOL:
            with self.engine.pool.connection() as pooled:
                return _rows(pooled.execute(request.sql, request.params))
        conn = self.connections.get(request.on)
        if conn is None:
            import psycopg

            extra: dict[str, Any] = {"replication": "database"} if request.on == REPLICATION else {}
            conn = psycopg.connect(
                self.engine.url,
                autocommit=True,
                connect_timeout=max(1, int(self.engine.timeout)),
                **extra,
            )
            self.connections[request.on] = conn
        return _rows(conn.execute(request.sql, request.params))

    def close(self) -> None:
        connections, self.connections = self.connections, {}
        for conn in connections.values():
            conn.close()


class _AsyncDriver:
    """Runs the core's steps with psycopg's asyncio API."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine
        self.connections: dict[str, Any] = {}

    async def run(self, steps: _Steps[_T]) -> _T:
        import psycopg

        with postgres_errors(self.engine.url):
            reply: Any = None
            error: BaseException | None = None
            while True:
                try:
                    request = steps.send(reply) if error is None else steps.throw(error)
                except StopIteration as stop:
                    result: _T = stop.value
                    return result
                reply, error = None, None
                try:
                    reply = await self._execute(request)
                except psycopg.Error as exc:
                    error = exc  # the steps may handle it (a slot in use, a race, ...)
                except BaseException:
                    steps.close()
                    raise

    async def _execute(self, request: _Request) -> Any:
        if isinstance(request, _Close):
            conn = self.connections.pop(request.on, None)
            if conn is not None:
                await conn.close()
            return None
        if request.on == POOL:
            pool = await self.engine.async_pool()
            async with pool.connection() as pooled:
                return await _arows(await pooled.execute(request.sql, request.params))
        conn = self.connections.get(request.on)
        if conn is None:
            import psycopg

            extra: dict[str, Any] = {"replication": "database"} if request.on == REPLICATION else {}
            conn = await psycopg.AsyncConnection.connect(
                self.engine.url,
                autocommit=True,
                connect_timeout=max(1, int(self.engine.timeout)),
                **extra,
            )
            self.connections[request.on] = conn
        return await _arows(await conn.execute(request.sql, request.params))

    async def close(self) -> None:
        connections, self.connections = self.connections, {}
        for conn in connections.values():
            await conn.close()


async def _arows(cursor: Any) -> list[Any]:
    return list(await cursor.fetchall()) if cursor.description is not None else []


def _core(
    engine: PostgresEngine,
    tables: Sequence[str],
    *,
    slot: str,
    snapshot: bool,
    plugin: str,
    full_before_images: bool,
    name: str,
    events: EventHub,
    clock: Clock,
    advance_interval: float,
) -> _Core:
    if (
        not isinstance(advance_interval, int | float)
        or isinstance(advance_interval, bool)
        or not 0 <= advance_interval <= 3600
    ):
        raise ConfigurationError(
            f"advance_interval={advance_interval!r} must be seconds from 0 (advance on every "
            "confirm) to 3600"
        )
    return _Core(
        server=redact(engine.url),
        tables=tables,
        slot=slot,
        snapshot=snapshot,
        plugin=plugin,
        full_before_images=full_before_images,
        name=name,
        events=events,
        clock=clock,
        advance_interval=float(advance_interval),
    )


class PostgresChangeCapture(ChangeCapture):
    """Logical-decoding change capture of PostgreSQL tables (see the module docs).

    Needs ``wal_level=logical`` and a free replication slot. ``before`` holds the
    whole old row only for tables with ``REPLICA IDENTITY FULL`` (pass
    ``full_before_images=True``); otherwise updates carry no ``before`` unless the key
    changed, and deletes carry the key columns only. A slot keeps the server's WAL
    until it is confirmed: drop slots you no longer read (:meth:`drop`).
    """

    def __init__(
        self,
        engine: PostgresEngine,
        tables: Sequence[str],
        *,
        slot: str,
        snapshot: bool = True,
        plugin: str = "pgoutput",
        full_before_images: bool = False,
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        advance_interval: float = DEFAULT_ADVANCE_INTERVAL,
    ) -> None:
        super().__init__(slot=slot, tables=tables, name=name, clock=clock)
        self.engine = engine
        self.plugin = plugin
        self.core = _core(
            engine,
            tables,
            slot=slot,
            snapshot=snapshot,
            plugin=plugin,
            full_before_images=full_before_images,
            name=self.name,
            events=self.events,
            clock=clock,
            advance_interval=advance_interval,
        )
        self._driver = _SyncDriver(engine)

    def open(self) -> None:
        """Check ``wal_level`` and the tables; create the slot (and snapshot) or resume it."""
        self._driver.run(self.core.open_steps())

    def poll(self, max_events: int = DEFAULT_BATCH) -> list[ChangeEvent]:
        """Up to ``max_events`` changes: the snapshot's rows first, then the slot's changes."""
        check_max_events(max_events)
        return self._driver.run(self.core.poll_steps(max_events))

    def confirm(
        self, position: ChangePosition | ChangeEvent, *, transaction: Transaction | None = None
    ) -> None:
        """Advance the slot past every transaction fully handled up to ``position``.

        A slot moves by whole transactions: a position inside a transaction keeps that
        transaction in the slot until its last change is confirmed. The slot moves at most
        once per ``advance_interval`` (each move makes the server decode again);
        :meth:`flush` and :meth:`close` move it to the last confirmation at once.
        """
        if transaction is not None:
            raise ConfigurationError(
                "a PostgreSQL change capture cannot confirm inside a transaction: advancing a "
                "replication slot is not transactional; confirm after your transaction commits "
                "(and make the handler idempotent: event.id is stable)"
            )
        self._driver.run(self.core.confirm_steps(position))
        self._confirmed = self.core.confirmed

    def flush(self) -> None:
        """Advance the slot to the last confirmed position now (durable from here on)."""
        self._driver.run(self.core.flush_steps())

    def _unread(self, events: list[ChangeEvent], last_handled: ChangePosition | None) -> None:
        self.core.unread(events, last_handled)

    def drop(self) -> None:
        """Drop the replication slot, its publication and its stored state."""
        try:
            self._driver.run(self.core.drop_steps())
        finally:
            self._driver.close()
        self._confirmed = None

    def close(self) -> None:
        """Close the capture's own connections; the slot stays on the server, ready to resume."""
        try:
            self._driver.run(self.core.close_steps())
        finally:
            self._driver.close()


class AsyncPostgresChangeCapture(AsyncChangeCapture):
    """The asyncio twin of :class:`PostgresChangeCapture` (psycopg's asyncio connections)."""

    def __init__(
        self,
        engine: PostgresEngine,
        tables: Sequence[str],
        *,
        slot: str,
        snapshot: bool = True,
        plugin: str = "pgoutput",
        full_before_images: bool = False,
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        advance_interval: float = DEFAULT_ADVANCE_INTERVAL,
    ) -> None:
        super().__init__(slot=slot, tables=tables, name=name, clock=clock)
        self.engine = engine
        self.plugin = plugin
        self.core = _core(
            engine,
            tables,
            slot=slot,
            snapshot=snapshot,
            plugin=plugin,
            full_before_images=full_before_images,
            name=self.name,
            events=self.events,
            clock=clock,
            advance_interval=advance_interval,
        )
        self._driver = _AsyncDriver(engine)

    async def open(self) -> None:
        """See :meth:`PostgresChangeCapture.open`."""
        await self._driver.run(self.core.open_steps())

    async def poll(self, max_events: int = DEFAULT_BATCH) -> list[ChangeEvent]:
        """See :meth:`PostgresChangeCapture.poll`."""
        check_max_events(max_events)
        return await self._driver.run(self.core.poll_steps(max_events))

    async def confirm(self, position: ChangePosition | ChangeEvent) -> None:
        """See :meth:`PostgresChangeCapture.confirm`."""
        await self._driver.run(self.core.confirm_steps(position))
        self._confirmed = self.core.confirmed

    async def flush(self) -> None:
        """See :meth:`PostgresChangeCapture.flush`."""
        await self._driver.run(self.core.flush_steps())

    def _unread(self, events: list[ChangeEvent], last_handled: ChangePosition | None) -> None:
        self.core.unread(events, last_handled)

    async def drop(self) -> None:
        """See :meth:`PostgresChangeCapture.drop`."""
        try:
            await self._driver.run(self.core.drop_steps())
        finally:
            await self._driver.close()
        self._confirmed = None

    async def close(self) -> None:
        """See :meth:`PostgresChangeCapture.close`."""
        try:
            await self._driver.run(self.core.close_steps())
        finally:
            await self._driver.close()
