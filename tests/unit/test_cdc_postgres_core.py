"""The PostgreSQL capture's steps, driven by a scripted server: no database needed.

The core yields SQL requests and receives rows; :class:`FakeServer` answers them by
matching a fragment of the SQL, records what was asked, and can raise psycopg errors,
so the decisions (refuse, resume, start over, fall back) are tested without I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError
from seawall.events import EventHub
from seawall.eventsourcing.cdc import (
    ChangeCaptureError,
    ChangePosition,
    LogicalDecodingUnavailableError,
    SlotInUseError,
    SlotMismatchError,
    UncapturableTableError,
    UnknownTableError,
)
from seawall.eventsourcing.cdc._decoding import parse_lsn
from seawall.eventsourcing.cdc.postgres import _Close, _Core, _Query

Answer = list[Any] | Exception | Callable[[_Query], list[Any]]

TABLE_ROW = [(16400, "r", "d", ["id", "name"], [23, 25], ["id"])]
SETTINGS = [("logical", "app", "UTF8")]
SLOT_ROW = [("pgoutput", "app", "0/100", "logical")]


class FakeServer:
    """Answers each request with the first rule whose SQL fragment matches."""

    def __init__(self, rules: dict[str, Answer] | None = None) -> None:
        self.rules: dict[str, Answer] = {
            "current_setting('wal_level')": SETTINGS,
            "FROM pg_class c": TABLE_ROW,
            "CREATE TABLE IF NOT EXISTS": [],
            "FROM public.seawall_cdc_slots WHERE": [],
            "FROM pg_replication_slots WHERE slot_name": [],
            "FROM pg_publication WHERE": [],
            "CREATE PUBLICATION": [],
            "INSERT INTO public.seawall_cdc_slots": [],
            "CREATE_REPLICATION_SLOT": [("shop", "0/200", "00000003-00000002-1", "pgoutput")],
            "pg_create_logical_replication_slot": [("0/300",)],
            "DECLARE": [],
            "FETCH FORWARD": [(("1", "tea"))],
            "CLOSE seawall": [],
            "COMMIT": [],
            "UPDATE public.seawall_cdc_slots": [],
            "peek": [],
            "pg_replication_slot_advance": [("0/0",)],
        }
        self.rules.update(rules or {})
        self.log: list[_Query | _Close] = []

    def run(self, steps: Any) -> Any:
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                request = steps.send(reply) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value
            self.log.append(request)
            reply, error = None, None
            if isinstance(request, _Close):
                continue
            for fragment, answer in self.rules.items():
                if fragment in request.sql:
                    if isinstance(answer, Exception):
                        error = answer
                    elif callable(answer):
                        reply = answer(request)
                    else:
                        reply = answer
                    break
            else:
                reply = []

    def sql(self) -> list[str]:
        return [request.sql for request in self.log if isinstance(request, _Query)]

    def asked(self, fragment: str) -> bool:
        return any(fragment in sql for sql in self.sql())


def core(**options: Any) -> _Core:
    settings: dict[str, Any] = {
        "server": "postgresql://app@db/app",
        "tables": ["orders"],
        "slot": "shop",
        "snapshot": True,
        "plugin": "pgoutput",
        "full_before_images": False,
        "name": "cdc:shop",
        "events": EventHub(),
    }
    settings.update(options)
    return _Core(**settings)


def test_wal_level_replica_is_refused_naming_the_setting() -> None:
    server = FakeServer({"current_setting('wal_level')": [("replica", "app", "UTF8")]})
    with pytest.raises(LogicalDecodingUnavailableError, match="wal_level=logical") as caught:
        server.run(core().open_steps())
    assert caught.value.wal_level == "replica"
    assert "ALTER SYSTEM SET wal_level = logical" in str(caught.value)
    assert len(server.log) == 1  # nothing created


def test_unknown_tables_are_listed_and_nothing_is_created() -> None:
    server = FakeServer(
        {"FROM pg_class c": lambda q: TABLE_ROW if q.params == ("public", "orders") else []}
    )
    with pytest.raises(UnknownTableError) as caught:
        server.run(core(tables=["orders", "sales.items", "ghost"]).open_steps())
    assert caught.value.tables == ("sales.items", "ghost")
    assert not server.asked("CREATE")


def test_a_table_without_primary_key_is_refused_for_pgoutput_but_fine_with_full_identity() -> None:
    keyless = [(16400, "r", "d", ["line"], [25], [])]
    with pytest.raises(UncapturableTableError, match="no primary key"):
        FakeServer({"FROM pg_class c": keyless}).run(core().open_steps())
    server = FakeServer({"FROM pg_class c": keyless})
    server.run(core(full_before_images=True).open_steps())
    assert server.asked('ALTER TABLE "public"."orders" REPLICA IDENTITY FULL')
    server = FakeServer(
        {"FROM pg_class c": lambda q: keyless if q.params == ("public", "orders") else []}
    )
    with pytest.raises(UnknownTableError):
        server.run(core(tables=["orders", "ghost"], full_before_images=True).open_steps())
    assert not server.asked("ALTER TABLE")  # nothing changed when the table list is wrong
    server = FakeServer({"FROM pg_class c": keyless})
    server.run(core(plugin="test_decoding").open_steps())  # no publication: no restriction
    assert not server.asked("PUBLICATION")


def test_views_are_refused() -> None:
    view = [(16400, "v", "n", ["id"], [23], [])]
    with pytest.raises(UncapturableTableError, match="not a table"):
        FakeServer({"FROM pg_class c": view}).run(core().open_steps())


def test_a_new_slot_exports_its_snapshot_to_a_repeatable_read_transaction() -> None:
    server = FakeServer()
    capture = core()
    server.run(capture.open_steps())
    sql = server.sql()

    def at(fragment: str) -> int:
        return next(i for i, s in enumerate(sql) if fragment in s)

    # The state row comes first: a crash after the slot exists is then seen as an
    # unfinished snapshot. The publication too: pgoutput needs it to exist at the start.
    assert at("INSERT INTO public.seawall_cdc_slots") < at("CREATE_REPLICATION_SLOT")
    assert at("CREATE PUBLICATION") < at("CREATE_REPLICATION_SLOT")
    assert (
        at("CREATE_REPLICATION_SLOT")
        < at("BEGIN ISOLATION LEVEL REPEATABLE READ")
        < at("SET TRANSACTION SNAPSHOT '00000003-00000002-1'")
    )
    assert capture.snapshot_exported
    assert capture.slot_offset == capture.snapshot_lsn == parse_lsn("0/200")
    snapshot_requests = [r for r in server.log if isinstance(r, _Query) and r.on == "snapshot"]
    assert len(snapshot_requests) == 2


def test_without_the_replication_privilege_the_snapshot_follows_the_slot() -> None:
    server = FakeServer({"CREATE_REPLICATION_SLOT": psycopg.OperationalError("no replication")})
    capture = core()
    server.run(capture.open_steps())
    assert not capture.snapshot_exported
    sql = server.sql()
    slot_at = next(i for i, s in enumerate(sql) if "pg_create_logical_replication_slot" in s)
    begin_at = next(i for i, s in enumerate(sql) if "REPEATABLE READ" in s)
    assert slot_at < begin_at  # nothing lost: the snapshot starts after the slot
    assert capture.slot_offset == parse_lsn("0/300")


def test_snapshot_rows_are_converted_and_the_last_one_is_marked() -> None:
    server = FakeServer()
    capture = core()
    events = server.run(capture.poll_steps(5))
    assert [(e.op, e.after, e.key, e.source.snapshot, e.position) for e in events] == [
        ("r", {"id": 1, "name": "tea"}, {"id": 1}, "last", ChangePosition(0, 1))
    ]
    assert events[0].source.lsn == parse_lsn("0/200")
    assert server.asked(
        'DECLARE seawall_cdc_snapshot NO SCROLL CURSOR FOR SELECT "id"::text, "name"::text'
    )
    assert server.asked("COMMIT")
    server.run(capture.confirm_steps(events[0]))
    assert server.asked("UPDATE public.seawall_cdc_slots SET snapshot_done = true")
    assert not server.asked("pg_replication_slot_advance")  # snapshot rows never move the slot


def test_an_existing_slot_resumes_from_its_confirmed_position() -> None:
    server = FakeServer({
        "FROM public.seawall_cdc_slots WHERE": [("pgoutput", True)],
        "FROM pg_replication_slots WHERE slot_name": SLOT_ROW,
        "FROM pg_publication WHERE": [(1,)],
        "FROM pg_publication_tables": [("public", "orders")],
    })  # fmt: skip
    capture = core()
    server.run(capture.open_steps())
    assert capture.slot_offset == parse_lsn("0/100")
    assert not capture.progress.active
    assert not server.asked("CREATE_REPLICATION_SLOT")
    assert not server.asked("ALTER PUBLICATION")


def test_an_interrupted_snapshot_drops_the_slot_and_starts_over() -> None:
    server = FakeServer({
        "FROM public.seawall_cdc_slots WHERE": [("pgoutput", False)],
        "FROM pg_replication_slots WHERE slot_name": SLOT_ROW,
    })  # fmt: skip
    capture = core()
    server.run(capture.open_steps())
    sql = server.sql()
    dropped = next(i for i, s in enumerate(sql) if "pg_drop_replication_slot" in s)
    created = next(i for i, s in enumerate(sql) if "CREATE_REPLICATION_SLOT" in s)
    assert dropped < created
    assert capture.progress.active


def test_a_changed_table_list_updates_the_publication() -> None:
    server = FakeServer({
        "FROM public.seawall_cdc_slots WHERE": [("pgoutput", True)],
        "FROM pg_replication_slots WHERE slot_name": SLOT_ROW,
        "FROM pg_publication WHERE": [(1,)],
        "FROM pg_publication_tables": [("public", "old")],
    })  # fmt: skip
    server.run(core().open_steps())
    assert server.asked('ALTER PUBLICATION "seawall_cdc_shop" SET TABLE "public"."orders"')


@pytest.mark.parametrize(
    ("slot_row", "message"),
    [
        ([("test_decoding", "app", "0/1", "logical")], "plugin 'test_decoding'"),
        ([("pgoutput", "other", "0/1", "logical")], "database 'other'"),
        ([(None, None, None, "physical")], "physical slot"),
    ],
)
def test_a_slot_made_for_something_else_is_refused(slot_row: list[Any], message: str) -> None:
    server = FakeServer({"FROM pg_replication_slots WHERE slot_name": slot_row})
    with pytest.raises(SlotMismatchError, match=message):
        server.run(core().open_steps())


def _streaming_core(server: FakeServer, **options: Any) -> _Core:
    server.rules["FROM public.seawall_cdc_slots WHERE"] = [("pgoutput", True)]
    server.rules["FROM pg_replication_slots WHERE slot_name"] = SLOT_ROW
    capture = core(**options)
    server.run(capture.open_steps())
    return capture


def _insert_rows(end_text: str, xid: int, *ids: int) -> list[tuple[int, int, bytes]]:
    """A transaction as the peek query returns it (LSNs as integers)."""
    import struct

    end = parse_lsn(end_text)
    rows = [(end, xid, b"B" + struct.pack(">qqI", 0, 0, xid))]
    rows.append((end, xid, b"R\x00\x00@\x00public\x00orders\x00d\x00\x02\x01id\x00\x00\x00\x00\x17\xff\xff\xff\xff\x00name\x00\x00\x00\x00\x19\xff\xff\xff\xff"))  # fmt: skip
    for number in ids:
        text = str(number).encode()
        rows.append(
            (end, xid, b"I\x00\x00@\x00N\x00\x02t" + struct.pack(">i", len(text)) + text + b"n")
        )
    rows.append((end, xid, b"C" + struct.pack(">bqqq", 0, 0, end, 0)))
    return rows


def advances(server: FakeServer) -> list[Any]:
    return [r.params for r in server.log if isinstance(r, _Query) and "advance" in r.sql]


def test_peeks_grow_until_enough_changes_arrive_and_the_slot_moves_on_confirm() -> None:
    server = FakeServer()
    clock = ManualClock(50.0)
    capture = _streaming_core(server, clock=clock)
    wal = _insert_rows("0/200", 5, 1) + _insert_rows("0/300", 6, 2, 3) + _insert_rows("0/400", 7, 4)

    def peek(request: _Query) -> list[Any]:
        upto = request.params[1] if request.params else 0
        # whole transactions until at least ``upto`` rows (what PostgreSQL does)
        taken: list[Any] = []
        for row in wal:
            if len(taken) >= upto and taken[-1][2][:1] == b"C":
                break
            taken.append(row)
        return taken

    server.rules["peek"] = peek
    events = server.run(capture.poll_steps(3))
    assert [e.after["id"] for e in events] == [1, 2, 3]
    assert all(isinstance(e.source.lsn, int) for e in events)
    server.run(capture.confirm_steps(events[1]))  # inside transaction 0/300: slot stays at 0/200
    assert advances(server) == [("shop", "0/200")]
    server.run(capture.confirm_steps(events[2]))
    assert advances(server) == [("shop", "0/200")]  # less than advance_interval later: deferred
    clock.advance(1.0)
    server.run(capture.confirm_steps(events[2]))  # confirmed already: nothing new to do
    server.run(capture.flush_steps())
    assert advances(server) == [("shop", "0/200"), ("shop", "0/300")]
    server.run(capture.flush_steps())  # nothing pending: no second move
    assert len(advances(server)) == 2
    assert [e.after["id"] for e in server.run(capture.poll_steps(3))] == [4]
    with pytest.raises(ConfigurationError, match="has not been delivered"):
        server.run(capture.confirm_steps(ChangePosition(parse_lsn("0/900"), 0)))


def test_a_busy_slot_and_a_vanished_slot_give_clear_errors() -> None:
    server = FakeServer()
    capture = _streaming_core(server)
    server.rules["peek"] = psycopg.errors.ObjectInUse(
        'replication slot "shop" is active for PID 42'
    )
    with pytest.raises(SlotInUseError, match="PID 42"):
        server.run(capture.poll_steps(10))
    server.rules["peek"] = psycopg.errors.UndefinedObject('replication slot "shop" does not exist')
    with pytest.raises(ChangeCaptureError, match="no longer exists"):
        server.run(capture.poll_steps(10))
    assert not capture.opened  # the next call opens again (and creates the slot)


def test_drop_removes_slot_publication_and_state() -> None:
    server = FakeServer({"to_regclass": [(True,)]})
    capture = core()
    server.run(capture.open_steps())
    server.run(capture.drop_steps())
    assert server.asked("pg_drop_replication_slot")
    assert server.asked('DROP PUBLICATION IF EXISTS "seawall_cdc_shop"')
    assert server.asked("DELETE FROM public.seawall_cdc_slots")
    assert server.asked("ROLLBACK")  # the unfinished snapshot transaction
    assert not capture.opened


def test_test_decoding_peeks_without_a_publication() -> None:
    server = FakeServer()
    capture = core(plugin="test_decoding", snapshot=False)
    server.run(capture.poll_steps(10))
    peeks = [r for r in server.log if isinstance(r, _Query) and "peek" in r.sql]
    assert "pg_logical_slot_peek_changes" in peeks[0].sql
    assert peeks[0].params is not None
    assert len(peeks[0].params) == 2
    assert server.asked("pg_create_logical_replication_slot")
    assert not server.asked("PUBLICATION")


def test_close_moves_the_slot_to_the_last_confirmation() -> None:
    server = FakeServer()
    clock = ManualClock(50.0)
    capture = _streaming_core(server, clock=clock)
    wal = _insert_rows("0/200", 5, 1) + _insert_rows("0/300", 6, 2)
    server.rules["peek"] = wal
    first, second = server.run(capture.poll_steps(10))
    server.run(capture.confirm_steps(first))
    server.run(capture.confirm_steps(second))
    assert advances(server) == [("shop", "0/200")]
    server.run(capture.close_steps())
    assert advances(server) == [("shop", "0/200"), ("shop", "0/300")]


def test_advance_interval_zero_moves_the_slot_on_every_confirm() -> None:
    server = FakeServer()
    capture = _streaming_core(server, clock=ManualClock(50.0), advance_interval=0.0)
    server.rules["peek"] = _insert_rows("0/200", 5, 1) + _insert_rows("0/300", 6, 2)
    first, second = server.run(capture.poll_steps(10))
    server.run(capture.confirm_steps(first))
    server.run(capture.confirm_steps(second))
    assert advances(server) == [("shop", "0/200"), ("shop", "0/300")]


@pytest.mark.parametrize("bad", [-1, 3601, "1", True])
def test_advance_interval_is_checked_at_construction(bad: object) -> None:
    from seawall.eventsourcing.cdc import capture

    with pytest.raises(ConfigurationError, match="advance_interval"):
        capture("postgresql://nobody@127.0.0.1:1/none", ["t"], advance_interval=bad)  # type: ignore[arg-type]
