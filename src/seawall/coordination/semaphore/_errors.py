"""The errors semaphores and barriers raise (holding loss and misuse reuse the lock errors).

::

    SeawallError
    ├── LockError
    │   └── LockTimeoutError
    │       └── SemaphoreFullError         every permit stayed taken for the whole wait
    └── TimeoutExceededError (also TimeoutError)
        └── BarrierTimeoutError            not all parties arrived within the timeout

A held permit is a lease: losing it raises :class:`~seawall.coordination.LockLostError`,
releasing one not held :class:`~seawall.coordination.LockNotHeldError`.
"""

from __future__ import annotations

from seawall.coordination.lock._errors import LockTimeoutError
from seawall.errors import RejectedError, TimeoutExceededError

__all__ = ["BarrierTimeoutError", "SemaphoreFullError"]


class SemaphoreFullError(LockTimeoutError):
    """Acquire waited ``wait`` seconds and all ``limit`` permits stayed taken.

    ``retry_after`` is how long until a blocking holding ends (engine clock), if known.
    """

    def __init__(
        self, semaphore: str, limit: int, wait: float, *, retry_after: float | None = None
    ) -> None:
        hint = (
            f"; a holding ends in {retry_after:.3f}s unless its holder extends it"
            if retry_after is not None
            else ""
        )
        RejectedError.__init__(
            self,
            f"semaphore {semaphore!r} had no free permit (limit {limit}, or a writer holds or "
            f"waits for it) and acquire gave up after waiting {wait:.3f}s{hint}; wait longer, "
            "raise the limit, or shed the work",
            retry_after=retry_after,
        )
        self.lock = semaphore
        self.limit = limit
        self.wait = wait


class BarrierTimeoutError(TimeoutExceededError):
    """Not all ``parties`` arrived at barrier ``barrier`` within ``timeout`` seconds.

    This arrival still counts: the barrier opens for the others when the rest arrive.
    """

    def __init__(self, barrier: str, parties: int, arrived: int, timeout: float) -> None:
        TimeoutError.__init__(
            self,
            f"barrier {barrier!r}: {arrived} of {parties} parties arrived within "
            f"{timeout:.3f}s; this arrival still counts, so the barrier opens for the others "
            "when the rest arrive: wait longer, or check the missing parties",
        )
        self.timeout = timeout
        self.barrier = barrier
        self.parties = parties
        self.arrived = arrived
