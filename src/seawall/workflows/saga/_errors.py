"""The errors of saga orchestration, each carrying the saga's id and what to do next."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seawall.errors import SeawallError

if TYPE_CHECKING:
    from seawall.workflows.saga._model import SagaResult, SagaStatus

__all__ = [
    "SagaBusyError",
    "SagaError",
    "SagaFailedError",
    "SagaLeaseLostError",
    "SagaNotFoundError",
    "SagaStateError",
]


class SagaError(SeawallError):
    """Root of the saga errors; ``saga_id`` names the saga concerned."""

    def __init__(self, message: str, *, saga_id: str) -> None:
        super().__init__(message)
        self.saga_id = saga_id


class SagaFailedError(SagaError):
    """The saga did not complete: it was compensated, or it is stuck waiting for an operator.

    ``result`` holds the status, the results of the steps that did complete, the reason
    and the failed step; the failed step's exception, when raised in this process, is the
    ``__cause__``.
    """

    def __init__(self, result: SagaResult) -> None:
        from seawall.workflows.saga._model import SagaStatus

        hint = (
            "an operator must retry or resolve it (`seawall saga retry|resolve URL ID`)"
            if result.status is SagaStatus.STUCK
            else "every completed step was compensated"
        )
        super().__init__(
            f"saga {result.saga!r} ({result.saga_id}) ended {result.status.value}: "
            f"{result.reason}; {hint}",
            saga_id=result.saga_id,
        )
        self.result = result
        self.status: SagaStatus = result.status
        self.reason = result.reason
        self.failed_step = result.failed_step


class SagaNotFoundError(SagaError, LookupError):
    """No saga with this id is in the log."""

    def __init__(self, saga_id: str) -> None:
        super().__init__(
            f"no saga {saga_id!r} in the saga log; check the id and the log's URL", saga_id=saga_id
        )


class SagaBusyError(SagaError):
    """Another orchestrator holds this saga's lease; it may run it now."""

    def __init__(self, saga_id: str, owner: str | None, lease_until: float | None) -> None:
        super().__init__(
            f"saga {saga_id!r} is being run by {owner!r} (lease until {lease_until}); wait for it, "
            "or let `resume` take it over once the lease has expired",
            saga_id=saga_id,
        )
        self.owner = owner
        self.lease_until = lease_until


class SagaLeaseLostError(SagaError):
    """This orchestrator lost a saga's lease (another one resumed it); it stopped running it.

    Happens when a step runs longer than the lease; the other orchestrator re-runs the
    step with the same idempotency key. Raise ``lease`` above the longest step.
    """

    def __init__(self, saga_id: str, owner: str) -> None:
        super().__init__(
            f"orchestrator {owner!r} lost the lease of saga {saga_id!r} to another one, which "
            "now runs it; raise the orchestrator's lease above the longest step",
            saga_id=saga_id,
        )
        self.owner = owner


class SagaStateError(SagaError):
    """The operation does not apply to a saga in its current status (e.g. retrying a completed one)."""

    def __init__(self, saga_id: str, status: SagaStatus, operation: str, allowed: str) -> None:
        super().__init__(
            f"cannot {operation} saga {saga_id!r}: it is {status.value}, and {operation} "
            f"applies to {allowed} sagas only",
            saga_id=saga_id,
        )
        self.status = status
        self.operation = operation
