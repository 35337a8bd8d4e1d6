"""Idempotency keys on the memory engine: the decisions, the keys API and the decorator.

Time is a ManualClock given to the store, so leases and expiry pass without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.errors import ConfigurationError, RejectedError, UnsupportedEngineError
from seawall.events import Event
from seawall.idempotency import (
    ClaimResult,
    Decision,
    IdempotencyConflictError,
    IdempotencyKeyClaimed,
    IdempotencyKeyCompleted,
    IdempotencyKeyConflicted,
    IdempotencyKeyLostError,
    IdempotencyKeyMismatched,
    IdempotencyKeyMismatchError,
    IdempotencyKeyReleased,
    IdempotencyKeys,
    IdempotencyRecord,
    IdempotentReplayed,
    KeyStatus,
    decide,
    fingerprint_of,
    idempotent,
    may_take,
)
from seawall.resilience import Retry
from seawall.workflows.saga import StepContext


def record(
    status: KeyStatus = KeyStatus.IN_FLIGHT,
    fingerprint: str = "f",
    locked_until: float | None = 10.0,
    expires_at: float = 100.0,
) -> IdempotencyRecord:
    return IdempotencyRecord("k", fingerprint, status, "t", None, 0.0, locked_until, expires_at)


# -- the pure rules ----------------------------------------------------------------------------


def test_may_take_a_new_or_expired_key_or_an_abandoned_claim_of_the_same_request() -> None:
    assert may_take(None, "f", 0.0)
    assert may_take(record(expires_at=5.0), "other", 5.0)
    assert not may_take(record(locked_until=10.0), "f", 9.9)
    assert may_take(record(locked_until=10.0), "f", 10.0)
    assert not may_take(record(locked_until=10.0), "other", 10.0)
    assert not may_take(record(KeyStatus.COMPLETED, locked_until=None), "f", 50.0)


def test_decide_maps_what_a_claim_found_to_the_next_step() -> None:
    assert decide(ClaimResult(record(), True, 0.0), "f") is Decision.PROCEED
    assert decide(ClaimResult(record(), False, 0.0), "f") is Decision.CONFLICT
    assert decide(ClaimResult(record(), False, 0.0), "g") is Decision.MISMATCH
    completed = record(KeyStatus.COMPLETED, locked_until=None)
    assert decide(ClaimResult(completed, False, 0.0), "f") is Decision.REPLAY
    assert decide(ClaimResult(completed, False, 0.0), "g") is Decision.MISMATCH


# -- the keys API ------------------------------------------------------------------------------


@pytest.fixture
def keys(clock: ManualClock) -> Iterator[IdempotencyKeys]:
    opened = IdempotencyKeys(seawall.connect("memory://"), clock=clock, ttl=100.0, lease=10.0)
    yield opened
    opened.close()


def test_claim_complete_then_replay(keys: IdempotencyKeys, clock: ManualClock) -> None:
    events: list[Event] = []
    keys.events.subscribe(events.append)
    claim = keys.claim("order-1", "fp")
    assert not claim.replayed
    assert claim.token is not None
    assert claim.locked_until == clock.now() + 10.0
    keys.complete(claim, {"id": 7})
    again = keys.claim("order-1", "fp")
    assert again.replayed
    assert again.response == {"id": 7}
    assert [type(e) for e in events] == [
        IdempotencyKeyClaimed,
        IdempotencyKeyCompleted,
        IdempotentReplayed,
    ]
    stored = keys.get("order-1")
    assert stored is not None
    assert stored.status is KeyStatus.COMPLETED
    assert stored.expires_at == clock.now() + 100.0


def test_a_second_claim_while_in_flight_conflicts_with_retry_after(
    keys: IdempotencyKeys, clock: ManualClock
) -> None:
    keys.claim("k", "fp")
    clock.advance(4.0)
    events: list[Event] = []
    keys.events.subscribe(events.append)
    with pytest.raises(IdempotencyConflictError) as caught:
        keys.claim("k", "fp")
    assert caught.value.retry_after == pytest.approx(6.0)
    assert caught.value.key == "k"
    assert isinstance(caught.value, RejectedError)
    assert "retry after 6.000s" in str(caught.value)
    assert events == [IdempotencyKeyConflicted(keys.name, "k", pytest.approx(6.0))]


def test_a_used_key_with_another_request_is_a_mismatch(keys: IdempotencyKeys) -> None:
    keys.complete(keys.claim("k", "first"), "done")
    with pytest.raises(IdempotencyKeyMismatchError) as caught:
        keys.claim("k", "second")
    assert (caught.value.stored_fingerprint, caught.value.fingerprint) == ("first", "second")
    assert isinstance(caught.value, ValueError)
    assert "new key" in str(caught.value)
    keys.claim("in-flight", "a")
    with pytest.raises(IdempotencyKeyMismatchError):
        keys.claim("in-flight", "b")


def test_an_abandoned_claim_is_taken_over_after_its_lease_and_the_old_holder_loses(
    keys: IdempotencyKeys, clock: ManualClock
) -> None:
    crashed = keys.claim("k", "fp")
    clock.advance(10.0)
    retry = keys.claim("k", "fp")
    assert not retry.replayed
    assert retry.token != crashed.token
    with pytest.raises(IdempotencyKeyLostError, match="lease"):
        keys.complete(crashed, "late")
    assert not keys.release(crashed)
    keys.complete(retry, "ok")
    assert keys.claim("k", "fp").response == "ok"


def test_extend_keeps_a_slow_request_s_key(keys: IdempotencyKeys, clock: ManualClock) -> None:
    claim = keys.claim("k")
    clock.advance(8.0)
    assert keys.extend(claim)
    clock.advance(8.0)
    with pytest.raises(IdempotencyConflictError):
        keys.claim("k")
    assert keys.extend(claim, 1.0)
    with pytest.raises(ConfigurationError, match="lease"):
        keys.extend(claim, 0)


def test_released_keys_run_again_and_expired_keys_are_forgotten(
    keys: IdempotencyKeys, clock: ManualClock
) -> None:
    events: list[Event] = []
    keys.events.subscribe(events.append, types=(IdempotencyKeyReleased,))
    claim = keys.claim("k", "fp")
    assert keys.release(claim)
    assert events == [IdempotencyKeyReleased(keys.name, "k")]
    keys.complete(keys.claim("k", "fp"), 1)
    clock.advance(100.0)
    assert keys.get("k") is None
    fresh = keys.claim("k", "different request now")  # expired: a new operation
    assert not fresh.replayed
    keys.complete(fresh, 2)
    clock.advance(100.0)
    assert keys.purge_expired() == 1
    assert keys.purge_expired() == 0


def test_replayed_claims_cannot_be_settled(keys: IdempotencyKeys) -> None:
    keys.complete(keys.claim("k"), None)
    replayed = keys.claim("k")
    assert replayed.replayed
    assert replayed.response is None
    with pytest.raises(ConfigurationError, match="replayed"):
        keys.complete(replayed, 1)
    with pytest.raises(ConfigurationError, match="replayed"):
        keys.release(replayed)


def test_keys_and_options_are_checked(clock: ManualClock) -> None:
    engine = seawall.connect("memory://")
    keys = IdempotencyKeys(engine)
    with pytest.raises(ConfigurationError, match="idempotency key"):
        keys.claim("")
    with pytest.raises(ConfigurationError, match="idempotency key"):
        keys.claim("x" * 256)
    with pytest.raises(ConfigurationError, match="fingerprint"):
        keys.claim("k", 5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl"):
        IdempotencyKeys(engine, ttl=0)
    with pytest.raises(ConfigurationError, match="lease"):
        IdempotencyKeys(engine, ttl=10, lease=20)
    with pytest.raises(ConfigurationError, match="replace"):
        keys.replace(colour="red")
    with pytest.raises(ConfigurationError, match="store"):
        IdempotencyKeys(keys.store, clock=clock)
    with (
        pytest.raises(ConfigurationError, match="memory"),
        seawall.connect("sqlite://:memory:").transaction() as tx,
    ):  # type: ignore[attr-defined]
        keys.claim("k", transaction=tx)
    with pytest.raises(UnsupportedEngineError, match="idempotency"):
        IdempotencyKeys(seawall.connect("etcd://127.0.0.1:2379"))


def test_run_executes_once_and_releases_on_failure(keys: IdempotencyKeys) -> None:
    calls: list[int] = []

    def charge() -> dict[str, int]:
        calls.append(1)
        return {"charged": len(calls)}

    assert keys.run("charge-1", charge) == {"charged": 1}
    assert keys.run("charge-1", charge) == {"charged": 1}
    assert len(calls) == 1

    def broken() -> None:
        raise RuntimeError("card declined")

    with pytest.raises(RuntimeError):
        keys.run("charge-2", broken)
    assert keys.get("charge-2") is None  # released: a retry runs again
    assert keys.run("charge-2", charge) == {"charged": 2}


async def test_async_twins(keys: IdempotencyKeys, clock: ManualClock) -> None:
    claim = await keys.aclaim("k", "fp")
    with pytest.raises(IdempotencyConflictError):
        await keys.aclaim("k", "fp")
    assert await keys.aextend(claim)
    await keys.acomplete(claim, [1, 2])
    assert (await keys.aclaim("k", "fp")).response == [1, 2]
    other = await keys.aclaim("other")
    assert await keys.arelease(other)
    assert (await keys.aget("k")) is not None

    async def work() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await keys.arun("a", work) == "done"
    assert await keys.arun("a", work) == "done"
    clock.advance(100.0)
    assert await keys.apurge_expired() == 2


def test_events_for_mismatch(keys: IdempotencyKeys) -> None:
    events: list[Event] = []
    keys.claim("k", "a")
    keys.events.subscribe(events.append)
    with pytest.raises(IdempotencyKeyMismatchError):
        keys.claim("k", "b")
    assert events == [IdempotencyKeyMismatched(keys.name, "k")]


# -- the decorator -----------------------------------------------------------------------------


def test_idempotent_function_runs_once_per_key(keys: IdempotencyKeys) -> None:
    calls: list[tuple[str, int]] = []

    @idempotent(keys, key=lambda order_id, **_: f"charge:{order_id}")
    def charge(order_id: str, cents: int) -> dict[str, Any]:
        calls.append((order_id, cents))
        return {"order": order_id, "cents": cents}

    assert charge("o1", 500) == {"order": "o1", "cents": 500}
    assert charge("o1", 500) == {"order": "o1", "cents": 500}
    assert charge(order_id="o2", cents=100) == {"order": "o2", "cents": 100}
    assert calls == [("o1", 500), ("o2", 100)]
    with pytest.raises(IdempotencyKeyMismatchError):
        charge("o1", 999)  # same key, other arguments
    assert charge.__name__ == "charge"


def test_idempotent_fingerprint_options(keys: IdempotencyKeys) -> None:
    @idempotent(keys, key=lambda n: "same", fingerprint=False)
    def unchecked(n: int) -> int:
        return n

    assert unchecked(1) == 1
    assert unchecked(2) == 1  # no fingerprint: the stored result is replayed

    @idempotent(keys, key=lambda n: f"custom{n // 10}", fingerprint=lambda n: str(n % 2))
    def custom(n: int) -> int:
        return n

    assert custom(10) == 10
    assert custom(12) == 10
    with pytest.raises(IdempotencyKeyMismatchError):
        custom(11)
    with pytest.raises(ConfigurationError, match="fingerprint"):
        idempotent(keys, key=str, fingerprint="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="IdempotencyKeys"):
        idempotent("keys")  # type: ignore[arg-type]


def test_idempotent_needs_a_key_outside_saga_steps(keys: IdempotencyKeys) -> None:
    @idempotent(keys)
    def plain(n: int) -> int:
        return n

    with pytest.raises(ConfigurationError, match="key="):
        plain(1)


def test_a_failing_call_releases_the_key_and_a_conflict_is_retryable(
    keys: IdempotencyKeys, clock: ManualClock
) -> None:
    attempts: list[int] = []

    @idempotent(keys, key=lambda: "flaky")
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("down")
        return "ok"

    with pytest.raises(ConnectionError):
        flaky()
    assert flaky() == "ok"
    # A Retry honours the conflict's retry_after: the holder's lease ends, the retry takes over.
    keys.claim("busy", fingerprint_of())
    retry = Retry(3, wait=0.0, on=IdempotencyConflictError, clock=clock)

    @retry
    @idempotent(keys, key=lambda: "busy")
    def busy() -> str:
        return "finally"

    assert busy() == "finally"
    assert clock.sleeps == [pytest.approx(10.0)]


def step(step_name: str = "charge", compensating: bool = False) -> StepContext:
    return StepContext(
        saga_id="s-1",
        saga="order",
        step=step_name,
        input={"order": 1},
        results={},
        compensating=compensating,
    )


def test_saga_steps_use_their_idempotency_key(keys: IdempotencyKeys) -> None:
    calls: list[str] = []

    @idempotent(keys)
    def charge(context: StepContext) -> str:
        calls.append("charge")
        return "charged"

    @idempotent(keys)
    def refund(context: StepContext) -> str:
        calls.append("refund")
        return "refunded"

    assert charge(step()) == "charged"
    assert charge(step()) == "charged"  # a resumed saga re-runs the step: replayed
    assert refund(step(compensating=True)) == "refunded"
    assert refund(step(compensating=True)) == "refunded"
    assert calls == ["charge", "refund"]
    stored = keys.get("s-1:charge:compensation")
    assert stored is not None
    assert stored.status is KeyStatus.COMPLETED


async def test_idempotent_coroutine_function(keys: IdempotencyKeys) -> None:
    calls: list[int] = []

    @idempotent(keys, key=lambda n: f"n{n}")
    async def compute(n: int) -> int:
        calls.append(n)
        await asyncio.sleep(0)
        return n * 2

    assert await compute(2) == 4
    assert await compute(2) == 4
    assert calls == [2]

    @idempotent(keys, key=lambda: "broken")
    async def broken() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await broken()
    assert keys.get("broken") is None


def test_fingerprint_of_is_stable_and_argument_sensitive() -> None:
    assert fingerprint_of(1, a=2) == fingerprint_of(1, a=2)
    assert fingerprint_of(1, a=2) != fingerprint_of(1, a=3)
    assert fingerprint_of({"b": 1, "a": 2}) == fingerprint_of({"a": 2, "b": 1})
    assert len(fingerprint_of(object())) == 64


def test_the_public_surface_is_sorted_and_importable() -> None:
    import seawall.idempotency as module

    assert module.__all__ == sorted(module.__all__, key=isort_order)
    for name in module.__all__:
        assert getattr(module, name) is not None


def isort_order(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions (how ``__all__`` is kept)."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)
