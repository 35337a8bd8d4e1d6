"""Durable saga orchestration: steps with compensations, recorded in a saga log, resumed after a crash.

::

    from seawall.workflows.saga import Saga, SagaOrchestrator, Step

    order = Saga("order", [
        Step("reserve", reserve_stock, release_stock),
        Step("charge", charge_card, refund_card, policy=Retry(attempts=3)),
        Step("ship", create_shipment),                  # the last step: the pivot
    ])
    sagas = SagaOrchestrator("sqlite:///shop.db", [order])
    result = sagas.run(order, {"order_id": 42})
    sagas.resume()                                      # after a crash: finish the rest

See ``docs/workflows/sagas.md``.
"""

from __future__ import annotations

from seawall.workflows.saga._async import AsyncSagaOrchestrator
from seawall.workflows.saga._base import open_saga_log, resolve_saga, retry_saga
from seawall.workflows.saga._definition import Parallel, Saga, Step, StepContext, StepFunction
from seawall.workflows.saga._errors import (
    SagaBusyError,
    SagaError,
    SagaFailedError,
    SagaLeaseLostError,
    SagaNotFoundError,
    SagaStateError,
)
from seawall.workflows.saga._events import (
    SagaCancelRequested,
    SagaCompensated,
    SagaCompensating,
    SagaCompleted,
    SagaEvent,
    SagaLeaseLost,
    SagaResolved,
    SagaResumed,
    SagaRetried,
    SagaStarted,
    SagaStepCompensated,
    SagaStepCompensationFailed,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
    SagaStuck,
)
from seawall.workflows.saga._log import SagaLog
from seawall.workflows.saga._model import (
    EntryKind,
    NewEntry,
    SagaEntry,
    SagaRecord,
    SagaResult,
    SagaStatus,
    Signals,
)
from seawall.workflows.saga._orchestrator import SagaOrchestrator
from seawall.workflows.saga.memory import MemorySagaLog
from seawall.workflows.saga.postgres import PostgresSagaLog
from seawall.workflows.saga.sqlite import SqliteSagaLog

__all__ = [
    "AsyncSagaOrchestrator",
    "EntryKind",
    "MemorySagaLog",
    "NewEntry",
    "Parallel",
    "PostgresSagaLog",
    "Saga",
    "SagaBusyError",
    "SagaCancelRequested",
    "SagaCompensated",
    "SagaCompensating",
    "SagaCompleted",
    "SagaEntry",
    "SagaError",
    "SagaEvent",
    "SagaFailedError",
    "SagaLeaseLost",
    "SagaLeaseLostError",
    "SagaLog",
    "SagaNotFoundError",
    "SagaOrchestrator",
    "SagaRecord",
    "SagaResolved",
    "SagaResult",
    "SagaResumed",
    "SagaRetried",
    "SagaStarted",
    "SagaStateError",
    "SagaStatus",
    "SagaStepCompensated",
    "SagaStepCompensationFailed",
    "SagaStepCompleted",
    "SagaStepFailed",
    "SagaStepStarted",
    "SagaStuck",
    "Signals",
    "SqliteSagaLog",
    "Step",
    "StepContext",
    "StepFunction",
    "open_saga_log",
    "resolve_saga",
    "retry_saga",
]
