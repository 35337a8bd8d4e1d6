"""The sans-I/O lease bookkeeping and acquire schedule, driven with explicit times."""

from __future__ import annotations

import math
import random

import pytest

from seawall.clock import ManualClock
from seawall.coordination import AcquireSchedule, Lease, LockLostError
from seawall.coordination.lock._core import (
    DRIFT_FACTOR,
    MAX_NAME_BYTES,
    check_name,
    check_seconds,
    check_ttl,
)
from seawall.coordination.lock._store import ttl_milliseconds
from seawall.errors import ConfigurationError


def _lease(clock: ManualClock, ttl: float = 10.0, fraction: float = 1 / 3) -> Lease:
    return Lease(
        "orders", "owner-1", 7, ttl, sent_at=clock.now(), clock=clock, renew_fraction=fraction
    )


# ---------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "name", ["orders", "a", "é" * 10, "x" * MAX_NAME_BYTES, "with space/slash"]
)
def test_names_every_engine_stores_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "non-empty"),
        (None, "non-empty"),
        (42, "non-empty"),
        ("a\x00b", "NUL"),
        ("\ud800", "surrogate"),
        ("x" * (MAX_NAME_BYTES + 1), "over the limit"),
        ("é" * (MAX_NAME_BYTES // 2 + 1), "bytes in UTF-8"),
    ],
)
def test_names_an_engine_cannot_store_are_refused_with_the_reason(
    name: object, fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        check_name(name)


@pytest.mark.parametrize("ttl", [0, 0.0, -1.0, 0.0009, math.inf, math.nan, "10", True, None])
def test_a_ttl_of_zero_negative_or_not_a_number_is_refused(ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        check_ttl(ttl)


def test_a_ttl_of_one_millisecond_or_more_is_accepted_as_float() -> None:
    assert check_ttl(0.001) == 0.001
    assert check_ttl(5) == 5.0
    assert isinstance(check_ttl(5), float)


@pytest.mark.parametrize(("ttl", "expected"), [(0.001, 1), (0.0011, 2), (1.0, 1000), (0.2, 200)])
def test_ttl_milliseconds_rounds_up_so_the_engine_never_ends_a_lease_early(
    ttl: float, expected: int
) -> None:
    assert ttl_milliseconds(ttl) == expected


def test_wait_accepts_zero_and_infinity_but_not_negative() -> None:
    assert check_seconds(0, "wait", allow_infinite=True) == 0.0
    assert check_seconds(math.inf, "wait", allow_infinite=True) == math.inf
    with pytest.raises(ConfigurationError, match="wait must be"):
        check_seconds(-0.1, "wait", allow_infinite=True)
    with pytest.raises(ConfigurationError, match="finite"):
        check_seconds(math.inf, "poll_interval")


# ---------------------------------------------------------------------- the holder's view


def test_a_lease_is_trusted_for_the_ttl_minus_the_drift_margin(clock: ManualClock) -> None:
    lease = _lease(clock, ttl=10.0)
    assert lease.held
    assert lease.expires_in == pytest.approx(10.0 * (1 - DRIFT_FACTOR))
    clock.advance(9.8)
    assert lease.held
    lease.check()
    clock.advance(0.1)  # 9.9 s: the margin is reached before the engine's 10 s
    assert not lease.held
    assert lease.expires_in == 0.0
    with pytest.raises(LockLostError, match="ran out without an extension") as caught:
        lease.check()
    assert caught.value.fencing_token == 7
    assert caught.value.lock == "orders"


def test_confirming_an_extension_restarts_the_lease_from_when_it_was_sent(
    clock: ManualClock,
) -> None:
    lease = _lease(clock, ttl=10.0)
    clock.advance(5.0)
    sent = clock.now()
    clock.advance(0.5)  # the round trip took half a second
    lease.confirm(sent, 4.0)
    assert lease.ttl == 4.0
    assert lease.valid_until == pytest.approx(sent + 4.0 * (1 - DRIFT_FACTOR))


def test_renewal_is_due_after_the_fraction_of_the_ttl(clock: ManualClock) -> None:
    lease = _lease(clock, ttl=9.0, fraction=1 / 3)
    start = clock.now()
    assert lease.renewal_delay(start) == pytest.approx(3.0)
    assert lease.renewal_delay(start + 2.0) == pytest.approx(1.0)
    assert lease.renewal_delay(start + 4.0) == 0.0
    lease.confirm(start + 3.0, 9.0)
    assert lease.renewal_delay(start + 3.0) == pytest.approx(3.0)


def test_a_failed_renewal_is_retried_soon_but_never_after_the_lease_ends(
    clock: ManualClock,
) -> None:
    lease = _lease(clock, ttl=9.0, fraction=1 / 3)
    start = clock.now()
    assert lease.retry_delay(start + 3.0) == pytest.approx(0.75)
    assert lease.retry_delay(lease.valid_until - 0.1) == pytest.approx(0.1)
    assert lease.retry_delay(lease.valid_until + 1.0) == 0.0
    assert not lease.past_end(lease.valid_until - 0.001)
    assert lease.past_end(lease.valid_until)


def test_losing_a_lease_reports_once_and_check_raises_the_reason(clock: ManualClock) -> None:
    lease = _lease(clock)
    error = lease.lose("renewal was refused")
    assert isinstance(error, LockLostError)
    assert error.reason == "renewal was refused"
    assert lease.lose("again") is None
    assert lease.lost
    assert lease.lost_reason == "renewal was refused"
    assert not lease.held
    assert lease.expires_in == 0.0
    with pytest.raises(LockLostError, match="renewal was refused"):
        lease.check()


def test_finishing_a_lease_is_reported_once(clock: ManualClock) -> None:
    lease = _lease(clock)
    assert lease.finish()
    assert not lease.finish()
    assert lease.released
    assert not lease.held
    with pytest.raises(LockLostError, match="released"):
        lease.check()
    assert "released" in repr(lease)


# ---------------------------------------------------------------------- acquire schedule


def test_the_schedule_backs_off_exponentially_with_jitter_up_to_the_cap() -> None:
    schedule = AcquireSchedule(0.0, 100.0, cap=0.08, first=0.01, jitter=random.Random(1))
    delays = [schedule.next_delay(0.0, None) for _ in range(6)]
    bases = [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]
    for delay, base in zip(delays, bases, strict=True):
        assert delay is not None
        assert base / 2 <= delay <= base
    assert schedule.attempts == 7


def test_the_schedule_wakes_when_the_holders_lease_ends() -> None:
    schedule = AcquireSchedule(0.0, 100.0, cap=5.0, first=5.0, jitter=random.Random(2))
    assert schedule.next_delay(0.0, 0.25) == pytest.approx(0.251)


def test_the_schedule_never_sleeps_past_the_deadline_and_then_gives_up() -> None:
    schedule = AcquireSchedule(10.0, 1.0, cap=5.0, first=5.0)
    assert schedule.next_delay(10.6, None) == pytest.approx(0.4)
    assert schedule.next_delay(11.0, None) is None
    assert AcquireSchedule(0.0, 0.0, cap=1.0).next_delay(0.0, None) is None


def test_waiting_forever_never_gives_up() -> None:
    schedule = AcquireSchedule(0.0, math.inf, cap=1.0)
    assert schedule.next_delay(1e12, None) is not None
