"""Claim check: big bodies go to a blob store, messages carry a reference (memory, SQLite)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
import seawall.messaging.claim_check as claim_module
from seawall.clock import ManualClock
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.messaging.claim_check import (
    CLAIM_CHECK_HEADER,
    BlobNotFoundError,
    BlobStore,
    ClaimCheck,
    ClaimCheckError,
    FileBlobStore,
    SqlBlobStore,
)
from seawall.messaging.queue import MessageTooLargeError, Queue, Worker, open_queue

BIG = "x" * 2000  # encodes to 2002 bytes, over the 1000-byte threshold used below


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs", fsync=False)


@pytest.fixture
def queue(blobs: FileBlobStore, clock: ManualClock) -> Iterator[Queue]:
    opened = open_queue(
        "memory://", "images", clock=clock, claim_check=ClaimCheck(blobs, threshold=1000)
    )
    yield opened
    opened.close()


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(claim_module.__all__) == claim_module.__all__
    assert set(claim_module.__all__) == {
        "BlobNotFoundError",
        "BlobStore",
        "CLAIM_CHECK_HEADER",
        "ClaimCheck",
        "ClaimCheckError",
        "DEFAULT_THRESHOLD",
        "FileBlobStore",
        "SqlBlobStore",
    }


def test_small_bodies_travel_inline_and_big_ones_as_a_blob(
    queue: Queue, blobs: FileBlobStore
) -> None:
    queue.send("small")
    queue.send(BIG, headers={"kind": "image"})
    assert len(blobs.keys()) == 1
    small, big = queue.receive(max_messages=2)
    assert small.body == "small"
    assert CLAIM_CHECK_HEADER not in small.headers
    assert big.body == BIG
    assert big.headers["kind"] == "image"
    assert big.headers[CLAIM_CHECK_HEADER] == blobs.keys()[0]
    small.ack()
    assert len(blobs.keys()) == 1
    big.ack()
    assert blobs.keys() == []


def test_the_reference_is_small_and_named_by_the_header(queue: Queue) -> None:
    queue.send(BIG)
    (record,) = queue.store.peek(1)
    assert record.body.startswith(b"seawall-claim-check:")
    assert len(record.body) < 100
    assert queue.peek(1)[0].body == BIG  # inspection resolves the blob


def test_an_oversize_body_without_claim_check_is_refused(clock: ManualClock) -> None:
    plain = open_queue("memory://", "plain", clock=clock, max_message_size=1000)
    with pytest.raises(MessageTooLargeError, match="claim check") as caught:
        plain.send(BIG)
    assert caught.value.size == 2002
    assert caught.value.limit == 1000
    assert plain.stats().total == 0


def test_with_a_claim_check_bodies_over_max_message_size_go_through(
    blobs: FileBlobStore, clock: ManualClock
) -> None:
    queue = open_queue(
        "memory://",
        "huge",
        clock=clock,
        max_message_size=1000,
        claim_check=ClaimCheck(blobs, threshold=500),
    )
    queue.send("y" * 100_000)
    assert queue.receive()[0].body == "y" * 100_000


def test_a_threshold_above_max_message_size_is_refused(blobs: FileBlobStore) -> None:
    with pytest.raises(ConfigurationError, match="lower the threshold"):
        open_queue("memory://", "q", max_message_size=100, claim_check=ClaimCheck(blobs))
    with pytest.raises(ConfigurationError, match="must be a ClaimCheck"):
        open_queue("memory://", "q", claim_check=blobs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="threshold"):
        ClaimCheck(blobs, threshold=-1)
    with pytest.raises(ConfigurationError, match="not a blob store"):
        ClaimCheck(42)  # type: ignore[arg-type]


def test_a_failed_send_leaves_no_blob(
    queue: Queue, blobs: FileBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> str:
        raise RuntimeError("engine down")

    monkeypatch.setattr(queue.store, "send", broken)
    monkeypatch.setattr(queue.store, "send_many", broken)
    with pytest.raises(RuntimeError, match="engine down"):
        queue.send(BIG)
    with pytest.raises(RuntimeError, match="engine down"):
        queue.send_many([BIG, "small", BIG])
    assert blobs.keys() == []


def test_send_many_checks_in_only_the_big_bodies(queue: Queue, blobs: FileBlobStore) -> None:
    queue.send_many(["a", BIG, "b", BIG + "y"])
    assert len(blobs.keys()) == 2
    messages = queue.receive(max_messages=4)
    assert [message.body for message in messages] == ["a", BIG, "b", BIG + "y"]
    queue.ack_many(messages)
    assert blobs.keys() == []


def test_ack_by_bare_receipt_deletes_the_blob(queue: Queue, blobs: FileBlobStore) -> None:
    queue.send(BIG)
    (message,) = queue.receive()
    queue.ack(message.receipt)
    assert blobs.keys() == []


def test_a_stale_ack_keeps_the_blob(queue: Queue, blobs: FileBlobStore, clock: ManualClock) -> None:
    queue.send(BIG)
    (first,) = queue.receive(visibility_timeout=1)
    clock.advance(2)
    (second,) = queue.receive()
    with pytest.raises(seawall.messaging.queue.StaleReceiptError):
        queue.ack_many([first])
    assert len(blobs.keys()) == 1
    second.ack()
    assert blobs.keys() == []


def test_nack_and_dead_letters_keep_the_blob_until_the_purge(
    blobs: FileBlobStore, clock: ManualClock
) -> None:
    queue = open_queue(
        "memory://",
        "retry",
        clock=clock,
        max_deliveries=2,
        claim_check=ClaimCheck(blobs, threshold=1000),
    )
    queue.send(BIG)
    queue.receive()[0].nack(error="try again")
    queue.receive()[0].nack(error="still failing")
    assert queue.stats().dead == 1
    (dead,) = queue.dead_letters.list()
    assert dead.body == BIG
    assert dead.last_error == "still failing"
    assert len(blobs.keys()) == 1
    assert queue.dead_letters.redrive() == 1
    (message,) = queue.receive()
    assert message.body == BIG
    message.nack()
    queue.receive()[0].nack()
    assert queue.dead_letters.purge() == 1
    assert blobs.keys() == []


def test_a_missing_blob_goes_to_the_dead_letters_and_the_rest_is_delivered(
    queue: Queue, blobs: FileBlobStore
) -> None:
    queue.send(BIG)
    queue.send("after")
    blobs.delete(blobs.keys()[0])
    messages = queue.receive(max_messages=10)
    assert [message.body for message in messages] == ["after"]
    (dead,) = queue.dead_letters.list()
    assert "is missing" in dead.reason
    assert dead.reason.startswith("claim check blob")
    assert dead.body.startswith(b"seawall-claim-check:")  # shown as stored


async def test_a_missing_blob_is_dead_lettered_by_areceive_too(
    queue: Queue, blobs: FileBlobStore
) -> None:
    await queue.asend(BIG)
    blobs.delete(blobs.keys()[0])
    assert await queue.areceive() == []
    assert queue.stats().dead == 1


def test_a_consumer_without_claim_check_dead_letters_with_the_fix(
    blobs: FileBlobStore, clock: ManualClock
) -> None:
    engine = seawall.connect("memory://")
    producer = open_queue(
        engine, "shared", clock=clock, claim_check=ClaimCheck(blobs, threshold=10)
    )
    consumer = open_queue(engine, "shared", clock=clock)
    producer.send(BIG)
    assert consumer.receive() == []
    (dead,) = consumer.dead_letters.list()
    assert "has no claim_check" in dead.reason


async def test_the_asyncio_twins(queue: Queue, blobs: FileBlobStore) -> None:
    await queue.asend(BIG)
    await queue.asend_many([BIG, "small"])
    assert len(blobs.keys()) == 2
    first, second, third = await queue.areceive(max_messages=3)
    assert (first.body, second.body, third.body) == (BIG, BIG, "small")
    await first.aack()
    await queue.aack_many([second, third])
    assert blobs.keys() == []
    await queue.asend(BIG)
    (message,) = await queue.areceive()
    await message.anack()
    assert len(blobs.keys()) == 1


async def test_a_failed_asend_leaves_no_blob(
    queue: Queue, blobs: FileBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> str:
        raise RuntimeError("engine down")

    monkeypatch.setattr(queue.async_store, "send", broken)
    monkeypatch.setattr(queue.async_store, "send_many", broken)
    with pytest.raises(RuntimeError):
        await queue.asend(BIG)
    with pytest.raises(RuntimeError):
        await queue.asend_many([BIG])
    assert blobs.keys() == []


def test_a_worker_gets_the_resolved_body_and_the_blob_goes_after_the_ack(
    queue: Queue, blobs: FileBlobStore, clock: ManualClock
) -> None:
    seen: list[Any] = []
    queue.send(BIG)
    queue.send("small")
    stats = Worker(queue, seen.append, clock=clock).run(stop_when_empty=True, handle_signals=False)
    assert stats.handled == 2
    assert sorted(seen, key=len) == ["small", BIG]
    assert blobs.keys() == []


def test_a_worker_survives_a_missing_blob(
    queue: Queue, blobs: FileBlobStore, clock: ManualClock
) -> None:
    seen: list[Any] = []
    queue.send(BIG)
    queue.send("small")
    blobs.delete(blobs.keys()[0])
    Worker(queue, seen.append, clock=clock).run(stop_when_empty=True, handle_signals=False)
    assert seen == ["small"]
    assert queue.stats().dead == 1


# -- SQLite: blobs in a table, transactions ---------------------------------------------------


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[seawall.engines.Engine]:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'shop.db'}")
    yield engine
    engine.close()


def test_a_table_blob_store_joins_the_send_transaction(
    sqlite_engine: seawall.engines.Engine,
) -> None:
    store = SqlBlobStore(sqlite_engine)
    queue = sqlite_engine.queue("images", claim_check=ClaimCheck(store, threshold=1000))

    def failing_business_write() -> None:
        with sqlite_engine.transaction() as tx:
            queue.send(BIG, transaction=tx)
            raise RuntimeError("business write failed")

    with pytest.raises(RuntimeError):
        failing_business_write()
    assert store.keys() == []
    assert queue.stats().total == 0
    with sqlite_engine.transaction() as tx:
        queue.send(BIG, transaction=tx)
    assert len(store.keys()) == 1
    (message,) = queue.receive()
    assert message.body == BIG
    message.ack()
    assert store.keys() == []


def test_an_ack_in_a_transaction_deletes_the_blob_only_after_the_commit(
    sqlite_engine: seawall.engines.Engine, blobs: FileBlobStore
) -> None:
    queue = sqlite_engine.queue("images", claim_check=ClaimCheck(blobs, threshold=1000))
    queue.send(BIG)
    (message,) = queue.receive()

    def rolled_back_ack() -> None:
        with sqlite_engine.transaction() as tx:
            queue.ack(message, transaction=tx)
            assert len(blobs.keys()) == 1
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back_ack()
    assert len(blobs.keys()) == 1
    with sqlite_engine.transaction() as tx:
        queue.ack(message, transaction=tx)
        assert len(blobs.keys()) == 1
    assert blobs.keys() == []


def test_a_transactional_worker_deletes_after_its_commit(
    sqlite_engine: seawall.engines.Engine, blobs: FileBlobStore
) -> None:
    queue = sqlite_engine.queue("images", claim_check=ClaimCheck(blobs, threshold=1000))
    queue.send(BIG)
    sizes: list[int] = []
    Worker(queue, lambda body: sizes.append(len(body)), transaction=sqlite_engine.transaction).run(
        stop_when_empty=True, handle_signals=False
    )
    assert sizes == [2000]
    assert blobs.keys() == []


def test_a_url_or_engine_makes_a_table_store(sqlite_engine: seawall.engines.Engine) -> None:
    assert isinstance(ClaimCheck(sqlite_engine).store, SqlBlobStore)
    assert isinstance(ClaimCheck(sqlite_engine.url).store, SqlBlobStore)
    with pytest.raises(UnsupportedEngineError, match="FileBlobStore"):
        SqlBlobStore("memory://")
    with pytest.raises(ConfigurationError, match="table"):
        SqlBlobStore(sqlite_engine, table="no such")


# -- blob stores and garbage collection -------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_blob_store_contract(kind: str, tmp_path: Path, clock: ManualClock) -> None:
    store: BlobStore = (
        FileBlobStore(tmp_path / "b", clock=clock)
        if kind == "file"
        else SqlBlobStore(f"sqlite:///{tmp_path / 'b.db'}", clock=clock)
    )
    assert isinstance(store, BlobStore)
    store.put("old", b"1")
    clock.advance(100)
    store.put("new", b"22")
    assert store.get("new") == b"22"
    assert store.keys() == ["new", "old"]
    with pytest.raises(BlobNotFoundError, match="'gone' is missing") as caught:
        store.get("gone")
    assert isinstance(caught.value, KeyError)
    assert caught.value.key == "gone"
    with pytest.raises(ConfigurationError, match="blob key"):
        store.put("../escape", b"")
    assert store.collect(50, keep=set()) == 1
    assert store.keys() == ["new"]
    assert store.delete("new") is True
    assert store.delete("new") is False
    assert store.delete_many(["a", "b"]) == 0


def test_collect_garbage_keeps_what_the_queues_still_refer_to(
    tmp_path: Path, clock: ManualClock
) -> None:
    blobs = FileBlobStore(tmp_path / "gc", clock=clock)
    claim_check = ClaimCheck(blobs, threshold=10)
    queue = open_queue("memory://", "gc", clock=clock, max_deliveries=1, claim_check=claim_check)
    queue.send(BIG)  # will die
    queue.receive()[0].nack()
    queue.send(BIG + "ready")  # waits in the queue
    blobs.put("orphan", b"left by a crash")
    clock.advance(3600)
    assert claim_check.collect_garbage(older_than=60, queues=[queue]) == 1
    assert len(blobs.keys()) == 2
    assert claim_check.collect_garbage(older_than=60) == 2
    with pytest.raises(ConfigurationError):
        claim_check.collect_garbage(older_than=-1)


def test_a_leftover_temporary_file_is_collected_and_never_listed(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "tmp")
    (tmp_path / "tmp" / "ab").mkdir()
    leftover = tmp_path / "tmp" / "ab" / ".tmp-abc-1-2"
    leftover.write_bytes(b"half")
    os.utime(leftover, (1.0, 1.0))
    assert blobs.keys() == []
    assert blobs.collect(60, keep=set()) == 0
    assert not leftover.exists()


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match="writable directory"):
        FileBlobStore(tmp_path / "file" / "blobs")
    blobs = FileBlobStore(tmp_path / "ok")
    (tmp_path / "ok" / "ke").write_text("not a folder")
    with pytest.raises(ClaimCheckError, match="cannot write"):
        blobs.put("key", b"data")


def test_a_directory_path_makes_a_file_store(tmp_path: Path) -> None:
    check = ClaimCheck(tmp_path / "dir")
    assert isinstance(check.store, FileBlobStore)
    assert "threshold=65536" in repr(check)
    assert asyncio.run(check.acheck_out(check.check_in(b"abc"))) == b"abc"
