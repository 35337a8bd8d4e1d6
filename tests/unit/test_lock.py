"""The Lock facade over the memory store, with a manual clock: no test sleeps for real."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

import seawall.coordination
import seawall.coordination.lock
from seawall.clock import ManualClock
from seawall.coordination import (
    Acquisition,
    Lease,
    LeaseInfo,
    Lock,
    LockAcquired,
    LockError,
    LockLost,
    LockLostError,
    LockNotHeldError,
    LockReleased,
    LockRenewalFailed,
    LockRenewed,
    LockStore,
    LockTimeoutError,
    MemoryLockStore,
)
from seawall.engines import connect
from seawall.errors import (
    ConfigurationError,
    EngineError,
    EngineUnavailableError,
    RejectedError,
    UnsupportedEngineError,
)
from seawall.events import Event


class ScriptedStore:
    """A memory store whose calls can fail or run a hook first, to stage races and outages."""

    expires = True

    def __init__(self, clock: ManualClock) -> None:
        self.inner = MemoryLockStore(clock)
        self.acquire_failures: list[BaseException] = []
        self.extend_failures: list[BaseException] = []
        self.before_acquire: Callable[[int], None] | None = None
        self.acquire_calls = 0
        self.extend_calls = 0
        self.release_calls = 0

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        self.acquire_calls += 1
        if self.before_acquire is not None:
            self.before_acquire(self.acquire_calls)
        if self.acquire_failures:
            raise self.acquire_failures.pop(0)
        return self.inner.acquire(name, owner, ttl)

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        self.extend_calls += 1
        if self.extend_failures:
            raise self.extend_failures.pop(0)
        return self.inner.extend(name, owner, ttl)

    def release(self, name: str, owner: str) -> bool:
        self.release_calls += 1
        return self.inner.release(name, owner)

    def inspect(self, name: str) -> LeaseInfo | None:
        return self.inner.inspect(name)

    def force_release(self, name: str) -> bool:
        return self.inner.force_release(name)

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        return self.acquire(name, owner, ttl)

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        return self.extend(name, owner, ttl)

    async def arelease(self, name: str, owner: str) -> bool:
        return self.release(name, owner)

    async def ainspect(self, name: str) -> LeaseInfo | None:
        return self.inspect(name)

    async def aforce_release(self, name: str) -> bool:
        return self.force_release(name)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.fixture
def store(clock: ManualClock) -> MemoryLockStore:
    return MemoryLockStore(clock)


def _lock(store: LockStore, clock: ManualClock, name: str = "orders", **options: Any) -> Lock:
    options.setdefault("ttl", 10.0)
    return Lock(name, store=store, clock=clock, **options)


def _recorder(lock: Lock) -> list[Event]:
    seen: list[Event] = []
    lock.events.subscribe(seen.append)
    return seen


# ---------------------------------------------------------------------- public surface


def test_the_package_exports_exactly_its_public_names() -> None:
    public = {
        "AcquireSchedule",
        "Acquisition",
        "FenceGuard",
        "FencingError",
        "Lease",
        "LeaseInfo",
        "Lock",
        "LockAcquired",
        "LockError",
        "LockLost",
        "LockLostError",
        "LockNotHeldError",
        "LockReleased",
        "LockRenewalFailed",
        "LockRenewed",
        "LockStore",
        "LockTimeoutError",
        "MemoryLockStore",
        "PostgresAdvisoryLockStore",
        "PostgresLockStore",
        "RedisLockStore",
        "RedlockStore",
        "SqlFence",
        "SqliteLockStore",
        "asql_fence",
        "open_lock_store",
        "sql_fence",
        "EtcdLockStore",
    }
    coordination_only = {
        "Election",
        "Term",
        "LeaderInfo",
        "ElectionError",
        "ElectionTimeoutError",
        "LeadershipLostError",
        "LeaderElected",
        "LeaderDemoted",
        "LeadershipRenewed",
        "LeadershipRenewalFailed",
        "Semaphore",
        "ReadWriteLock",
        "Barrier",
        "SemaphoreFullError",
        "BarrierTimeoutError",
        "SemaphoreStore",
        "SemaphoreGrant",
        "SemaphoreState",
        "HolderInfo",
        "open_semaphore_store",
        "MemorySemaphoreStore",
        "SqliteSemaphoreStore",
        "PostgresSemaphoreStore",
        "RedisSemaphoreStore",
        "EtcdSemaphoreStore",
    }
    expected = {
        seawall.coordination: public | coordination_only,
        seawall.coordination.lock: public,
    }
    for module, names in expected.items():
        assert module.__all__ == sorted(module.__all__)
        assert set(module.__all__) == names
        for name in module.__all__:
            assert getattr(module, name) is not None
        with pytest.raises(AttributeError):
            module.NoSuchThing  # noqa: B018


def test_every_engine_store_satisfies_the_protocol(clock: ManualClock) -> None:
    assert isinstance(MemoryLockStore(clock), LockStore)
    assert isinstance(ScriptedStore(clock), LockStore)
    for name in ("SqliteLockStore", "PostgresLockStore", "PostgresAdvisoryLockStore"):
        cls = getattr(seawall.coordination, name)
        for method in ("acquire", "extend", "release", "inspect", "force_release", "aacquire"):
            assert callable(getattr(cls, method))


# ---------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"ttl": 0}, "ttl must be at least"),
        ({"ttl": -1.0}, "ttl must be at least"),
        ({"wait": -1.0}, "wait must be"),
        ({"renew_fraction": 0.0}, "renew_fraction"),
        ({"renew_fraction": 1.0}, "renew_fraction"),
        ({"poll_interval": 0.0}, "poll_interval must be > 0"),
        ({"on_lost": "print"}, "on_lost must be callable"),
    ],
)
def test_invalid_options_fail_at_construction_naming_the_field(
    store: MemoryLockStore, clock: ManualClock, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        _lock(store, clock, **options)


def test_a_name_the_engines_cannot_store_fails_at_construction(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    with pytest.raises(ConfigurationError, match="NUL"):
        _lock(store, clock, name="bad\x00name")
    with pytest.raises(ConfigurationError, match="non-empty"):
        _lock(store, clock, name="")


def test_a_custom_clock_needs_a_store_on_the_same_clock(clock: ManualClock) -> None:
    with pytest.raises(ConfigurationError, match="MemoryLockStore"):
        Lock("orders", clock=clock)


def test_a_store_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(UnsupportedEngineError, match="LockStore"):
        Lock("orders", store=42)  # type: ignore[arg-type]


def test_the_default_store_is_shared_by_every_lock_of_the_process() -> None:
    first, second = Lock("unit-default-store", ttl=5.0), Lock("unit-default-store", ttl=5.0)
    assert first.store is second.store
    with first, pytest.raises(LockTimeoutError):
        second.acquire(wait=0)


def test_memory_engines_share_a_store_by_url_name() -> None:
    first = Lock("orders", store="memory://unit-lock-shared")
    second = Lock("orders", store=connect("memory://unit-lock-shared"))
    assert first.store is second.store
    with first, pytest.raises(LockTimeoutError):
        second.acquire(wait=0)
    first.close()


# ---------------------------------------------------------------------- acquire and release


def test_acquire_returns_a_lease_with_a_fencing_token_and_an_owner(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock = _lock(store, clock)
    lease = lock.acquire()
    assert lease.fencing_token == 1
    assert len(lease.owner) == 32
    assert lease.expires_in == pytest.approx(9.9)
    assert lock.held
    assert lock.lease is lease
    holder = lock.inspect()
    assert holder == LeaseInfo("orders", lease.owner, 1, 10.0)
    lock.release()
    assert not lock.held
    assert lock.lease is None
    assert lock.inspect() is None


def test_a_held_lock_refuses_another_holder_with_the_time_left(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    holder, other = _lock(store, clock), _lock(store, clock)
    holder.acquire()
    clock.advance(4.0)
    with pytest.raises(LockTimeoutError) as caught:
        other.acquire(wait=0)
    assert isinstance(caught.value, RejectedError)
    assert caught.value.retry_after == pytest.approx(6.0)
    assert caught.value.lock == "orders"
    assert "acquire(wait=...)" in str(caught.value)
    assert clock.sleeps == []


def test_a_waiting_acquire_gives_up_exactly_at_its_wait(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    holder, other = _lock(store, clock, ttl=60.0), _lock(store, clock, poll_interval=0.5)
    holder.acquire()
    with pytest.raises(LockTimeoutError) as caught:
        other.acquire(wait=3.0)
    assert sum(clock.sleeps) == pytest.approx(3.0)
    assert max(clock.sleeps) <= 0.5
    assert caught.value.wait == 3.0


def test_a_waiting_acquire_gets_the_lock_when_the_holders_lease_expires(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    holder, waiter = _lock(store, clock, ttl=2.0), _lock(store, clock, ttl=2.0)
    first = holder.acquire()
    second = waiter.acquire(wait=5.0)
    assert sum(clock.sleeps) == pytest.approx(2.0, abs=0.01)
    assert second.fencing_token == first.fencing_token + 1
    with pytest.raises(LockLostError, match="expired or another holder had taken it"):
        holder.release()
    assert first.lost


def test_a_waiting_acquire_gets_the_lock_when_the_holder_releases(clock: ManualClock) -> None:
    scripted = ScriptedStore(clock)
    holder, waiter = _lock(scripted, clock), _lock(scripted, clock)
    holder.acquire()
    scripted.before_acquire = lambda call: holder.release() if call == 5 else None
    seen = _recorder(waiter)
    lease = waiter.acquire(wait=10.0)
    assert lease.fencing_token == 2
    assert scripted.acquire_calls == 5
    [acquired] = seen
    assert isinstance(acquired, LockAcquired)
    assert acquired.attempts == 4
    assert acquired.waited == pytest.approx(sum(clock.sleeps))


def test_tokens_strictly_increase_across_holders_and_expiry(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    tokens = []
    for index in range(6):
        lock = _lock(store, clock, ttl=1.0)
        lease = lock.acquire(wait=5.0)
        tokens.append(lease.fencing_token)
        if index % 2:
            lock.release()
        else:
            clock.advance(1.0)  # abandoned: expires
    assert tokens == sorted(set(tokens))
    assert tokens == [1, 2, 3, 4, 5, 6]


def test_releasing_a_lock_not_held_is_a_clear_error(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock = _lock(store, clock)
    with pytest.raises(LockNotHeldError, match="does not hold it") as caught:
        lock.release()
    assert caught.value.operation == "release"
    lease = lock.acquire()
    lock.release()
    with pytest.raises(LockNotHeldError):
        lock.release()
    with pytest.raises(LockNotHeldError):
        lock.release(lease)
    other = _lock(store, clock, name="other").acquire()
    with pytest.raises(LockNotHeldError):
        lock.release(other)


def test_a_bad_wait_is_refused_even_when_the_lock_is_free(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock = _lock(store, clock)
    with pytest.raises(ConfigurationError, match="wait must be"):
        lock.acquire(wait=-1.0)
    assert store.inspect("orders") is None


def test_a_lock_is_not_reentrant(store: MemoryLockStore, clock: ManualClock) -> None:
    lock = _lock(store, clock)
    lock.acquire()
    with pytest.raises(LockError, match="not reentrant"):
        lock.acquire()


def test_a_lease_that_ran_out_locally_does_not_block_a_new_acquire(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock = _lock(store, clock, ttl=1.0)
    first = lock.acquire()
    clock.advance(1.0)
    second = lock.acquire()
    assert second.fencing_token == first.fencing_token + 1
    assert lock.lease is second


def test_each_thread_holds_its_own_lease_on_a_shared_lock(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock = _lock(store, clock)
    lease = lock.acquire()
    outcome: dict[str, object] = {}

    def other_thread() -> None:
        outcome["lease"] = lock.lease
        try:
            lock.acquire(wait=0)
        except LockTimeoutError as exc:
            outcome["refused"] = exc
        try:
            lock.release()
        except LockNotHeldError as exc:
            outcome["release"] = exc

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert outcome["lease"] is None
    assert isinstance(outcome["refused"], LockTimeoutError)
    assert isinstance(outcome["release"], LockNotHeldError)
    assert lock.lease is lease
    assert lease.held


# ---------------------------------------------------------------------- extend


def test_extend_keeps_the_lease_past_its_first_ttl(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock, other = _lock(store, clock, ttl=2.0), _lock(store, clock, ttl=2.0)
    lease = lock.acquire()
    seen = _recorder(lock)
    for _ in range(5):
        clock.advance(1.5)
        assert lock.extend() is lease
        lease.check()
    with pytest.raises(LockTimeoutError):
        other.acquire(wait=0)
    lock.extend(ttl=30.0)
    assert lease.ttl == 30.0
    assert lease.expires_in == pytest.approx(29.7)
    assert [type(event) for event in seen] == [LockRenewed] * 6
    lock.release()


def test_extend_of_a_lost_lease_raises_and_tells_the_holder(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    told: list[LockLostError] = []
    lock = _lock(store, clock, ttl=2.0, on_lost=told.append)
    seen = _recorder(lock)
    lease = lock.acquire()
    clock.advance(2.0)
    _lock(store, clock).acquire()
    with pytest.raises(LockLostError, match="taken by another holder") as caught:
        lock.extend()
    assert told == [caught.value]
    assert lease.lost
    assert any(isinstance(event, LockLost) and event.fencing_token == 1 for event in seen)
    with pytest.raises(LockLostError):
        lock.extend()


def test_extend_without_a_lease_or_with_a_bad_ttl_is_refused(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock = _lock(store, clock)
    with pytest.raises(LockNotHeldError, match="extend"):
        lock.extend()
    lock.acquire()
    with pytest.raises(ConfigurationError, match="ttl"):
        lock.extend(ttl=0)


def test_a_foreign_owner_can_neither_extend_nor_release(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lease = _lock(store, clock).acquire()
    assert not store.extend("orders", "someone-else", 10.0)
    assert not store.release("orders", "someone-else")
    assert store.inspect("orders") == LeaseInfo("orders", lease.owner, 1, 10.0)


# ---------------------------------------------------------------------- context manager


def test_the_context_manager_releases_on_exit(store: MemoryLockStore, clock: ManualClock) -> None:
    lock = _lock(store, clock)
    seen = _recorder(lock)
    with lock as lease:
        assert isinstance(lease, Lease)
        clock.advance(3.0)
        lease.check()
    assert lease.released
    assert store.inspect("orders") is None
    released = seen[-1]
    assert isinstance(released, LockReleased)
    assert released.held_for == pytest.approx(3.0)


def test_the_context_manager_raises_lock_lost_when_the_lease_was_lost(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock = _lock(store, clock, ttl=1.0)

    def lost_while_held() -> None:
        with lock as lease:
            clock.advance(1.0)
            _lock(store, clock).acquire()
            with pytest.raises(LockLostError, match="ran out"):
                lease.check()

    with pytest.raises(LockLostError, match="before release"):
        lost_while_held()


def test_a_body_error_is_kept_and_the_loss_added_as_a_note(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock = _lock(store, clock, ttl=1.0)

    def failing_body() -> None:
        with lock:
            clock.advance(1.0)
            _lock(store, clock).acquire()
            raise KeyError("body")

    with pytest.raises(KeyError) as caught:
        failing_body()
    assert any("was lost" in note for note in caught.value.__notes__)


# ---------------------------------------------------------------------- engine failures


def test_an_unreachable_engine_fails_acquire_after_the_wait(clock: ManualClock) -> None:
    scripted = ScriptedStore(clock)
    scripted.acquire_failures = [EngineUnavailableError("down", url="x://")] * 1000
    lock = _lock(scripted, clock, poll_interval=0.25)
    with pytest.raises(EngineUnavailableError, match=r"gave up after 2\.000s") as caught:
        lock.acquire(wait=2.0)
    assert "'orders'" in str(caught.value)
    assert isinstance(caught.value.__cause__, EngineUnavailableError)
    assert sum(clock.sleeps) == pytest.approx(2.0)
    clock.sleeps.clear()
    with pytest.raises(EngineUnavailableError):
        lock.acquire(wait=0)
    assert clock.sleeps == []


def test_an_engine_that_recovers_within_the_wait_grants_the_lock(clock: ManualClock) -> None:
    scripted = ScriptedStore(clock)
    scripted.acquire_failures = [EngineUnavailableError("down")] * 3
    lease = _lock(scripted, clock).acquire(wait=5.0)
    assert lease.fencing_token == 1
    assert scripted.acquire_calls == 4


def test_an_engine_error_that_is_not_an_outage_is_raised_at_once(clock: ManualClock) -> None:
    scripted = ScriptedStore(clock)
    scripted.acquire_failures = [EngineError("permission denied for table seawall_locks")]
    with pytest.raises(EngineError, match="permission denied"):
        _lock(scripted, clock).acquire(wait=5.0)
    assert clock.sleeps == []


def test_a_failing_on_lost_callback_is_logged_not_raised(
    store: MemoryLockStore, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(error: LockLostError) -> None:
        raise RuntimeError("callback bug")

    lock = _lock(store, clock, ttl=1.0, on_lost=broken)
    lock.acquire()
    clock.advance(1.0)
    with caplog.at_level(logging.ERROR), pytest.raises(LockLostError):
        lock.extend()
    assert "on_lost callback" in caplog.text


# ---------------------------------------------------------------------- async


async def test_async_acquire_release_and_extend(store: MemoryLockStore, clock: ManualClock) -> None:
    lock = _lock(store, clock, ttl=2.0)
    lease = await lock.aacquire()
    assert lock.lease is lease
    assert lock.held
    clock.advance(1.5)
    assert await lock.aextend() is lease
    assert (await lock.ainspect()) == LeaseInfo("orders", lease.owner, 1, 2.0)
    await lock.arelease()
    assert lease.released
    with pytest.raises(LockNotHeldError):
        await lock.arelease()
    with pytest.raises(LockNotHeldError):
        await lock.aextend()


async def test_async_waiting_and_timeout(store: MemoryLockStore, clock: ManualClock) -> None:
    holder = _lock(store, clock, ttl=3.0)
    waiter = _lock(store, clock, ttl=3.0)
    first = await holder.aacquire()
    with pytest.raises(LockTimeoutError):
        await waiter.aacquire(wait=1.0)
    second = await waiter.aacquire(wait=5.0)
    assert second.fencing_token == first.fencing_token + 1
    with pytest.raises(LockLostError):
        await holder.arelease()


async def test_async_context_manager_and_one_lease_per_task(
    store: MemoryLockStore, clock: ManualClock
) -> None:
    lock = _lock(store, clock)
    async with lock as lease:
        assert lock.lease is lease

        async def other_task() -> Lease | None:
            return lock.lease

        assert await asyncio.create_task(other_task()) is None
        with pytest.raises(LockError, match="not reentrant"):
            await lock.aacquire()
    assert lease.released
    assert store.inspect("orders") is None


async def test_async_unreachable_engine_fails_after_the_wait(clock: ManualClock) -> None:
    scripted = ScriptedStore(clock)
    scripted.acquire_failures = [EngineUnavailableError("down")] * 1000
    with pytest.raises(EngineUnavailableError, match=r"gave up after 1\.000s"):
        await _lock(scripted, clock).aacquire(wait=1.0)
    assert sum(clock.sleeps) == pytest.approx(1.0)


# ---------------------------------------------------------------------- async heartbeat


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def stepped() -> ManualClock:
    return ManualClock(1000.0, autojump=False)


async def test_the_heartbeat_keeps_the_lease_across_many_ttls(stepped: ManualClock) -> None:
    store = MemoryLockStore(stepped)
    lock = _lock(store, stepped, ttl=3.0, auto_renew=True)
    seen = _recorder(lock)
    lease = await lock.aacquire()
    for _ in range(12):  # 12 s: four TTLs
        stepped.advance(1.0)
        await _settle()
    lease.check()
    assert store.inspect("orders") is not None
    assert sum(isinstance(event, LockRenewed) for event in seen) == 12
    with pytest.raises(LockTimeoutError):
        await _lock(store, stepped).aacquire(wait=0)
    await lock.arelease()
    await _settle()
    assert lock._heartbeat_tasks == {}


async def test_the_heartbeat_reports_a_stolen_lease(stepped: ManualClock) -> None:
    store = MemoryLockStore(stepped)
    told: list[LockLostError] = []
    lock = _lock(store, stepped, ttl=3.0, auto_renew=True, on_lost=told.append)
    seen = _recorder(lock)
    leases: list[Lease] = []

    async def stolen_while_held() -> None:
        async with lock as lease:
            stepped.advance(0.5)
            store.force_release("orders")
            leases.append(await _lock(store, stepped).aacquire(wait=0))
            stepped.advance(0.5)
            await _settle()
            assert lease.lost
            with pytest.raises(LockLostError):
                lease.check()
            leases.append(lease)

    with pytest.raises(LockLostError, match="renewal was refused"):
        await stolen_while_held()
    thief, lease = leases
    assert thief.fencing_token == lease.fencing_token + 1
    assert len(told) == 1
    assert told[0].fencing_token == lease.fencing_token
    assert any(isinstance(event, LockLost) for event in seen)


async def test_the_heartbeat_retries_failures_then_reports_loss_at_the_end(
    stepped: ManualClock,
) -> None:
    scripted = ScriptedStore(stepped)
    scripted.extend_failures = [EngineUnavailableError("down")] * 100
    told: list[LockLostError] = []
    lock = _lock(scripted, stepped, ttl=3.0, auto_renew=True, on_lost=told.append)
    seen = _recorder(lock)
    lease = await lock.aacquire()
    for _ in range(30):
        stepped.advance(0.25)
        await _settle()
    failed = [event for event in seen if isinstance(event, LockRenewalFailed)]
    assert len(failed) >= 3
    assert failed[0].error == "down"
    assert lease.lost
    assert "kept failing" in (lease.lost_reason or "")
    assert len(told) == 1
    with pytest.raises(LockLostError):
        await lock.arelease()


async def test_the_heartbeat_recovers_from_a_brief_outage(stepped: ManualClock) -> None:
    scripted = ScriptedStore(stepped)
    scripted.extend_failures = [EngineUnavailableError("blip")]
    lock = _lock(scripted, stepped, ttl=3.0, auto_renew=True)
    lease = await lock.aacquire()
    for _ in range(40):
        stepped.advance(0.25)
        await _settle()
    lease.check()
    assert scripted.extend_calls >= 10
    await lock.arelease()


async def test_closing_a_lock_cancels_its_heartbeats(stepped: ManualClock) -> None:
    store = MemoryLockStore(stepped)
    lock = _lock(store, stepped, ttl=3.0, auto_renew=True)
    await lock.aacquire()
    [task] = lock._heartbeat_tasks.values()
    await lock.aclose()
    await _settle()
    assert task.cancelled()
