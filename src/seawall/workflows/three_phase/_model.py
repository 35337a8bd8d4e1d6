"""What three-phase commit talks about: states, timeouts and the messages between nodes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from seawall.errors import ConfigurationError
from seawall.workflows.two_phase._participant import TwoPhaseParticipant

__all__ = [
    "Ack",
    "CanCommit",
    "DoAbort",
    "DoCommit",
    "Message",
    "PreCommit",
    "Send",
    "StateReply",
    "StateRequest",
    "ThreePhaseParticipant",
    "ThreePhaseState",
    "ThreePhaseTimeouts",
    "VoteReply",
]


class ThreePhaseState(StrEnum):
    """Where a node (coordinator or participant) stands in one transaction."""

    INITIAL = "initial"
    WAITING = "waiting"
    """Voted yes (participant) or waiting for votes (coordinator)."""
    PRE_COMMITTED = "pre-committed"
    """Everyone voted yes and this node knows it: on a timeout it commits."""
    COMMITTED = "committed"
    ABORTED = "aborted"

    @property
    def final(self) -> bool:
        """True for committed and aborted."""
        return self in (ThreePhaseState.COMMITTED, ThreePhaseState.ABORTED)


@runtime_checkable
class ThreePhaseParticipant(TwoPhaseParticipant, Protocol):
    """A two-phase participant that also hears the pre-commit (it may just note it)."""

    def pre_commit(self, txid: str) -> None:
        """Everyone voted yes; the commit follows unless the network splits."""
        ...


@dataclass(frozen=True, slots=True)
class ThreePhaseTimeouts:
    """How long each state waits before its timeout rule applies (seconds).

    ``votes``: the coordinator waits for votes, then aborts. ``pre_commit``: a
    participant that voted yes waits for the pre-commit, then aborts. ``acks``: the
    coordinator waits for pre-commit acknowledgements, then commits anyway. ``commit``:
    a pre-committed participant waits for the commit, then commits. ``termination``:
    how long a participant that timed out collects its peers' states before deciding
    (``0`` turns the termination protocol off: the timeout rule alone decides).
    """

    votes: float = 1.0
    pre_commit: float = 1.0
    acks: float = 1.0
    commit: float = 1.0
    termination: float = 0.5

    def __post_init__(self) -> None:
        for field in ("votes", "pre_commit", "acks", "commit", "termination"):
            value = getattr(self, field)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value < 1e9
            ):
                raise ConfigurationError(
                    f"ThreePhaseTimeouts({field}={value!r}) is invalid: pass seconds >= 0 "
                    "(longer than a message round trip)"
                )


@dataclass(frozen=True, slots=True)
class CanCommit:
    """Coordinator to participant: prepare and vote."""

    txid: str
    sender: str


@dataclass(frozen=True, slots=True)
class VoteReply:
    """Participant to coordinator: its vote."""

    txid: str
    sender: str
    yes: bool


@dataclass(frozen=True, slots=True)
class PreCommit:
    """Coordinator to participant: everyone voted yes."""

    txid: str
    sender: str


@dataclass(frozen=True, slots=True)
class Ack:
    """Participant to coordinator: pre-committed."""

    txid: str
    sender: str


@dataclass(frozen=True, slots=True)
class DoCommit:
    """Commit (from the coordinator, or from a participant that ran the termination protocol)."""

    txid: str
    sender: str


@dataclass(frozen=True, slots=True)
class DoAbort:
    """Abort (from the coordinator, or from a participant that ran the termination protocol)."""

    txid: str
    sender: str


@dataclass(frozen=True, slots=True)
class StateRequest:
    """Termination protocol: a participant that timed out asks a peer for its state."""

    txid: str
    sender: str


@dataclass(frozen=True, slots=True)
class StateReply:
    """Termination protocol: a peer's state."""

    txid: str
    sender: str
    state: ThreePhaseState


Message = CanCommit | VoteReply | PreCommit | Ack | DoCommit | DoAbort | StateRequest | StateReply


@dataclass(frozen=True, slots=True)
class Send:
    """An output of a state machine: deliver ``message`` to node ``to``."""

    to: str
    message: Message
