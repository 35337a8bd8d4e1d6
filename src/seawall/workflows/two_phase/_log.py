"""The decision log: where a coordinator makes its commit decisions durable.

Presumed abort: only commit decisions need a record, written before any participant
is told to commit; a transaction without a record is aborted. ``decide`` writes a
decision only if none exists and returns whichever is stored, so recovery (or an
operator, or a blocked participant that can reach the log) may record ``abort`` for an
undecided transaction and the coordinator, arriving later, finds it aborted: one
outcome, whoever writes first. Each engine implements the contract in its own module
and passes one conformance suite (``tests/conformance/test_commit_logs.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.workflows.two_phase._model import Decision, DecisionRecord

if TYPE_CHECKING:
    from seawall.engines._base import Engine

__all__ = ["DecisionLog", "open_decision_log"]


@runtime_checkable
class DecisionLog(Protocol):
    """Durable, write-once decisions of two-phase transactions."""

    kind: ClassVar[str]
    blocking: ClassVar[bool]

    def decide(
        self,
        txid: str,
        decision: Decision,
        *,
        coordinator: str,
        participants: Sequence[str],
    ) -> Decision:
        """Record ``decision`` unless one exists; return the decision stored (first one wins)."""
        ...

    def decision(self, txid: str) -> Decision | None:
        """The stored decision, or ``None`` (undecided, or aborted under presumed abort)."""
        ...

    def load(self, txid: str) -> DecisionRecord | None:
        """The whole record, or ``None``."""
        ...

    def complete(self, txids: Sequence[str]) -> None:
        """Mark decisions acknowledged by every participant (recovery skips them)."""
        ...

    def pending(self, coordinator: str, *, limit: int = 1000) -> list[DecisionRecord]:
        """Decisions of ``coordinator`` not yet acknowledged by all, oldest first."""
        ...

    def purge(self, before: float) -> int:
        """Delete completed records decided before ``before`` (Unix seconds); returns how many.

        Purged transactions read as aborted afterwards: keep records longer than any
        participant may ask about them.
        """
        ...

    def close(self) -> None:
        """Release what the log holds (not the engine, which the caller owns)."""
        ...


def open_decision_log(log: DecisionLog | Engine | str, **options: Any) -> DecisionLog:
    """The decision log for an engine or URL (memory, SQLite, PostgreSQL); a log is returned as is."""
    if isinstance(log, DecisionLog) and not isinstance(log, str):
        if options:
            raise ConfigurationError(
                f"open_decision_log() got options {sorted(options)} with a ready log; pass "
                "them when building the log"
            )
        return log
    from seawall.engines import connect

    engine = connect(log)
    if engine.kind == "memory":
        from seawall.workflows.two_phase.memory import MemoryDecisionLog

        return MemoryDecisionLog(engine, **options)
    if engine.kind == "sqlite":
        from seawall.workflows.two_phase.sqlite import SqliteDecisionLog

        return SqliteDecisionLog(engine, **options)
    if engine.kind == "postgres":
        from seawall.workflows.two_phase.postgres import PostgresDecisionLog

        return PostgresDecisionLog(engine, **options)
    raise UnsupportedEngineError(
        f"no decision log for the {engine.kind!r} engine; use memory://, sqlite:/// or "
        "postgresql://"
    )
