"""The sync two-phase coordinator: carries out a :class:`TwoPhaseDriver`'s actions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seawall.workflows.two_phase._base import CoordinatorBase, describe
from seawall.workflows.two_phase._core import (
    Complete,
    Deliver,
    Finished,
    Pause,
    Prepare,
    Record,
    TwoPhaseDriver,
)
from seawall.workflows.two_phase._events import (
    TwoPhaseCompleted,
    TwoPhaseRecovered,
    TwoPhaseStarted,
)
from seawall.workflows.two_phase._model import Decision, RecoveryResult, TwoPhaseResult, Vote
from seawall.workflows.two_phase._participant import TwoPhaseParticipant

__all__ = ["TwoPhaseCoordinator"]


class TwoPhaseCoordinator(CoordinatorBase):
    """Commits work on several participants atomically, with a durable decision log.

    ``log`` is a :class:`DecisionLog`, an engine or a URL (``"sqlite:///coordinator.db"``,
    ``"postgresql://..."``, ``"memory://"``); ``name`` identifies this coordinator in
    transaction ids (``"<name>:<key>"``) so that ``recover()`` finds its own prepared work:
    give each coordinator process its own. The second phase is retried with
    ``retry_wait`` backoff for up to ``delivery_timeout`` seconds, then left to
    ``recover()``.
    """

    def run(self, work: Mapping[Any, Any], *, key: str | None = None) -> TwoPhaseResult:
        """Prepare ``work`` on each participant (``{participant or name: work}``), then commit all or none.

        Returns the result once committed; raises :class:`TransactionAbortedError` (nothing
        committed) when a participant voted no or failed. ``key`` makes the transaction id
        ``"<name>:<key>"``: a key already decided returns (or raises) its outcome again
        without redoing the work. An engine error while recording the decision leaves the
        outcome to ``recover()``.
        """
        txid, planned = self._plan(work, key)
        if key is not None:
            found = self.log.load(txid)
            if found is not None:
                return self._raise_if_aborted(self._drive(self._settled(found), {}), None)
        driver = self._driver(txid, (participant.name for participant, _ in planned))
        if self.events.active:
            self.events.emit(TwoPhaseStarted(self.name, txid, driver.participants))
        return self._raise_if_aborted(
            *self._drive_with_cause(
                driver, dict((participant.name, item) for participant, item in planned)
            )
        )

    def recover(self) -> list[RecoveryResult]:
        """Finish every transaction of this coordinator left in doubt by a crash.

        First re-delivers the logged decisions not yet acknowledged by all; then asks
        every participant for its prepared transactions of this coordinator and settles
        each by the log: commit if a commit is recorded, else abort (recorded first, so a
        coordinator still deciding it cannot commit it afterwards).
        """
        results: list[RecoveryResult] = []
        handled: set[str] = set()
        for record in self.log.pending(self.name, limit=1_000_000):
            handled.add(record.txid)
            results.append(self._recover_one(record.txid, record.decision, record.participants))
        in_doubt: dict[str, list[str]] = {}
        prefix = f"{self.name}:"
        for name, participant in self._participants.items():
            for txid in participant.in_doubt(prefix):
                in_doubt.setdefault(txid, []).append(name)
        for txid in sorted(in_doubt):
            if txid in handled:
                continue
            names = in_doubt[txid]
            decision = self.log.decide(
                txid, Decision.ABORT, coordinator=self.name, participants=names
            )
            results.append(self._recover_one(txid, decision, tuple(names)))
        return results

    def close(self) -> None:
        """Release nothing of the participants or the log (their owners close them)."""

    def __enter__(self) -> TwoPhaseCoordinator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TwoPhaseCoordinator({self.name!r}, participants={sorted(self._participants)})"

    # ------------------------------------------------------------------ the loop

    def _recover_one(self, txid: str, decision: Decision, names: tuple[str, ...]) -> RecoveryResult:
        result = self._drive(self._recovery_driver(txid, decision, names), {})
        if self.events.active:
            self.events.emit(TwoPhaseRecovered(self.name, txid, decision.value, names))
        return RecoveryResult(txid, decision, names, result.unacknowledged)

    def _drive(self, driver: TwoPhaseDriver, work: dict[str, Any]) -> TwoPhaseResult:
        return self._drive_with_cause(driver, work)[0]

    def _drive_with_cause(
        self, driver: TwoPhaseDriver, work: dict[str, Any]
    ) -> tuple[TwoPhaseResult, BaseException | None]:
        clock = self.clock
        started = clock.now()
        cause: BaseException | None = None
        while True:
            action = driver.next_action(clock.now())
            if type(action) is Prepare:
                votes: list[tuple[str, Vote | None, str | None]] = []
                for name in action.participants:
                    vote: Vote | None
                    try:
                        vote = Vote(self._participants[name].prepare(driver.txid, work.get(name)))
                        error = None
                    except Exception as exc:
                        vote, error = None, describe(exc)
                        cause = cause or exc
                    self._emit_vote(driver.txid, name, vote, error)
                    votes.append((name, vote, error))
                    if vote is None or vote is Vote.NO:
                        break
                driver.voted(votes)
                if driver.decision is not None:
                    self._emit_decided(driver)
            elif type(action) is Record:
                stored = self.log.decide(
                    driver.txid,
                    action.decision,
                    coordinator=self.name,
                    participants=action.participants,
                )
                driver.recorded(stored)
                self._emit_decided(driver)
            elif type(action) is Deliver:
                outcomes = [
                    (name, self._deliver(driver.txid, name, action.decision, action.attempt))
                    for name in action.participants
                ]
                driver.delivered(outcomes)
            elif type(action) is Pause:
                clock.sleep(action.seconds)
            elif type(action) is Complete:
                self.log.complete([driver.txid])
                driver.completed()
            elif type(action) is Finished:
                if self.events.active and not action.result.unacknowledged:
                    self.events.emit(
                        TwoPhaseCompleted(
                            self.name,
                            driver.txid,
                            action.result.decision.value,
                            clock.now() - started,
                        )
                    )
                return action.result, cause

    def _deliver(self, txid: str, name: str, decision: Decision, attempt: int) -> str | None:
        participant: TwoPhaseParticipant | None = self._participants.get(name)
        if participant is None:
            error: str | None = f"participant {name!r} is not registered with this coordinator"
        else:
            try:
                if decision is Decision.COMMIT:
                    participant.commit(txid)
                else:
                    participant.abort(txid)
                error = None
            except Exception as exc:
                error = describe(exc)
        self._emit_delivery(txid, name, decision, error, attempt)
        return error
