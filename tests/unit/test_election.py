"""Leader election over the memory lock store, driven by a manual clock: no real sleeps."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from seawall.clock import ManualClock
from seawall.coordination import (
    Acquisition,
    Election,
    ElectionError,
    ElectionTimeoutError,
    LeaderDemoted,
    LeaderElected,
    LeaderInfo,
    LeadershipLostError,
    LeadershipRenewalFailed,
    LeadershipRenewed,
    LeaseInfo,
    MemoryLockStore,
    Term,
)
from seawall.errors import ConfigurationError, EngineUnavailableError, RejectedError
from seawall.events import Event


class ScriptedStore:
    """A memory store whose extends can fail, hang, or be counted; acquires can fail."""

    def __init__(self, clock: ManualClock, *, expires: bool = True) -> None:
        self.inner = MemoryLockStore(clock)
        self.expires = expires
        self.extend_failures: list[BaseException] = []
        self.acquire_failures: list[BaseException] = []
        self.hang: asyncio.Event | None = None
        self.extend_calls = 0

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        if self.acquire_failures:
            raise self.acquire_failures.pop(0)
        return self.inner.acquire(name, owner, ttl)

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        self.extend_calls += 1
        if self.extend_failures:
            raise self.extend_failures.pop(0)
        return self.inner.extend(name, owner, ttl)

    def release(self, name: str, owner: str) -> bool:
        return self.inner.release(name, owner)

    def inspect(self, name: str) -> LeaseInfo | None:
        return self.inner.inspect(name)

    def force_release(self, name: str) -> bool:
        return self.inner.force_release(name)

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        return self.acquire(name, owner, ttl)

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        if self.hang is not None:
            self.extend_calls += 1
            await self.hang.wait()
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


def _election(store: Any, clock: ManualClock, **options: Any) -> Election:
    options.setdefault("ttl", 3.0)
    options.setdefault("poll_interval", 0.1)
    return Election("billing", store=store, clock=clock, **options)


def _recorder(election: Election) -> list[Event]:
    seen: list[Event] = []
    election.events.subscribe(seen.append)
    return seen


async def _settle() -> None:
    for _ in range(8):
        await asyncio.sleep(0)


@pytest.fixture
def stepped() -> ManualClock:
    return ManualClock(1000.0, autojump=False)


# ---------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"ttl": 0}, "ttl must be at least"),
        ({"drift_margin": 0.5}, "drift_margin must be in"),
        ({"drift_margin": -0.1}, "drift_margin must be in"),
        ({"renew_fraction": 0.995}, "renew_fraction must be in"),
        ({"renew_fraction": 0}, "renew_fraction must be in"),
        ({"poll_interval": 0}, "poll_interval must be > 0"),
        ({"wait": -1}, "wait must be"),
        ({"identity": ""}, "identity must be a non-empty string"),
        ({"identity": "x" * 300}, "at most 256"),
        ({"identity": "a\x00b"}, "NUL"),
        ({"on_elected": "print"}, "on_elected must be callable"),
        ({"on_demoted": 3}, "on_demoted must be callable"),
    ],
)
def test_invalid_options_fail_at_construction_naming_the_field(
    clock: ManualClock, options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        _election(MemoryLockStore(clock), clock, **options)


@pytest.mark.parametrize("group", ["", None, "g" * 600, "a\x00b"])
def test_a_group_the_engines_cannot_store_is_refused(clock: ManualClock, group: Any) -> None:
    with pytest.raises(ConfigurationError, match="election group"):
        Election(group, store=MemoryLockStore(clock), clock=clock)


def test_a_store_without_expiring_leases_is_refused(clock: ManualClock) -> None:
    with pytest.raises(ConfigurationError, match="leases expire by TTL"):
        _election(ScriptedStore(clock, expires=False), clock)


def test_a_custom_clock_needs_a_store_on_the_same_clock(clock: ManualClock) -> None:
    with pytest.raises(ConfigurationError, match="custom clock but no store"):
        Election("billing", clock=clock)


def test_the_default_identity_is_host_and_pid(clock: ManualClock) -> None:
    import os

    election = _election(MemoryLockStore(clock), clock)
    assert election.identity.endswith(f":{os.getpid()}")


# ---------------------------------------------------------------------- campaign and observe


def test_campaign_elects_and_everyone_observes_the_leader(clock: ManualClock) -> None:
    store = MemoryLockStore(clock)
    elected: list[Term] = []
    leader = _election(store, clock, identity="node-a", on_elected=elected.append)
    follower = _election(store, clock, identity="node-b")
    seen = _recorder(leader)
    try:
        assert follower.leader() is None
        term = leader.campaign()
        assert elected == [term]
        assert (term.number, term.identity, term.group) == (1, "node-a", "billing")
        assert term.fencing_token == term.number
        assert leader.is_leader
        assert leader.term is term
        assert leader.check() is term
        assert leader.campaign() is term  # already leading: the same term
        info = follower.leader()
        assert isinstance(info, LeaderInfo)
        assert (info.group, info.identity, info.term) == ("billing", "node-a", 1)
        assert info.owner == term.owner
        assert 0 < info.expires_in <= 3.0
        assert not follower.is_leader
        assert follower.term is None
        with pytest.raises(LeadershipLostError, match="does not lead"):
            follower.check()
        [event] = seen
        assert isinstance(event, LeaderElected)
        assert (event.source, event.term, event.identity, event.attempts) == (
            "billing",
            1,
            "node-a",
            1,
        )
    finally:
        leader.close()
        follower.close()


def test_a_candidate_gives_up_after_its_wait_with_the_leaders_lease(clock: ManualClock) -> None:
    store = MemoryLockStore(clock)
    leader, other = _election(store, clock, ttl=5.0), _election(store, clock)
    try:
        leader.campaign()
        with pytest.raises(ElectionTimeoutError) as caught:
            other.campaign(wait=0)
        assert isinstance(caught.value, RejectedError)
        assert caught.value.retry_after == pytest.approx(5.0)
        assert caught.value.group == "billing"
        with pytest.raises(ElectionTimeoutError, match=r"after waiting 1\.000s"):
            other.campaign(wait=1.0)
        assert sum(clock.sleeps) == pytest.approx(1.0)
    finally:
        leader.close()
        other.close()


def test_a_waiting_candidate_is_elected_when_the_leader_resigns(clock: ManualClock) -> None:
    store = MemoryLockStore(clock)
    demoted: list[tuple[Term, str]] = []
    first = _election(store, clock, on_demoted=lambda term, why: demoted.append((term, why)))
    second = _election(store, clock, identity="second")
    try:
        term = first.campaign()
        seen = _recorder(first)
        assert first.resign()
        assert not first.resign()  # not leading any more: nothing to do
        assert demoted == [(term, "resigned")]
        assert term.ended
        assert term.end_reason == "resigned"
        with pytest.raises(LeadershipLostError, match="resigned"):
            term.check()
        assert [type(event) for event in seen] == [LeaderDemoted]
        assert first.leader() is None
        successor = second.campaign(wait=0)
        assert successor.number == term.number + 1
        info = first.leader()
        assert info is not None
        assert info.identity == "second"
    finally:
        first.close()
        second.close()


def test_a_leader_that_stops_renewing_is_replaced_after_its_ttl(clock: ManualClock) -> None:
    store = MemoryLockStore(clock)
    first, second = _election(store, clock), _election(store, clock)
    try:
        term = first.campaign()
        # the first leader's renewal runs on real time: the manual clock overtakes it
        successor = second.campaign(wait=10.0)
        assert clock.now() >= term.elected_at + 3.0  # not before the lease ended
        assert successor.number == term.number + 1
        assert not term.held
        with pytest.raises(LeadershipLostError, match="ran out"):
            term.check()
    finally:
        first.close()
        second.close()


def test_the_context_manager_campaigns_and_resigns(clock: ManualClock) -> None:
    store = MemoryLockStore(clock)
    election = _election(store, clock)
    with election as term:
        assert term.held
        assert store.inspect(election.lock_name) is not None
    assert term.ended
    assert store.inspect(election.lock_name) is None


def test_observe_yields_each_change_of_leader(clock: ManualClock) -> None:
    store = MemoryLockStore(clock)
    watcher = _election(store, clock, identity="watcher")
    first = _election(store, clock, identity="first")
    second = _election(store, clock, identity="second")
    changes = watcher.observe(interval=0.5)
    try:
        assert next(changes) is None
        first.campaign()
        now = next(changes)
        assert now is not None
        assert now.identity == "first"
        first.resign()
        second.campaign()
        later = next(changes)
        assert later is not None
        assert (later.identity, later.term) == ("second", 2)
    finally:
        changes.close()
        for election in (watcher, first, second):
            election.close()


def test_an_unreachable_engine_fails_the_campaign_after_the_wait(clock: ManualClock) -> None:
    store = ScriptedStore(clock)
    store.acquire_failures = [EngineUnavailableError("down")] * 1000
    election = _election(store, clock)
    with pytest.raises(EngineUnavailableError, match=r"gave up after 0\.500s"):
        election.campaign(wait=0.5)
    store.acquire_failures = []
    assert election.campaign(wait=0).number == 1  # the failed campaign left no state behind
    election.close()


def test_a_failing_callback_is_logged_not_raised(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("callback bug")

    election = _election(MemoryLockStore(clock), clock, on_elected=boom, on_demoted=boom)
    term = election.campaign()
    assert election.resign()
    assert term.ended
    assert "on_elected callback" in caplog.text
    assert "on_demoted callback" in caplog.text
    election.close()


# ---------------------------------------------------------------------- async renewal


async def test_async_renewal_keeps_the_term_across_many_ttls(stepped: ManualClock) -> None:
    store = MemoryLockStore(stepped)
    election = _election(store, stepped)
    seen = _recorder(election)
    term = await election.acampaign()
    for _ in range(12):  # four TTLs
        stepped.advance(1.0)
        await _settle()
    term.check()
    assert election.is_leader
    renewed = [event for event in seen if isinstance(event, LeadershipRenewed)]
    assert len(renewed) == 12
    assert all(event.term == term.number for event in renewed)
    assert renewed[-1].trusted_for == pytest.approx(3.0 * 0.99)
    other = _election(store, stepped)
    with pytest.raises(ElectionTimeoutError):
        await other.acampaign(wait=0)
    await election.aclose()
    assert term.ended


async def test_async_a_refused_renewal_demotes_the_leader(stepped: ManualClock) -> None:
    store = MemoryLockStore(stepped)
    demoted: list[str] = []
    election = _election(store, stepped, on_demoted=lambda term, why: demoted.append(why))
    term = await election.acampaign()
    store.force_release(election.lock_name)
    stepped.advance(1.0)
    await _settle()
    assert demoted == ["a renewal was refused: the lease expired or was taken"]
    assert term.ended
    assert not election.is_leader
    with pytest.raises(LeadershipLostError, match="refused"):
        term.check()
    assert not await election.aresign()
    await election.aclose()


async def test_async_renewal_failures_are_retried_then_demote_at_the_deadline(
    stepped: ManualClock,
) -> None:
    store = ScriptedStore(stepped)
    store.extend_failures = [EngineUnavailableError("down")] * 100
    election = _election(store, stepped)
    seen = _recorder(election)
    term = await election.acampaign()
    for _ in range(40):
        stepped.advance(0.1)
        await _settle()
    failed = [event for event in seen if isinstance(event, LeadershipRenewalFailed)]
    assert len(failed) >= 3
    assert failed[0].error == "down"
    assert term.ended
    assert term.end_reason == "its lease ran out without a confirmed renewal"
    demoted = [event for event in seen if isinstance(event, LeaderDemoted)]
    assert len(demoted) == 1
    assert store.inspect(election.lock_name) is None  # released early on demotion
    await election.aclose()


async def test_async_renewal_recovers_from_a_brief_outage(stepped: ManualClock) -> None:
    store = ScriptedStore(stepped)
    store.extend_failures = [EngineUnavailableError("blip")]
    election = _election(store, stepped)
    term = await election.acampaign()
    for _ in range(40):
        stepped.advance(0.25)
        await _settle()
    term.check()
    assert store.extend_calls >= 10
    await election.aclose()


async def test_the_leader_steps_down_before_another_can_be_elected(stepped: ManualClock) -> None:
    """A renewal stuck on the engine: the leader demotes itself before its lease can expire."""
    store = ScriptedStore(stepped)
    store.hang = asyncio.Event()
    leader_events: list[tuple[float, str]] = []
    leader = _election(
        store,
        stepped,
        identity="leader",
        on_demoted=lambda term, why: leader_events.append((stepped.now(), why)),
    )
    follower = _election(store, stepped, identity="follower")
    term = await leader.acampaign()
    campaign = asyncio.ensure_future(follower.acampaign(wait=math.inf))
    overlap = False
    elected_at = None
    for _ in range(200):  # 10 s in 50 ms steps
        stepped.advance(0.05)
        await _settle()
        if campaign.done() and elected_at is None:
            elected_at = stepped.now()
        overlap = overlap or (leader.is_leader and campaign.done())
    successor = campaign.result()
    assert not overlap
    [(demoted_at, reason)] = leader_events
    assert "still waiting for the engine" in reason
    assert elected_at is not None
    assert demoted_at <= term.elected_at + 3.0 * (1 - 0.01) + 0.05
    assert demoted_at < elected_at
    assert successor.number == term.number + 1
    store.hang.set()
    await _settle()
    await leader.aclose()
    await follower.aclose()


async def test_async_context_manager_and_resign_cancel_the_renewal(stepped: ManualClock) -> None:
    store = MemoryLockStore(stepped)
    election = _election(store, stepped)
    async with election as term:
        task = election._task
        assert task is not None
        assert await election.aleader() is not None
    await _settle()
    assert task.cancelled() or task.done()
    assert term.ended
    assert await election.aleader() is None


async def test_async_a_second_concurrent_campaign_is_refused(stepped: ManualClock) -> None:
    store = MemoryLockStore(stepped)
    leader = _election(store, stepped)
    await leader.acampaign()
    waiting = _election(store, stepped)
    first = asyncio.ensure_future(waiting.acampaign(wait=10.0))
    await _settle()
    with pytest.raises(ElectionError, match="already running"):
        await waiting.acampaign(wait=0)
    await leader.aresign()
    stepped.advance(0.2)
    await _settle()
    term = await first
    assert term.number == 2
    await waiting.aclose()
    await leader.aclose()


async def test_aobserve_yields_each_change(stepped: ManualClock) -> None:
    clock = ManualClock(1000.0)
    store = MemoryLockStore(clock)
    watcher, leader = _election(store, clock), _election(store, clock, identity="boss")
    changes = watcher.aobserve(interval=0.5)
    assert await anext(changes) is None
    await leader.acampaign()
    info = await anext(changes)
    assert info is not None
    assert info.identity == "boss"
    await changes.aclose()
    await leader.aclose()


def test_the_election_package_exports_exactly_its_public_names() -> None:
    import seawall.coordination
    import seawall.coordination.election as package

    public = {
        "DEFAULT_DRIFT_MARGIN",
        "Election",
        "ElectionError",
        "ElectionTimeoutError",
        "LeaderDemoted",
        "LeaderElected",
        "LeaderInfo",
        "LeadershipLostError",
        "LeadershipRenewalFailed",
        "LeadershipRenewed",
        "Term",
    }
    assert package.__all__ == sorted(package.__all__)
    assert set(package.__all__) == public
    for name in public - {"DEFAULT_DRIFT_MARGIN"}:
        assert getattr(seawall.coordination, name) is getattr(package, name)
        assert name in seawall.coordination.__all__
