"""The idempotency-store contract, run against every engine (memory, SQLite, PostgreSQL, Redis).

Each test gets a store with unique tables (or key prefix), dropped afterwards, and a
manual clock as its time source, so leases and expiry pass without sleeping. SQL
engines also prove their writes join a caller's transaction; every engine proves that
of many concurrent claims of a new key exactly one wins.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.errors import ConfigurationError
from seawall.idempotency import (
    IdempotencyConflictError,
    IdempotencyKeys,
    IdempotencyStore,
    KeyStatus,
    open_idempotency_store,
)

LEASE = 10.0
TTL = 100.0


@dataclass(frozen=True)
class EngineUnderTest:
    """How to open one engine."""

    name: str
    url: Callable[[Path], str]
    transactions: bool


ENGINES = [
    pytest.param(EngineUnderTest("memory", lambda tmp: "memory://", False), id="memory"),
    pytest.param(
        EngineUnderTest("sqlite", lambda tmp: f"sqlite:///{tmp / 'keys.db'}", True), id="sqlite"
    ),
    pytest.param(
        EngineUnderTest("postgres", lambda tmp: require_engine("postgres"), True),
        id="postgres",
        marks=pytest.mark.engine("postgres"),
    ),
    pytest.param(
        EngineUnderTest("redis", lambda tmp: require_engine("redis"), False),
        id="redis",
        marks=pytest.mark.engine("redis"),
    ),
]
SQL_ENGINES = ENGINES[1:3]
ENGINES_WITHOUT_TRANSACTIONS = [ENGINES[0], ENGINES[3]]


@pytest.fixture(params=ENGINES)
def under_test(request: pytest.FixtureRequest) -> EngineUnderTest:
    chosen: EngineUnderTest = request.param
    return chosen


@pytest.fixture
def engine(under_test: EngineUnderTest, tmp_path: Path) -> Iterator[Engine]:
    opened = seawall.connect(under_test.url(tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def store(engine: Engine, clock: ManualClock) -> Iterator[IdempotencyStore]:
    unique = uuid.uuid4().hex[:10]
    if engine.kind == "redis":
        opened = open_idempotency_store(engine, prefix=f"test:{unique}:", clock=clock)
    else:
        opened = open_idempotency_store(engine, table_prefix=f"t{unique}_", clock=clock)
    try:
        yield opened
    finally:
        opened.drop_tables()
        opened.close()


def claim(
    store: IdempotencyStore, key: str = "k", fingerprint: str = "fp", token: str = "t1"
) -> Any:
    return store.claim(key, fingerprint, token, LEASE, TTL, None)


def test_a_new_key_is_claimed_in_flight(store: IdempotencyStore, clock: ManualClock) -> None:
    result = claim(store)
    assert result.claimed
    assert result.now == pytest.approx(clock.now())
    record = result.record
    assert (record.key, record.fingerprint, record.status, record.token) == (
        "k",
        "fp",
        KeyStatus.IN_FLIGHT,
        "t1",
    )
    assert record.response is None
    assert record.created_at == pytest.approx(clock.now())
    assert record.locked_until == pytest.approx(clock.now() + LEASE)
    assert record.expires_at == pytest.approx(clock.now() + TTL)
    assert store.get("k") == record


def test_a_held_key_is_not_claimed_again(store: IdempotencyStore) -> None:
    claim(store)
    second = claim(store, token="t2")
    assert not second.claimed
    assert second.record.token == "t1"
    other = claim(store, fingerprint="other", token="t3")
    assert not other.claimed
    assert other.record.fingerprint == "fp"


def test_complete_stores_the_response_for_the_holder_only(
    store: IdempotencyStore, clock: ManualClock
) -> None:
    claim(store)
    assert not store.complete("k", "wrong", b"x", TTL, None)
    clock.advance(1.0)
    assert store.complete("k", "t1", b"\x00response\xff", TTL, None)
    record = store.get("k")
    assert record is not None
    assert record.status is KeyStatus.COMPLETED
    assert record.response == b"\x00response\xff"
    assert record.locked_until is None
    assert record.expires_at == pytest.approx(clock.now() + TTL)
    assert not store.complete("k", "t1", b"again", TTL, None)
    replay = claim(store, token="t2")
    assert not replay.claimed
    assert replay.record.response == b"\x00response\xff"


def test_an_abandoned_claim_is_taken_over_by_the_same_request_only(
    store: IdempotencyStore, clock: ManualClock
) -> None:
    claim(store)
    clock.advance(LEASE - 0.5)
    assert not claim(store, token="t2").claimed
    clock.advance(0.5)
    assert not claim(store, fingerprint="other", token="t3").claimed
    taken = claim(store, token="t4")
    assert taken.claimed
    assert taken.record.token == "t4"
    assert not store.complete("k", "t1", b"late", TTL, None)
    assert not store.release("k", "t1", None)
    assert not store.extend("k", "t1", LEASE)
    assert store.complete("k", "t4", b"ok", TTL, None)


def test_release_deletes_the_in_flight_record(store: IdempotencyStore) -> None:
    claim(store)
    assert not store.release("k", "wrong", None)
    assert store.release("k", "t1", None)
    assert store.get("k") is None
    assert claim(store, fingerprint="anything", token="t2").claimed
    store.complete("k", "t2", b"done", TTL, None)
    assert not store.release("k", "t2", None)  # completed keys are not released


def test_extend_pushes_the_lease(store: IdempotencyStore, clock: ManualClock) -> None:
    claim(store)
    clock.advance(LEASE - 1.0)
    assert store.extend("k", "t1", LEASE)
    clock.advance(LEASE - 1.0)
    assert not claim(store, token="t2").claimed
    record = store.get("k")
    assert record is not None
    assert record.locked_until == pytest.approx(clock.now() + 1.0)
    assert not store.extend("missing", "t1", LEASE)


def test_expired_keys_are_gone_and_can_be_purged(
    store: IdempotencyStore, clock: ManualClock
) -> None:
    claim(store, key="a")
    store.complete("a", "t1", b"1", TTL, None)
    claim(store, key="b", token="t2")
    clock.advance(TTL)
    assert store.get("a") is None
    assert store.get("b") is None
    fresh = claim(store, key="a", fingerprint="new request", token="t3")
    assert fresh.claimed  # an expired completed key starts over, whatever the request
    assert store.purge_expired(100) == 1  # b; a was rewritten
    assert store.purge_expired(100) == 0
    assert store.get("a") is not None


def test_many_concurrent_claims_of_a_new_key_have_one_winner(store: IdempotencyStore) -> None:
    barrier = threading.Barrier(8)
    results: list[bool] = []
    lock = threading.Lock()

    def contender(n: int) -> None:
        barrier.wait(10.0)
        result = store.claim("contended", "fp", f"t{n}", LEASE, TTL, None)
        with lock:
            results.append(result.claimed)

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30.0)
    assert sorted(results) == [False] * 7 + [True]


async def test_async_twins(engine: Engine, store: IdempotencyStore, clock: ManualClock) -> None:
    try:
        await async_twins(store, clock)
    finally:
        await engine.aclose()


async def async_twins(store: IdempotencyStore, clock: ManualClock) -> None:
    first = await store.aclaim("k", "fp", "t1", LEASE, TTL, None)
    assert first.claimed
    assert not (await store.aclaim("k", "fp", "t2", LEASE, TTL, None)).claimed
    assert await store.aextend("k", "t1", LEASE)
    assert await store.acomplete("k", "t1", b"r", TTL, None)
    record = await store.aget("k")
    assert record is not None
    assert record.response == b"r"
    await store.aclaim("x", "fp", "t3", LEASE, TTL, None)
    assert await store.arelease("x", "t3", None)
    clock.advance(TTL)
    assert await store.aget("k") is None
    assert await store.apurge_expired(100) == 1


def test_the_keys_api_on_every_engine(store: IdempotencyStore) -> None:
    keys = IdempotencyKeys(store, ttl=TTL, lease=LEASE)
    calls: list[int] = []
    assert keys.run("op", lambda: calls.append(1) or {"ok": True}) == {"ok": True}
    assert keys.run("op", lambda: calls.append(1) or {"ok": False}) == {"ok": True}
    assert calls == [1]
    keys.claim("busy")
    with pytest.raises(IdempotencyConflictError) as caught:
        keys.claim("busy")
    assert caught.value.retry_after == pytest.approx(LEASE)


@pytest.mark.parametrize("under_test", ENGINES_WITHOUT_TRANSACTIONS, indirect=True)
def test_transactions_are_refused_where_there_are_none(store: IdempotencyStore) -> None:
    sqlite_engine = seawall.connect("sqlite://:memory:")
    with sqlite_engine.transaction() as tx:
        with pytest.raises(ConfigurationError, match="transaction"):
            store.claim("k", "fp", "t", LEASE, TTL, tx)
        with pytest.raises(ConfigurationError, match="transaction"):
            store.complete("k", "t", b"", TTL, tx)


# -- transactions (SQL engines) ----------------------------------------------------------------


@pytest.mark.parametrize("under_test", SQL_ENGINES, indirect=True)
def test_claim_and_complete_join_the_caller_s_transaction(
    engine: Engine, store: IdempotencyStore
) -> None:
    begin = engine.transaction  # type: ignore[attr-defined]

    def rolled_back(write: Callable[[Any], bool]) -> None:
        with begin() as tx:
            assert write(tx)
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        rolled_back(lambda tx: store.claim("k", "fp", "t1", LEASE, TTL, tx).claimed)
    assert store.get("k") is None  # the rollback undid the claim
    claim(store)
    with pytest.raises(RuntimeError):
        rolled_back(lambda tx: store.complete("k", "t1", b"r", TTL, tx))
    record = store.get("k")
    assert record is not None
    assert record.status is KeyStatus.IN_FLIGHT
    with begin() as tx:
        assert store.complete("k", "t1", b"r", TTL, tx)
    record = store.get("k")
    assert record is not None
    assert record.status is KeyStatus.COMPLETED
    claim(store, key="gone", token="t9")
    with begin() as tx:
        assert store.release("gone", "t9", tx)
    assert store.get("gone") is None


@pytest.mark.parametrize("under_test", ENGINES[2:3], indirect=True)
async def test_async_writes_join_an_async_postgres_transaction(
    engine: Engine, store: IdempotencyStore
) -> None:
    begin = engine.atransaction  # type: ignore[attr-defined]

    async def rolled_back() -> None:
        async with begin() as tx:
            assert (await store.aclaim("k", "fp", "t1", LEASE, TTL, tx)).claimed
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        await rolled_back()
    assert await store.aget("k") is None
    async with begin() as tx:
        assert (await store.aclaim("k", "fp", "t1", LEASE, TTL, tx)).claimed
        assert await store.acomplete("k", "t1", b"r", TTL, tx)
    record = await asyncio.to_thread(store.get, "k")
    assert record is not None
    assert record.response == b"r"
    with pytest.raises(ConfigurationError, match="atransaction"):
        async with begin() as tx:
            store.claim("k2", "fp", "t", LEASE, TTL, tx)
    await engine.aclose()
