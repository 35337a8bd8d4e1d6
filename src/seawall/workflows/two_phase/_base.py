"""What the sync and async two-phase coordinators share: configuration, events, recovery plans."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.resilience._backoff import Wait, exponential
from seawall.workflows.two_phase._core import TwoPhaseDriver
from seawall.workflows.two_phase._errors import TransactionAbortedError
from seawall.workflows.two_phase._events import (
    TwoPhaseAcknowledged,
    TwoPhaseDecided,
    TwoPhaseDeliveryFailed,
    TwoPhaseVoted,
)
from seawall.workflows.two_phase._log import DecisionLog, open_decision_log
from seawall.workflows.two_phase._model import (
    Decision,
    DecisionRecord,
    TwoPhaseResult,
    Vote,
    check_name,
    transaction_id,
)
from seawall.workflows.two_phase._participant import TwoPhaseParticipant

if TYPE_CHECKING:
    from seawall.engines._base import Engine

__all__ = ["DEFAULT_DELIVERY_TIMEOUT", "CoordinatorBase", "describe", "resolve_in_doubt"]

DEFAULT_DELIVERY_TIMEOUT: Final = 30.0


def describe(exception: BaseException) -> str:
    return f"{type(exception).__name__}: {exception}"


class CoordinatorBase:
    """Configuration, participants, events and result handling of both flavours."""

    def __init__(
        self,
        log: DecisionLog | Engine | str,
        participants: Iterable[TwoPhaseParticipant],
        *,
        name: str = "coordinator",
        clock: Clock = SYSTEM_CLOCK,
        retry_wait: Wait | None = None,
        delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT,
    ) -> None:
        if not isinstance(clock, Clock):
            raise ConfigurationError(f"clock={clock!r} is not a seawall.clock.Clock")
        if retry_wait is not None and not isinstance(retry_wait, Wait):
            raise ConfigurationError(
                f"retry_wait={retry_wait!r} is not a wait strategy; pass e.g. "
                "seawall.resilience.exponential(0.05, cap=2.0)"
            )
        if (
            isinstance(delivery_timeout, bool)
            or not isinstance(delivery_timeout, int | float)
            or not 0 <= delivery_timeout < 1e9
        ):
            raise ConfigurationError(
                f"delivery_timeout={delivery_timeout!r} is invalid: pass seconds >= 0 (how long "
                "run() retries the second phase before leaving it to recover())"
            )
        self.name = check_name(name, "name")
        self.log: DecisionLog = open_decision_log(log)
        self.clock = clock
        self.retry_wait: Wait = retry_wait or exponential(0.05, cap=2.0, jitter="full")
        self.delivery_timeout = float(delivery_timeout)
        self.events = EventHub(parent=hub)
        self._participants: dict[str, TwoPhaseParticipant] = {}
        for participant in participants:
            if not isinstance(participant, TwoPhaseParticipant):
                raise ConfigurationError(
                    f"{participant!r} is not a two-phase participant (it needs name, prepare, "
                    "commit, abort, status and in_doubt)"
                )
            check_name(participant.name, "participant name")
            if participant.name in self._participants:
                raise ConfigurationError(
                    f"two participants are named {participant.name!r}; names key the decision "
                    "log, so each must be unique"
                )
            self._participants[participant.name] = participant
        if not self._participants:
            raise ConfigurationError("a coordinator needs at least one participant")

    @property
    def participants(self) -> dict[str, TwoPhaseParticipant]:
        """The participants by name."""
        return dict(self._participants)

    def outcome(self, txid: str) -> Decision | None:
        """The logged decision of ``txid`` (``None``: undecided, or aborted by presumption)."""
        return self.log.decision(txid)

    # ------------------------------------------------------------------- helpers

    def _plan(
        self, work: Mapping[Any, Any], key: str | None
    ) -> tuple[str, list[tuple[TwoPhaseParticipant, Any]]]:
        if not isinstance(work, Mapping) or not work:
            raise ConfigurationError(
                "run() takes a non-empty mapping of participant (or its name) to its work"
            )
        planned: list[tuple[TwoPhaseParticipant, Any]] = []
        for target, item in work.items():
            name = target if isinstance(target, str) else getattr(target, "name", None)
            participant = self._participants.get(name) if isinstance(name, str) else None
            if participant is None or (not isinstance(target, str) and participant is not target):
                raise ConfigurationError(
                    f"{target!r} is not a participant of coordinator {self.name!r}; known: "
                    f"{sorted(self._participants)}"
                )
            planned.append((participant, item))
        txid = transaction_id(self.name, key if key is not None else uuid.uuid4().hex)
        return txid, planned

    def _driver(self, txid: str, names: Iterable[str]) -> TwoPhaseDriver:
        return TwoPhaseDriver(
            txid, tuple(names), retry_wait=self.retry_wait, delivery_timeout=self.delivery_timeout
        )

    def _recovery_driver(
        self, txid: str, decision: Decision, names: Iterable[str]
    ) -> TwoPhaseDriver:
        return TwoPhaseDriver.delivering(
            txid,
            decision,
            tuple(names),
            retry_wait=self.retry_wait,
            delivery_timeout=self.delivery_timeout,
            recorded=True,
        )

    def _settled(self, record: DecisionRecord) -> TwoPhaseDriver:
        """A driver that finishes delivering a decision found in the log (a repeated key)."""
        return self._recovery_driver(record.txid, record.decision, record.participants)

    def _emit_vote(self, txid: str, name: str, vote: Vote | None, error: str | None) -> None:
        if self.events.active:
            self.events.emit(
                TwoPhaseVoted(self.name, txid, name, None if vote is None else vote.value, error)
            )

    def _emit_decided(self, driver: TwoPhaseDriver) -> None:
        if self.events.active and driver.decision is not None:
            self.events.emit(
                TwoPhaseDecided(self.name, driver.txid, driver.decision.value, driver.reason)
            )

    def _emit_delivery(
        self, txid: str, name: str, decision: Decision, error: str | None, attempt: int
    ) -> None:
        if not self.events.active:
            return
        if error is None:
            self.events.emit(TwoPhaseAcknowledged(self.name, txid, name, decision.value))
        else:
            self.events.emit(
                TwoPhaseDeliveryFailed(self.name, txid, name, decision.value, error, attempt)
            )

    @staticmethod
    def _raise_if_aborted(result: TwoPhaseResult, cause: BaseException | None) -> TwoPhaseResult:
        if result.decision is Decision.COMMIT:
            return result
        failed = next(
            (name for name, vote in result.votes.items() if vote in (None, Vote.NO)), None
        )
        raise TransactionAbortedError(
            result.txid, failed, result.reason or "aborted", result
        ) from cause


def resolve_in_doubt(
    participant: TwoPhaseParticipant,
    log: DecisionLog,
    *,
    prefix: str = "",
    force_abort: bool = False,
) -> dict[str, Decision | None]:
    """Settle a participant's in-doubt transactions by asking the decision log (participant side).

    Applies each recorded decision. An undecided transaction stays prepared unless
    ``force_abort``: then an abort is recorded first (a coordinator that decides later
    finds it and aborts too), so use it only once the coordinator is known to be gone
    or stuck. Returns each transaction's decision (``None``: left in doubt).
    """
    settled: dict[str, Decision | None] = {}
    for txid in participant.in_doubt(prefix):
        decision = log.decision(txid)
        if decision is None and force_abort:
            decision = log.decide(
                txid,
                Decision.ABORT,
                coordinator=txid.split(":", 1)[0],
                participants=[participant.name],
            )
        if decision is Decision.COMMIT:
            participant.commit(txid)
        elif decision is Decision.ABORT:
            participant.abort(txid)
        settled[txid] = decision
    return settled
