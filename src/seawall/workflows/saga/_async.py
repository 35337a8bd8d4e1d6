"""The asyncio orchestrator: coroutine steps are awaited, plain ones and blocking logs run in threads."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

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
from seawall.workflows.saga._definition import Saga, StepContext
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
    NO_SIGNALS,
    LeaseLost,
    OrchestratorBase,
    StepRunner,
    compose_sync,
    describe,
    resolve_saga,
    retry_saga,
)

__all__ = ["AsyncSagaOrchestrator"]

T = TypeVar("T")


def _compose_async(
    function: StepRunner, is_async: bool, policy: Policy | None, timeout: Timeout | None
) -> Callable[[StepContext], Awaitable[Any]]:
    """An awaitable runner: async functions under ``acall``; sync ones in a worker thread."""
    if is_async:
        coroutine: Callable[[StepContext], Awaitable[Any]] = function
        if timeout is not None:
            bounded = timeout
            plain = coroutine

            async def timed(context: StepContext) -> Any:
                return await bounded.acall(plain, context)

            coroutine = timed
        if policy is None:
            return coroutine
        wrapping = policy
        inner = coroutine

        async def guarded(context: StepContext) -> Any:
            return await wrapping.acall(inner, context)

        return guarded
    sync = compose_sync(function, policy, timeout)

    async def in_thread(context: StepContext) -> Any:
        return await asyncio.to_thread(sync, context)

    return in_thread


class AsyncSagaOrchestrator(OrchestratorBase):
    """The asyncio orchestrator: coroutine steps are awaited, plain ones run in worker threads.

    Same options and guarantees as :class:`SagaOrchestrator`; blocking logs (SQLite,
    PostgreSQL) are called from worker threads, parallel groups run as tasks.
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
        name: str = "sagas",
    ) -> None:
        self._actions: dict[tuple[str, str], Callable[[StepContext], Awaitable[Any]]] = {}
        self._compensations: dict[tuple[str, str], Callable[[StepContext], Awaitable[Any]]] = {}
        super().__init__(
            log,
            sagas,
            clock=clock,
            lease=lease,
            owner=owner,
            compensation_policy=compensation_policy,
            name=name,
        )

    def _prepare(self, saga: Saga) -> None:
        for step in saga.steps.values():
            timeout = (
                Timeout(step.timeout, clock=self.clock, name=f"{saga.name}.{step.name}")
                if step.timeout is not None
                else None
            )
            key = (saga.name, step.name)
            self._actions[key] = _compose_async(
                step.action, step.action_is_async, step.policy, timeout
            )
            if step.compensation is not None:
                self._compensations[key] = _compose_async(
                    step.compensation,
                    step.compensation_is_async,
                    step.compensation_policy or self.compensation_policy,
                    None,
                )

    async def _io(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self.log.blocking:
            return await asyncio.to_thread(function, *args, **kwargs)
        return function(*args, **kwargs)

    # ---------------------------------------------------------------- public API

    async def run(
        self, saga: Saga | str, input: Any = None, *, saga_id: str | None = None
    ) -> SagaResult:
        """Run a saga to its end (see :meth:`SagaOrchestrator.run`)."""
        definition = self._definition(saga)
        saga_id = saga_id or uuid.uuid4().hex
        text, value = self._encode_input(input)
        driver, entries = SagaDriver.starting(definition, saga_id, value)
        created = await self._io(
            self.log.create,
            saga_id,
            definition.name,
            definition.plan,
            text,
            deadline=definition.deadline,
            owner=self.owner,
            lease=self.lease,
            entries=entries,
        )
        if not created:
            return self._finish(await self._attach(definition, saga_id))
        driver.committed(NO_SIGNALS)
        if self.events.active:
            self.events.emit(SagaStarted(self.name, definition.name, saga_id))
        return self._finish(await self._drive(driver))

    async def start(
        self,
        saga: Saga | str,
        input: Any = None,
        *,
        saga_id: str | None = None,
        transaction: Any = None,
    ) -> str:
        """Record a saga for the next ``resume`` (see :meth:`SagaOrchestrator.start`)."""
        definition = self._definition(saga)
        saga_id = saga_id or uuid.uuid4().hex
        text, _ = self._encode_input(input)
        created = await self._io(
            self.log.create,
            saga_id,
            definition.name,
            definition.plan,
            text,
            deadline=definition.deadline,
            owner=None,
            lease=self.lease,
            entries=(),
            transaction=transaction,
        )
        if not created:
            raise SagaStateError(saga_id, SagaStatus.RUNNING, "start", "new")
        return saga_id

    async def resume(
        self, *, ignore_leases: bool = False, limit: int | None = None
    ) -> list[SagaResult]:
        """Continue every unfinished saga of the registered definitions (see the sync twin)."""
        results: list[SagaResult] = []
        names = list(self._sagas)
        seen: set[str] = set()
        while limit is None or len(results) < limit:
            record = await self._io(
                self.log.claim, self.owner, self.lease, names=names, ignore_leases=ignore_leases
            )
            if record is None:
                break
            if record.id in seen:
                await self._io(self.log.release, record.id, self.owner)
                break
            seen.add(record.id)
            try:
                results.append(await self._continue(record))
            except SagaLeaseLostError:
                continue
        return results

    async def cancel(self, saga_id: str) -> bool:
        """Ask a running saga to turn back at its next step boundary."""
        status = await self._io(self.log.request_cancel, saga_id)
        if status is None:
            raise SagaNotFoundError(saga_id)
        if status is SagaStatus.RUNNING and self.events.active:
            record = await self._io(self.log.load, saga_id)
            self.events.emit(SagaCancelRequested(self.name, record.name if record else "", saga_id))
        return status is SagaStatus.RUNNING

    async def retry(self, saga_id: str, note: str = "") -> SagaResult | None:
        """Try a stuck saga again; runs it here when its definition is registered."""
        record = await self._io(retry_saga, self.log, saga_id, note)
        if self.events.active:
            self.events.emit(SagaRetried(self.name, record.name, saga_id, note))
        if record.name not in self._sagas:
            return None
        claimed = await self._io(self.log.claim, self.owner, self.lease, saga_id=saga_id)
        return None if claimed is None else await self._continue(claimed)

    async def resolve(self, saga_id: str, note: str = "") -> SagaRecord:
        """Settle a stuck saga by hand."""
        record = await self._io(resolve_saga, self.log, saga_id, note)
        if self.events.active:
            self.events.emit(SagaResolved(self.name, record.name, saga_id, note))
        return record

    async def status(self, saga_id: str) -> SagaRecord:
        """The saga's status, reason, history and timings."""
        record = await self._io(self.log.load, saga_id)
        if record is None:
            raise SagaNotFoundError(saga_id)
        return record

    async def list(
        self,
        *,
        status: Collection[SagaStatus] | SagaStatus | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[SagaRecord]:
        """Sagas in the log, most recently updated first (without history)."""
        if isinstance(status, SagaStatus):
            status = (status,)
        return await self._io(self.log.list, status=status, name=name, limit=limit)

    def __repr__(self) -> str:
        return f"AsyncSagaOrchestrator({self.log!r}, sagas={sorted(self._sagas)})"

    # ----------------------------------------------------------------- the loop

    async def _attach(self, saga: Saga, saga_id: str) -> SagaResult:
        record = await self._io(self.log.claim, self.owner, self.lease, saga_id=saga_id)
        if record is not None:
            if record.name != saga.name:
                await self._io(self.log.release, saga_id, self.owner)
                raise ConfigurationError(
                    f"saga id {saga_id!r} belongs to saga {record.name!r}, not {saga.name!r}"
                )
            return await self._continue(record)
        found = await self._io(self.log.load, saga_id)
        if found is None:  # pragma: no cover - sagas are never deleted
            raise SagaNotFoundError(saga_id)
        if found.name != saga.name:
            raise ConfigurationError(
                f"saga id {saga_id!r} belongs to saga {found.name!r}, not {saga.name!r}"
            )
        if found.finished:
            return self._settled(saga, found)
        raise SagaBusyError(saga_id, found.owner, found.lease_until)

    async def _continue(self, record: SagaRecord) -> SagaResult:
        saga = self._sagas[record.name]
        return await self._drive(self._new_driver(saga, record.id, record))

    async def _drive(self, driver: SagaDriver) -> SagaResult:
        log = self.log
        owner = self.owner
        lease = self.lease
        started = self.clock.now()
        try:
            while True:
                action = driver.next_action()
                if type(action) is Commit:
                    signals = await self._io(
                        log.append,
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
                    driver = await self._run_steps(driver, action)
                elif type(action) is RunCompensation:
                    driver = await self._compensate(driver, action.step)
                elif type(action) is Done:
                    return action.result
        except SagaLeaseLostError:
            raise
        except BaseException:
            with contextlib.suppress(BaseException):  # the original error matters more
                await asyncio.shield(self._io(log.release, driver.saga_id, owner))
            raise

    async def _run_steps(self, driver: SagaDriver, action: RunSteps) -> SagaDriver:
        names = action.steps
        if len(names) == 1:
            if driver.saga.steps[names[0]].local:
                return await self._run_local(driver, names[0], compensating=False)
            driver.steps_finished((await self._run_step(driver, names[0]),))
            return driver
        tasks = [asyncio.ensure_future(self._run_step(driver, name)) for name in names]
        outcomes = [await next_done for next_done in asyncio.as_completed(tasks)]
        driver.steps_finished(outcomes)
        return driver

    async def _run_step(self, driver: SagaDriver, name: str) -> StepOutcome:
        saga = driver.saga
        step = saga.steps[name]
        observed = self.events.active
        if observed:
            self.events.emit(SagaStepStarted(self.name, saga.name, driver.saga_id, name))
        began = self.clock.now() if observed else 0.0
        try:
            value = await self._actions[(saga.name, name)](driver.context(name))
        except Exception as exc:
            outcome = StepOutcome(name, error=describe(exc), compensate=step.compensate_failed)
        else:
            outcome = self._success(name, value, step.compensation is not None)
        if observed:
            self._emit_outcome(driver, outcome, self.clock.now() - began)
        return outcome

    async def _compensate(self, driver: SagaDriver, name: str) -> SagaDriver:
        saga = driver.saga
        if saga.steps[name].local:
            return await self._run_local(driver, name, compensating=True)
        began = self.clock.now()
        try:
            await self._compensations[(saga.name, name)](driver.context(name, compensating=True))
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

    async def _run_local(self, driver: SagaDriver, name: str, *, compensating: bool) -> SagaDriver:
        step = driver.saga.steps[name]
        attempt = self._local_attempt(driver, name, compensating)
        policy = (
            (step.compensation_policy or self.compensation_policy) if compensating else step.policy
        )

        def run() -> SagaDriver:
            return policy.call(attempt) if policy is not None else attempt()

        try:
            return await asyncio.to_thread(run)
        except LeaseLost:
            raise self._lease_lost(driver) from None
        except Exception as exc:
            if compensating:
                driver.compensation_finished(name, describe(exc))
            else:
                driver.steps_finished((StepOutcome(name, error=describe(exc)),))
            return driver
