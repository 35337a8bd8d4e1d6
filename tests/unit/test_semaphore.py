"""Semaphores, read-write locks and barriers over the memory store, on a manual clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.coordination import (
    Barrier,
    BarrierTimeoutError,
    HolderInfo,
    LockLostError,
    LockNotHeldError,
    LockTimeoutError,
    MemorySemaphoreStore,
    ReadWriteLock,
    Semaphore,
    SemaphoreFullError,
    SemaphoreState,
    SemaphoreStore,
    open_semaphore_store,
)
from seawall.coordination.semaphore._core import choose, lowest_free_slot
from seawall.engines import connect
from seawall.errors import ConfigurationError, RejectedError, UnsupportedEngineError


@pytest.fixture
def store(clock: ManualClock) -> MemorySemaphoreStore:
    return MemorySemaphoreStore(clock)


def _semaphore(store: MemorySemaphoreStore, clock: ManualClock, **options: Any) -> Semaphore:
    options.setdefault("limit", 2)
    options.setdefault("ttl", 10.0)
    options.setdefault("poll_interval", 0.1)
    return Semaphore("exports", store=store, clock=clock, **options)


# ---------------------------------------------------------------------- the decision core


def test_choose_gives_the_lowest_free_slot_and_keeps_an_owners_slot() -> None:
    holdings = {"a": (0, False, 20.0), "c": (2, False, 30.0)}
    assert choose(holdings, {}, "b", 4, False, 10.0) == (1, None)
    assert choose(holdings, {}, "c", 4, False, 10.0) == (2, None)
    assert choose(holdings, {}, "b", 2, False, 10.0) == (-1, 10.0)  # full: the soonest end
    assert choose(holdings, {}, "w", 1, True, 10.0) == (-1, 20.0)  # exclusive: the latest end
    assert choose({}, {}, "w", 1, True, 10.0) == (0, None)
    assert choose(holdings, {"w": 15.0}, "b", 4, False, 10.0) == (-1, None)  # a writer waits
    assert choose({"w": (0, True, 12.0)}, {}, "r", 9, False, 10.0) == (-1, 2.0)
    assert lowest_free_slot({0, 1, 3}) == 2


# ---------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"limit": 0}, "limit must be a whole number"),
        ({"limit": 2.5}, "limit must be a whole number"),
        ({"limit": True}, "limit must be a whole number"),
        ({"ttl": 0}, "ttl must be at least"),
        ({"wait": -1}, "wait must be"),
    ],
)
def test_invalid_semaphore_options_fail_at_construction(
    store: MemorySemaphoreStore, clock: ManualClock, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        _semaphore(store, clock, **options)


def test_invalid_barrier_and_rwlock_options_fail_at_construction(
    store: MemorySemaphoreStore, clock: ManualClock
) -> None:
    with pytest.raises(ConfigurationError, match="parties must be"):
        Barrier("b", 0, store=store, clock=clock)
    with pytest.raises(ConfigurationError, match="poll_interval must be > 0"):
        Barrier("b", 2, store=store, clock=clock, poll_interval=0)
    with pytest.raises(ConfigurationError, match="intent_ttl must be"):
        ReadWriteLock("rw", store=store, clock=clock, intent_ttl=0)
    with pytest.raises(ConfigurationError, match="max_readers"):
        ReadWriteLock("rw", store=store, clock=clock, max_readers=0)
    with pytest.raises(ConfigurationError, match="custom clock but no store"):
        Semaphore("s", 2, clock=clock)


def test_stores_are_chosen_by_url_or_engine() -> None:
    memory, owned = open_semaphore_store("memory://semaphore-unit")
    again, _ = open_semaphore_store(connect("memory://semaphore-unit"))
    assert isinstance(memory, MemorySemaphoreStore)
    assert isinstance(memory, SemaphoreStore)
    assert again is memory
    assert owned
    with pytest.raises(UnsupportedEngineError, match="SemaphoreStore"):
        open_semaphore_store(object())  # type: ignore[arg-type]
    default, owned_default = open_semaphore_store(None)
    assert isinstance(default, MemorySemaphoreStore)
    assert not owned_default


# ---------------------------------------------------------------------- semaphore


def test_at_most_limit_holders_each_in_its_own_slot(
    store: MemorySemaphoreStore, clock: ManualClock
) -> None:
    first, second, third = (_semaphore(store, clock) for _ in range(3))
    a = first.acquire(wait=0)
    b = second.acquire(wait=0)
    assert (first.slot(), second.slot()) == (0, 1)
    assert b.fencing_token == a.fencing_token + 1
    with pytest.raises(SemaphoreFullError) as caught:
        third.acquire(wait=0)
    assert isinstance(caught.value, LockTimeoutError)
    assert isinstance(caught.value, RejectedError)
    assert caught.value.retry_after == pytest.approx(10.0)
    assert caught.value.limit == 2
    assert "limit 2" in str(caught.value)
    state = first.state()
    assert isinstance(state, SemaphoreState)
    assert [holder.slot for holder in state.holders] == [0, 1]
    assert state.last_token == b.fencing_token
    first.release()
    c = third.acquire(wait=0)
    assert third.slot(c) == 0  # the freed slot
    assert c.fencing_token == b.fencing_token + 1
    assert first.slot() is None


def test_a_waiting_acquire_gets_a_permit_when_a_holding_expires(
    store: MemorySemaphoreStore, clock: ManualClock
) -> None:
    holders = [_semaphore(store, clock) for _ in range(2)]
    leases = [holder.acquire() for holder in holders]
    waiter = _semaphore(store, clock)
    started = clock.now()
    lease = waiter.acquire(wait=30.0)
    assert clock.now() - started == pytest.approx(10.0, abs=0.01)
    assert lease.fencing_token > max(held.fencing_token for held in leases)
    for holder, held in zip(holders, leases, strict=True):
        with pytest.raises(LockLostError):
            holder.release(held)
    with pytest.raises(LockNotHeldError):
        holders[0].release()


def test_extend_and_context_manager(store: MemorySemaphoreStore, clock: ManualClock) -> None:
    semaphore = _semaphore(store, clock, limit=1)
    with semaphore as lease:
        assert semaphore.held
        assert semaphore.lease is lease
        clock.advance(8.0)
        semaphore.extend(ttl=10.0)
        clock.advance(8.0)
        lease.check()
        [holder] = semaphore.state().holders
        assert isinstance(holder, HolderInfo)
        assert holder.expires_in == pytest.approx(2.0)
    assert semaphore.state().holders == ()


def test_a_stolen_permit_is_reported_by_extend(
    store: MemorySemaphoreStore, clock: ManualClock
) -> None:
    semaphore = _semaphore(store, clock)
    lease = semaphore.acquire()
    assert store.force_release("exports", lease.owner)
    assert not store.force_release("exports", lease.owner)
    with pytest.raises(LockLostError):
        semaphore.extend()


async def test_async_semaphore(store: MemorySemaphoreStore, clock: ManualClock) -> None:
    first, second = _semaphore(store, clock, limit=1), _semaphore(store, clock, limit=1)
    async with first as lease:
        with pytest.raises(SemaphoreFullError):
            await second.aacquire(wait=0)
        assert len((await first.astate()).holders) == 1
        await first.aextend()
    granted = await second.aacquire(wait=0)
    assert granted.fencing_token == lease.fencing_token + 1
    await second.arelease()
    await first.aclose()
    await second.aclose()


async def test_auto_renew_keeps_a_permit_across_many_ttls() -> None:
    stepped = ManualClock(1000.0, autojump=False)
    store = MemorySemaphoreStore(stepped)
    semaphore = Semaphore("renewed", 1, ttl=3.0, store=store, auto_renew=True, clock=stepped)
    lease = await semaphore.aacquire()
    for _ in range(12):
        stepped.advance(1.0)
        for _ in range(5):
            await asyncio.sleep(0)
    lease.check()
    assert len(store.state("renewed").holders) == 1
    await semaphore.arelease()
    await semaphore.aclose()


# ---------------------------------------------------------------------- read-write lock


def test_readers_share_and_a_writer_excludes(
    store: MemorySemaphoreStore, clock: ManualClock
) -> None:
    readers = [ReadWriteLock("catalog", store=store, clock=clock, ttl=10.0) for _ in range(3)]
    writer = ReadWriteLock("catalog", store=store, clock=clock, ttl=10.0)
    leases = [rw.read.acquire(wait=0) for rw in readers]
    assert len(readers[0].state().holders) == 3
    with pytest.raises(LockTimeoutError):
        writer.write.acquire(wait=0)
    for rw, lease in zip(readers, leases, strict=True):
        rw.read.release(lease)
    written = writer.write.acquire(wait=0)
    assert written.fencing_token > max(lease.fencing_token for lease in leases)
    [holder] = writer.state().holders
    assert holder.exclusive
    with pytest.raises(LockTimeoutError):
        readers[0].read.acquire(wait=0)
    writer.write.release()
    with pytest.raises(LockTimeoutError):  # the intent of the writer's first, given-up try
        readers[0].read.acquire(wait=0)
    clock.advance(writer.intent_ttl)  # lapses intent_ttl after that try
    readers[0].read.acquire(wait=0)


def test_a_waiting_writer_holds_back_new_readers(
    store: MemorySemaphoreStore, clock: ManualClock
) -> None:
    old_reader = ReadWriteLock("doc", store=store, clock=clock, ttl=5.0)
    new_reader = ReadWriteLock("doc", store=store, clock=clock, ttl=5.0)
    writer = ReadWriteLock("doc", store=store, clock=clock, ttl=5.0, intent_ttl=2.0)
    old_reader.read.acquire(wait=0)
    with pytest.raises(LockTimeoutError):
        writer.write.acquire(wait=0)  # registers the writer's intent
    with pytest.raises(LockTimeoutError):
        new_reader.read.acquire(wait=0)  # a stream of readers cannot starve the writer
    clock.advance(2.5)  # the writer gave up: its intent lapses
    new_reader.read.acquire(wait=0)


def test_a_writer_that_waits_gets_the_lock_once_readers_leave(
    store: MemorySemaphoreStore, clock: ManualClock
) -> None:
    reader = ReadWriteLock("doc", store=store, clock=clock, ttl=3.0)
    writer = ReadWriteLock("doc", store=store, clock=clock, ttl=3.0, poll_interval=0.2)
    reader.read.acquire(wait=0)
    lease = writer.write.acquire(wait=10.0)  # the reader's lease expires after 3 s
    assert clock.now() == pytest.approx(1003.0, abs=0.01)
    assert lease.held


# ---------------------------------------------------------------------- barrier


async def test_a_barrier_opens_when_all_parties_arrived_and_is_reusable() -> None:
    clock = ManualClock(1000.0)
    store = MemorySemaphoreStore(clock)
    barrier = Barrier("rebalance", 3, store=store, clock=clock, poll_interval=0.1)
    first_round = await asyncio.gather(*(barrier.aarrive(wait=5.0) for _ in range(3)))
    assert sorted(first_round) == [0, 1, 2]
    assert barrier.arrived() == 0
    second_round = await asyncio.gather(*(barrier.aarrive(wait=5.0) for _ in range(3)))
    assert sorted(second_round) == [0, 1, 2]
    assert store.state("rebalance").last_token == 6
    assert barrier.waiting() == ()


def test_a_late_barrier_times_out_and_its_arrival_still_counts(
    store: MemorySemaphoreStore, clock: ManualClock
) -> None:
    barrier = Barrier("sync-point", 2, store=store, clock=clock, poll_interval=0.25)
    with pytest.raises(BarrierTimeoutError) as caught:
        barrier.arrive(wait=1.0)
    assert (caught.value.parties, caught.value.arrived) == (2, 1)
    assert isinstance(caught.value, TimeoutError)
    assert "1 of 2 parties" in str(caught.value)
    assert sum(clock.sleeps) == pytest.approx(1.0)
    assert barrier.arrived() == 1
    assert barrier.arrive(wait=0) == 1  # the second arrival completes the generation


def test_the_semaphore_package_exports_exactly_its_public_names() -> None:
    import seawall.coordination
    import seawall.coordination.semaphore as package

    public = {
        "Barrier",
        "BarrierTimeoutError",
        "EtcdSemaphoreStore",
        "HolderInfo",
        "MemorySemaphoreStore",
        "PostgresSemaphoreStore",
        "ReadWriteLock",
        "RedisSemaphoreStore",
        "Semaphore",
        "SemaphoreFullError",
        "SemaphoreGrant",
        "SemaphoreState",
        "SemaphoreStore",
        "SqliteSemaphoreStore",
        "open_semaphore_store",
    }
    assert package.__all__ == sorted(package.__all__)
    assert set(package.__all__) == public
    for name in public:
        assert getattr(seawall.coordination, name) is getattr(package, name)
        assert name in seawall.coordination.__all__
    with pytest.raises(AttributeError):
        package.NoSuchThing  # noqa: B018
