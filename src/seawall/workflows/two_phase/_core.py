"""The sans-I/O heart of two-phase commit: one transaction's decisions as a loop of actions.

:class:`TwoPhaseDriver` answers "prepare these participants", "record this decision",
"deliver it to these", "wait", "mark it complete" or "finished", and is fed each
outcome. The sync and async coordinators only carry those answers out; nothing here
touches a clock, a thread or a database (``now`` is passed in).

Rules (presumed abort):

* Every participant votes; one ``NO`` or failed ``prepare`` aborts. An abort is not
  logged: the participants that may hold prepared work (yes voters and failed ones)
  are told to abort, and recovery aborts whatever is left since no record means abort.
* All ``YES`` (or read-only): the commit is recorded in the log *before* any
  participant hears it. The log returns the decision it holds, which may be an abort
  that recovery or an operator wrote first; the driver obeys the log.
* The decision is delivered to every participant that voted yes (read-only voters are
  left out) and retried with backoff until each one acknowledges or the delivery
  deadline passes; the rest is left to ``recover()``. A committed transaction whose
  participants all acknowledged is marked complete in the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from seawall.resilience._backoff import Wait
from seawall.workflows.two_phase._model import Decision, TwoPhaseResult, Vote

__all__ = [
    "Action",
    "Complete",
    "Deliver",
    "Finished",
    "Pause",
    "Prepare",
    "Record",
    "TwoPhaseDriver",
]


@dataclass(frozen=True, slots=True)
class Prepare:
    """Ask these participants to prepare and report each vote (stop at the first refusal)."""

    participants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Record:
    """Write ``decision`` to the log (insert if absent) and report the decision stored."""

    decision: Decision
    participants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Tell these participants the decision and report each acknowledgement or error."""

    decision: Decision
    participants: tuple[str, ...]
    attempt: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` before delivering again."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Complete:
    """Mark the decision acknowledged by every participant in the log."""


@dataclass(frozen=True, slots=True)
class Finished:
    """Nothing more to do in this run."""

    result: TwoPhaseResult


Action = Prepare | Record | Deliver | Pause | Complete | Finished

_PREPARING: Final = "preparing"
_RECORDING: Final = "recording"
_DELIVERING: Final = "delivering"
_COMPLETING: Final = "completing"
_DONE: Final = "done"


class TwoPhaseDriver:
    """One transaction's protocol, as actions for a runner to carry out.

    Call :meth:`next_action` with the current time and do what it says; feed outcomes
    back with :meth:`voted`, :meth:`recorded`, :meth:`delivered` and :meth:`completed`.
    """

    __slots__ = (
        "_attempt",
        "_deadline",
        "_delivery_timeout",
        "_paused",
        "_phase",
        "_previous_wait",
        "_recorded",
        "acknowledged",
        "decision",
        "failed_participant",
        "participants",
        "reason",
        "retry_wait",
        "txid",
        "votes",
    )

    def __init__(
        self,
        txid: str,
        participants: Sequence[str],
        *,
        retry_wait: Wait,
        delivery_timeout: float,
    ) -> None:
        self.txid = txid
        self.participants = tuple(participants)
        self.retry_wait = retry_wait
        self._delivery_timeout = delivery_timeout
        self.votes: dict[str, Vote | None] = {}
        self.decision: Decision | None = None
        self.reason: str | None = None
        self.failed_participant: str | None = None
        self.acknowledged: set[str] = set()
        self._phase = _PREPARING
        self._attempt = 0
        self._previous_wait = 0.0
        self._deadline: float | None = None
        self._paused = False
        self._recorded = False

    @classmethod
    def delivering(
        cls,
        txid: str,
        decision: Decision,
        participants: Sequence[str],
        *,
        retry_wait: Wait,
        delivery_timeout: float,
        recorded: bool,
    ) -> TwoPhaseDriver:
        """A driver that only delivers a known decision (recovery); ``recorded``: it is in the log."""
        driver = cls(txid, participants, retry_wait=retry_wait, delivery_timeout=delivery_timeout)
        driver.decision = decision
        if decision is Decision.ABORT:
            driver.reason = "an abort is recorded in the decision log"
        driver._recorded = recorded
        driver.votes = dict.fromkeys(driver.participants, Vote.YES)
        driver._phase = _DELIVERING
        return driver

    # ---------------------------------------------------------------------- the loop

    def next_action(self, now: float) -> Action:
        """What the runner must do now."""
        phase = self._phase
        if phase == _PREPARING:
            return Prepare(self.participants)
        if phase == _RECORDING:
            return Record(Decision.COMMIT, self._must_hear())
        if phase == _DELIVERING:
            remaining = tuple(n for n in self._must_hear() if n not in self.acknowledged)
            if not remaining:
                if self._recorded:
                    self._phase = _COMPLETING
                    return Complete()
                return self._finish()
            if self._deadline is None:
                self._deadline = now + self._delivery_timeout
            elif self._attempt > 0 and not self._paused:
                if now >= self._deadline:
                    return self._finish()
                self._paused = True
                wait = self.retry_wait.next_wait(self._attempt, self._previous_wait)
                self._previous_wait = wait
                return Pause(min(wait, max(0.0, self._deadline - now)))
            self._paused = False
            self._attempt += 1
            decision = self.decision
            if decision is None:  # pragma: no cover - set before delivering
                raise AssertionError("no decision to deliver")
            return Deliver(decision, remaining, self._attempt)
        if phase == _COMPLETING:
            return self._finish()
        return self._finish()

    def voted(self, votes: Iterable[tuple[str, Vote | None, str | None]]) -> None:
        """Feed the votes of the participants asked: ``(name, vote, error)`` each.

        Participants missing from ``votes`` were not asked (the runner stopped at a
        refusal). A ``None`` vote is a failed prepare, which aborts like ``NO``.
        """
        refused = False
        for name, vote, error in votes:
            self.votes[name] = vote
            if vote is None or vote is Vote.NO:
                if not refused and self.failed_participant is None:
                    self.failed_participant = name
                    self.reason = error or "voted no"
                refused = True
        if refused or len(self.votes) < len(self.participants):
            if self.reason is None:
                self.reason = "not every participant voted"
            self.decision = Decision.ABORT
            self._phase = _DELIVERING
        elif all(vote is Vote.READ_ONLY for vote in self.votes.values()):
            self.decision = Decision.COMMIT
            self._phase = _DELIVERING  # nothing to deliver, nothing to record
        else:
            self._phase = _RECORDING

    def recorded(self, stored: Decision) -> None:
        """The log holds ``stored`` (the commit, or an abort written before it)."""
        self.decision = stored
        self._recorded = True
        if stored is Decision.ABORT:
            self.reason = (
                "an abort was recorded in the decision log first (by recovery or an operator)"
            )
        self._phase = _DELIVERING

    def delivered(self, outcomes: Iterable[tuple[str, str | None]]) -> None:
        """Feed ``(name, error)`` per participant told (``error`` is ``None`` when it acknowledged)."""
        for name, error in outcomes:
            if error is None:
                self.acknowledged.add(name)

    def completed(self) -> None:
        """The log marked the decision complete."""
        self._phase = _DONE

    # ------------------------------------------------------------------- internals

    def _must_hear(self) -> tuple[str, ...]:
        """Who must hear the decision: yes voters, and failed ones when aborting."""
        if self.decision is Decision.ABORT:
            return tuple(
                name
                for name in self.participants
                if name in self.votes and self.votes[name] not in (Vote.NO, Vote.READ_ONLY)
            )
        return tuple(name for name in self.participants if self.votes.get(name) is Vote.YES)

    def _finish(self) -> Finished:
        self._phase = _DONE
        decision = self.decision or Decision.ABORT
        unacknowledged = tuple(n for n in self._must_hear() if n not in self.acknowledged)
        return Finished(
            TwoPhaseResult(
                self.txid,
                decision,
                MappingProxyType({name: self.votes.get(name) for name in self.participants}),
                self.reason if decision is Decision.ABORT else None,
                unacknowledged,
            )
        )
