"""One contract for leader election on every engine: memory, SQLite, PostgreSQL, Redis, etcd.

Each candidate gets a store of its own (as separate processes would), all on the same
engine. Engines keep their own time, so these tests use short TTLs and short, bounded
real waits. Every Redis key, PostgreSQL table and etcd key is unique to this run and
removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from _engines import engine_url
from seawall.coordination import (
    Election,
    ElectionTimeoutError,
    FenceGuard,
    FencingError,
    LockStore,
    MemoryLockStore,
    Term,
)
from seawall.coordination.lock.etcd import EtcdLockStore
from seawall.coordination.lock.postgres import PostgresLockStore
from seawall.coordination.lock.redis import RedisLockStore
from seawall.coordination.lock.sqlite import SqliteLockStore

RUN = uuid.uuid4().hex[:10]
TABLE = f"election_{RUN}"
REDIS_PREFIX = f"seawall-test:election:{RUN}"
ETCD_PREFIX = f"seawall-test/election/{RUN}"

ENGINES = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.engine("postgres")),
    pytest.param("redis", marks=pytest.mark.engine("redis")),
    pytest.param("etcd", marks=pytest.mark.engine("etcd")),
]


class HangingStore:
    """A store whose renewals can be made to hang (a network cut, a paused engine link)."""

    def __init__(self, inner: LockStore) -> None:
        self.inner = inner
        self.expires = inner.expires
        self.cut = threading.Event()
        self.released = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        if self.cut.is_set():
            self.released.wait(10.0)
            raise ConnectionError("the link to the engine was cut")
        return self.inner.extend(name, owner, ttl)

    def release(self, name: str, owner: str) -> bool:
        if self.cut.is_set():
            return False
        return self.inner.release(name, owner)


@dataclass
class Rig:
    """How to open stores of one engine for several candidates."""

    kind: str
    opener: Callable[[], LockStore]
    ttl: float
    stores: list[LockStore] = field(default_factory=list)

    def store(self) -> LockStore:
        store = self.opener()
        self.stores.append(store)
        return store

    def election(self, group: str, identity: str, **options: Any) -> Election:
        options.setdefault("ttl", self.ttl)
        options.setdefault("poll_interval", 0.02)
        store = options.pop("store", None) or self.store()
        return Election(group, store=store, identity=identity, **options)


def _opener(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], LockStore]:
    if kind == "memory":
        shared = MemoryLockStore()
        return lambda: shared
    if kind == "sqlite":
        return lambda: SqliteLockStore(f"sqlite:///{tmp_path}/election.db")
    if kind == "postgres":
        url = request.getfixturevalue("postgres_url")
        return lambda: PostgresLockStore(url, table=TABLE)
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        return lambda: RedisLockStore(url, prefix=REDIS_PREFIX)
    assert kind == "etcd"
    url = request.getfixturevalue("etcd_url")
    return lambda: EtcdLockStore(url, prefix=ETCD_PREFIX)


@pytest.fixture(params=ENGINES)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    kind = request.param
    made = Rig(kind, _opener(kind, request, tmp_path), ttl=1.0 if kind == "etcd" else 0.5)
    try:
        yield made
    finally:
        for store in made.stores:
            if isinstance(store, EtcdLockStore):
                store.engine.delete(ETCD_PREFIX, prefix=True)
            store.close()


@pytest.fixture(params=ENGINES)
async def arig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    kind = request.param
    made = Rig(kind, _opener(kind, request, tmp_path), ttl=1.0 if kind == "etcd" else 0.5)
    try:
        yield made
    finally:
        for store in made.stores:
            if isinstance(store, EtcdLockStore):
                store.engine.delete(ETCD_PREFIX, prefix=True)
                await store.engine.aclose()
            await store.aclose()


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(engine_url("postgres"), autocommit=True, connect_timeout=2) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(engine_url("redis"), socket_connect_timeout=2)
        for key in client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000):
            client.delete(key)
        client.close()


def _group() -> str:
    return f"group-{uuid.uuid4().hex[:12]}"


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------------------------------------- the contract


def test_one_leader_at_a_time_and_everyone_observes_it(rig: Rig) -> None:
    group = _group()
    first = rig.election(group, "node-a", ttl=5.0)
    second = rig.election(group, "node-b", ttl=5.0)
    try:
        assert second.leader() is None
        term = first.campaign(wait=0)
        assert term.number >= 1
        with pytest.raises(ElectionTimeoutError):
            second.campaign(wait=0)
        for observer in (first, second):
            info = observer.leader()
            assert info is not None
            assert (info.identity, info.term) == ("node-a", term.number)
        assert first.resign()
        successor = second.campaign(wait=2.0)
        assert successor.number == term.number + 1
        info = first.leader()
        assert info is not None
        assert info.identity == "node-b"
    finally:
        first.close()
        second.close()


def test_renewal_keeps_the_leader_across_several_ttls(rig: Rig) -> None:
    group = _group()
    demoted: list[str] = []
    leader = rig.election(group, "leader", on_demoted=lambda term, why: demoted.append(why))
    follower = rig.election(group, "follower")
    try:
        term = leader.campaign()
        time.sleep(rig.ttl * 2.4)
        assert term.held
        assert demoted == []
        with pytest.raises(ElectionTimeoutError):
            follower.campaign(wait=0)
        info = follower.leader()
        assert info is not None
        assert info.term == term.number
    finally:
        leader.close()
        follower.close()
    assert demoted == ["resigned"]


def test_a_leader_whose_lease_is_taken_is_demoted(rig: Rig) -> None:
    group = _group()
    told = threading.Event()
    reasons: list[str] = []

    def on_demoted(term: Term, reason: str) -> None:
        reasons.append(reason)
        told.set()

    leader = rig.election(group, "leader", on_demoted=on_demoted)
    usurper = rig.election(group, "usurper")
    try:
        term = leader.campaign()
        assert leader.store.force_release(leader.lock_name)
        stolen = usurper.campaign(wait=3.0)
        assert told.wait(5.0), "the renewal did not report the loss"
        assert reasons == ["a renewal was refused: the lease expired or was taken"]
        assert not leader.is_leader
        assert stolen.number > term.number
    finally:
        leader.close()
        usurper.close()


def test_a_cut_off_leader_steps_down_before_a_successor_is_elected(rig: Rig) -> None:
    """The leader's renewals hang (a network cut): it must demote itself first."""
    group = _group()
    cut_store = HangingStore(rig.store())
    demoted_at: list[float] = []
    leader = rig.election(
        group,
        "leader",
        store=cut_store,
        on_demoted=lambda term, why: demoted_at.append(time.monotonic()),
    )
    follower = rig.election(group, "follower")
    try:
        term = leader.campaign()
        cut_store.cut.set()
        successor = follower.campaign(wait=rig.ttl * 4 + 2.0)
        elected_at = time.monotonic()
        assert demoted_at, "the leader did not step down"
        assert demoted_at[0] <= elected_at
        assert not term.held
        assert successor.number > term.number
    finally:
        cut_store.released.set()
        leader.close()
        follower.close()


def test_a_fenced_resource_accepts_one_leader_per_term(rig: Rig) -> None:
    group = _group()
    guard = FenceGuard()
    cut_store = HangingStore(rig.store())
    old = rig.election(group, "old", store=cut_store)
    new = rig.election(group, "new")
    try:
        stale = old.campaign()
        guard.check(group, stale.number)
        cut_store.cut.set()  # the old leader is cut off, then replaced
        fresh = new.campaign(wait=rig.ttl * 4 + 2.0)
        guard.check(group, fresh.number)
        with pytest.raises(FencingError):
            guard.check(group, stale.number)  # a write it had in flight is refused
        assert guard.last_seen(group) == fresh.number
    finally:
        cut_store.released.set()
        old.close()
        new.close()


async def test_async_campaign_observe_and_resign(arig: Rig) -> None:
    group = _group()
    first = arig.election(group, "async-a", ttl=5.0)
    second = arig.election(group, "async-b", ttl=5.0)
    try:
        term = await first.acampaign(wait=0)
        with pytest.raises(ElectionTimeoutError):
            await second.acampaign(wait=0)
        info = await second.aleader()
        assert info is not None
        assert (info.identity, info.term) == ("async-a", term.number)
        waiting = asyncio.ensure_future(second.acampaign(wait=3.0))
        await asyncio.sleep(0.05)
        assert await first.aresign()
        successor = await waiting
        assert successor.number == term.number + 1
        assert await second.aresign()
        assert await first.aleader() is None
    finally:
        await first.aclose()
        await second.aclose()


async def test_async_renewal_keeps_the_leader(arig: Rig) -> None:
    group = _group()
    leader = arig.election(group, "async-leader")
    try:
        term = await leader.acampaign()
        await asyncio.sleep(arig.ttl * 1.6)
        assert term.held
        info = await leader.aleader()
        assert info is not None
        assert info.term == term.number
    finally:
        await leader.aclose()
