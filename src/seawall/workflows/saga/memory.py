"""The in-memory saga log: the test double, and a log for sagas that need not outlive the process.

Everything sits in dicts behind one mutex, so operations are atomic like the SQL logs'
transactions. Leases and deadlines use the injected clock (a
:class:`~seawall.clock.ManualClock` in tests). Two :class:`~seawall.engines.memory.MemoryEngine`
objects opened on the same ``memory://name`` share one log.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.clock import Clock
from seawall.errors import ConfigurationError
from seawall.workflows.saga._log import time_source
from seawall.workflows.saga._model import (
    UNFINISHED,
    NewEntry,
    SagaEntry,
    SagaRecord,
    SagaStatus,
    Signals,
)

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["MemorySagaLog"]


@dataclass
class _Sagas:
    """The shared state of one memory log."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: dict[str, SagaRecord] = field(default_factory=dict)
    entries: dict[str, list[SagaEntry]] = field(default_factory=dict)


class MemorySagaLog:
    """A saga log in this process's memory (lost when it exits)."""

    kind: ClassVar[str] = "memory"
    supports_transactions: ClassVar[bool] = False
    blocking: ClassVar[bool] = False

    def __init__(self, engine: Engine | str | None = None, *, clock: Clock | None = None) -> None:
        self._now = time_source(clock)
        self._engine: Engine | None = None
        if engine is None:
            self._sagas = _Sagas()
            return
        from seawall.engines import connect
        from seawall.engines.memory import MemoryEngine

        opened = connect(engine)
        if not isinstance(opened, MemoryEngine):
            raise ConfigurationError(
                f"MemorySagaLog needs a memory:// engine, got {opened!r}; use open_saga_log()"
            )
        self._engine = opened
        self._sagas = opened.namespace("seawall.workflows.sagas", _Sagas)

    @property
    def engine(self) -> Engine | None:
        """The memory engine holding the log, if one was given."""
        return self._engine

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
        """Record a new running saga; ``False`` if the id is taken."""
        _no_transaction(transaction)
        sagas = self._sagas
        with sagas.lock:
            if saga_id in sagas.rows:
                return False
            now = self._now()
            sagas.rows[saga_id] = SagaRecord(
                id=saga_id,
                name=name,
                status=SagaStatus.RUNNING,
                plan=plan,
                input=input,
                reason=None,
                created_at=now,
                updated_at=now,
                deadline_at=None if deadline is None else now + deadline,
                owner=owner,
                lease_until=None if owner is None else now + lease,
                cancel_requested=False,
            )
            sagas.entries[saga_id] = [_stamp(entry, now) for entry in entries]
            return True

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
        """Add entries and set the status while ``owner`` holds the saga."""
        _no_transaction(transaction)
        sagas = self._sagas
        with sagas.lock:
            row = sagas.rows.get(saga_id)
            if row is None or row.owner != owner:
                return None
            now = self._now()
            history = sagas.entries[saga_id]
            _check_sequence(saga_id, history, entries)
            history.extend(_stamp(entry, now) for entry in entries)
            sagas.rows[saga_id] = dataclasses.replace(
                row,
                status=status,
                reason=reason,
                updated_at=now,
                owner=None if release else owner,
                lease_until=None if release else now + lease,
            )
            return Signals(
                row.cancel_requested, row.deadline_at is not None and row.deadline_at <= now
            )

    def claim(
        self,
        owner: str,
        lease: float,
        *,
        names: Collection[str] | None = None,
        saga_id: str | None = None,
        ignore_leases: bool = False,
    ) -> SagaRecord | None:
        """Take the lease of one unfinished saga nobody holds (oldest update first)."""
        sagas = self._sagas
        with sagas.lock:
            now = self._now()
            if saga_id is not None:
                row = sagas.rows.get(saga_id)
                candidates = [] if row is None else [row]
            else:
                candidates = sorted(sagas.rows.values(), key=lambda row: row.updated_at)
            for row in candidates:
                if row.status not in UNFINISHED or (names is not None and row.name not in names):
                    continue
                if (
                    not ignore_leases
                    and row.owner is not None
                    and row.lease_until is not None
                    and row.lease_until > now
                ):
                    continue
                claimed = dataclasses.replace(row, owner=owner, lease_until=now + lease)
                sagas.rows[row.id] = claimed
                return dataclasses.replace(
                    claimed,
                    entries=tuple(sagas.entries[row.id]),
                    deadline_passed=row.deadline_at is not None and row.deadline_at <= now,
                )
            return None

    def release(self, saga_id: str, owner: str) -> None:
        """Drop ``owner``'s lease on the saga, if it holds it."""
        sagas = self._sagas
        with sagas.lock:
            row = sagas.rows.get(saga_id)
            if row is not None and row.owner == owner:
                sagas.rows[saga_id] = dataclasses.replace(row, owner=None, lease_until=None)

    def load(self, saga_id: str) -> SagaRecord | None:
        """The saga and its history."""
        sagas = self._sagas
        with sagas.lock:
            row = sagas.rows.get(saga_id)
            if row is None:
                return None
            now = self._now()
            return dataclasses.replace(
                row,
                entries=tuple(sagas.entries[saga_id]),
                deadline_passed=row.deadline_at is not None and row.deadline_at <= now,
            )

    def list(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Sagas without their history, most recently updated first."""
        sagas = self._sagas
        with sagas.lock:
            rows = [
                row
                for row in sagas.rows.values()
                if (status is None or row.status in status) and (name is None or row.name == name)
            ]
        rows.sort(key=lambda row: (row.updated_at, row.id), reverse=True)
        return rows[: max(0, limit)]

    def request_cancel(self, saga_id: str) -> SagaStatus | None:
        """Flag a running saga for cancellation; its status, or ``None`` if unknown."""
        sagas = self._sagas
        with sagas.lock:
            row = sagas.rows.get(saga_id)
            if row is None:
                return None
            if row.status is SagaStatus.RUNNING:
                sagas.rows[saga_id] = dataclasses.replace(row, cancel_requested=True)
            return row.status

    def transition(
        self,
        saga_id: str,
        *,
        expected: SagaStatus,
        status: SagaStatus,
        reason: str | None,
        entries: Sequence[NewEntry],
    ) -> bool:
        """Move an unowned saga from ``expected`` to ``status``."""
        sagas = self._sagas
        with sagas.lock:
            row = sagas.rows.get(saga_id)
            if row is None or row.status is not expected or row.owner is not None:
                return False
            now = self._now()
            history = sagas.entries[saga_id]
            _check_sequence(saga_id, history, entries)
            history.extend(_stamp(entry, now) for entry in entries)
            sagas.rows[saga_id] = dataclasses.replace(
                row, status=status, reason=reason, updated_at=now
            )
            return True

    def clear(self) -> None:
        """Forget every saga (tests)."""
        with self._sagas.lock:
            self._sagas.rows.clear()
            self._sagas.entries.clear()

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemorySagaLog(sagas={len(self._sagas.rows)})"


def _stamp(entry: NewEntry, now: float) -> SagaEntry:
    return SagaEntry(entry.seq, entry.kind, entry.step, entry.data, now)


def _check_sequence(saga_id: str, history: list[SagaEntry], entries: Sequence[NewEntry]) -> None:
    """Refuse entries that would reuse a position (two writers on one saga: a bug)."""
    expected = history[-1].seq + 1 if history else 0
    for offset, entry in enumerate(entries):
        if entry.seq != expected + offset:
            raise _sequence_error(saga_id, entry.seq, expected + offset)


def _sequence_error(saga_id: str, got: int, expected: int) -> Exception:
    from seawall.errors import EngineError

    return EngineError(
        f"saga {saga_id!r}: history entry {got} written where {expected} was due; two "
        "writers raced on one saga"
    )


def _no_transaction(transaction: Any) -> None:
    if transaction is not None:
        raise ConfigurationError(
            "the memory saga log cannot join a database transaction; use a SQLite or "
            "PostgreSQL saga log for local steps and transactional starts"
        )
