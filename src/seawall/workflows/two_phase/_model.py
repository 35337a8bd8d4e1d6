"""What two-phase commit talks about: votes, decisions, participant states, log records, results."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from seawall.errors import ConfigurationError

__all__ = [
    "Decision",
    "DecisionRecord",
    "ParticipantState",
    "RecoveryResult",
    "TwoPhaseResult",
    "Vote",
    "check_name",
    "transaction_id",
]


class Vote(StrEnum):
    """A participant's answer to ``prepare``."""

    YES = "yes"
    """Prepared: the work is durable and locked, and can still be committed or aborted."""
    NO = "no"
    """Refused: nothing is prepared, and the transaction must abort."""
    READ_ONLY = "read-only"
    """Nothing to commit: the participant is left out of the second phase."""


class Decision(StrEnum):
    """The coordinator's verdict on a transaction (absent from the log means abort)."""

    COMMIT = "commit"
    ABORT = "abort"


class ParticipantState(StrEnum):
    """Where a transaction stands at one participant."""

    PREPARED = "prepared"
    """Voted yes; waiting for the decision (in doubt)."""
    COMMITTED = "committed"
    ABORTED = "aborted"
    """Rolled back, or never prepared here (the two cannot be told apart afterwards)."""


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision in a coordinator's log.

    ``participants`` are the names that must hear it; ``completed_at`` is set once every
    one of them acknowledged (then recovery has nothing left to do for it).
    """

    txid: str
    coordinator: str
    decision: Decision
    participants: tuple[str, ...]
    decided_at: float
    completed_at: float | None = None

    @property
    def completed(self) -> bool:
        """True when every participant acknowledged the decision."""
        return self.completed_at is not None


@dataclass(frozen=True, slots=True)
class TwoPhaseResult:
    """How one transaction ended.

    ``votes`` maps each participant to its vote (``None`` when prepare failed or was not
    asked); ``unacknowledged`` lists the participants that did not confirm the decision
    in time: ``recover()`` delivers it to them later (the outcome is already fixed).
    """

    txid: str
    decision: Decision
    votes: Mapping[str, Vote | None] = field(default_factory=dict)
    reason: str | None = None
    unacknowledged: tuple[str, ...] = ()

    @property
    def committed(self) -> bool:
        """True when the transaction committed."""
        return self.decision is Decision.COMMIT


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """What ``recover()`` did for one in-doubt transaction."""

    txid: str
    decision: Decision
    participants: tuple[str, ...]
    """The participants the decision was delivered to."""
    unacknowledged: tuple[str, ...] = ()
    """Those that could not be reached (a later ``recover()`` tries again)."""


_NAME: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,60}$")
_KEY: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")


def check_name(value: object, what: str) -> str:
    """A coordinator or participant name: 1-60 letters, digits, ``_``, ``.`` or ``-``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"{what}={value!r} is invalid: use 1 to 60 ASCII letters, digits, '_', '.' or '-' "
            "(names go into prepared-transaction ids)"
        )
    return value


def transaction_id(coordinator: str, key: object) -> str:
    """The global transaction id ``"<coordinator>:<key>"`` participants and the log see."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ConfigurationError(
            f"key={key!r} is invalid: use 1 to 100 ASCII letters, digits, '_', '.', ':' or '-'"
        )
    return f"{coordinator}:{key}"
