"""Coordination: distributed locks with fencing tokens (leases, leader election and
semaphores follow on the same lease protocol).

Consensus is never home-made here: the strong guarantees come from PostgreSQL (and
etcd); Redis is offered with its weaker guarantee stated plainly. See
``docs/coordination/locks.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seawall.coordination.lock import (
    AcquireSchedule,
    Acquisition,
    FenceGuard,
    FencingError,
    Lease,
    LeaseInfo,
    Lock,
    LockAcquired,
    LockError,
    LockLost,
    LockLostError,
    LockNotHeldError,
    LockReleased,
    LockRenewalFailed,
    LockRenewed,
    LockStore,
    LockTimeoutError,
    MemoryLockStore,
    SqlFence,
    asql_fence,
    open_lock_store,
    sql_fence,
)

if TYPE_CHECKING:
    from seawall.coordination.lock.postgres import PostgresAdvisoryLockStore, PostgresLockStore
    from seawall.coordination.lock.redis import RedisLockStore
    from seawall.coordination.lock.redlock import RedlockStore
    from seawall.coordination.lock.sqlite import SqliteLockStore

__all__ = [
    "AcquireSchedule",
    "Acquisition",
    "FenceGuard",
    "FencingError",
    "Lease",
    "LeaseInfo",
    "Lock",
    "LockAcquired",
    "LockError",
    "LockLost",
    "LockLostError",
    "LockNotHeldError",
    "LockReleased",
    "LockRenewalFailed",
    "LockRenewed",
    "LockStore",
    "LockTimeoutError",
    "MemoryLockStore",
    "PostgresAdvisoryLockStore",
    "PostgresLockStore",
    "RedisLockStore",
    "RedlockStore",
    "SqlFence",
    "SqliteLockStore",
    "asql_fence",
    "open_lock_store",
    "sql_fence",
]


def __getattr__(name: str) -> Any:
    if name in {
        "PostgresAdvisoryLockStore",
        "PostgresLockStore",
        "RedisLockStore",
        "RedlockStore",
        "SqliteLockStore",
    }:
        from seawall.coordination import lock

        return getattr(lock, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
