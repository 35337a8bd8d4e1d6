"""Claim check on PostgreSQL: blobs in a table, joining the send's transaction (live server).

Tables live in a schema of this module, dropped at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.messaging.claim_check import BlobNotFoundError, ClaimCheck, SqlBlobStore

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.engine("postgres")

SCHEMA = f"seawall_claim_it_{uuid.uuid4().hex[:10]}"
BIG = "p" * 5000


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    from _engines import require_engine

    url = require_engine("postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@pytest.fixture
def engine(base_url: str) -> Iterator[Engine]:
    separator = "&" if "?" in base_url else "?"
    opened = seawall.connect(f"{base_url}{separator}options=-csearch_path%3D{SCHEMA}")
    yield opened
    opened.close()


def test_big_bodies_round_trip_through_a_table(engine: Engine) -> None:
    store = SqlBlobStore(engine, table="blobs_round_trip")
    queue = engine.queue("claim-round-trip", claim_check=ClaimCheck(store, threshold=1000))
    queue.send(BIG)
    queue.send("small")
    assert len(store.keys()) == 1
    big, small = queue.receive(max_messages=2)
    assert big.body == BIG
    assert small.body == "small"
    queue.ack_many([big, small])
    assert store.keys() == []


def test_the_blob_commits_and_rolls_back_with_the_send(engine: Engine) -> None:
    store = SqlBlobStore(engine, table="blobs_transaction")
    queue = engine.queue("claim-transaction", claim_check=ClaimCheck(store, threshold=1000))

    def failing() -> None:
        with engine.transaction() as tx:
            queue.send(BIG, transaction=tx)
            raise RuntimeError("business write failed")

    with pytest.raises(RuntimeError):
        failing()
    assert store.keys() == []
    assert queue.stats().total == 0
    with engine.transaction() as tx:
        queue.send(BIG, transaction=tx)
    (message,) = queue.receive()
    with engine.transaction() as tx:
        queue.ack(message, transaction=tx)
    assert store.keys() == []


async def test_an_asyncio_transaction_carries_the_blob(engine: Engine) -> None:
    store = SqlBlobStore(engine, table="blobs_async")
    queue = engine.queue("claim-async", claim_check=ClaimCheck(store, threshold=1000))
    atransaction = engine.atransaction  # type: ignore[attr-defined]

    async def failing() -> None:
        async with atransaction() as tx:
            await queue.asend(BIG, transaction=tx)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await failing()
    assert store.keys() == []
    async with atransaction() as tx:
        await queue.asend(BIG, transaction=tx)
    (message,) = await queue.areceive()
    assert message.body == BIG
    await message.aack()
    assert store.keys() == []
    await engine.aclose()


def test_a_missing_blob_is_dead_lettered(engine: Engine) -> None:
    store = SqlBlobStore(engine, table="blobs_missing")
    queue = engine.queue("claim-missing", claim_check=ClaimCheck(store, threshold=1000))
    queue.send(BIG)
    store.delete(store.keys()[0])
    assert queue.receive() == []
    (dead,) = queue.dead_letters.list()
    assert "is missing" in dead.reason
    assert queue.dead_letters.purge() == 1


def test_collect_uses_the_store_clock(engine: Engine) -> None:
    clock = ManualClock(1_000_000.0)
    store = SqlBlobStore(engine, table="blobs_collect", clock=clock)
    store.put("old", b"1")
    clock.advance(120)
    store.put("new", b"2")
    assert store.collect(60, keep=set()) == 1
    assert store.get("new") == b"2"
    with pytest.raises(BlobNotFoundError):
        store.get("old")
    server_time = SqlBlobStore(engine, table="blobs_server_time")
    server_time.put("now", b"x")
    assert server_time.collect(3600, keep=set()) == 0
