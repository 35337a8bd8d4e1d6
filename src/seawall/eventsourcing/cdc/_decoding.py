"""Sans-I/O decoders: logical decoding output in, Debezium-format change events out.

PostgreSQL's logical decoding turns the write-ahead log into messages through an
output plugin. Two plugins ship with every server:

* ``pgoutput`` (the default here), the binary protocol of built-in logical
  replication: ``Begin``, ``Relation`` (a table's columns and their type OIDs),
  ``Insert``, ``Update``, ``Delete``, ``Truncate`` and ``Commit`` messages, filtered by a
  publication. :class:`PgOutputDecoder` reads protocol version 1.
* ``test_decoding``, one text line per change (``table public.t: INSERT: id[integer]:1
  name[text]:'x'``). :class:`TestDecodingDecoder` parses it, quoted values included.

Both are fed the ``(lsn, xid, data)`` rows of ``pg_logical_slot_peek_*changes`` and
return one :class:`DecodedTransaction` per commit. Nothing here touches a socket or a
clock: the caller passes the time in, so tests feed captured bytes and lines.

Values come out JSON-compatible and the same whichever plugin produced them:
integers as ``int``, ``real``/``double precision`` as ``float`` (``"NaN"`` and the
infinities as strings), ``boolean`` as ``bool``, ``json``/``jsonb`` parsed, and every
other type (``numeric`` included, to keep its precision) as PostgreSQL's text form.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, NamedTuple, Protocol

from seawall.eventsourcing.cdc._errors import ChangeDecodingError
from seawall.eventsourcing.cdc._model import (
    UNAVAILABLE,
    ChangeEvent,
    ChangePosition,
    ChangeSource,
    TableInfo,
    new_change_event,
)

__all__ = [
    "KIND_BOOL",
    "KIND_FLOAT",
    "KIND_INT",
    "KIND_JSON",
    "KIND_TEXT",
    "DecodedTransaction",
    "LogicalDecoder",
    "PgOutputDecoder",
    "TestDecodingDecoder",
    "convert_value",
    "kind_for_oid",
    "kind_for_type_name",
    "parse_lsn",
]

KIND_TEXT: Final = 0
KIND_INT: Final = 1
KIND_FLOAT: Final = 2
KIND_BOOL: Final = 3
KIND_JSON: Final = 4

_OID_KINDS: Final = {
    16: KIND_BOOL,  # boolean
    20: KIND_INT,  # bigint
    21: KIND_INT,  # smallint
    23: KIND_INT,  # integer
    26: KIND_INT,  # oid
    28: KIND_INT,  # xid
    114: KIND_JSON,  # json
    700: KIND_FLOAT,  # real
    701: KIND_FLOAT,  # double precision
    3802: KIND_JSON,  # jsonb
}
_NAME_KINDS: Final = {
    "boolean": KIND_BOOL,
    "bigint": KIND_INT,
    "smallint": KIND_INT,
    "integer": KIND_INT,
    "oid": KIND_INT,
    "xid": KIND_INT,
    "json": KIND_JSON,
    "real": KIND_FLOAT,
    "double precision": KIND_FLOAT,
    "jsonb": KIND_JSON,
}
_FLOAT_WORDS: Final = frozenset({"NaN", "Infinity", "-Infinity"})
_JSON_TYPES: Final = frozenset({"json", "jsonb"})
_PG_EPOCH_MS: Final = 946_684_800_000
"""Milliseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC)."""


def kind_for_oid(oid: int) -> int:
    """How to convert the text of a value of the type with this OID (built-in types)."""
    return _OID_KINDS.get(oid, KIND_TEXT)


def kind_for_type_name(name: str) -> int:
    """How to convert the text of a value of the type ``format_type`` names ``name``."""
    return _NAME_KINDS.get(name, KIND_TEXT)


def convert_value(kind: int, text: str) -> Any:
    """The JSON-compatible value for PostgreSQL's text form ``text`` of a ``kind`` value."""
    if kind == KIND_TEXT:
        return text
    if kind == KIND_INT:
        try:
            return int(text)
        except ValueError:
            return text
    if kind == KIND_FLOAT:
        if text in _FLOAT_WORDS:
            return text
        try:
            return float(text)
        except ValueError:
            return text
    if kind == KIND_BOOL:
        return text in ("t", "true")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _to_float(text: str) -> Any:
    return text if text in _FLOAT_WORDS else float(text)


def _to_bool(text: str) -> bool:
    return text in ("t", "true")


def _to_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


_CONVERTERS: Final[dict[int, Callable[[str], Any] | None]] = {
    KIND_TEXT: None,
    KIND_INT: int,
    KIND_FLOAT: _to_float,
    KIND_BOOL: _to_bool,
    KIND_JSON: _to_json,
}


def parse_lsn(text: str) -> int:
    """An LSN from PostgreSQL's ``XXX/XXXXXXXX`` notation."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class DecodedTransaction(NamedTuple):
    """One committed transaction: where it ended, its id, its raw row count, its changes.

    ``rows`` counts every row the plugin produced for it (begin, relation and commit
    messages included), so a caller can size ``upto_nchanges``; ``events`` holds only
    the changes of captured tables, numbered from 0 in ``position.sequence``.
    """

    end_lsn: int
    xid: int
    rows: int
    events: list[ChangeEvent]


class LogicalDecoder(Protocol):
    """Turns the rows of ``pg_logical_slot_peek_*changes`` into committed transactions."""

    def decode(
        self,
        rows: Iterable[tuple[int, int, Any]],
        now_ms: int,
        skip: Collection[int] = (),
    ) -> list[DecodedTransaction]:
        """Decode ``(lsn, xid, data)`` rows; ``now_ms`` stamps the events' ``ts_ms``.

        Transactions whose xid is in ``skip`` (already decoded by an earlier peek) are
        passed over without decoding their changes: they come back with no events.
        """
        ...


_Change = tuple[
    str,
    "dict[str, Any] | None",
    "dict[str, Any] | None",
    TableInfo | None,
    str,
    str,
    int,
    "tuple[str, ...]",
]
"""op, before, after, table info, schema, table, lsn, key columns (before the commit arrives)."""


class _Base:
    """What both decoders share: the table filter and building events at commit."""

    def __init__(
        self,
        *,
        slot: str,
        database: str,
        tables: Mapping[tuple[str, str], TableInfo] | None = None,
    ) -> None:
        self.slot = slot
        self.database = database
        self.tables = tables
        self._changes: list[_Change] = []
        self._xid = 0
        self._commit_ms: int | None = None
        self._in_transaction = False
        self._skipping = False
        self._rows = 0
        self._heads: dict[str, tuple[str, str, bool, TableInfo | None]] = {}

    def _wanted(self, schema: str, table: str) -> tuple[bool, TableInfo | None]:
        tables = self.tables
        if tables is None:
            return True, None
        info = tables.get((schema, table))
        return info is not None, info

    def _wanted_line(self, head: str) -> tuple[str, str, bool, TableInfo | None] | None:
        """The table a ``table schema.name: ACTION:`` prefix names (cached per prefix)."""
        cached = self._heads.get(head)
        if cached is None:
            found = _HEAD.fullmatch(head)
            if found is None:
                return None
            quoted_schema, schema, quoted_table, table = found.groups()
            schema = quoted_schema.replace('""', '"') if schema is None else schema
            table = quoted_table.replace('""', '"') if table is None else table
            cached = (schema, table, *self._wanted(schema, table))
            self._heads[head] = cached
        return cached

    def _finish(self, end_lsn: int, xid: int, now_ms: int) -> DecodedTransaction:
        slot, database, commit_ms = self.slot, self.database, self._commit_ms
        events: list[ChangeEvent] = []
        append = events.append
        for index, (op, before, after, info, schema, table, lsn, key_columns) in enumerate(
            self._changes
        ):
            if info is not None and info.primary_key:
                key_columns = info.primary_key
            key: dict[str, Any] | None = None
            row = after if after is not None else before
            if row is not None and key_columns:
                key = {column: row[column] for column in key_columns if column in row}
                if len(key) != len(key_columns):
                    key = None
            append(
                new_change_event(
                    op,
                    before,
                    after,
                    ChangeSource(
                        "postgresql", slot, database, schema, table, commit_ms, "false", lsn, xid
                    ),
                    now_ms,
                    ChangePosition(end_lsn, index),
                    key,
                )
            )
        transaction = DecodedTransaction(end_lsn, xid, self._rows, events)
        self._changes = []
        self._in_transaction = False
        self._skipping = False
        self._commit_ms = None
        self._rows = 0
        return transaction


def _fill_unavailable(after: dict[str, Any], before: dict[str, Any] | None) -> None:
    """Replace unsent (unchanged TOAST) values in ``after`` with ``before``'s, when known."""
    for column, value in after.items():
        if value is UNAVAILABLE and before is not None:
            old = before.get(column, UNAVAILABLE)
            if old is not UNAVAILABLE:
                after[column] = old


class _Relation:
    __slots__ = (
        "columns",
        "converters",
        "identity",
        "info",
        "key_columns",
        "name",
        "schema",
        "wanted",
    )

    def __init__(
        self,
        schema: str,
        name: str,
        identity: str,
        columns: tuple[str, ...],
        kinds: tuple[int, ...],
        key_columns: tuple[str, ...],
        wanted: tuple[bool, TableInfo | None],
    ) -> None:
        self.schema = schema
        self.name = name
        self.identity = identity
        self.columns = columns
        self.converters = tuple(_CONVERTERS[kind] for kind in kinds)
        self.key_columns = key_columns
        self.wanted, self.info = wanted


_unpack_int16 = struct.Struct(">h").unpack_from
_unpack_int32 = struct.Struct(">i").unpack_from
_unpack_uint32 = struct.Struct(">I").unpack_from
_unpack_int64 = struct.Struct(">q").unpack_from
_unpack_begin = struct.Struct(">qqI").unpack_from
_unpack_commit = struct.Struct(">bqqq").unpack_from


class PgOutputDecoder(_Base):
    """Decodes ``pgoutput`` protocol version 1 messages (``pg_logical_slot_peek_binary_changes``).

    Keeps the ``Relation`` messages it has seen, as a replication client must. Tables
    missing from ``tables`` are skipped (``None``: keep everything). ``encoding`` is the
    server encoding's Python name: pgoutput sends text values in it.
    """

    def __init__(
        self,
        *,
        slot: str,
        database: str,
        tables: Mapping[tuple[str, str], TableInfo] | None = None,
        encoding: str = "utf-8",
    ) -> None:
        super().__init__(slot=slot, database=database, tables=tables)
        self.encoding = encoding
        self.relations: dict[int, _Relation] = {}

    def decode(
        self,
        rows: Iterable[tuple[int, int, Any]],
        now_ms: int,
        skip: Collection[int] = (),
    ) -> list[DecodedTransaction]:
        """Decode ``(lsn, xid, message bytes)`` rows into the transactions they commit."""
        done: list[DecodedTransaction] = []
        for lsn, xid, data in rows:
            self._rows += 1
            message = data if type(data) is bytes else bytes(data)
            try:
                kind = message[0]
                if kind in (0x49, 0x55, 0x44):  # I, U, D
                    if not self._skipping:
                        self._row_change(kind, lsn, message)
                elif kind == 0x43:  # C: commit
                    _flags, _commit_lsn, end_lsn, _ts = _unpack_commit(message, 1)
                    if not self._in_transaction:
                        raise ChangeDecodingError("a Commit without a Begin", lsn=lsn, data=message)
                    done.append(self._finish(end_lsn, self._xid or xid, now_ms))
                elif kind == 0x42:  # B: begin
                    _final_lsn, commit_us, begin_xid = _unpack_begin(message, 1)
                    self._in_transaction = True
                    self._xid = begin_xid
                    self._skipping = begin_xid in skip
                    self._commit_ms = commit_us // 1000 + _PG_EPOCH_MS
                    self._changes = []
                elif kind == 0x52:  # R: relation
                    self._relation(message)
                elif kind == 0x54:  # T: truncate
                    if not self._skipping:
                        self._truncate(lsn, message)
                elif kind in (0x59, 0x4F, 0x4D):  # Y: type, O: origin, M: logical message
                    pass
                else:
                    raise ChangeDecodingError(
                        f"unsupported pgoutput message type {chr(kind)!r} (is streaming or "
                        "protocol version 2 on? seawall asks for proto_version 1)",
                        lsn=lsn,
                        data=message,
                    )
            except ChangeDecodingError:
                raise
            except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
                raise ChangeDecodingError(
                    f"malformed message ({type(exc).__name__}: {exc})", lsn=lsn, data=message
                ) from exc
        return done

    # -- messages -------------------------------------------------------------------------------

    def _relation(self, message: bytes) -> None:
        (oid,) = _unpack_uint32(message, 1)
        schema, offset = self._string(message, 5)
        name, offset = self._string(message, offset)
        identity = chr(message[offset])
        (count,) = _unpack_int16(message, offset + 1)
        offset += 3
        columns: list[str] = []
        kinds: list[int] = []
        keys: list[str] = []
        for _ in range(count):
            flags = message[offset]
            column, offset = self._string(message, offset + 1)
            (type_oid,) = _unpack_uint32(message, offset)
            offset += 8  # type OID and type modifier
            columns.append(column)
            kinds.append(kind_for_oid(type_oid))
            if flags & 1 and identity != "f":
                keys.append(column)
        self.relations[oid] = _Relation(
            schema,
            name,
            identity,
            tuple(columns),
            tuple(kinds),
            tuple(keys),
            self._wanted(schema, name),
        )

    def _string(self, message: bytes, offset: int) -> tuple[str, int]:
        end = message.index(0, offset)
        return message[offset:end].decode(self.encoding), end + 1

    def _tuple(
        self, message: bytes, offset: int, relation: _Relation
    ) -> tuple[dict[str, Any], int]:
        (count,) = _unpack_int16(message, offset)
        offset += 2
        columns, converters = relation.columns, relation.converters
        if count != len(columns):
            raise ValueError(
                f"a row of {relation.schema}.{relation.name} has {count} columns, its "
                f"Relation message {len(columns)}"
            )
        encoding = self.encoding
        row: dict[str, Any] = {}
        for index in range(count):
            marker = message[offset]
            offset += 1
            if marker == 0x74:  # t: text
                (length,) = _unpack_int32(message, offset)
                offset += 4
                text = message[offset : offset + length].decode(encoding)
                offset += length
                convert = converters[index]
                row[columns[index]] = text if convert is None else convert(text)
            elif marker == 0x6E:  # n: null
                row[columns[index]] = None
            elif marker == 0x75:  # u: unchanged TOASTed value, not sent
                row[columns[index]] = UNAVAILABLE
            elif marker == 0x62:  # b: binary (only with the binary option)
                (length,) = _unpack_int32(message, offset)
                offset += 4
                row[columns[index]] = "\\x" + message[offset : offset + length].hex()
                offset += length
            else:
                raise ValueError(f"unknown tuple column marker {chr(marker)!r}")
        return row, offset

    def _row_change(self, kind: int, lsn: int, message: bytes) -> None:
        (oid,) = _unpack_uint32(message, 1)
        relation = self.relations.get(oid)
        if relation is None:
            raise ChangeDecodingError(
                f"a change of relation {oid} arrived before its Relation message",
                lsn=lsn,
                data=message,
            )
        if not self._in_transaction:
            raise ChangeDecodingError("a change outside a transaction", lsn=lsn, data=message)
        if not relation.wanted:
            return
        offset = 5
        before: dict[str, Any] | None = None
        after: dict[str, Any] | None = None
        marker = message[offset]
        if kind == 0x49:  # insert: N tuple
            after, offset = self._tuple(message, offset + 1, relation)
            op = "c"
        else:
            if marker in (0x4B, 0x4F):  # K: key columns only, O: whole old row
                old, offset = self._tuple(message, offset + 1, relation)
                if marker == 0x4B:
                    keys = relation.key_columns or tuple(old)
                    old = {column: old[column] for column in keys}
                before = old
                marker = message[offset] if offset < len(message) else 0
            if kind == 0x55:  # update: [K|O tuple] N tuple
                if marker != 0x4E:
                    raise ValueError("an Update without its new row")
                after, offset = self._tuple(message, offset + 1, relation)
                if UNAVAILABLE in after.values():
                    _fill_unavailable(after, before)
                op = "u"
            else:
                op = "d"
        self._changes.append(
            (
                op,
                before,
                after,
                relation.info,
                relation.schema,
                relation.name,
                lsn,
                relation.key_columns,
            )
        )

    def _truncate(self, lsn: int, message: bytes) -> None:
        (count,) = _unpack_int32(message, 1)
        offset = 6  # relation count, then the options byte
        for _ in range(count):
            (oid,) = _unpack_uint32(message, offset)
            offset += 4
            relation = self.relations.get(oid)
            if relation is None:
                raise ChangeDecodingError(
                    f"a truncate of relation {oid} arrived before its Relation message",
                    lsn=lsn,
                    data=message,
                )
            if relation.wanted:
                self._changes.append(
                    ("t", None, None, relation.info, relation.schema, relation.name, lsn, ())
                )


class TestDecodingDecoder(_Base):
    """Parses ``test_decoding`` text lines (``pg_logical_slot_peek_changes``).

    Expects the options ``include-xids`` 1 and ``include-timestamp`` 1. test_decoding
    has no publication, so ``tables`` is the filter; it also supplies the primary keys
    and, for ``REPLICA IDENTITY FULL`` tables, the columns of ``before`` that
    test_decoding leaves out because they are null.
    """

    __test__ = False  # a decoder for the plugin named test_decoding, not a pytest class

    def decode(
        self,
        rows: Iterable[tuple[int, int, Any]],
        now_ms: int,
        skip: Collection[int] = (),
    ) -> list[DecodedTransaction]:
        """Decode ``(lsn, xid, text line)`` rows into the transactions they commit."""
        done: list[DecodedTransaction] = []
        for lsn, xid, data in rows:
            self._rows += 1
            line = data if isinstance(data, str) else bytes(data).decode()
            try:
                if line.startswith("table "):
                    if not self._in_transaction:
                        raise ChangeDecodingError(
                            "a change outside a transaction", lsn=lsn, data=line
                        )
                    if not self._skipping:
                        self._table_line(lsn, line)
                elif line.startswith("BEGIN"):
                    self._in_transaction = True
                    self._skipping = xid in skip
                    self._xid = xid
                    self._changes = []
                elif line.startswith("COMMIT"):
                    if not self._in_transaction:
                        raise ChangeDecodingError("a COMMIT without a BEGIN", lsn=lsn, data=line)
                    self._commit_ms = _commit_time(line)
                    done.append(self._finish(lsn, xid, now_ms))
                elif line.startswith("message:"):
                    pass
                else:
                    raise ChangeDecodingError("unrecognised test_decoding line", lsn=lsn, data=line)
            except ChangeDecodingError:
                raise
            except (ValueError, IndexError) as exc:
                raise ChangeDecodingError(
                    f"malformed line ({type(exc).__name__}: {exc})", lsn=lsn, data=line
                ) from exc
        return done

    def _table_line(self, lsn: int, line: str) -> None:
        found = _PREFIX.match(line)
        if found is not None:  # the common case: one table, INSERT, UPDATE or DELETE
            head = self._wanted_line(found.group(1))
            if head is None:  # pragma: no cover - the prefix pattern only matches valid names
                raise ValueError("unreadable table name")
            schema, table, wanted, info = head
            if wanted:
                self._row_line(lsn, line, found.group(2), found.end(), schema, table, info)
            return
        position = 6  # after "table "
        names: list[tuple[str, str]] = []
        while True:
            schema, position = _identifier(line, position)
            if line[position] != ".":
                raise ValueError(f"expected '.' after the schema at column {position}")
            table, position = _identifier(line, position + 1)
            names.append((schema, table))
            if line.startswith(", ", position):
                position += 2
                continue
            break
        if not line.startswith(": ", position):
            raise ValueError(f"expected ': ' after the table name at column {position}")
        action_end = line.index(":", position + 2)
        action = line[position + 2 : action_end]
        position = action_end + 1
        if action == "TRUNCATE":
            for schema, table in names:
                wanted, info = self._wanted(schema, table)
                if wanted:
                    self._changes.append(("t", None, None, info, schema, table, lsn, ()))
            return
        schema, table = names[0]
        wanted, info = self._wanted(schema, table)
        if wanted:
            self._row_line(lsn, line, action, position, schema, table, info)

    def _row_line(
        self,
        lsn: int,
        line: str,
        action: str,
        position: int,
        schema: str,
        table: str,
        info: TableInfo | None,
    ) -> None:
        before: dict[str, Any] | None = None
        after: dict[str, Any] | None = None
        if action == "INSERT":
            after, position = _columns(line, position)
            op = "c"
        elif action == "UPDATE":
            if line.startswith(" old-key:", position):
                before, position = _columns(line, position + 9)
                if not line.startswith(" new-tuple:", position):
                    raise ValueError("an UPDATE with an old key but no new tuple")
                position += 11
                before = _complete(before, info)
            after, position = _columns(line, position)
            if after is not None and UNAVAILABLE in after.values():
                _fill_unavailable(after, before)
            op = "u"
        elif action == "DELETE":
            before, position = _columns(line, position)
            before = _complete(before, info)
            op = "d"
        else:
            raise ValueError(f"unknown action {action!r}")
        self._changes.append((op, before, after, info, schema, table, lsn, ()))


def _complete(row: dict[str, Any] | None, info: TableInfo | None) -> dict[str, Any] | None:
    """A whole old row: test_decoding leaves out the null columns of an old tuple."""
    if row is None or info is None or not info.identity_full or len(row) == len(info.columns):
        return row
    return {column: row.get(column) for column in info.columns}


def _identifier(line: str, position: int) -> tuple[str, int]:
    """A possibly double-quoted identifier at ``position``; returns it and the next position."""
    if line[position] == '"':
        parts: list[str] = []
        start = position + 1
        while True:
            end = line.index('"', start)
            parts.append(line[start:end])
            if line.startswith('"', end + 1):
                parts.append('"')
                start = end + 2
                continue
            return "".join(parts), end + 1
    end = position
    length = len(line)
    while end < length and line[end] not in '.[: ,"':
        end += 1
    if end == position:
        raise ValueError(f"expected an identifier at column {position}")
    return line[position:end], end


_NAME = r'(?:"(?:[^"]|"")*"|[^\s".:,]+)'
_PREFIX = re.compile(rf"table ({_NAME}\.{_NAME}): (INSERT|UPDATE|DELETE):")
"""The start of a row change line: ``table schema.name: INSERT:``."""
_HEAD = re.compile(r'(?:"((?:[^"]|"")*)"|([^\s".:,]+))\.(?:"((?:[^"]|"")*)"|([^\s".:,]+))')
"""A qualified table name, each part maybe double-quoted."""

_COLUMN = re.compile(
    r' (?:"((?:[^"]|"")*)"|([^\s\[".:,]+))'  # a column name, maybe double-quoted
    r"\[(.*?)\]:"  # its type, up to the first "]:" (so "text[]" works)
    r"(?:'((?:[^']|'')*)'|B'([01]*)'|(\S+))"  # a quoted, bit-string or bare value
)
"""One `` name[type]:value`` of a test_decoding tuple, matched in one step."""


def _columns(line: str, position: int) -> tuple[dict[str, Any] | None, int]:
    """The ``name[type]:value`` list at ``position``, up to the end or `` new-tuple:``."""
    if line.startswith(" (no-tuple-data)", position):
        return None, position + 16
    row: dict[str, Any] = {}
    length = len(line)
    match = _COLUMN.match
    while position < length:
        found = match(line, position)
        if found is None:
            if line.startswith(" new-tuple:", position):
                break
            raise ValueError(f"cannot read a column at column {position}")
        quoted_name, name, type_name, quoted, bits, bare = found.groups()
        if name is None:
            name = quoted_name.replace('""', '"')
        position = found.end()
        if quoted is not None:
            value: Any = quoted.replace("''", "'") if "''" in quoted else quoted
            if type_name in _JSON_TYPES:
                value = _to_json(value)
        elif bits is not None:
            value = bits
        elif bare == "null":
            value = None
        elif bare == "unchanged-toast-datum":
            value = UNAVAILABLE
        else:
            convert = _CONVERTERS[kind_for_type_name(type_name)]
            value = bare if convert is None else convert(bare)
        row[name] = value
    return row, position


def _commit_time(line: str) -> int | None:
    """Milliseconds since the epoch from ``COMMIT 123 (at 2024-01-02 03:04:05.6+00)``."""
    start = line.find("(at ")
    if start < 0 or not line.endswith(")"):
        return None
    try:
        moment = datetime.fromisoformat(line[start + 4 : -1])
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1000)
