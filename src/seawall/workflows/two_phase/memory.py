"""In-memory decision log and participant: the test doubles, and for work that need not outlive the process.

Two :class:`~seawall.engines.memory.MemoryEngine` objects opened on the same
``memory://name`` share one decision log.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.errors import ConfigurationError
from seawall.workflows.two_phase._model import (
    Decision,
    DecisionRecord,
    ParticipantState,
    Vote,
    check_name,
)

if TYPE_CHECKING:
    from seawall.clock import Clock
    from seawall.engines._base import Engine

__all__ = ["MemoryDecisionLog", "MemoryParticipant"]


@dataclass
class _Decisions:
    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: dict[str, DecisionRecord] = field(default_factory=dict)


class MemoryDecisionLog:
    """A decision log in this process's memory (lost when it exits: tests and demos only).

    ``clock`` replaces the wall clock for ``decided_at``/``completed_at`` (tests).
    """

    kind: ClassVar[str] = "memory"
    blocking: ClassVar[bool] = False

    def __init__(self, engine: Engine | str | None = None, *, clock: Clock | None = None) -> None:
        self._now: Callable[[], float] = time.time if clock is None else clock.now
        if engine is None:
            self._decisions = _Decisions()
            return
        from seawall.engines import connect
        from seawall.engines.memory import MemoryEngine

        opened = connect(engine)
        if not isinstance(opened, MemoryEngine):
            raise ConfigurationError(
                f"MemoryDecisionLog needs a memory:// engine, got {opened!r}; use "
                "open_decision_log()"
            )
        self._decisions = opened.namespace("seawall.workflows.two_phase", _Decisions)

    def decide(
        self,
        txid: str,
        decision: Decision,
        *,
        coordinator: str,
        participants: Sequence[str],
    ) -> Decision:
        """Record ``decision`` unless one exists; return the stored one."""
        decision = Decision(decision)
        state = self._decisions
        with state.lock:
            found = state.rows.get(txid)
            if found is not None:
                return found.decision
            state.rows[txid] = DecisionRecord(
                txid, coordinator, decision, tuple(participants), self._now()
            )
            return decision

    def decision(self, txid: str) -> Decision | None:
        """The stored decision, or ``None``."""
        found = self._decisions.rows.get(txid)
        return None if found is None else found.decision

    def load(self, txid: str) -> DecisionRecord | None:
        """The record, or ``None``."""
        return self._decisions.rows.get(txid)

    def complete(self, txids: Sequence[str]) -> None:
        """Mark the decisions acknowledged by every participant."""
        state = self._decisions
        now = self._now()
        with state.lock:
            for txid in txids:
                found = state.rows.get(txid)
                if found is not None and found.completed_at is None:
                    state.rows[txid] = dataclasses.replace(found, completed_at=now)

    def pending(self, coordinator: str, *, limit: int = 1000) -> list[DecisionRecord]:
        """Unacknowledged decisions of ``coordinator``, oldest first."""
        with self._decisions.lock:
            rows = [
                record
                for record in self._decisions.rows.values()
                if record.coordinator == coordinator and record.completed_at is None
            ]
        rows.sort(key=lambda record: (record.decided_at, record.txid))
        return rows[: max(0, limit)]

    def purge(self, before: float) -> int:
        """Delete completed records decided before ``before``."""
        state = self._decisions
        with state.lock:
            old = [
                txid
                for txid, record in state.rows.items()
                if record.completed_at is not None and record.decided_at < before
            ]
            for txid in old:
                del state.rows[txid]
        return len(old)

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryDecisionLog({len(self._decisions.rows)} decisions)"


Work = Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any] | None] | None
"""A memory participant's work: the writes (key to value, ``None`` deletes), or a function
of the current data that returns them."""


class MemoryParticipant:
    """A key-value participant in memory: the test double of a resource manager.

    ``prepare(txid, work)`` computes the writes, refuses (votes ``NO``) when a key is
    locked by another prepared transaction, and holds them until ``commit`` applies
    them; ``data`` is the committed state. Work with no writes votes ``READ_ONLY``.
    """

    def __init__(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        self._name = check_name(name, "name")
        self.data: dict[str, Any] = dict(data or {})
        self._lock = threading.Lock()
        self._prepared: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, str] = {}
        self._committed: set[str] = set()
        self.pre_committed: set[str] = set()
        """Transactions told to pre-commit (three-phase commit)."""

    @property
    def name(self) -> str:
        """The participant's name."""
        return self._name

    def prepare(self, txid: str, work: Work = None) -> Vote:
        """Compute the writes, lock their keys and hold them; vote."""
        with self._lock:
            if txid in self._prepared:
                return Vote.YES
            writes = work(dict(self.data)) if callable(work) else work
            writes = dict(writes or {})
            if not writes:
                return Vote.READ_ONLY
            if any(self._locks.get(key, txid) != txid for key in writes):
                return Vote.NO
            self._prepared[txid] = writes
            for key in writes:
                self._locks[key] = txid
            return Vote.YES

    def pre_commit(self, txid: str) -> None:
        """Note the pre-commit of three-phase commit (the writes stay held)."""
        with self._lock:
            if txid in self._prepared:
                self.pre_committed.add(txid)

    def commit(self, txid: str) -> None:
        """Apply the held writes."""
        with self._lock:
            writes = self._prepared.pop(txid, None)
            if writes is None:
                return
            for key, value in writes.items():
                if value is None:
                    self.data.pop(key, None)
                else:
                    self.data[key] = value
                self._locks.pop(key, None)
            self._committed.add(txid)
            self.pre_committed.discard(txid)

    def abort(self, txid: str) -> None:
        """Drop the held writes."""
        with self._lock:
            writes = self._prepared.pop(txid, None)
            for key in writes or ():
                self._locks.pop(key, None)
            self.pre_committed.discard(txid)

    def status(self, txid: str) -> ParticipantState:
        """Prepared, committed, or aborted (also: never prepared)."""
        if txid in self._prepared:
            return ParticipantState.PREPARED
        if txid in self._committed:
            return ParticipantState.COMMITTED
        return ParticipantState.ABORTED

    def in_doubt(self, prefix: str = "") -> list[str]:
        """Prepared transactions whose id starts with ``prefix``."""
        with self._lock:
            return sorted(txid for txid in self._prepared if txid.startswith(prefix))

    def __repr__(self) -> str:
        return f"MemoryParticipant({self._name!r}, in_doubt={len(self._prepared)})"
