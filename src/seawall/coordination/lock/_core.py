"""Sans-I/O lease bookkeeping: argument checks, the holder's view of a lease, acquire waits.

A :class:`Lease` is what a successful acquire returns. It knows when its lease ends *as
seen from this process* (the moment the request was sent, plus the TTL, minus a margin
for clock drift), when the next renewal is due, and whether it was lost. The engine
keeps the authoritative expiry on its own clock; this object only ever errs on the
short side, so a holder stops trusting its lease before the engine frees it.

:class:`AcquireSchedule` decides how long a waiting acquire sleeps between attempts:
exponential backoff with jitter, woken early when the holder's lease is about to end,
never past the caller's ``wait``. Neither object sleeps, reads a clock or does I/O;
the :class:`~seawall.coordination.Lock` runners feed them ``now`` and outcomes.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from seawall.coordination.lock._errors import LockLostError
from seawall.errors import ConfigurationError

if TYPE_CHECKING:
    from seawall.clock import Clock

__all__ = [
    "DRIFT_FACTOR",
    "MAX_NAME_BYTES",
    "AcquireSchedule",
    "Lease",
    "check_name",
    "check_seconds",
    "check_ttl",
]

DRIFT_FACTOR = 0.01
"""Share of the TTL a holder gives up to clock drift: it trusts its lease for 99% of the TTL."""

MAX_NAME_BYTES = 512
"""Longest lock name, in UTF-8 bytes, that every engine stores."""

FIRST_POLL = 0.005
"""Seconds a waiting acquire sleeps after its first refusal (then doubling up to the cap)."""


def check_name(name: object, what: str = "lock") -> str:
    """``name`` if every engine can store it, else :class:`ConfigurationError` saying why."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{what} name must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ConfigurationError(
            f"{what} name {name!r} contains a NUL character, which PostgreSQL cannot store; "
            "remove it"
        )
    try:
        size = len(name.encode())
    except UnicodeEncodeError as exc:
        raise ConfigurationError(
            f"{what} name {name!r} is not valid Unicode text (lone surrogate at {exc.start}); "
            "engines store names as UTF-8"
        ) from exc
    if size > MAX_NAME_BYTES:
        raise ConfigurationError(
            f"{what} name is {size} bytes in UTF-8, over the limit of {MAX_NAME_BYTES}; "
            "use a shorter name (hash long identifiers)"
        )
    return name


def check_ttl(ttl: object, field: str = "ttl") -> float:
    """``ttl`` as float seconds if it is finite and at least 1 ms, else :class:`ConfigurationError`."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ConfigurationError(f"{field} must be a finite number of seconds, got {ttl!r}")
    if ttl < 0.001:
        raise ConfigurationError(
            f"{field} must be at least 0.001 seconds (engines keep leases to the millisecond), "
            f"got {ttl!r}; a lease needs time to do the protected work"
        )
    return float(ttl)


def check_seconds(value: object, field: str, *, allow_infinite: bool = False) -> float:
    """``value`` as float seconds if it is ``>= 0`` (and finite unless allowed)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value < 0
        or (math.isinf(value) and not allow_infinite)
    ):
        bound = (
            "a number of seconds >= 0 (math.inf waits forever)"
            if allow_infinite
            else ("a finite number of seconds >= 0")
        )
        raise ConfigurationError(f"{field} must be {bound}, got {value!r}")
    return float(value)


class Lease:
    """One holding of a lock: its fencing token, owner token and the holder's view of expiry.

    ``fencing_token`` strictly increases per lock name across every holder; pass it to
    the resource with each write so a stale holder's writes are refused. ``check()``
    raises :class:`LockLostError` once the lease is lost or its TTL has run out
    without an extension. The methods below the properties are the bookkeeping the
    lock runners drive; they take ``now`` and never do I/O.
    """

    __slots__ = (
        "_clock",
        "_confirmed_at",
        "_lost_reason",
        "_released",
        "_valid_until",
        "acquired_at",
        "fencing_token",
        "name",
        "owner",
        "renew_fraction",
        "ttl",
    )

    def __init__(
        self,
        name: str,
        owner: str,
        fencing_token: int,
        ttl: float,
        *,
        sent_at: float,
        clock: Clock,
        renew_fraction: float = 1 / 3,
    ) -> None:
        self.name = name
        """The lock's name."""
        self.owner = owner
        """The owner token: random, unique to this acquire; release and extend compare it."""
        self.fencing_token = fencing_token
        """Strictly increasing per lock name across all holders."""
        self.ttl = ttl
        """The TTL of the latest grant or extension, seconds."""
        self.acquired_at = sent_at
        """Clock time the acquire request that granted this lease was sent."""
        self.renew_fraction = renew_fraction
        """Share of the TTL after which the heartbeat renews."""
        self._clock = clock
        self._confirmed_at = sent_at
        self._valid_until = sent_at + ttl * (1.0 - DRIFT_FACTOR)
        self._lost_reason: str | None = None
        self._released = False

    # ------------------------------------------------------------------ holder's view

    @property
    def expires_in(self) -> float:
        """Seconds this holder may still trust the lease (0.0 once expired, lost or released)."""
        if self._lost_reason is not None or self._released:
            return 0.0
        return max(0.0, self._valid_until - self._clock.now())

    @property
    def lost(self) -> bool:
        """True once renewal was refused or failed past the lease's end, or release found it gone."""
        return self._lost_reason is not None

    @property
    def lost_reason(self) -> str | None:
        """Why the lease was lost, or ``None``."""
        return self._lost_reason

    @property
    def released(self) -> bool:
        """True once the holder released (or tried to release) the lease."""
        return self._released

    @property
    def held(self) -> bool:
        """True while the lease is neither lost, released, nor past its TTL."""
        return (
            self._lost_reason is None
            and not self._released
            and self._clock.now() < self._valid_until
        )

    def check(self) -> None:
        """Raise :class:`LockLostError` unless the lease is still held; call it between steps."""
        if self._lost_reason is not None:
            raise LockLostError(self.name, self.fencing_token, self._lost_reason)
        if self._released:
            raise LockLostError(self.name, self.fencing_token, "the lease was released")
        if self._clock.now() >= self._valid_until:
            raise LockLostError(
                self.name,
                self.fencing_token,
                f"its ttl of {self.ttl:.3f}s ran out without an extension",
            )

    # ------------------------------------------------------------------ bookkeeping

    @property
    def valid_until(self) -> float:
        """Clock time after which this holder no longer trusts the lease."""
        return self._valid_until

    def renewal_delay(self, now: float) -> float:
        """Seconds from ``now`` until the heartbeat should extend the lease (0.0: now)."""
        return max(0.0, self._confirmed_at + self.ttl * self.renew_fraction - now)

    def retry_delay(self, now: float) -> float:
        """Seconds until the heartbeat retries after a failed renewal: soon, before the end."""
        return max(0.0, min(self.ttl * self.renew_fraction / 4, self._valid_until - now))

    def confirm(self, sent_at: float, ttl: float) -> None:
        """Record a successful extension whose request was sent at ``sent_at``."""
        self.ttl = ttl
        self._confirmed_at = sent_at
        self._valid_until = sent_at + ttl * (1.0 - DRIFT_FACTOR)

    def past_end(self, now: float) -> bool:
        """True when ``now`` is at or after the moment this holder stops trusting the lease."""
        return now >= self._valid_until

    def lose(self, reason: str) -> LockLostError | None:
        """Mark the lease lost; returns the error to report, or ``None`` if it already was."""
        if self._lost_reason is not None:
            return None
        self._lost_reason = reason
        return LockLostError(self.name, self.fencing_token, reason)

    def finish(self) -> bool:
        """Mark the lease released; False if it already was (a second release)."""
        if self._released:
            return False
        self._released = True
        return True

    def __repr__(self) -> str:
        state = (
            "lost"
            if self._lost_reason is not None
            else "released"
            if self._released
            else f"expires_in={self.expires_in:.3f}"
        )
        return f"Lease({self.name!r}, fencing_token={self.fencing_token}, {state})"


class AcquireSchedule:
    """When a waiting acquire tries again: jittered exponential backoff bounded by ``wait``.

    ``next_delay`` returns the seconds to sleep before the next attempt, or ``None``
    when the wait is spent. The delay doubles from ``first`` up to ``cap`` with equal
    jitter, shortens to the holder's remaining lease when the engine reported it, and
    never runs past the deadline, so the last attempt happens at the deadline.
    """

    __slots__ = ("_cap", "_next", "_random", "attempts", "deadline", "started")

    def __init__(
        self,
        now: float,
        wait: float,
        *,
        cap: float,
        first: float = FIRST_POLL,
        jitter: random.Random | None = None,
    ) -> None:
        self.started = now
        self.deadline = now + wait
        self.attempts = 1
        self._next = min(first, cap)
        self._cap = cap
        self._random = (jitter or _JITTER).random

    def next_delay(self, now: float, holder_expires_in: float | None) -> float | None:
        """Seconds to sleep before the next attempt, or ``None`` when the wait is spent."""
        remaining = self.deadline - now
        if remaining <= 0.0:
            return None
        delay = self._next * (0.5 + 0.5 * self._random())
        self._next = min(self._cap, self._next * 2.0)
        if holder_expires_in is not None and holder_expires_in < delay:
            delay = holder_expires_in + 0.001
        self.attempts += 1
        return min(delay, remaining)


_JITTER = random.Random()
