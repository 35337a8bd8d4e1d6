"""The storage contract of the saga log, and the helpers its engines share.

A :class:`SagaLog` keeps one row per saga (status, owner and lease, deadline, cancel
flag) and its history, an append-only list of :class:`~seawall.workflows.saga.SagaEntry`
numbered from 0. Every write is one transaction; times come from the engine's clock
(PostgreSQL ``clock_timestamp()``, the local wall clock for SQLite and memory) unless
a test injects a clock. Each engine implements it in its own module and passes the one
conformance suite (``tests/conformance/test_saga_logs.py``).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from seawall.clock import Clock
from seawall.errors import ConfigurationError
from seawall.workflows.saga._model import NewEntry, SagaRecord, SagaStatus, Signals

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = [
    "SagaLog",
    "check_prefix",
    "decode_plan",
    "encode_plan",
    "new_owner",
    "time_source",
]


@runtime_checkable
class SagaLog(Protocol):
    """Where an orchestrator records sagas durably, and claims unfinished ones to resume.

    ``supports_transactions`` is true when ``create``/``append`` can join a caller's
    :class:`~seawall.engines._base.Transaction` (SQL engines); ``blocking`` is true when
    calls block on I/O (an async orchestrator then runs them in a worker thread).
    """

    kind: ClassVar[str]
    supports_transactions: ClassVar[bool]
    blocking: ClassVar[bool]

    @property
    def engine(self) -> Engine | None:
        """The engine the log lives in (``None`` for a standalone memory log)."""
        ...

    def create(
        self,
        saga_id: str,
        name: str,
        plan: tuple[tuple[str, ...], ...],
        input: str,
        *,
        deadline: float | None,
        owner: str | None,
        lease: float,
        entries: Sequence[NewEntry],
        transaction: Transaction | None = None,
    ) -> bool:
        """Record a new running saga and its first entries; ``False`` (nothing written) if the id exists.

        ``deadline`` is seconds from now; ``owner`` holds the lease for ``lease`` seconds
        (``None`` leaves the saga for ``claim``).
        """
        ...

    def append(
        self,
        saga_id: str,
        entries: Sequence[NewEntry],
        *,
        owner: str,
        status: SagaStatus,
        reason: str | None,
        lease: float,
        release: bool = False,
        transaction: Transaction | None = None,
    ) -> Signals | None:
        """Add entries, set the status, renew (or with ``release``, drop) the lease: one commit.

        Writes only while ``owner`` holds the saga; returns ``None`` (nothing written)
        when it does not, else the cancel flag and whether the deadline has passed.
        """
        ...

    def claim(
        self,
        owner: str,
        lease: float,
        *,
        names: Collection[str] | None = None,
        saga_id: str | None = None,
        ignore_leases: bool = False,
    ) -> SagaRecord | None:
        """Take the lease of one unfinished saga (of ``names``, or the one ``saga_id``) and load it.

        Only sagas nobody holds (or whose lease has expired, on the engine's clock) are
        taken, unless ``ignore_leases``; two claimers never get the same saga.
        """
        ...

    def release(self, saga_id: str, owner: str) -> None:
        """Give up ``owner``'s lease on an unfinished saga so that a resume can take it at once."""
        ...

    def load(self, saga_id: str) -> SagaRecord | None:
        """The saga with its whole history, or ``None``."""
        ...

    def list(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Sagas (without history), most recently updated first."""
        ...

    def request_cancel(self, saga_id: str) -> SagaStatus | None:
        """Flag a running saga for cancellation; returns its status (``None`` if unknown)."""
        ...

    def transition(
        self,
        saga_id: str,
        *,
        expected: SagaStatus,
        status: SagaStatus,
        reason: str | None,
        entries: Sequence[NewEntry],
    ) -> bool:
        """Set the status of an unowned saga that is in ``expected`` (an operator's retry/resolve)."""
        ...

    def close(self) -> None:
        """Release what the log holds (not the engine, which the caller owns)."""
        ...


def encode_plan(plan: tuple[tuple[str, ...], ...]) -> str:
    """The plan as JSON text, for the saga row."""
    return json.dumps([list(group) for group in plan], separators=(",", ":"))


def decode_plan(text: str) -> tuple[tuple[str, ...], ...]:
    """The plan from its JSON text."""
    return tuple(tuple(group) for group in json.loads(text))


def new_owner() -> str:
    """A unique orchestrator id: host, process and a random suffix (shown in ``saga list``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def time_source(clock: Clock | None) -> Callable[[], float]:
    """The injected clock's ``now``, or the wall clock (Unix seconds)."""
    if clock is None:
        return time.time
    if not isinstance(clock, Clock):
        raise ConfigurationError(f"clock={clock!r} is not a seawall.clock.Clock (or None)")
    return clock.now


def check_prefix(prefix: object) -> str:
    """A table prefix: lowercase letters, digits and underscores, at most 40, not starting with a digit."""
    if (
        not isinstance(prefix, str)
        or len(prefix) > 40
        or not all(char.islower() or char.isdigit() or char == "_" for char in prefix)
        or not prefix.isascii()
        or prefix[:1].isdigit()
    ):
        raise ConfigurationError(
            f"table_prefix={prefix!r} is invalid: use at most 40 lowercase ASCII letters, "
            "digits and underscores, not starting with a digit"
        )
    return prefix


def check_lease(lease: object) -> float:
    """A lease in seconds: a finite number > 0."""
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease < 1e9:
        raise ConfigurationError(
            f"lease={lease!r} is invalid: pass a finite number of seconds > 0 (longer than the "
            "longest step)"
        )
    return float(lease)
