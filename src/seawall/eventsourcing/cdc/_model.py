"""What change data capture hands out: Debezium-format change events and their positions.

A :class:`ChangeEvent` is one row change (or one snapshot row) of a captured table:
``op`` is ``"c"`` (insert), ``"u"`` (update), ``"d"`` (delete), ``"r"`` (a row of the
initial snapshot) or ``"t"`` (truncate); ``before`` and ``after`` are the row's column
values as JSON-compatible dicts; ``source`` says where and when it happened.
``to_debezium()`` gives the envelope Debezium connectors publish, so consumers written
for Debezium can read seawall's events unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from seawall._version import __version__

__all__ = [
    "UNAVAILABLE",
    "ChangeEvent",
    "ChangeOp",
    "ChangePosition",
    "ChangeSource",
    "TableInfo",
]

UNAVAILABLE: Final = "__debezium_unavailable_value"
"""Stands for a column value the database did not send (an unchanged TOASTed value).

The same placeholder Debezium uses. It appears only when the row's ``before`` image
does not hold the value either (see ``REPLICA IDENTITY FULL``).
"""


class ChangeOp:
    """The Debezium operation codes a :class:`ChangeEvent` carries in ``op``."""

    CREATE: Final = "c"
    """A row was inserted."""
    UPDATE: Final = "u"
    """A row was updated."""
    DELETE: Final = "d"
    """A row was deleted."""
    READ: Final = "r"
    """A row read by the initial snapshot."""
    TRUNCATE: Final = "t"
    """The whole table was emptied (PostgreSQL ``TRUNCATE``); ``before`` and ``after`` are None."""


OP_NAMES: Final = {"c": "created", "u": "updated", "d": "deleted", "r": "read", "t": "truncated"}
"""A past-tense word for each operation code, for event type names."""


class ChangePosition(NamedTuple):
    """Where a change sits in a capture's stream; positions only increase.

    ``offset`` is, on PostgreSQL, the WAL position (LSN) at which the change's
    transaction ended (what the replication slot advances to on confirm); on SQLite
    the change row's id. ``sequence`` is the change's place in its transaction
    (always 0 on SQLite). Snapshot rows have ``offset`` 0 and ``sequence`` 1, 2, 3, ...
    so they sort before every streamed change.
    """

    offset: int
    sequence: int = 0

    @property
    def is_snapshot(self) -> bool:
        """True for a row of the initial snapshot."""
        return self.offset == 0


class ChangeSource(NamedTuple):
    """Debezium's ``source`` block: the database, table, log position and time of a change.

    ``ts_ms`` is when the change was committed (PostgreSQL) or written (SQLite), in
    milliseconds since the epoch; ``snapshot`` is ``"true"`` for snapshot rows,
    ``"last"`` for the final one and ``"false"`` for streamed changes. ``lsn`` and
    ``tx_id`` are PostgreSQL's (the change's own WAL position and transaction id);
    ``change_id`` is SQLite's change row id. An immutable tuple, cheap to build.
    """

    connector: str
    name: str
    db: str
    schema: str
    table: str
    ts_ms: int | None
    snapshot: str = "false"
    lsn: int | None = None
    tx_id: int | None = None
    change_id: int | None = None

    def to_debezium(self) -> dict[str, Any]:
        """The block as Debezium writes it (``txId`` in camel case, ``version`` added)."""
        block: dict[str, Any] = {
            "version": __version__,
            "connector": self.connector,
            "name": self.name,
            "ts_ms": self.ts_ms,
            "snapshot": self.snapshot,
            "db": self.db,
            "schema": self.schema,
            "table": self.table,
            "txId": self.tx_id,
            "lsn": self.lsn,
        }
        if self.change_id is not None:
            block["change_id"] = self.change_id
        return block


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One captured row change in Debezium's shape, with its position in the stream.

    ``key`` holds the primary-key columns of the row (``None`` when the table has no
    primary key, and for truncates). ``ts_ms`` is when seawall read the change.
    Confirm ``position`` (``capture.confirm(event.position)``) once the change is
    handled: it is then never delivered again.
    """

    op: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: ChangeSource
    ts_ms: int
    position: ChangePosition
    key: dict[str, Any] | None = None

    @property
    def table(self) -> str:
        """The table's name (without its schema)."""
        return self.source.table

    @property
    def schema(self) -> str:
        """The table's schema (``public``-like on PostgreSQL, ``main`` on SQLite)."""
        return self.source.schema

    @property
    def id(self) -> str:
        """A stable id: the same change delivered again has the same id (use it to deduplicate).

        Streamed changes: ``slot:offset:sequence``. Snapshot rows add the snapshot's
        starting point, so a snapshot taken again (after an interrupted one) gets new ids.
        """
        position = self.position
        if position.offset == 0:
            start = self.source.lsn if self.source.lsn is not None else self.source.change_id
            return f"{self.source.name}:snapshot:{start}:{position.sequence}"
        return f"{self.source.name}:{position.offset}:{position.sequence}"

    def to_debezium(self) -> dict[str, Any]:
        """The Debezium envelope: ``before``, ``after``, ``source``, ``op`` and ``ts_ms``."""
        return {
            "before": self.before,
            "after": self.after,
            "source": self.source.to_debezium(),
            "op": self.op,
            "ts_ms": self.ts_ms,
        }


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A captured table as the catalog describes it: columns, their types, its primary key.

    ``kinds`` holds one value-conversion kind per column (see ``_decoding``);
    ``identity_full`` is True when the table's old rows are logged whole
    (PostgreSQL ``REPLICA IDENTITY FULL``; always on SQLite).
    """

    schema: str
    name: str
    columns: tuple[str, ...]
    kinds: tuple[int, ...]
    primary_key: tuple[str, ...]
    identity_full: bool = False

    @property
    def qualified(self) -> str:
        """``schema.name``, as written in errors and logs."""
        return f"{self.schema}.{self.name}"


def _slot_setters() -> tuple[Any, ...]:
    names = ("op", "before", "after", "source", "ts_ms", "position", "key")
    return tuple(getattr(ChangeEvent, name).__set__ for name in names)


_SET_OP, _SET_BEFORE, _SET_AFTER, _SET_SOURCE, _SET_TS, _SET_POSITION, _SET_KEY = _slot_setters()
_new = object.__new__


def new_change_event(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source: ChangeSource,
    ts_ms: int,
    position: ChangePosition,
    key: dict[str, Any] | None,
) -> ChangeEvent:
    """A :class:`ChangeEvent`, built for the hot path of decoding.

    The frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``;
    writing the slots directly gives the same immutable object about 40% faster.
    """
    event: ChangeEvent = _new(ChangeEvent)
    _SET_OP(event, op)
    _SET_BEFORE(event, before)
    _SET_AFTER(event, after)
    _SET_SOURCE(event, source)
    _SET_TS(event, ts_ms)
    _SET_POSITION(event, position)
    _SET_KEY(event, key)
    return event
