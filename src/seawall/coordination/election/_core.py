"""Sans-I/O leadership bookkeeping: a leader's term and when it stops trusting it.

A :class:`Term` is what winning an election returns. Its number is the fencing token of
the lease that backs it, so it strictly increases across leaders. The leader trusts its
term until ``trusted_until`` = the moment the winning (or latest renewing) request was
*sent* on the local monotonic clock + ``ttl * (1 - drift_margin)``.

Why that is early enough: the engine starts the lease's TTL when it *applies* the
request, which is after it was sent, and ends it by its own clock. If the two clocks'
rates differ from real time by at most ``r_local`` and ``r_engine`` (0.0001 is 100 ppm),
the local deadline falls at most ``ttl (1 - m) / (1 - r_local)`` real seconds after
sending, and the engine frees the lease no sooner than ``ttl / (1 + r_engine)`` after
it; the first is not later than the second whenever ``m >= r_local + r_engine`` (to
first order). So with clock drift bounded by the margin, a leader stops trusting its
term **before** the engine can elect anyone else, whatever happened in between (a
network cut, a lost reply, a pause). A paused leader cannot act while paused; on
waking, ``held`` is False and ``check()`` raises, so its first look at the term tells
it. What it sent before the pause is what fencing with the term number is for.

Nothing here sleeps, reads a clock on its own or does I/O: the election runners feed
it ``now`` and outcomes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from seawall.coordination.election._errors import LeadershipLostError
from seawall.errors import ConfigurationError

if TYPE_CHECKING:
    from seawall.clock import Clock

__all__ = ["DEFAULT_DRIFT_MARGIN", "OWNER_SEPARATOR", "Term", "check_share", "identity_of"]

DEFAULT_DRIFT_MARGIN = 0.01
"""Share of the TTL a leader gives up to clock drift (1%: far above real clock drift)."""

OWNER_SEPARATOR = "#"
"""Between a candidate's identity and the random part of its owner token."""


def identity_of(owner: str) -> str:
    """The candidate identity inside an owner token (``identity#random``)."""
    identity, separator, _ = owner.rpartition(OWNER_SEPARATOR)
    return identity if separator else owner


def check_share(value: object, field: str, *, low: float, high: float, hint: str) -> float:
    """``value`` as a float in ``[low, high)``, else :class:`ConfigurationError` naming the field."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value < high
    ):
        raise ConfigurationError(f"{field} must be in [{low}, {high}) ({hint}), got {value!r}")
    return float(value)


class Term:
    """One leadership term of one candidate: its number (a fencing token) and its deadline.

    ``held`` and ``check()`` answer "may I still act as the leader?" from the local
    clock alone, so they turn false at ``trusted_until`` even when the renewal thread
    is stuck or the process was paused. Pass ``number`` with each write to a fenced
    resource (:func:`~seawall.coordination.sql_fence`).
    """

    __slots__ = (
        "_clock",
        "_confirmed_at",
        "_end_reason",
        "_trusted_until",
        "drift_margin",
        "elected_at",
        "group",
        "identity",
        "number",
        "owner",
        "renew_fraction",
        "ttl",
    )

    def __init__(
        self,
        group: str,
        number: int,
        owner: str,
        ttl: float,
        *,
        sent_at: float,
        clock: Clock,
        drift_margin: float = DEFAULT_DRIFT_MARGIN,
        renew_fraction: float = 1 / 3,
    ) -> None:
        self.group = group
        """The election's group."""
        self.number = number
        """The term number: strictly increasing across the group's leaders."""
        self.owner = owner
        """The owner token of the lease backing the term (``identity#random``)."""
        self.identity = identity_of(owner)
        """The leader's identity, as other candidates observe it."""
        self.ttl = ttl
        """The lease's TTL, seconds."""
        self.drift_margin = drift_margin
        """Share of the TTL given up to clock drift."""
        self.renew_fraction = renew_fraction
        """Share of the TTL after which the renewal runs."""
        self.elected_at = sent_at
        """Clock time the winning request was sent."""
        self._clock = clock
        self._confirmed_at = sent_at
        self._trusted_until = sent_at + ttl * (1.0 - drift_margin)
        self._end_reason: str | None = None

    # ------------------------------------------------------------------ the leader's view

    @property
    def fencing_token(self) -> int:
        """The term number, under the name fencing helpers use."""
        return self.number

    @property
    def trusted_until(self) -> float:
        """Clock time from which this leader no longer trusts its term."""
        return self._trusted_until

    @property
    def expires_in(self) -> float:
        """Seconds this leader may still act as such (0.0 once ended or past its deadline)."""
        if self._end_reason is not None:
            return 0.0
        return max(0.0, self._trusted_until - self._clock.now())

    @property
    def held(self) -> bool:
        """True while the term has not ended and its deadline has not passed."""
        return self._end_reason is None and self._clock.now() < self._trusted_until

    @property
    def ended(self) -> bool:
        """True once the term was resigned, refused a renewal, or demoted at its deadline."""
        return self._end_reason is not None

    @property
    def end_reason(self) -> str | None:
        """Why the term ended, or ``None``."""
        return self._end_reason

    def check(self) -> None:
        """Raise :class:`LeadershipLostError` unless this candidate still leads; call it often."""
        if self._end_reason is not None:
            raise LeadershipLostError(self.group, self.number, self._end_reason)
        if self._clock.now() >= self._trusted_until:
            raise LeadershipLostError(
                self.group,
                self.number,
                f"its lease of {self.ttl:.3f}s ran out without a confirmed renewal",
            )

    # ------------------------------------------------------------------ bookkeeping

    def renewal_delay(self, now: float) -> float:
        """Seconds from ``now`` until the next renewal is due (0.0: now)."""
        return max(0.0, self._confirmed_at + self.ttl * self.renew_fraction - now)

    def retry_delay(self, now: float) -> float:
        """Seconds until a failed renewal is retried: soon, and never past the deadline."""
        return max(0.0, min(self.ttl * self.renew_fraction / 4, self._trusted_until - now))

    def wake_delay(self, now: float) -> float:
        """Seconds until the runner must act: the next renewal or the deadline."""
        return max(0.0, min(self.renewal_delay(now), self._trusted_until - now))

    def past_end(self, now: float) -> bool:
        """True when ``now`` is at or after the deadline."""
        return now >= self._trusted_until

    def confirm(self, sent_at: float) -> None:
        """Record a renewal whose request was sent at ``sent_at`` (moves the deadline on)."""
        if sent_at > self._confirmed_at:
            self._confirmed_at = sent_at
            self._trusted_until = sent_at + self.ttl * (1.0 - self.drift_margin)

    def end(self, reason: str) -> bool:
        """End the term once; False if it had already ended."""
        if self._end_reason is not None:
            return False
        self._end_reason = reason
        return True

    def __repr__(self) -> str:
        state = (
            f"ended: {self._end_reason}"
            if self._end_reason is not None
            else f"expires_in={self.expires_in:.3f}"
        )
        return f"Term({self.group!r}, number={self.number}, identity={self.identity!r}, {state})"
