"""The inbox facade: marks, process-once, the queue-worker wrapper, retention."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.events import Event
from seawall.messaging.inbox import Inbox, InboxDuplicateIgnored, InboxPurged, message_id_of
from seawall.messaging.outbox import MESSAGE_ID_HEADER, Outbox, QueuePublisher
from seawall.messaging.queue import Worker


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'inbox.db'}")
    with engine.transaction() as tx:
        tx.execute("CREATE TABLE balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL)")
        tx.execute("INSERT INTO balances VALUES ('a', 1000)")
    yield engine
    engine.close()


def balance(engine: Engine) -> int:
    row = engine.connection.execute(  # type: ignore[attr-defined]
        "SELECT cents FROM balances WHERE account = 'a'"
    ).fetchone()
    return int(row[0])


def test_mark_reports_duplicates_and_emits_an_event(clock: ManualClock) -> None:
    inbox = Inbox(seawall.connect("memory://"), "billing", clock=clock)
    events: list[Event] = []
    inbox.events.subscribe(events.append)
    assert inbox.mark("m1")
    assert not inbox.mark("m1")
    assert inbox.seen("m1")
    assert not inbox.seen("m2")
    assert inbox.count() == 1
    assert events == [InboxDuplicateIgnored("billing", "billing", "m1")]
    assert inbox.forget("m1")
    assert inbox.mark("m1")


def test_process_runs_the_handler_once_in_one_transaction_with_the_mark(
    sqlite_engine: Engine,
) -> None:
    inbox = Inbox(sqlite_engine, "billing")

    def debit(tx: Any) -> None:
        tx.execute("UPDATE balances SET cents = cents - 100 WHERE account = 'a'")

    assert inbox.process("m1", debit)
    assert not inbox.process("m1", debit)  # redelivered: ignored
    assert balance(sqlite_engine) == 900

    def failing(tx: Any) -> None:
        debit(tx)
        raise RuntimeError("crashed mid-way")

    with pytest.raises(RuntimeError):
        inbox.process("m2", failing)
    assert balance(sqlite_engine) == 900  # rolled back with the mark
    assert not inbox.seen("m2")
    assert inbox.process("m2", debit)
    assert balance(sqlite_engine) == 800


def test_process_joins_a_given_transaction(sqlite_engine: Engine) -> None:
    inbox = Inbox(sqlite_engine, "billing")
    with sqlite_engine.transaction() as tx:
        assert inbox.process(
            "m1", lambda t: t.execute("UPDATE balances SET cents = 0"), transaction=tx
        )
        assert not inbox.process("m1", lambda t: pytest.fail("ran twice"), transaction=tx)
    assert balance(sqlite_engine) == 0


def test_process_on_memory_undoes_the_mark_if_the_handler_fails() -> None:
    inbox = Inbox(seawall.connect("memory://"))
    with pytest.raises(ValueError, match="bad"):
        inbox.process("m1", lambda tx: (_ for _ in ()).throw(ValueError("bad")))
    assert not inbox.seen("m1")
    seen: list[Any] = []
    assert inbox.process("m1", seen.append)
    assert seen == [None]


def test_worker_handler_deduplicates_on_the_outbox_id(
    sqlite_engine: Engine, clock: ManualClock
) -> None:
    outbox = Outbox(sqlite_engine)
    queue = sqlite_engine.queue("payments", clock=clock)
    ids = outbox.add_many("payments", [{"cents": 100}, {"cents": 50}])
    relay = outbox.relay(QueuePublisher(queue, deduplicate=False), clock=clock)
    relay.drain()
    # As if the relay had crashed before marking them sent: each is published again.
    for message in queue.peek(10):
        queue.send(message.body, headers=dict(message.headers))
    assert queue.stats().ready == 4
    inbox = Inbox(sqlite_engine, "billing")
    applied: list[int] = []

    def apply(body: dict[str, int], tx: Any) -> None:
        applied.append(body["cents"])
        tx.execute("UPDATE balances SET cents = cents - ? WHERE account = 'a'", [body["cents"]])

    worker = Worker(queue, inbox.handler(apply), clock=clock, concurrency=1)
    worker.run(stop_when_empty=True, handle_signals=False)
    assert applied == [100, 50]
    assert balance(sqlite_engine) == 850
    assert all(inbox.seen(message_id) for message_id in ids)
    assert queue.stats().total == 0


def test_worker_handler_outside_a_worker_is_refused() -> None:
    handler = Inbox(seawall.connect("memory://")).handler(lambda body, tx: None)
    with pytest.raises(ConfigurationError, match="Worker"):
        handler({"x": 1})


def test_message_id_of_prefers_the_outbox_id() -> None:
    queue = seawall.connect("memory://").queue("q")
    queue.send(1, headers={MESSAGE_ID_HEADER: "outbox-id"})
    queue.send(2)
    first, second = queue.receive(2)
    assert message_id_of(first) == "outbox-id"
    assert message_id_of(second) == second.id


def test_purge_uses_the_retention(clock: ManualClock) -> None:
    inbox = Inbox(seawall.connect("memory://"), retention=60.0, clock=clock)
    events: list[Event] = []
    inbox.events.subscribe(events.append)
    inbox.mark("old")
    clock.advance(60.0)
    inbox.mark("new")
    assert inbox.purge() == 1
    assert events == [InboxPurged("default", 1)]
    assert inbox.purge(older_than=0) == 1
    with pytest.raises(ConfigurationError, match="older_than"):
        inbox.purge(older_than=-1)


def test_arguments_are_checked() -> None:
    engine = seawall.connect("memory://")
    with pytest.raises(ConfigurationError, match="consumer"):
        Inbox(engine, "")
    with pytest.raises(ConfigurationError, match="retention"):
        Inbox(engine, retention=-1)
    inbox = Inbox(engine)
    with pytest.raises(ConfigurationError, match="message_id"):
        inbox.mark("")
    with pytest.raises(ConfigurationError, match="message_id"):
        inbox.mark("x" * 257)
    with pytest.raises(ConfigurationError, match="store"):
        Inbox(inbox.store, clock=ManualClock())
    with pytest.raises(UnsupportedEngineError, match="inbox"):
        Inbox(seawall.connect("redis://127.0.0.1:6379/0"))
    with (
        pytest.raises(ConfigurationError, match="memory"),
        seawall.connect("sqlite://:memory:").transaction() as tx,
    ):  # type: ignore[attr-defined]
        inbox.mark("m", transaction=tx)


async def test_amark(clock: ManualClock) -> None:
    inbox = Inbox(seawall.connect("memory://"), clock=clock)
    events: list[Event] = []
    inbox.events.subscribe(events.append)
    assert await inbox.amark("m1")
    assert not await inbox.amark("m1")
    assert len(events) == 1
