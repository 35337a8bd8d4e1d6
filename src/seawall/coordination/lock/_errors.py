"""The errors distributed locks and fencing guards raise, each carrying the data a caller needs.

::

    SeawallError
    ├── LockError                          a lock refused an operation (base of the family)
    │   ├── LockLostError                  the lease expired, was taken, or could not be renewed
    │   ├── LockNotHeldError               release/extend without holding the lock
    │   └── LockTimeoutError               acquire waited ``wait`` seconds (also RejectedError)
    └── FencingError                       a resource refused a write with a stale fencing token

Invalid arguments (a TTL of zero, a name the engine cannot store) raise
:class:`seawall.errors.ConfigurationError`; an unreachable engine raises
:class:`seawall.errors.EngineUnavailableError` once the acquire's wait is spent.
"""

from __future__ import annotations

from seawall.errors import RejectedError, SeawallError

__all__ = [
    "FencingError",
    "LockError",
    "LockLostError",
    "LockNotHeldError",
    "LockTimeoutError",
]


class LockError(SeawallError):
    """A distributed lock refused an operation; ``lock`` names the lock."""

    lock: str


class LockLostError(LockError):
    """The holder no longer holds the lock: its lease expired, was taken or could not be renewed.

    Work done since ``fencing_token`` was issued may have overlapped another holder's;
    a resource that checks fencing tokens (:class:`~seawall.coordination.FenceGuard`,
    :func:`~seawall.coordination.sql_fence`) refuses the stale writes.
    """

    def __init__(self, lock: str, fencing_token: int, reason: str) -> None:
        super().__init__(
            f"lock {lock!r} (fencing token {fencing_token}) was lost: {reason}; "
            "stop the protected work, and make writes conditional on the fencing token "
            "(FenceGuard / sql_fence) so a holder that lost its lease cannot corrupt data; "
            "use a longer ttl or auto_renew=True if the work outlives the lease"
        )
        self.lock = lock
        self.fencing_token = fencing_token
        self.reason = reason


class LockNotHeldError(LockError):
    """``release`` or ``extend`` was called by a holder that does not hold the lock."""

    def __init__(self, lock: str, operation: str) -> None:
        super().__init__(
            f"{operation} of lock {lock!r}: this thread or task does not hold it; "
            "acquire it first (or pass the Lease that acquire returned), and release each "
            "lease once"
        )
        self.lock = lock
        self.operation = operation


class LockTimeoutError(LockError, RejectedError):
    """Acquire waited ``wait`` seconds and another holder still had the lock.

    ``retry_after`` is the current holder's remaining lease (engine clock) when the
    engine reported it, else ``None``.
    """

    def __init__(self, lock: str, wait: float, *, retry_after: float | None = None) -> None:
        hint = (
            f"; the current lease ends in {retry_after:.3f}s unless its holder extends it"
            if retry_after is not None
            else ""
        )
        super().__init__(
            f"lock {lock!r} is held by another holder and acquire gave up after waiting "
            f"{wait:.3f}s{hint}; wait longer (acquire(wait=...)), or back off and retry",
            retry_after=retry_after,
        )
        self.lock = lock
        self.wait = wait


class FencingError(SeawallError):
    """A write carried a fencing token lower than one the resource has already accepted.

    The writer's lease expired (a long pause, a partition) and a newer holder wrote
    with ``last_seen``; the stale write was refused so it cannot overwrite newer data.
    """

    def __init__(self, resource: str, token: int, last_seen: int) -> None:
        super().__init__(
            f"write to {resource!r} refused: fencing token {token} is lower than {last_seen}, "
            "already accepted from a newer lock holder; this holder lost its lease, so it must "
            "stop, re-acquire the lock and re-read the resource before writing again"
        )
        self.resource = resource
        self.token = token
        self.last_seen = last_seen
