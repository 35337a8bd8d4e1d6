"""Distributed locks with fencing tokens, on memory, SQLite, PostgreSQL, Redis, Redlock and etcd.

::

    from seawall.coordination import Lock, sql_fence

    lock = Lock("orders", ttl=10.0, store="postgresql://app@db/shop", auto_renew=True)
    with lock as lease:                       # waits up to lock.wait seconds
        with db.transaction() as tx:
            sql_fence(tx, "orders", lease)    # refuses a stale holder's write
            tx.execute("UPDATE orders SET ...")
        lease.check()                         # raises LockLostError if the lease was lost

Engines: :class:`~seawall.coordination.lock.memory.MemoryLockStore`,
:class:`~seawall.coordination.lock.sqlite.SqliteLockStore`,
:class:`~seawall.coordination.lock.postgres.PostgresLockStore` (and the session-scoped
:class:`~seawall.coordination.lock.postgres.PostgresAdvisoryLockStore`),
:class:`~seawall.coordination.lock.redis.RedisLockStore`,
:class:`~seawall.coordination.lock.redlock.RedlockStore` and
:class:`~seawall.coordination.lock.etcd.EtcdLockStore`. Engine modules are imported on
use, so their drivers are only needed when chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seawall.coordination.lock._core import AcquireSchedule, Lease
from seawall.coordination.lock._errors import (
    FencingError,
    LockError,
    LockLostError,
    LockNotHeldError,
    LockTimeoutError,
)
from seawall.coordination.lock._events import (
    LockAcquired,
    LockLost,
    LockReleased,
    LockRenewalFailed,
    LockRenewed,
)
from seawall.coordination.lock._fencing import FenceGuard, SqlFence, asql_fence, sql_fence
from seawall.coordination.lock._lock import Lock
from seawall.coordination.lock._store import Acquisition, LeaseInfo, LockStore, open_lock_store
from seawall.coordination.lock.memory import MemoryLockStore

if TYPE_CHECKING:
    from seawall.coordination.lock.etcd import EtcdLockStore
    from seawall.coordination.lock.postgres import PostgresAdvisoryLockStore, PostgresLockStore
    from seawall.coordination.lock.redis import RedisLockStore
    from seawall.coordination.lock.redlock import RedlockStore
    from seawall.coordination.lock.sqlite import SqliteLockStore

__all__ = [
    "AcquireSchedule",
    "Acquisition",
    "EtcdLockStore",
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

_LAZY = {
    "EtcdLockStore": "seawall.coordination.lock.etcd",
    "PostgresAdvisoryLockStore": "seawall.coordination.lock.postgres",
    "PostgresLockStore": "seawall.coordination.lock.postgres",
    "RedisLockStore": "seawall.coordination.lock.redis",
    "RedlockStore": "seawall.coordination.lock.redlock",
    "SqliteLockStore": "seawall.coordination.lock.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
