"""Subscriptions and snapshot policies, driven without I/O waits (manual clock, memory store)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError
from seawall.eventsourcing import (
    NO_SNAPSHOTS,
    AppendConflicted,
    AppendRequest,
    BatchHandled,
    ConcurrencyError,
    EventsAppended,
    LoadedStream,
    NewEvent,
    Pacer,
    RecordedEvent,
    Snapshot,
    SnapshotEvery,
    SnapshotPolicy,
    open_async_event_store,
    open_event_store,
)
from seawall.eventsourcing.store.memory import MemoryEventStore


def _store() -> MemoryEventStore:
    store = open_event_store("memory://")
    assert isinstance(store, MemoryEventStore)
    return store


def test_the_pacer_reads_again_at_once_after_a_full_batch() -> None:
    pacer = Pacer(batch_size=10, poll_interval=2.0)
    assert pacer.next_wait(10, woken=False) == 0.0
    assert pacer.next_wait(3, woken=False) == 2.0
    assert pacer.next_wait(0, woken=False) == 2.0


def test_the_pacer_chases_a_notification_that_brought_nothing() -> None:
    pacer = Pacer(batch_size=10, poll_interval=0.1, first_retry=0.01)
    waits = [pacer.next_wait(0, woken=True)]
    waits += [pacer.next_wait(0, woken=False) for _ in range(5)]
    assert waits == [0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    assert pacer.next_wait(0, woken=True) == 0.01
    assert pacer.next_wait(1, woken=False) == 0.1
    assert pacer.next_wait(0, woken=False) == 0.1


@pytest.mark.parametrize(
    ("batch_size", "poll_interval"), [(0, 1.0), (True, 1.0), (10, 0.0), (10, -1.0)]
)
def test_bad_pacing_is_refused(batch_size: int, poll_interval: float) -> None:
    with pytest.raises(ConfigurationError):
        Pacer(batch_size, poll_interval)


def test_poll_handles_one_batch_and_stores_the_checkpoint(clock: ManualClock) -> None:
    store = _store()
    store.append("s", [NewEvent("T", {"n": n}) for n in range(5)])
    seen: list[int] = []
    subscription = store.subscribe(
        "p", lambda e: seen.append(e.data["n"]), batch_size=3, clock=clock
    )
    assert subscription.position is None
    assert subscription.poll() == 3
    assert (seen, subscription.position, store.load_checkpoint("p")) == ([0, 1, 2], 3, 3)
    assert subscription.catch_up() == 2
    assert subscription.catch_up() == 0
    assert store.load_checkpoint("p") == 5
    assert "position=5" in repr(subscription)


def test_run_waits_poll_interval_on_the_clock_and_stops(clock: ManualClock) -> None:
    store = _store()
    seen: list[RecordedEvent] = []
    subscription = store.subscribe("p", seen.append, poll_interval=0.25, clock=clock)
    calls = 0

    def stop_when() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            store.append("s", [NewEvent("T", {})])
        return len(seen) == 1

    subscription.run(stop_when=stop_when)
    assert len(seen) == 1
    assert clock.sleeps == [0.25, 0.25, 0.25]


def test_stop_ends_a_run_from_another_thread(clock: ManualClock) -> None:
    store = _store()
    polled = threading.Event()
    subscription = store.subscribe("p", lambda e: None, clock=clock)

    def stop_when() -> bool:
        polled.set()
        return False

    runner = threading.Thread(target=subscription.run, kwargs={"stop_when": stop_when})
    runner.start()
    assert polled.wait(5)
    subscription.stop()
    runner.join(5)
    assert not runner.is_alive()


async def test_the_async_subscription_runs_on_the_clock() -> None:
    clock = ManualClock(0.0)
    store = open_async_event_store("memory://")
    await store.append("s", [NewEvent("T", {"n": 1})])
    seen: list[int] = []

    async def handler(event: RecordedEvent) -> None:
        seen.append(event.data["n"])

    subscription = store.subscribe("p", handler, poll_interval=0.5, clock=clock)
    rounds = 0

    def stop_when() -> bool:
        nonlocal rounds
        rounds += 1
        return rounds == 3

    await subscription.run(stop_when=stop_when)
    assert seen == [1]
    assert clock.sleeps == [0.5, 0.5]
    assert await store.load_checkpoint("p") == 1


async def test_an_async_handler_error_keeps_the_checkpoint() -> None:
    store = open_async_event_store("memory://")
    await store.append("s", [NewEvent("T", {"n": n}) for n in range(3)])

    async def handler(event: RecordedEvent) -> None:
        if event.data["n"] == 1:
            raise ValueError("boom")

    subscription = store.subscribe("p", handler)
    with pytest.raises(ValueError, match="boom"):
        await subscription.poll()
    assert await store.load_checkpoint("p") == 1
    await asyncio.sleep(0)


def test_subscriptions_refuse_bad_options() -> None:
    store = _store()
    with pytest.raises(ConfigurationError, match="name"):
        store.subscribe("", lambda e: None)
    with pytest.raises(ConfigurationError, match="types"):
        store.subscribe("p", lambda e: None, types="Opened")


def test_snapshot_policies() -> None:
    policy = SnapshotEvery(3)
    assert isinstance(policy, SnapshotPolicy)
    assert not policy.should_snapshot("s", version=2, snapshot_version=0)
    assert policy.should_snapshot("s", version=3, snapshot_version=0)
    assert not policy.should_snapshot("s", version=5, snapshot_version=3)
    assert policy.should_snapshot("s", version=7, snapshot_version=3)
    assert not NO_SNAPSHOTS.should_snapshot("s", version=10**6, snapshot_version=0)
    with pytest.raises(ConfigurationError, match="events"):
        SnapshotEvery(0)
    assert repr(policy) == "SnapshotEvery(3)"


def test_loaded_stream_version() -> None:
    assert LoadedStream("s", None, []).version == 0
    assert LoadedStream("s", Snapshot("s", 4, {}), []).version == 4
    store = _store()
    store.append("s", [NewEvent("T", {})] * 3)
    store.save_snapshot("s", 2, {"n": 2})
    loaded = store.load("s")
    assert loaded.version == 3
    assert [e.version for e in loaded.events] == [3]


def test_the_memory_store_shares_state_by_engine_name_and_prefix() -> None:
    first = open_event_store("memory://shared-es-test")
    second = open_event_store("memory://shared-es-test")
    other_prefix = open_event_store("memory://shared-es-test", table_prefix="other_")
    first.append("s", [NewEvent("T", {})])
    assert second.stream_version("s") == 1
    assert other_prefix.stream_version("s") == 0
    first.drop_tables()
    assert second.stream_version("s") == 0


def test_stores_and_subscriptions_emit_typed_events(clock: ManualClock) -> None:
    store = _store()
    seen: list[object] = []
    unsubscribe = store.events.subscribe(seen.append)
    store.append("s", [NewEvent("T", {}), NewEvent("T", {})])
    with pytest.raises(ConcurrencyError):
        store.append("s", [NewEvent("T", {})], expected_version=0)
    store.append_batch([AppendRequest("a", [NewEvent("T", {})]), AppendRequest("b", [])])
    assert seen == [
        EventsAppended("eventstore:seawall_", "s", 2, 2, 2),
        AppendConflicted("eventstore:seawall_", "s", 0, 2),
        EventsAppended("eventstore:seawall_", "a", 1, 1, 3),
    ]
    unsubscribe()
    subscription = store.subscribe("p", lambda e: None, batch_size=2, clock=clock)
    handled: list[object] = []
    subscription.events.subscribe(handled.append)
    subscription.catch_up()
    assert handled == [BatchHandled("p", 2, 2), BatchHandled("p", 1, 3)]
