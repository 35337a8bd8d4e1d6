"""One commit writes business rows, events, outbox messages and the inbox mark (SQLite, PostgreSQL).

A consumer handles an incoming message: in a single database transaction it updates
its stock table, appends an event to the event store, adds an outbox message for the
next service and records the incoming message id in its inbox. A rollback leaves no
trace of any of the four; a commit makes all four visible; a redelivery of the same
message changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.engines import Engine
from seawall.eventsourcing.store import NO_STREAM, NewEvent, open_event_store
from seawall.messaging.inbox import Inbox
from seawall.messaging.outbox import Outbox, OutboxMessage


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.engine("postgres")),
    ]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = (
        f"sqlite:///{tmp_path / 'shop.db'}"
        if request.param == "sqlite"
        else require_engine("postgres")
    )
    opened = seawall.connect(url)
    yield opened
    opened.close()


class Shop:
    """The consumer's state and the four stores, on tables unique to the test."""

    def __init__(self, engine: Engine) -> None:
        prefix = f"t{uuid.uuid4().hex[:10]}_"
        self.engine = engine
        self.stock = f"{prefix}stock"
        self.placeholder = "?" if engine.kind == "sqlite" else "%s"
        with engine.transaction() as tx:
            tx.execute(
                f"CREATE TABLE {self.stock} (sku TEXT PRIMARY KEY, quantity INTEGER NOT NULL)"
            )
            tx.execute(f"INSERT INTO {self.stock} VALUES ('book', 10)")
        self.events = open_event_store(engine, table_prefix=prefix)
        self.outbox = Outbox(engine, table_prefix=prefix)
        self.inbox = Inbox(engine, "stock", table_prefix=prefix)

    def reserve(self, message_id: str, order_id: str, *, fail: bool = False) -> bool:
        """Handle an "order placed" message once; ``fail`` aborts after all four writes."""
        p = self.placeholder
        with self.engine.transaction() as tx:
            if not self.inbox.mark(message_id, transaction=tx):
                return False
            tx.execute(f"UPDATE {self.stock} SET quantity = quantity - 1 WHERE sku = {p}", ["book"])
            self.events.append(
                f"reservation-{order_id}",
                [NewEvent("StockReserved", {"order": order_id, "sku": "book"})],
                expected_version=NO_STREAM,
                transaction=tx,
            )
            self.outbox.add("shipping", {"order": order_id}, key=order_id, transaction=tx)
            if fail:
                raise RuntimeError("crash before commit")
        return True

    def quantity(self) -> int:
        with self.engine.transaction() as tx:
            row = tx.execute(f"SELECT quantity FROM {self.stock}").fetchone()
        return int(row[0])

    def published(self) -> list[Any]:
        seen: list[OutboxMessage] = []
        self.outbox.relay(seen.append, retry=None).drain()
        return [message.body for message in seen]

    def drop(self) -> None:
        with self.engine.transaction() as tx:
            tx.execute(f"DROP TABLE {self.stock}")
        self.events.drop_tables()
        self.outbox.store.drop_tables()
        self.inbox.store.drop_tables()
        self.events.close()
        self.outbox.close()


@pytest.fixture
def shop(engine: Engine) -> Iterator[Shop]:
    opened = Shop(engine)
    yield opened
    opened.drop()


def test_a_rollback_removes_all_four_writes(shop: Shop) -> None:
    with pytest.raises(RuntimeError, match="crash"):
        shop.reserve("msg-1", "o1", fail=True)
    assert shop.quantity() == 10
    assert shop.events.read_stream("reservation-o1") == []
    assert shop.outbox.stats().pending == 0
    assert not shop.inbox.seen("msg-1")
    assert shop.published() == []


def test_a_commit_writes_all_four_and_a_redelivery_changes_nothing(shop: Shop) -> None:
    assert shop.reserve("msg-1", "o1")
    assert shop.quantity() == 9
    (event,) = shop.events.read_stream("reservation-o1")
    assert (event.type, event.data) == ("StockReserved", {"order": "o1", "sku": "book"})
    assert shop.inbox.seen("msg-1")
    assert shop.outbox.stats().ready == 1
    assert not shop.reserve("msg-1", "o1")  # redelivered: skipped, nothing written
    assert shop.quantity() == 9
    assert len(shop.events.read_stream("reservation-o1")) == 1
    assert shop.published() == [{"order": "o1"}]


def test_after_a_failed_attempt_the_retry_commits_once(shop: Shop) -> None:
    with pytest.raises(RuntimeError):
        shop.reserve("msg-2", "o2", fail=True)
    assert shop.reserve("msg-2", "o2")
    assert not shop.reserve("msg-2", "o2")
    assert shop.quantity() == 9
    assert shop.published() == [{"order": "o2"}]
