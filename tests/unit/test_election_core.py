"""The sans-I/O term: its deadline always falls before the engine can free the lease."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.clock import ManualClock
from seawall.coordination import LeadershipLostError, Term
from seawall.coordination.election._core import check_share, identity_of
from seawall.errors import ConfigurationError


def _term(clock: ManualClock, ttl: float = 10.0, margin: float = 0.01) -> Term:
    return Term("g", 7, "node-1#abc", ttl, sent_at=clock.now(), clock=clock, drift_margin=margin)


def test_a_term_is_trusted_until_its_ttl_less_the_drift_margin(clock: ManualClock) -> None:
    term = _term(clock, ttl=10.0, margin=0.05)
    assert term.identity == "node-1"
    assert term.trusted_until == pytest.approx(1009.5)
    assert term.expires_in == pytest.approx(9.5)
    assert term.renewal_delay(clock.now()) == pytest.approx(10 / 3)
    clock.advance(9.4)
    assert term.held
    term.check()
    assert term.wake_delay(clock.now()) == pytest.approx(0.0)
    clock.advance(0.1)
    assert not term.held
    assert term.expires_in == 0.0
    with pytest.raises(LeadershipLostError, match="ran out"):
        term.check()
    assert "number=7" in repr(term)


def test_confirm_moves_the_deadline_from_the_renewal_request_never_back(
    clock: ManualClock,
) -> None:
    term = _term(clock)
    clock.advance(3.0)
    term.confirm(clock.now())
    assert term.trusted_until == pytest.approx(1003.0 + 9.9)
    term.confirm(1001.0)  # a late reply to an older renewal request
    assert term.trusted_until == pytest.approx(1003.0 + 9.9)
    assert term.retry_delay(clock.now()) == pytest.approx(10 / 12)


def test_a_term_ends_once(clock: ManualClock) -> None:
    term = _term(clock)
    assert term.end("resigned")
    assert not term.end("refused")
    assert term.end_reason == "resigned"
    assert term.ended
    assert not term.held
    assert term.expires_in == 0.0
    with pytest.raises(LeadershipLostError) as caught:
        term.check()
    assert (caught.value.group, caught.value.term, caught.value.reason) == ("g", 7, "resigned")
    assert "ended: resigned" in repr(term)


def test_identity_and_share_helpers() -> None:
    assert identity_of("a#b#c") == "a#b"
    assert identity_of("plain") == "plain"
    assert check_share(0.25, "x", low=0.0, high=1.0, hint="h") == 0.25
    for bad in (1.0, -0.1, float("nan"), True, "0.1"):
        with pytest.raises(ConfigurationError, match=r"x must be in \[0\.0, 1\.0\)"):
            check_share(bad, "x", low=0.0, high=1.0, hint="h")


@given(
    ttl=st.floats(0.01, 100.0),
    margin=st.floats(0.0, 0.2),
    local_share=st.floats(0.0, 1.0),
    engine_share=st.floats(0.0, 1.0),
    renewals=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 5.0)), min_size=0, max_size=8),
)
def test_the_deadline_precedes_the_engines_expiry_under_bounded_drift(
    ttl: float,
    margin: float,
    local_share: float,
    engine_share: float,
    renewals: list[tuple[float, float]],
) -> None:
    """Real time is the reference. The local clock runs slow by ``r_local``, the engine's
    fast by ``r_engine`` (the worst case), ``r_local + r_engine <= margin``; requests
    reach the engine after a delay. The leader's deadline, turned into real time, must
    never be later than the moment the engine frees the lease."""
    r_local = margin * local_share
    r_engine = (margin - r_local) * engine_share
    local = ManualClock(0.0)
    real_sent = 0.0
    term = Term("g", 1, "n#x", ttl, sent_at=local.now(), clock=local, drift_margin=margin)
    engine_expiry = real_sent + 0.0 + ttl / (1 + r_engine)  # applied without delay at first
    for gap_share, delay in renewals:
        real_gap = ttl * (1 - margin) * gap_share  # renew while still trusted
        local.advance(real_gap * (1 - r_local))
        real_sent += real_gap
        term.confirm(local.now())
        engine_expiry = real_sent + delay + ttl / (1 + r_engine)
    local_remaining = term.trusted_until - local.now()
    real_deadline = real_sent + local_remaining / (1 - r_local)
    assert real_deadline <= engine_expiry + 1e-9 * max(1.0, engine_expiry)
