"""The sans-I/O state machines of three-phase commit: one coordinator, many participants.

Each machine is fed messages and the time (``receive``, ``tick``) and returns outputs
for its runner: :class:`~seawall.workflows.three_phase.Send` a message,
:class:`Apply` an action to the local resource, and :class:`Transition` records (for
events). ``deadline`` is when ``tick`` next has something to do. Nothing here touches
a clock, a socket or a resource.

Rules (Skeen's protocol with a decentralised termination protocol):

* Coordinator: ``CanCommit`` to all, then waits ``votes`` seconds: one no or a missing
  vote aborts; all yes sends ``PreCommit`` and waits ``acks`` seconds for the
  acknowledgements, then sends ``DoCommit`` (also when some are missing: they were
  pre-committed or will learn the outcome from their peers).
* Participant: votes, then waits (``WAITING``) for the pre-commit; on a timeout there it
  aborts. Pre-committed, it waits for the commit; on a timeout there it commits. That is
  why a coordinator crash never blocks it.
* Termination protocol: before applying a timeout rule, the participant asks its peers
  for their states for ``termination`` seconds and decides: any committed, commit; any
  aborted, abort; any pre-committed (itself included), commit; otherwise abort. It tells
  the peers that answered. With every peer reachable, all reach the same outcome.

Under a network partition each side decides from what it can see: a side holding a
pre-committed participant commits while a side of waiting ones aborts. Three-phase
commit trades the blocking of two-phase commit for this split-brain risk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from seawall.workflows.three_phase._model import (
    Ack,
    CanCommit,
    DoAbort,
    DoCommit,
    Message,
    PreCommit,
    Send,
    StateReply,
    StateRequest,
    ThreePhaseState,
    ThreePhaseTimeouts,
    VoteReply,
)

__all__ = ["Apply", "CoordinatorMachine", "Output", "ParticipantMachine", "Transition"]

INITIAL = ThreePhaseState.INITIAL
WAITING = ThreePhaseState.WAITING
PRE_COMMITTED = ThreePhaseState.PRE_COMMITTED
COMMITTED = ThreePhaseState.COMMITTED
ABORTED = ThreePhaseState.ABORTED


@dataclass(frozen=True, slots=True)
class Apply:
    """Carry out ``action`` on the local resource (``prepare``: then report the vote)."""

    action: Literal["prepare", "pre_commit", "commit", "abort"]


@dataclass(frozen=True, slots=True)
class Transition:
    """A node moved from ``previous`` to ``state`` because of ``reason``."""

    node: str
    previous: ThreePhaseState
    state: ThreePhaseState
    reason: str


Output = Send | Apply | Transition


class CoordinatorMachine:
    """The coordinator of one transaction."""

    __slots__ = ("acks", "deadline", "name", "participants", "state", "timeouts", "txid", "votes")

    def __init__(
        self, name: str, txid: str, participants: Sequence[str], timeouts: ThreePhaseTimeouts
    ) -> None:
        self.name = name
        self.txid = txid
        self.participants = tuple(participants)
        self.timeouts = timeouts
        self.state = INITIAL
        self.votes: dict[str, bool] = {}
        self.acks: set[str] = set()
        self.deadline: float | None = None

    def start(self, now: float) -> list[Output]:
        """Ask every participant to vote."""
        self.deadline = now + self.timeouts.votes
        return [
            self._move(WAITING, "asked for votes"),
            *self._broadcast(CanCommit(self.txid, self.name)),
        ]

    def receive(self, now: float, message: Message) -> list[Output]:
        """Handle a participant's reply."""
        if isinstance(message, VoteReply) and self.state is WAITING:
            self.votes[message.sender] = message.yes
            if not message.yes:
                return self._abort(f"{message.sender} voted no")
            if len(self.votes) == len(self.participants):
                self.deadline = now + self.timeouts.acks
                return [
                    self._move(PRE_COMMITTED, "every participant voted yes"),
                    *self._broadcast(PreCommit(self.txid, self.name)),
                ]
        elif isinstance(message, Ack) and self.state is PRE_COMMITTED:
            self.acks.add(message.sender)
            if len(self.acks) == len(self.participants):
                return self._commit("every participant pre-committed")
        return []

    def tick(self, now: float) -> list[Output]:
        """Apply the timeout rule of the current state once its deadline has passed."""
        if self.deadline is None or now < self.deadline:
            return []
        if self.state is WAITING:
            missing = sorted(set(self.participants) - set(self.votes))
            return self._abort(f"no vote from {missing} in time")
        if self.state is PRE_COMMITTED:
            missing = sorted(set(self.participants) - self.acks)
            return self._commit(f"no pre-commit acknowledgement from {missing} in time")
        return []

    def _abort(self, reason: str) -> list[Output]:
        self.deadline = None
        return [self._move(ABORTED, reason), *self._broadcast(DoAbort(self.txid, self.name))]

    def _commit(self, reason: str) -> list[Output]:
        self.deadline = None
        return [self._move(COMMITTED, reason), *self._broadcast(DoCommit(self.txid, self.name))]

    def _broadcast(self, message: Message) -> list[Output]:
        return [Send(name, message) for name in self.participants]

    def _move(self, state: ThreePhaseState, reason: str) -> Transition:
        previous, self.state = self.state, state
        return Transition(self.name, previous, state, reason)


class ParticipantMachine:
    """One participant of one transaction; ``peers`` are the other participants."""

    __slots__ = (
        "coordinator",
        "deadline",
        "name",
        "peers",
        "replies",
        "state",
        "terminating",
        "timeouts",
        "txid",
    )

    def __init__(
        self,
        name: str,
        txid: str,
        coordinator: str,
        peers: Sequence[str],
        timeouts: ThreePhaseTimeouts,
    ) -> None:
        self.name = name
        self.txid = txid
        self.coordinator = coordinator
        self.peers = tuple(peer for peer in peers if peer != name)
        self.timeouts = timeouts
        self.state = INITIAL
        self.deadline: float | None = None
        self.terminating = False
        self.replies: dict[str, ThreePhaseState] = {}

    def receive(self, now: float, message: Message) -> list[Output]:
        """Handle a message from the coordinator or a peer."""
        state = self.state
        if isinstance(message, StateRequest):
            return [Send(message.sender, StateReply(self.txid, self.name, state))]
        if state.final:
            return []
        if isinstance(message, CanCommit) and state is INITIAL:
            return [Apply("prepare")]
        if isinstance(message, PreCommit) and state is WAITING:
            self.deadline = now + self.timeouts.commit
            self.terminating = False
            return [
                self._move(PRE_COMMITTED, "pre-commit received"),
                Apply("pre_commit"),
                Send(message.sender, Ack(self.txid, self.name)),
            ]
        if isinstance(message, DoCommit) and state in (WAITING, PRE_COMMITTED):
            return self._finish(COMMITTED, f"commit from {message.sender}")
        if isinstance(message, DoAbort):
            return self._finish(ABORTED, f"abort from {message.sender}")
        if isinstance(message, StateReply) and self.terminating:
            self.replies[message.sender] = message.state
            if len(self.replies) == len(self.peers):
                return self._terminate("every peer answered")
        return []

    def voted(self, now: float, yes: bool) -> list[Output]:
        """The resource's vote on ``prepare``: send it and wait for the pre-commit (or abort)."""
        if self.state is not INITIAL:
            return []
        reply = Send(self.coordinator, VoteReply(self.txid, self.name, yes))
        if not yes:
            return [self._move(ABORTED, "voted no"), Apply("abort"), reply]
        self.deadline = now + self.timeouts.pre_commit
        return [self._move(WAITING, "voted yes"), reply]

    def tick(self, now: float) -> list[Output]:
        """Apply the timeout rule (or start the termination protocol) once the deadline passed."""
        if self.deadline is None or now < self.deadline or self.state.final:
            return []
        if self.terminating:
            return self._terminate("termination timed out")
        if self.peers and self.timeouts.termination > 0:
            self.terminating = True
            self.replies = {}
            self.deadline = now + self.timeouts.termination
            return [Send(peer, StateRequest(self.txid, self.name)) for peer in self.peers]
        return self._timeout_rule()

    def _timeout_rule(self) -> list[Output]:
        if self.state is PRE_COMMITTED:
            return self._finish(COMMITTED, "timed out pre-committed")
        return self._finish(ABORTED, "timed out waiting for the pre-commit")

    def _terminate(self, why: str) -> list[Output]:
        states = set(self.replies.values()) | {self.state}
        if COMMITTED in states:
            outcome, reason = COMMITTED, "a peer committed"
        elif ABORTED in states:
            outcome, reason = ABORTED, "a peer aborted"
        elif PRE_COMMITTED in states:
            outcome, reason = COMMITTED, "a pre-committed participant was reachable"
        else:
            outcome, reason = ABORTED, "no reachable participant was pre-committed"
        message: Message = (
            DoCommit(self.txid, self.name)
            if outcome is COMMITTED
            else DoAbort(self.txid, self.name)
        )
        outputs = self._finish(outcome, f"termination ({why}): {reason}")
        outputs.extend(Send(peer, message) for peer in sorted(self.replies))
        return outputs

    def _finish(self, state: ThreePhaseState, reason: str) -> list[Output]:
        self.deadline = None
        self.terminating = False
        action: Literal["commit", "abort"] = "commit" if state is COMMITTED else "abort"
        return [self._move(state, reason), Apply(action)]

    def _move(self, state: ThreePhaseState, reason: str) -> Transition:
        previous, self.state = self.state, state
        return Transition(self.name, previous, state, reason)
