"""The sans-I/O decoders: pgoutput bytes and test_decoding lines into Debezium events.

The ``*_ROWS`` below were captured from a PostgreSQL 15 server for the same three
transactions (insert; update then key change; delete) through both plugins.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.eventsourcing.cdc import (
    UNAVAILABLE,
    ChangeDecodingError,
    ChangePosition,
    PgOutputDecoder,
    TestDecodingDecoder,
)
from seawall.eventsourcing.cdc._decoding import (
    KIND_BOOL,
    KIND_FLOAT,
    KIND_INT,
    KIND_JSON,
    KIND_TEXT,
    convert_value,
    kind_for_oid,
    kind_for_type_name,
    parse_lsn,
)
from seawall.eventsourcing.cdc._errors import format_lsn
from seawall.eventsourcing.cdc._model import TableInfo

PGOUTPUT_ROWS = [
    ("0/16054B8", 786, b"B\x00\x00\x00\x00\x01`U\xc8\x00\x03\x03\xd4P<\x85\xf3\x00\x00\x03\x12"),
    ("0/16054B8", 786, b"R\x00\x00@Hpublic\x00items\x00d\x00\x06\x01id\x00\x00\x00\x00\x17\xff\xff\xff\xff\x00name\x00\x00\x00\x00\x19\xff\xff\xff\xff\x00qty\x00\x00\x00\x00\x17\xff\xff\xff\xff\x00price\x00\x00\x00\x06\xa4\xff\xff\xff\xff\x00ok\x00\x00\x00\x00\x10\xff\xff\xff\xff\x00data\x00\x00\x00\x0e\xda\xff\xff\xff\xff"),
    ("0/16054B8", 786, b"I\x00\x00@HN\x00\x06t\x00\x00\x00\x011t\x00\x00\x00\x04it'st\x00\x00\x00\x012t\x00\x00\x00\x049.50t\x00\x00\x00\x01tt\x00\x00\x00\n{\"a\": [1]}"),
    ("0/16055F8", 786, b"C\x00\x00\x00\x00\x00\x01`U\xc8\x00\x00\x00\x00\x01`U\xf8\x00\x03\x03\xd4P<\x85\xf3"),
    ("0/16055F8", 787, b"B\x00\x00\x00\x00\x01`W@\x00\x03\x03\xd4P<\x8e\x1e\x00\x00\x03\x13"),
    ("0/16055F8", 787, b"U\x00\x00@HN\x00\x06t\x00\x00\x00\x011t\x00\x00\x00\x04it'st\x00\x00\x00\x013t\x00\x00\x00\x049.50t\x00\x00\x00\x01tt\x00\x00\x00\n{\"a\": [1]}"),
    ("0/1605678", 787, b"U\x00\x00@HK\x00\x06t\x00\x00\x00\x011nnnnnN\x00\x06t\x00\x00\x00\x012t\x00\x00\x00\x04it'st\x00\x00\x00\x013t\x00\x00\x00\x049.50t\x00\x00\x00\x01tt\x00\x00\x00\n{\"a\": [1]}"),
    ("0/1605770", 787, b"C\x00\x00\x00\x00\x00\x01`W@\x00\x00\x00\x00\x01`Wp\x00\x03\x03\xd4P<\x8e\x1e"),
    ("0/1605770", 788, b"B\x00\x00\x00\x00\x01`W\xb0\x00\x03\x03\xd4P<\x8f\x07\x00\x00\x03\x14"),
    ("0/1605770", 788, b"D\x00\x00@HK\x00\x06t\x00\x00\x00\x012nnnnn"),
    ("0/16057E0", 788, b"C\x00\x00\x00\x00\x00\x01`W\xb0\x00\x00\x00\x00\x01`W\xe0\x00\x03\x03\xd4P<\x8f\x07"),
]  # fmt: skip
TEST_DECODING_ROWS = [
    ("0/16054B8", 786, "BEGIN 786"),
    ("0/16054B8", 786, "table public.items: INSERT: id[integer]:1 name[text]:'it''s' qty[integer]:2 price[numeric]:9.50 ok[boolean]:true data[jsonb]:'{\"a\": [1]}'"),
    ("0/16055F8", 786, "COMMIT 786 (at 2026-11-22 04:02:24.225779+00)"),
    ("0/16055F8", 787, "BEGIN 787"),
    ("0/16055F8", 787, "table public.items: UPDATE: id[integer]:1 name[text]:'it''s' qty[integer]:3 price[numeric]:9.50 ok[boolean]:true data[jsonb]:'{\"a\": [1]}'"),
    ("0/1605678", 787, "table public.items: UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 name[text]:'it''s' qty[integer]:3 price[numeric]:9.50 ok[boolean]:true data[jsonb]:'{\"a\": [1]}'"),
    ("0/1605770", 787, "COMMIT 787 (at 2026-11-22 04:02:24.22787+00)"),
    ("0/1605770", 788, "BEGIN 788"),
    ("0/1605770", 788, "table public.items: DELETE: id[integer]:2"),
    ("0/16057E0", 788, "COMMIT 788 (at 2026-11-22 04:02:24.228103+00)"),
]  # fmt: skip

ITEMS = TableInfo(
    "public",
    "items",
    ("id", "name", "qty", "price", "ok", "data"),
    (KIND_INT, KIND_TEXT, KIND_INT, KIND_TEXT, KIND_BOOL, KIND_JSON),
    ("id",),
)
ROW_1 = {"id": 1, "name": "it's", "qty": 2, "price": "9.50", "ok": True, "data": {"a": [1]}}
NOW = 1_800_000_000_000


def _rows(rows: list[tuple[str, int, Any]]) -> list[tuple[int, int, Any]]:
    return [(parse_lsn(lsn), xid, data) for lsn, xid, data in rows]


def _summary(decoder: PgOutputDecoder | TestDecodingDecoder, rows: list[Any]) -> list[Any]:
    transactions = decoder.decode(_rows(rows), NOW)
    return [
        (event.op, event.before, event.after, event.key, event.position, event.source.tx_id)
        for transaction in transactions
        for event in transaction.events
    ]


EXPECTED = [
    ("c", None, ROW_1, {"id": 1}, ChangePosition(parse_lsn("0/16055F8")), 786),
    ("u", None, {**ROW_1, "qty": 3}, {"id": 1}, ChangePosition(parse_lsn("0/1605770"), 0), 787),
    ("u", {"id": 1}, {**ROW_1, "id": 2, "qty": 3}, {"id": 2}, ChangePosition(parse_lsn("0/1605770"), 1), 787),
    ("d", {"id": 2}, None, {"id": 2}, ChangePosition(parse_lsn("0/16057E0"), 0), 788),
]  # fmt: skip


@pytest.mark.parametrize("tables", [None, {("public", "items"): ITEMS}])
def test_pgoutput_bytes_from_a_real_server_decode_to_debezium_events(
    tables: dict[tuple[str, str], TableInfo] | None,
) -> None:
    decoder = PgOutputDecoder(slot="shop", database="app", tables=tables)
    assert _summary(decoder, PGOUTPUT_ROWS) == EXPECTED


def test_test_decoding_lines_decode_to_the_same_events_as_pgoutput() -> None:
    decoder = TestDecodingDecoder(slot="shop", database="app", tables={("public", "items"): ITEMS})
    assert _summary(decoder, TEST_DECODING_ROWS) == EXPECTED


def test_transactions_report_their_end_and_raw_row_count() -> None:
    decoder = PgOutputDecoder(slot="shop", database="app")
    transactions = decoder.decode(_rows(PGOUTPUT_ROWS), NOW)
    assert [(t.end_lsn, t.xid, t.rows, len(t.events)) for t in transactions] == [
        (parse_lsn("0/16055F8"), 786, 4, 1),
        (parse_lsn("0/1605770"), 787, 4, 2),
        (parse_lsn("0/16057E0"), 788, 3, 1),
    ]


def test_the_source_block_and_the_debezium_envelope() -> None:
    decoder = PgOutputDecoder(slot="shop", database="app")
    event = decoder.decode(_rows(PGOUTPUT_ROWS[:4]), NOW)[0].events[0]
    envelope = event.to_debezium()
    assert set(envelope) == {"before", "after", "source", "op", "ts_ms"}
    assert envelope["op"] == "c"
    assert envelope["ts_ms"] == NOW
    source = envelope["source"]
    assert source["connector"] == "postgresql"
    assert (source["name"], source["db"], source["schema"], source["table"]) == (
        "shop",
        "app",
        "public",
        "items",
    )
    assert source["snapshot"] == "false"
    assert source["txId"] == 786
    assert source["lsn"] == parse_lsn("0/16054B8")
    # The commit time from the Begin message: 2026-11-22 04:02:24.22 UTC.
    assert source["ts_ms"] == 1795320144225
    assert event.id == f"shop:{parse_lsn('0/16055F8')}:0"


def test_the_commit_time_of_test_decoding_matches_pgoutput() -> None:
    pg = PgOutputDecoder(slot="s", database="d").decode(_rows(PGOUTPUT_ROWS), NOW)
    text = TestDecodingDecoder(slot="s", database="d").decode(_rows(TEST_DECODING_ROWS), NOW)
    assert [t.events[0].source.ts_ms for t in pg] == [t.events[0].source.ts_ms for t in text]


def test_transactions_held_from_an_earlier_peek_are_passed_over_by_xid() -> None:
    for decoder, rows in (
        (PgOutputDecoder(slot="s", database="d"), PGOUTPUT_ROWS),
        (TestDecodingDecoder(slot="s", database="d"), TEST_DECODING_ROWS),
    ):
        transactions = decoder.decode(_rows(rows), NOW, skip={786, 787})
        assert [(t.xid, len(t.events)) for t in transactions] == [(786, 0), (787, 0), (788, 1)]
        assert [t.end_lsn for t in transactions] == [
            parse_lsn("0/16055F8"),
            parse_lsn("0/1605770"),
            parse_lsn("0/16057E0"),
        ]
    # A Relation message inside a passed-over transaction is still learnt.
    decoder = PgOutputDecoder(slot="s", database="d")
    decoder.decode(_rows(PGOUTPUT_ROWS[:4]), NOW, skip={786})
    later = decoder.decode(_rows(PGOUTPUT_ROWS[8:]), NOW)
    assert later[0].events[0].before == {"id": 2}


def test_tables_outside_the_filter_are_skipped_but_their_transactions_still_count() -> None:
    other = {("public", "other"): ITEMS}
    for decoder in (
        PgOutputDecoder(slot="s", database="d", tables=other),
        TestDecodingDecoder(slot="s", database="d", tables=other),
    ):
        rows = PGOUTPUT_ROWS if isinstance(decoder, PgOutputDecoder) else TEST_DECODING_ROWS
        transactions = decoder.decode(_rows(rows), NOW)
        assert [len(t.events) for t in transactions] == [0, 0, 0]
        assert len(transactions) == 3


# -- synthetic pgoutput messages ------------------------------------------------------------------


def _string(text: str) -> bytes:
    return text.encode() + b"\x00"


def relation(
    oid: int,
    columns: list[tuple[str, int, bool]],
    *,
    schema: str = "public",
    name: str = "t",
    identity: str = "d",
) -> bytes:
    body = b"R" + struct.pack(">I", oid) + _string(schema) + _string(name) + identity.encode()
    body += struct.pack(">h", len(columns))
    for column, type_oid, key in columns:
        body += bytes([1 if key else 0]) + _string(column) + struct.pack(">Ii", type_oid, -1)
    return body


def tuple_data(values: list[Any]) -> bytes:
    body = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            body += b"n"
        elif value is UNAVAILABLE:
            body += b"u"
        else:
            raw = str(value).encode()
            body += b"t" + struct.pack(">i", len(raw)) + raw
    return body


def begin(xid: int, commit_us: int = 0) -> bytes:
    return b"B" + struct.pack(">qqI", 0, commit_us, xid)


def commit(end_lsn: int) -> bytes:
    return b"C" + struct.pack(">bqqq", 0, end_lsn - 8, end_lsn, 0)


COLUMNS = [("id", 23, True), ("body", 25, False), ("score", 701, False)]


def _decode(*messages: bytes, tables: Any = None) -> list[Any]:
    decoder = PgOutputDecoder(slot="s", database="d", tables=tables)
    rows = [(100 + index, 7, message) for index, message in enumerate(messages)]
    return [event for t in decoder.decode(rows, NOW) for event in t.events]


def test_an_unchanged_toast_value_is_filled_from_the_before_image_when_known() -> None:
    events = _decode(
        begin(7),
        relation(1, COLUMNS, identity="f"),
        b"U\x00\x00\x00\x01O" + tuple_data([1, "long text", 1.5]) + b"N" + tuple_data([1, UNAVAILABLE, 2.5]),
        b"U\x00\x00\x00\x01N" + tuple_data([1, UNAVAILABLE, 3.5]),
        commit(500),
    )  # fmt: skip
    assert events[0].before == {"id": 1, "body": "long text", "score": 1.5}
    assert events[0].after == {"id": 1, "body": "long text", "score": 2.5}
    assert events[1].after == {"id": 1, "body": UNAVAILABLE, "score": 3.5}


def test_full_identity_relations_take_the_key_from_the_catalog_not_the_flags() -> None:
    info = TableInfo("public", "t", ("id", "body", "score"), (1, 0, 2), ("id",), identity_full=True)
    all_flagged = [("id", 23, True), ("body", 25, True), ("score", 701, True)]
    events = _decode(
        begin(7),
        relation(1, all_flagged, identity="f"),
        b"D\x00\x00\x00\x01O" + tuple_data([4, None, 1.0]),
        commit(500),
        tables={("public", "t"): info},
    )
    assert events[0].before == {"id": 4, "body": None, "score": 1.0}
    assert events[0].key == {"id": 4}
    # Without catalog information, a FULL identity gives no key (every column is flagged).
    assert _decode(begin(7), relation(1, all_flagged, identity="f"),
                   b"D\x00\x00\x00\x01O" + tuple_data([4, None, 1.0]), commit(500))[0].key is None  # fmt: skip


def test_truncate_emits_one_t_event_per_captured_table() -> None:
    events = _decode(
        begin(7),
        relation(1, COLUMNS, name="a"),
        relation(2, COLUMNS, name="b"),
        b"T" + struct.pack(">ib", 2, 0) + struct.pack(">II", 1, 2),
        commit(500),
    )
    assert [(event.op, event.table, event.before, event.after, event.key) for event in events] == [
        ("t", "a", None, None, None),
        ("t", "b", None, None, None),
    ]
    assert [event.position.sequence for event in events] == [0, 1]


def test_special_floats_stay_strings_and_nulls_stay_none() -> None:
    events = _decode(
        begin(7),
        relation(1, COLUMNS),
        b"I\x00\x00\x00\x01N" + tuple_data([1, None, "NaN"]),
        b"I\x00\x00\x00\x01N" + tuple_data([2, "", "-Infinity"]),
        commit(500),
    )
    assert [event.after for event in events] == [
        {"id": 1, "body": None, "score": "NaN"},
        {"id": 2, "body": "", "score": "-Infinity"},
    ]


def test_type_origin_and_logical_messages_are_ignored() -> None:
    events = _decode(
        begin(7),
        b"Y" + struct.pack(">I", 99) + _string("public") + _string("mood"),
        b"O" + struct.pack(">q", 5) + _string("origin"),
        relation(1, COLUMNS),
        b"I\x00\x00\x00\x01N" + tuple_data([1, "x", 1]),
        commit(500),
    )
    assert [event.after for event in events] == [{"id": 1, "body": "x", "score": 1.0}]


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([begin(7), b"I\x00\x00\x00\x09N" + tuple_data([1])], "before its Relation message"),
        ([relation(1, COLUMNS), b"I\x00\x00\x00\x01N" + tuple_data([1, 2, 3])], "outside a transaction"),
        ([commit(5)], "Commit without a Begin"),
        ([begin(7), b"S\x00"], "unsupported pgoutput message type 'S'"),
        ([begin(7), relation(1, COLUMNS), b"I\x00\x00\x00\x01N" + tuple_data([1, 2])], "has 2 columns"),
        ([begin(7), relation(1, COLUMNS), b"I\x00\x00\x00\x01N\x00\x03t\x00\x00"], "malformed"),
        ([begin(7), relation(1, COLUMNS), b"I\x00\x00\x00\x01N\x00\x01x"], "malformed"),
        ([b""], "malformed"),
    ],
)  # fmt: skip
def test_bad_pgoutput_messages_raise_a_decoding_error_naming_the_lsn(
    messages: list[bytes], reason: str
) -> None:
    with pytest.raises(ChangeDecodingError, match=reason) as caught:
        _decode(*messages)
    assert caught.value.lsn is not None
    assert format_lsn(caught.value.lsn) in str(caught.value)


values = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(values, st.integers(-(2**62), 2**62)), min_size=1, max_size=5))
def test_pgoutput_text_values_round_trip(rows: list[tuple[str | None, int]]) -> None:
    messages = [begin(7), relation(1, [("id", 20, True), ("body", 25, False)])]
    messages += [b"I\x00\x00\x00\x01N" + tuple_data([number, text]) for text, number in rows]
    events = _decode(*messages, commit(900))
    assert [event.after for event in events] == [{"id": n, "body": t} for t, n in rows]
    assert [event.position for event in events] == [
        ChangePosition(900, i) for i in range(len(rows))
    ]


# -- test_decoding lines ---------------------------------------------------------------------------


def _text_events(*lines: str, tables: Any = None) -> list[Any]:
    decoder = TestDecodingDecoder(slot="s", database="d", tables=tables)
    rows = [(100 + index, 7, line) for index, line in enumerate(("BEGIN 7", *lines, "COMMIT 7"))]
    return [event for t in decoder.decode(rows, NOW) for event in t.events]


def test_quoted_identifiers_and_odd_values_parse() -> None:
    events = _text_events(
        'table "My Schema"."Odd ""T""": INSERT: "a b"[text]:\'x new-tuple: y\' '
        "n[integer]:-5 f[double precision]:1e+20 j[json]:null arr[text[]]:'{a,\"b c\"}' "
        "bits[bit varying]:B'101' big[text]:unchanged-toast-datum t[timestamp with time zone]:'2024-01-02 03:04:05+00'"
    )
    assert events[0].schema == "My Schema"
    assert events[0].table == 'Odd "T"'
    assert events[0].after == {
        "a b": "x new-tuple: y",
        "n": -5,
        "f": 1e20,
        "j": None,
        "arr": '{a,"b c"}',
        "bits": "101",
        "big": UNAVAILABLE,
        "t": "2024-01-02 03:04:05+00",
    }


def test_full_identity_old_rows_get_back_the_null_columns_test_decoding_leaves_out() -> None:
    info = TableInfo("public", "t", ("id", "body", "n"), (1, 0, 1), ("id",), identity_full=True)
    events = _text_events(
        "table public.t: UPDATE: old-key: id[integer]:1 n[integer]:4 new-tuple: id[integer]:1 body[text]:null n[integer]:5",
        "table public.t: DELETE: id[integer]:1 n[integer]:5",
        tables={("public", "t"): info},
    )  # fmt: skip
    assert events[0].before == {"id": 1, "body": None, "n": 4}
    assert events[0].after == {"id": 1, "body": None, "n": 5}
    assert events[1].before == {"id": 1, "body": None, "n": 5}
    assert [event.key for event in events] == [{"id": 1}, {"id": 1}]


def test_no_tuple_data_and_multi_table_truncate() -> None:
    events = _text_events(
        "table public.t: DELETE: (no-tuple-data)",
        "table public.a, public.b: TRUNCATE: (no-flags)",
    )
    assert [(event.op, event.table, event.before, event.after) for event in events] == [
        ("d", "t", None, None),
        ("t", "a", None, None),
        ("t", "b", None, None),
    ]


def test_logical_messages_are_ignored_and_a_missing_timestamp_gives_none() -> None:
    decoder = TestDecodingDecoder(slot="s", database="d")
    rows = [
        (1, 7, "BEGIN 7"),
        (2, 7, "message: transactional: 1 prefix: p, sz: 1 content:x"),
        (3, 7, "table public.t: INSERT: id[integer]:1"),
        (4, 7, "COMMIT 7"),
    ]
    (transaction,) = decoder.decode(rows, NOW)
    assert transaction.events[0].source.ts_ms is None
    assert transaction.end_lsn == 4


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("table public.t INSERT: id[integer]:1", "expected ': '"),
        ("table public.t: INSERT: id[integer:1", "malformed"),
        ("table public.t: INSERT: id[integer]:'open", "malformed"),
        ("table public.t: MERGE: id[integer]:1", "unknown action"),
        ("table public: INSERT: id[integer]:1", "expected '.'"),
        ("table public.t: UPDATE: old-key: id[integer]:1", "no new tuple"),
        ("nonsense", "unrecognised test_decoding line"),
    ],
)
def test_bad_test_decoding_lines_raise_a_decoding_error(line: str, reason: str) -> None:
    with pytest.raises(ChangeDecodingError, match=reason):
        _text_events(line)


def test_a_change_outside_a_transaction_is_an_error() -> None:
    decoder = TestDecodingDecoder(slot="s", database="d")
    with pytest.raises(ChangeDecodingError, match="outside a transaction"):
        decoder.decode([(1, 7, "table public.t: INSERT: id[integer]:1")], NOW)
    with pytest.raises(ChangeDecodingError, match="COMMIT without a BEGIN"):
        decoder.decode([(1, 7, "COMMIT 7")], NOW)


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
        min_size=1,
        max_size=4,
    )
)
def test_quoted_text_values_round_trip(texts: list[str]) -> None:
    columns = " ".join(f"c{i}[text]:{_quote_literal(text)}" for i, text in enumerate(texts))
    (event,) = _text_events(f"table public.t: INSERT: {columns}")
    assert event.after == {f"c{i}": text for i, text in enumerate(texts)}


# -- values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        (KIND_INT, "42", 42),
        (KIND_INT, "not a number", "not a number"),
        (KIND_FLOAT, "1.25", 1.25),
        (KIND_FLOAT, "Infinity", "Infinity"),
        (KIND_FLOAT, "bad", "bad"),
        (KIND_BOOL, "t", True),
        (KIND_BOOL, "false", False),
        (KIND_JSON, '{"a": 1}', {"a": 1}),
        (KIND_JSON, "{broken", "{broken"),
        (KIND_TEXT, "12.50", "12.50"),
    ],
)
def test_convert_value(kind: int, text: str, value: Any) -> None:
    assert convert_value(kind, text) == value


def test_kinds_by_oid_and_by_name_agree() -> None:
    pairs = [(16, "boolean"), (20, "bigint"), (23, "integer"), (701, "double precision"),
             (3802, "jsonb"), (1700, "numeric"), (25, "text"), (1009, "text[]")]  # fmt: skip
    for oid, name in pairs:
        assert kind_for_oid(oid) == kind_for_type_name(name)


@given(st.integers(0, 2**64 - 1))
def test_lsn_text_round_trips(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn
