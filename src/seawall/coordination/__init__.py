"""Coordination: distributed locks with fencing tokens, leader election, semaphores.

Everything stands on one lease protocol with fencing tokens. Consensus is never
home-made here: the strong guarantees come from etcd (Raft) and PostgreSQL; Redis is
offered with its weaker guarantee stated plainly. See ``docs/coordination/locks.md``,
``election.md`` and ``semaphores.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seawall.coordination.election import (
    Election,
    ElectionError,
    ElectionTimeoutError,
    LeaderDemoted,
    LeaderElected,
    LeaderInfo,
    LeadershipLostError,
    LeadershipRenewalFailed,
    LeadershipRenewed,
    Term,
)
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
from seawall.coordination.semaphore import (
    Barrier,
    BarrierTimeoutError,
    HolderInfo,
    MemorySemaphoreStore,
    ReadWriteLock,
    Semaphore,
    SemaphoreFullError,
    SemaphoreGrant,
    SemaphoreState,
    SemaphoreStore,
    open_semaphore_store,
)

if TYPE_CHECKING:
    from seawall.coordination.lock.etcd import EtcdLockStore
    from seawall.coordination.lock.postgres import PostgresAdvisoryLockStore, PostgresLockStore
    from seawall.coordination.lock.redis import RedisLockStore
    from seawall.coordination.lock.redlock import RedlockStore
    from seawall.coordination.lock.sqlite import SqliteLockStore
    from seawall.coordination.semaphore.etcd import EtcdSemaphoreStore
    from seawall.coordination.semaphore.postgres import PostgresSemaphoreStore
    from seawall.coordination.semaphore.redis import RedisSemaphoreStore
    from seawall.coordination.semaphore.sqlite import SqliteSemaphoreStore

__all__ = [
    "AcquireSchedule",
    "Acquisition",
    "Barrier",
    "BarrierTimeoutError",
    "Election",
    "ElectionError",
    "ElectionTimeoutError",
    "EtcdLockStore",
    "EtcdSemaphoreStore",
    "FenceGuard",
    "FencingError",
    "HolderInfo",
    "LeaderDemoted",
    "LeaderElected",
    "LeaderInfo",
    "LeadershipLostError",
    "LeadershipRenewalFailed",
    "LeadershipRenewed",
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
    "MemorySemaphoreStore",
    "PostgresAdvisoryLockStore",
    "PostgresLockStore",
    "PostgresSemaphoreStore",
    "ReadWriteLock",
    "RedisLockStore",
    "RedisSemaphoreStore",
    "RedlockStore",
    "Semaphore",
    "SemaphoreFullError",
    "SemaphoreGrant",
    "SemaphoreState",
    "SemaphoreStore",
    "SqlFence",
    "SqliteLockStore",
    "SqliteSemaphoreStore",
    "Term",
    "asql_fence",
    "open_lock_store",
    "open_semaphore_store",
    "sql_fence",
]


def __getattr__(name: str) -> Any:
    if name in {
        "EtcdLockStore",
        "PostgresAdvisoryLockStore",
        "PostgresLockStore",
        "RedisLockStore",
        "RedlockStore",
        "SqliteLockStore",
    }:
        from seawall.coordination import lock

        return getattr(lock, name)
    if name in {
        "EtcdSemaphoreStore",
        "PostgresSemaphoreStore",
        "RedisSemaphoreStore",
        "SqliteSemaphoreStore",
    }:
        from seawall.coordination import semaphore

        return getattr(semaphore, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
