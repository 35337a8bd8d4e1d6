"""What both orchestrators share: registration, encoding, events, local steps, operator actions.

The sync (``_orchestrator.py``) and async (``_async.py``) orchestrators are thin
shells over a :class:`~seawall.workflows.saga._core.SagaDriver`: each run is a loop
that asks the driver what to do, does it (commit to the log, run steps, run a
compensation) and feeds the outcome back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.codec import EncodeError, JsonCodec
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.resilience._backoff import exponential
from seawall.resilience._policy import Policy
from seawall.resilience._retry import Retry
from seawall.resilience._timeout import Timeout
from seawall.workflows.saga._core import (
    Commit,
    SagaDriver,
    SagaState,
    StepOutcome,
    operator_entries,
)
from seawall.workflows.saga._definition import Saga, Step, StepContext
from seawall.workflows.saga._errors import (
    SagaFailedError,
    SagaLeaseLostError,
    SagaNotFoundError,
    SagaStateError,
)
from seawall.workflows.saga._events import (
    SagaCompensated,
    SagaCompensating,
    SagaCompleted,
    SagaLeaseLost,
    SagaResumed,
    SagaStepCompensationFailed,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStuck,
)
from seawall.workflows.saga._log import SagaLog, check_lease, new_owner
from seawall.workflows.saga._model import (
    EntryKind,
    SagaRecord,
    SagaResult,
    SagaStatus,
    Signals,
)

if TYPE_CHECKING:
    from seawall.engines._base import Engine

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_WORKERS",
    "LeaseLost",
    "NO_SIGNALS",
    "OrchestratorBase",
    "StepRunner",
    "compose_sync",
    "describe",
    "open_saga_log",
    "resolve_saga",
    "retry_saga",
]

T = TypeVar("T")
DEFAULT_LEASE: Final = 30.0
DEFAULT_WORKERS: Final = 8
NO_SIGNALS: Final = Signals()

StepRunner = Callable[[StepContext], Any]


def open_saga_log(log: SagaLog | Engine | str, **options: Any) -> SagaLog:
    """The saga log for an engine or URL (memory, SQLite, PostgreSQL); a log is returned as is.

    ``options`` go to the log's constructor (``table_prefix``, ``schema``, ``clock``, ...).
    """
    if isinstance(log, SagaLog) and not isinstance(log, str):
        if options:
            raise ConfigurationError(
                f"open_saga_log() got options {sorted(options)} with a ready log; pass them "
                "when building the log"
            )
        return log
    from seawall.engines import connect

    engine = connect(log)
    if engine.kind == "memory":
        from seawall.workflows.saga.memory import MemorySagaLog

        return MemorySagaLog(engine, **options)
    if engine.kind == "sqlite":
        from seawall.workflows.saga.sqlite import SqliteSagaLog

        return SqliteSagaLog(engine, **options)
    if engine.kind == "postgres":
        from seawall.workflows.saga.postgres import PostgresSagaLog

        return PostgresSagaLog(engine, **options)
    from seawall.errors import UnsupportedEngineError

    raise UnsupportedEngineError(
        f"no saga log for the {engine.kind!r} engine; use memory://, sqlite:/// or postgresql://"
    )


def describe(exception: BaseException) -> str:
    return f"{type(exception).__name__}: {exception}"


class LeaseLost(BaseException):
    """Raised inside a local step's transaction to roll it back when the lease is gone.

    A ``BaseException`` on purpose: a step's retry policy (which catches ``Exception``)
    must not retry it.
    """


# ------------------------------------------------------------------------- operator actions


def _operator(log: SagaLog, saga_id: str, operation: str, note: str) -> SagaRecord:
    record = log.load(saga_id)
    if record is None:
        raise SagaNotFoundError(saga_id)
    if record.status is not SagaStatus.STUCK:
        raise SagaStateError(saga_id, record.status, operation, "stuck")
    state = SagaState.fold(record.entries)
    entries, status = operator_entries(state, operation, note)
    for entry in entries:
        state.apply(entry.seq, entry.kind, entry.step, json.loads(entry.data or "null"), entry.data)
    reason = state.reason if operation == "retry" else record.reason
    if not log.transition(
        saga_id, expected=SagaStatus.STUCK, status=status, reason=reason, entries=entries
    ):
        current = log.load(saga_id)
        raise SagaStateError(
            saga_id, current.status if current else record.status, operation, "stuck"
        )
    updated = log.load(saga_id)
    if updated is None:  # pragma: no cover - a saga is never deleted
        raise SagaNotFoundError(saga_id)
    return updated


def retry_saga(log: SagaLog, saga_id: str, note: str = "") -> SagaRecord:
    """Mark a stuck saga to be tried again: the next ``resume`` continues it where it stuck.

    Raises :class:`SagaNotFoundError` or :class:`SagaStateError` (not stuck).
    """
    return _operator(log, saga_id, "retry", note)


def resolve_saga(log: SagaLog, saga_id: str, note: str = "") -> SagaRecord:
    """Settle a stuck saga by hand: it becomes ``resolved`` and is never run again."""
    return _operator(log, saga_id, "resolve", note)


# ----------------------------------------------------------------------------- shared base


class OrchestratorBase:
    """Registration, configuration, encoding and events: what both flavours share."""

    def __init__(
        self,
        log: SagaLog | Engine | str,
        sagas: Iterable[Saga] = (),
        *,
        clock: Clock = SYSTEM_CLOCK,
        lease: float = DEFAULT_LEASE,
        owner: str | None = None,
        compensation_policy: Policy | None = None,
        name: str = "sagas",
    ) -> None:
        if not isinstance(clock, Clock):
            raise ConfigurationError(f"clock={clock!r} is not a seawall.clock.Clock")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name={name!r} is invalid: pass a non-empty str")
        if owner is not None and (not isinstance(owner, str) or not owner):
            raise ConfigurationError(f"owner={owner!r} is invalid: pass a non-empty str or None")
        if compensation_policy is not None and not isinstance(compensation_policy, Policy):
            raise ConfigurationError(
                f"compensation_policy={compensation_policy!r} is not a seawall resilience policy"
            )
        self.log: SagaLog = open_saga_log(log)
        self.clock = clock
        self.lease = check_lease(lease)
        self.owner = owner or new_owner()
        self.name = name
        self.events = EventHub(parent=hub)
        self.compensation_policy: Policy = compensation_policy or Retry(
            attempts=5,
            wait=exponential(0.1, cap=5.0, jitter="full"),
            clock=clock,
            name=f"{name}.compensation",
        )
        self._codec = JsonCodec()
        self._sagas: dict[str, Saga] = {}
        for saga in sagas:
            self.register(saga)

    # ---------------------------------------------------------------- registration

    def register(self, saga: Saga) -> Saga:
        """Make ``saga`` known to this orchestrator (``run`` by name, ``resume`` its instances)."""
        if not isinstance(saga, Saga):
            raise ConfigurationError(f"register() takes a Saga, got {saga!r}")
        known = self._sagas.get(saga.name)
        if known is not None and known is not saga:
            raise ConfigurationError(
                f"another saga named {saga.name!r} is already registered; saga names key "
                "the log, so each must be unique"
            )
        for step in saga.steps.values():
            if step.local and not self.log.supports_transactions:
                raise ConfigurationError(
                    f"step {step.name!r} of saga {saga.name!r} is local, but the "
                    f"{self.log.kind} saga log cannot share a transaction with it; use a "
                    "SQLite or PostgreSQL log"
                )
            self._check_step(saga, step)
        self._prepare(saga)
        self._sagas[saga.name] = saga
        return saga

    def _check_step(self, saga: Saga, step: Step) -> None:
        """Refuse what this flavour cannot run (overridden by the sync orchestrator)."""

    def _prepare(self, saga: Saga) -> None:
        """Build the per-step runners (each flavour composes its own)."""
        raise NotImplementedError

    @property
    def sagas(self) -> dict[str, Saga]:
        """The registered sagas by name."""
        return dict(self._sagas)

    def _definition(self, saga: Saga | str) -> Saga:
        if isinstance(saga, Saga):
            known = self._sagas.get(saga.name)
            return saga if known is saga else self.register(saga)
        found = self._sagas.get(saga)
        if found is None:
            raise ConfigurationError(
                f"no saga named {saga!r} is registered; known: {sorted(self._sagas)}"
            )
        return found

    # -------------------------------------------------------------------- helpers

    def _encode_input(self, value: Any) -> tuple[str, Any]:
        """The input as JSON text and as decoded back (what steps see, before and after a crash)."""
        text = self._codec.encode(value).decode()
        return text, json.loads(text)

    def _success(self, name: str, value: Any, compensable: bool) -> StepOutcome:
        """The outcome of a step that returned ``value``; an unstorable value fails the step."""
        if value is None:
            return StepOutcome(name, "null", None)
        try:
            data = self._codec.encode(value)
        except EncodeError as exc:
            return StepOutcome(
                name,
                error=f"step {name!r} returned a value the saga log cannot store: {exc}",
                compensate=compensable,
            )
        return StepOutcome(name, data.decode(), self._codec.decode(data))

    def _new_driver(self, saga: Saga, saga_id: str, record: SagaRecord) -> SagaDriver:
        state = SagaState.fold(record.entries)
        driver = SagaDriver(saga, saga_id, json.loads(record.input), state, record.signals)
        if record.plan != saga.plan:
            driver.stuck(
                f"saga {saga.name!r} was started with steps {[list(g) for g in record.plan]} but "
                f"is now defined with {[list(g) for g in saga.plan]}; deploy the definition it "
                "started with to finish it, or resolve it by hand"
            )
        if self.events.active:
            self.events.emit(SagaResumed(self.name, saga.name, saga_id, record.status.value))
        return driver

    def _finish(self, result: SagaResult) -> SagaResult:
        if result.status is SagaStatus.COMPLETED:
            return result
        raise SagaFailedError(result)

    def _settled(self, saga: Saga, record: SagaRecord) -> SagaResult:
        """The result of a saga found already settled in the log (an idempotent ``run``)."""
        state = SagaState.fold(record.entries)
        return SagaResult(
            record.id,
            saga.name,
            record.status,
            record.results(),
            record.reason,
            state.failed_step,
        )

    def _emit_commit(self, driver: SagaDriver, commit: Commit, started: float) -> None:
        saga = driver.saga.name
        saga_id = driver.saga_id
        emit = self.events.emit
        for entry in commit.entries:
            kind = entry.kind
            if kind is EntryKind.REVERTING:
                emit(SagaCompensating(self.name, saga, saga_id, driver.state.reason or ""))
            elif kind is EntryKind.STUCK:
                info = json.loads(entry.data or "{}")
                error = str(info.get("error", ""))
                if entry.step is not None and info.get("phase") == "backward":
                    emit(SagaStepCompensationFailed(self.name, saga, saga_id, entry.step, error))
                emit(SagaStuck(self.name, saga, saga_id, entry.step, error))
            elif kind is EntryKind.FINISHED:
                if commit.status is SagaStatus.COMPLETED:
                    emit(SagaCompleted(self.name, saga, saga_id, self.clock.now() - started))
                else:
                    emit(SagaCompensated(self.name, saga, saga_id, driver.state.reason or ""))

    def _emit_outcome(self, driver: SagaDriver, outcome: StepOutcome, duration: float) -> None:
        saga = driver.saga
        if outcome.error is None:
            self.events.emit(
                SagaStepCompleted(self.name, saga.name, driver.saga_id, outcome.step, duration)
            )
        else:
            self.events.emit(
                SagaStepFailed(
                    self.name, saga.name, driver.saga_id, outcome.step, outcome.error, duration
                )
            )

    def _lease_lost(self, driver: SagaDriver) -> SagaLeaseLostError:
        if self.events.active:
            self.events.emit(SagaLeaseLost(self.name, driver.saga.name, driver.saga_id))
        return SagaLeaseLostError(driver.saga_id, self.owner)

    def _local_attempt(
        self, driver: SagaDriver, name: str, compensating: bool
    ) -> Callable[[], SagaDriver]:
        """One attempt of a local step (or compensation): the work and its log record in one transaction."""
        step = driver.saga.steps[name]
        engine = self.log.engine
        if engine is None:  # pragma: no cover - refused at registration
            raise ConfigurationError("local steps need a SQL saga log")
        function = step.compensation if compensating else step.action
        if function is None:  # pragma: no cover - the driver never compensates without one
            raise ConfigurationError(f"step {name!r} has no compensation")
        log = self.log

        def attempt() -> SagaDriver:
            trial = driver.copy()
            with engine.transaction() as transaction:
                context = replace(
                    trial.context(name, compensating=compensating), transaction=transaction
                )
                value = function(context)
                if compensating:
                    trial.compensation_finished(name, None)
                else:
                    outcome = self._success(name, value, False)
                    if outcome.error is not None:
                        raise EncodeError("json", type(value).__name__, "$", outcome.error)
                    trial.steps_finished([outcome])
                commit = trial.next_action()
                if not isinstance(
                    commit, Commit
                ):  # pragma: no cover - an outcome is always buffered
                    raise AssertionError(commit)
                signals = log.append(
                    driver.saga_id,
                    commit.entries,
                    owner=self.owner,
                    status=commit.status,
                    reason=commit.reason,
                    lease=self.lease,
                    release=commit.release,
                    transaction=transaction,
                )
                if signals is None:
                    raise LeaseLost
                trial.committed(signals)
            return trial

        return attempt


def compose_sync(
    function: StepRunner, policy: Policy | None, timeout: Timeout | None
) -> StepRunner:
    if timeout is not None:
        bounded = timeout

        def timed(context: StepContext) -> Any:
            return bounded.call(function, context)

        runner: StepRunner = timed
    else:
        runner = function
    if policy is None:
        return runner
    wrapping = policy
    inner = runner

    def guarded(context: StepContext) -> Any:
        return wrapping.call(inner, context)

    return guarded
