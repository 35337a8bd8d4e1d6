"""Change events: identity, the Debezium envelope, immutability, the public surface."""

from __future__ import annotations

import dataclasses

import pytest

import seawall.eventsourcing as eventsourcing
import seawall.eventsourcing.cdc as cdc
from seawall.eventsourcing.cdc import ChangeEvent, ChangeOp, ChangePosition, ChangeSource
from seawall.eventsourcing.cdc._model import new_change_event

SOURCE = ChangeSource("postgresql", "shop", "app", "public", "orders", 5, "false", 77, 9)


def test_the_fast_factory_builds_the_same_immutable_event() -> None:
    args = ("u", {"id": 1}, {"id": 1, "x": 2}, SOURCE, 10, ChangePosition(100, 2), {"id": 1})
    fast = new_change_event(*args)
    assert fast == ChangeEvent(*args)
    assert hash(fast.position) == hash(ChangePosition(100, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.op = "d"  # type: ignore[misc]


def test_ids_are_stable_and_snapshot_ids_name_the_snapshot() -> None:
    streamed = ChangeEvent("c", None, {}, SOURCE, 1, ChangePosition(100, 2))
    assert streamed.id == "shop:100:2"
    snapshot_pg = ChangeEvent("r", None, {}, SOURCE._replace(snapshot="true", lsn=500), 1,
                              ChangePosition(0, 7))  # fmt: skip
    assert snapshot_pg.id == "shop:snapshot:500:7"
    sqlite = ChangeSource("sqlite", "shop", "a.db", "main", "t", 5, "true", None, None, 42)
    assert ChangeEvent("r", None, {}, sqlite, 1, ChangePosition(0, 7)).id == "shop:snapshot:42:7"


def test_the_envelope_holds_exactly_debeziums_fields() -> None:
    event = ChangeEvent("d", {"id": 1}, None, SOURCE, 123, ChangePosition(100, 0), {"id": 1})
    envelope = event.to_debezium()
    assert envelope == {
        "before": {"id": 1},
        "after": None,
        "op": "d",
        "ts_ms": 123,
        "source": {
            "version": envelope["source"]["version"],
            "connector": "postgresql",
            "name": "shop",
            "ts_ms": 5,
            "snapshot": "false",
            "db": "app",
            "schema": "public",
            "table": "orders",
            "txId": 9,
            "lsn": 77,
        },
    }
    sqlite = ChangeSource("sqlite", "shop", "a.db", "main", "t", 5, "false", None, None, 42)
    assert sqlite.to_debezium()["change_id"] == 42
    assert (event.table, event.schema) == ("orders", "public")


def test_operation_codes_are_debeziums() -> None:
    assert (
        ChangeOp.CREATE,
        ChangeOp.UPDATE,
        ChangeOp.DELETE,
        ChangeOp.READ,
        ChangeOp.TRUNCATE,
    ) == (
        "c",
        "u",
        "d",
        "r",
        "t",
    )
    assert ChangePosition(0, 3).is_snapshot
    assert not ChangePosition(1, 0).is_snapshot
    assert ChangePosition(0, 99) < ChangePosition(1, 0)


def test_the_public_surface() -> None:
    assert cdc.__all__ == sorted(cdc.__all__)
    assert all(hasattr(cdc, name) for name in cdc.__all__)
    for name in ("capture", "acapture", "ChangeEvent", "ChangeCapture", "QueueSink",
                 "CacheInvalidator", "EventStoreFeed", "ChangeCaptureError"):  # fmt: skip
        assert getattr(eventsourcing, name) is getattr(cdc, name)
