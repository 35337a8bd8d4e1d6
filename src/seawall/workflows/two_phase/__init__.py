"""Two-phase commit: one outcome across several databases, with a durable decision log.

::

    from seawall.workflows.two_phase import (
        PostgresParticipant, SqliteParticipant, TwoPhaseCoordinator,
    )

    orders = PostgresParticipant("postgresql://localhost/orders")
    stock = SqliteParticipant("sqlite:///stock.db")
    coordinator = TwoPhaseCoordinator("sqlite:///coordinator.db", [orders, stock],
                                      name="shop-1")
    coordinator.recover()                       # at start-up: finish what a crash left
    coordinator.run({
        orders: lambda tx: tx.execute("INSERT INTO orders (id) VALUES (%s)", [42]),
        stock: lambda staged: (staged.lock("sku-1"),
                               staged.execute("UPDATE stock SET n = n - 1 WHERE sku = ?",
                                              ["sku-1"])),
    })

See ``docs/workflows/two-phase-commit.md``.
"""

from __future__ import annotations

from seawall.workflows.two_phase._async import AsyncTwoPhaseCoordinator
from seawall.workflows.two_phase._base import resolve_in_doubt
from seawall.workflows.two_phase._coordinator import TwoPhaseCoordinator
from seawall.workflows.two_phase._errors import (
    CommitProtocolError,
    HeuristicOutcomeError,
    KeyLockedError,
    TransactionAbortedError,
)
from seawall.workflows.two_phase._events import (
    TwoPhaseAcknowledged,
    TwoPhaseCompleted,
    TwoPhaseDecided,
    TwoPhaseDeliveryFailed,
    TwoPhaseEvent,
    TwoPhaseRecovered,
    TwoPhaseStarted,
    TwoPhaseVoted,
)
from seawall.workflows.two_phase._log import DecisionLog, open_decision_log
from seawall.workflows.two_phase._model import (
    Decision,
    DecisionRecord,
    ParticipantState,
    RecoveryResult,
    TwoPhaseResult,
    Vote,
)
from seawall.workflows.two_phase._participant import TwoPhaseParticipant
from seawall.workflows.two_phase.memory import MemoryDecisionLog, MemoryParticipant
from seawall.workflows.two_phase.postgres import PostgresDecisionLog
from seawall.workflows.two_phase.postgres_participant import PostgresParticipant
from seawall.workflows.two_phase.sqlite import SqliteDecisionLog
from seawall.workflows.two_phase.sqlite_participant import SqliteParticipant, StagedWrites

__all__ = [
    "AsyncTwoPhaseCoordinator",
    "CommitProtocolError",
    "Decision",
    "DecisionLog",
    "DecisionRecord",
    "HeuristicOutcomeError",
    "KeyLockedError",
    "MemoryDecisionLog",
    "MemoryParticipant",
    "ParticipantState",
    "PostgresDecisionLog",
    "PostgresParticipant",
    "RecoveryResult",
    "SqliteDecisionLog",
    "SqliteParticipant",
    "StagedWrites",
    "TransactionAbortedError",
    "TwoPhaseAcknowledged",
    "TwoPhaseCompleted",
    "TwoPhaseCoordinator",
    "TwoPhaseDecided",
    "TwoPhaseDeliveryFailed",
    "TwoPhaseEvent",
    "TwoPhaseParticipant",
    "TwoPhaseRecovered",
    "TwoPhaseResult",
    "TwoPhaseStarted",
    "TwoPhaseVoted",
    "Vote",
    "open_decision_log",
    "resolve_in_doubt",
]
