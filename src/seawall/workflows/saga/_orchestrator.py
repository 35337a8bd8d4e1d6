"""The sync orchestrator: runs sagas of plain functions, parallel groups on a thread pool."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.resilience._policy import Policy
from seawall.resilience._timeout import Timeout
from seawall.workflows.saga._core import (
    Commit,
    Done,
    RunCompensation,
    RunSteps,
    SagaDriver,
    StepOutcome,
)
from seawall.workflows.saga._definition import Saga, Step
from seawall.workflows.saga._errors import (
    SagaBusyError,
    SagaLeaseLostError,
    SagaNotFoundError,
    SagaStateError,
)
from seawall.workflows.saga._events import (
    SagaCancelRequested,
    SagaResolved,
    SagaRetried,
    SagaStarted,
    SagaStepCompensated,
    SagaStepStarted,
)
from seawall.workflows.saga._log import SagaLog
from seawall.workflows.saga._model import (
    SagaRecord,
    SagaResult,
    SagaStatus,
)

if TYPE_CHECKING:
    from seawall.engines._base import Engine

from seawall.workflows.saga._base import (
    DEFAULT_LEASE,
    DEFAULT_WORKERS,
    NO_SIGNALS,
    LeaseLost,
    OrchestratorBase,
    StepRunner,
    compose_sync,
    describe,
    resolve_saga,
    retry_saga,
)

__all__ = ["SagaOrchestrator"]


class SagaOrchestrator(OrchestratorBase):
    """Runs sagas of plain (sync) functions durably: every boundary is in the saga log first.

    ``log`` is a :class:`SagaLog`, an engine or a URL (``"sqlite:///app.db"``,
    ``"postgresql://..."``, ``"memory://"``). ``lease`` is how long a running saga
    stays this orchestrator's without a commit (longer than the longest step);
    ``owner`` names this orchestrator in the log; ``compensation_policy`` is the
    default for steps without one (5 attempts, exponential backoff); parallel groups
    run on up to ``max_workers`` threads.
    """

    def __init__(
        self,
        log: SagaLog | Engine | str,
        sagas: Iterable[Saga] = (),
        *,
        clock: Clock = SYSTEM_CLOCK,
        lease: float = DEFAULT_LEASE,
        owner: str | None = None,
        compensation_policy: Policy | None = None,
        max_workers: int = DEFAULT_WORKERS,
        name: str = "sagas",
    ) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(f"max_workers={max_workers!r} is invalid: pass an int >= 1")
        self.max_workers = max_workers
        self._actions: dict[tuple[str, str], StepRunner] = {}
        self._compensations: dict[tuple[str, str], StepRunner] = {}
        self._pool: ThreadPoolExecutor | None = None
        super().__init__(
            log,
            sagas,
            clock=clock,
            lease=lease,
            owner=owner,
            compensation_policy=compensation_policy,
            name=name,
        )

    def _check_step(self, saga: Saga, step: Step) -> None:
        if step.action_is_async or step.compensation_is_async:
            raise ConfigurationError(
                f"step {step.name!r} of saga {saga.name!r} is a coroutine function; run the "
                "saga with AsyncSagaOrchestrator, which runs sync and async steps"
            )

    def _prepare(self, saga: Saga) -> None:
        for step in saga.steps.values():
            timeout = (
                Timeout(step.timeout, clock=self.clock, name=f"{saga.name}.{step.name}")
                if step.timeout is not None
                else None
            )
            key = (saga.name, step.name)
            self._actions[key] = compose_sync(step.action, step.policy, timeout)
            if step.compensation is not None:
                self._compensations[key] = compose_sync(
                    step.compensation, step.compensation_policy or self.compensation_policy, None
                )

    # ---------------------------------------------------------------- public API

    def run(self, saga: Saga | str, input: Any = None, *, saga_id: str | None = None) -> SagaResult:
        """Run a saga to its end and return its result; raise :class:`SagaFailedError` if it went back.

        ``input`` (JSON-serialisable) reaches every step as ``context.input``. With a
        ``saga_id`` that is already in the log, the call attaches to that saga: it
        returns its outcome if settled, continues it if nobody holds it, and raises
        :class:`SagaBusyError` otherwise.
        """
        definition = self._definition(saga)
        saga_id = saga_id or uuid.uuid4().hex
        text, value = self._encode_input(input)
        driver, entries = SagaDriver.starting(definition, saga_id, value)
        if not self.log.create(
            saga_id,
            definition.name,
            definition.plan,
            text,
            deadline=definition.deadline,
            owner=self.owner,
            lease=self.lease,
            entries=entries,
        ):
            return self._finish(self._attach(definition, saga_id))
        driver.committed(NO_SIGNALS)
        if self.events.active:
            self.events.emit(SagaStarted(self.name, definition.name, saga_id))
        return self._finish(self._drive(driver))

    def start(
        self,
        saga: Saga | str,
        input: Any = None,
        *,
        saga_id: str | None = None,
        transaction: Any = None,
    ) -> str:
        """Record a saga to be run by the next ``resume`` (of any orchestrator); returns its id.

        With ``transaction`` (SQL logs) the saga is recorded in the caller's transaction,
        so it exists if and only if the caller's business writes commit.
        """
        definition = self._definition(saga)
        saga_id = saga_id or uuid.uuid4().hex
        text, _ = self._encode_input(input)
        if not self.log.create(
            saga_id,
            definition.name,
            definition.plan,
            text,
            deadline=definition.deadline,
            owner=None,
            lease=self.lease,
            entries=(),
            transaction=transaction,
        ):
            raise SagaStateError(saga_id, SagaStatus.RUNNING, "start", "new")
        return saga_id

    def resume(self, *, ignore_leases: bool = False, limit: int | None = None) -> list[SagaResult]:
        """Continue every unfinished saga of the registered definitions; returns their results.

        Takes one saga at a time from the log (never one another orchestrator holds,
        unless ``ignore_leases``: only when you know its owner is dead), so several
        processes can resume side by side. Sagas that end compensated or stuck are
        returned, not raised.
        """
        results: list[SagaResult] = []
        names = list(self._sagas)
        seen: set[str] = set()
        while limit is None or len(results) < limit:
            record = self.log.claim(
                self.owner, self.lease, names=names, ignore_leases=ignore_leases
            )
            if record is None:
                break
            if record.id in seen:  # still unfinished after our turn: leave it for later
                self.log.release(record.id, self.owner)
                break
            seen.add(record.id)
            try:
                results.append(self._continue(record))
            except SagaLeaseLostError:
                continue
        return results

    def cancel(self, saga_id: str) -> bool:
        """Ask a running saga to turn back at its next step boundary (any process may run it).

        Returns ``False`` when the saga is not running (finished, compensating, stuck);
        a saga past its pivot ignores the request and completes.
        """
        status = self.log.request_cancel(saga_id)
        if status is None:
            raise SagaNotFoundError(saga_id)
        if status is SagaStatus.RUNNING and self.events.active:
            record = self.log.load(saga_id)
            self.events.emit(SagaCancelRequested(self.name, record.name if record else "", saga_id))
        return status is SagaStatus.RUNNING

    def retry(self, saga_id: str, note: str = "") -> SagaResult | None:
        """Try a stuck saga again; runs it here when its definition is registered.

        Returns its result, or ``None`` when it was only marked for another
        orchestrator's ``resume``.
        """
        record = retry_saga(self.log, saga_id, note)
        if self.events.active:
            self.events.emit(SagaRetried(self.name, record.name, saga_id, note))
        if record.name not in self._sagas:
            return None
        claimed = self.log.claim(self.owner, self.lease, saga_id=saga_id)
        return None if claimed is None else self._continue(claimed)

    def resolve(self, saga_id: str, note: str = "") -> SagaRecord:
        """Settle a stuck saga by hand (after fixing things outside the saga)."""
        record = resolve_saga(self.log, saga_id, note)
        if self.events.active:
            self.events.emit(SagaResolved(self.name, record.name, saga_id, note))
        return record

    def status(self, saga_id: str) -> SagaRecord:
        """The saga's status, reason, history and timings."""
        record = self.log.load(saga_id)
        if record is None:
            raise SagaNotFoundError(saga_id)
        return record

    def list(
        self,
        *,
        status: Collection[SagaStatus] | SagaStatus | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Sagas in the log, most recently updated first (without history)."""
        if isinstance(status, SagaStatus):
            status = (status,)
        return self.log.list(status=status, name=name, limit=limit)

    def close(self) -> None:
        """Stop the thread pool of parallel groups (the log stays open: its owner closes it)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> SagaOrchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SagaOrchestrator({self.log!r}, sagas={sorted(self._sagas)})"

    # ----------------------------------------------------------------- the loop

    def _attach(self, saga: Saga, saga_id: str) -> SagaResult:
        record = self.log.claim(self.owner, self.lease, saga_id=saga_id)
        if record is not None:
            if record.name != saga.name:
                self.log.release(saga_id, self.owner)
                raise ConfigurationError(
                    f"saga id {saga_id!r} belongs to saga {record.name!r}, not {saga.name!r}"
                )
            return self._continue(record)
        found = self.log.load(saga_id)
        if found is None:  # pragma: no cover - sagas are never deleted
            raise SagaNotFoundError(saga_id)
        if found.name != saga.name:
            raise ConfigurationError(
                f"saga id {saga_id!r} belongs to saga {found.name!r}, not {saga.name!r}"
            )
        if found.finished:
            return self._settled(saga, found)
        raise SagaBusyError(saga_id, found.owner, found.lease_until)

    def _continue(self, record: SagaRecord) -> SagaResult:
        saga = self._sagas[record.name]
        return self._drive(self._new_driver(saga, record.id, record))

    def _drive(self, driver: SagaDriver) -> SagaResult:
        log = self.log
        owner = self.owner
        lease = self.lease
        started = self.clock.now()
        try:
            while True:
                action = driver.next_action()
                if type(action) is Commit:
                    signals = log.append(
                        driver.saga_id,
                        action.entries,
                        owner=owner,
                        status=action.status,
                        reason=action.reason,
                        lease=lease,
                        release=action.release,
                    )
                    if signals is None:
                        raise self._lease_lost(driver)
                    if self.events.active:
                        self._emit_commit(driver, action, started)
                    driver.committed(signals)
                elif type(action) is RunSteps:
                    driver = self._run_steps(driver, action)
                elif type(action) is RunCompensation:
                    driver = self._compensate(driver, action.step)
                elif type(action) is Done:
                    return action.result
        except SagaLeaseLostError:
            raise
        except BaseException:
            # interrupted (KeyboardInterrupt, an engine error): let a resume take over at once
            with contextlib.suppress(Exception):  # the original error matters more
                log.release(driver.saga_id, owner)
            raise

    def _run_steps(self, driver: SagaDriver, action: RunSteps) -> SagaDriver:
        names = action.steps
        if len(names) == 1:
            step = driver.saga.steps[names[0]]
            if step.local:
                return self._run_local(driver, names[0], compensating=False)
            driver.steps_finished((self._run_step(driver, names[0]),))
            return driver
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix=self.name)
        futures = [self._pool.submit(self._run_step, driver, name) for name in names]
        driver.steps_finished([future.result() for future in as_completed(futures)])
        return driver

    def _run_step(self, driver: SagaDriver, name: str) -> StepOutcome:
        saga = driver.saga
        step = saga.steps[name]
        observed = self.events.active
        if observed:
            self.events.emit(SagaStepStarted(self.name, saga.name, driver.saga_id, name))
        began = self.clock.now() if observed else 0.0
        try:
            value = self._actions[(saga.name, name)](driver.context(name))
        except Exception as exc:
            outcome = StepOutcome(name, error=describe(exc), compensate=step.compensate_failed)
        else:
            outcome = self._success(name, value, step.compensation is not None)
        if observed:
            self._emit_outcome(driver, outcome, self.clock.now() - began)
        return outcome

    def _compensate(self, driver: SagaDriver, name: str) -> SagaDriver:
        saga = driver.saga
        step = saga.steps[name]
        if step.local:
            return self._run_local(driver, name, compensating=True)
        began = self.clock.now()
        try:
            self._compensations[(saga.name, name)](driver.context(name, compensating=True))
        except Exception as exc:
            driver.compensation_finished(name, describe(exc))
            return driver
        if self.events.active:
            self.events.emit(
                SagaStepCompensated(
                    self.name, saga.name, driver.saga_id, name, self.clock.now() - began
                )
            )
        driver.compensation_finished(name, None)
        return driver

    def _run_local(self, driver: SagaDriver, name: str, *, compensating: bool) -> SagaDriver:
        step = driver.saga.steps[name]
        attempt = self._local_attempt(driver, name, compensating)
        policy = (
            (step.compensation_policy or self.compensation_policy) if compensating else step.policy
        )
        try:
            return policy.call(attempt) if policy is not None else attempt()
        except LeaseLost:
            raise self._lease_lost(driver) from None
        except Exception as exc:
            if compensating:
                driver.compensation_finished(name, describe(exc))
            else:
                driver.steps_finished((StepOutcome(name, error=describe(exc)),))
            return driver
