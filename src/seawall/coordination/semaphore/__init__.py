"""Counting semaphores, read-write locks and barriers, with leases and fencing tokens.

::

    from seawall.coordination import Barrier, ReadWriteLock, Semaphore

    pool = Semaphore("exports", limit=4, ttl=30.0, store="postgresql://app@db/shop")
    with pool as permit:                      # one of at most 4 holders
        export(fencing_token=permit.fencing_token)

    rw = ReadWriteLock("catalog", store="redis://127.0.0.1:6379/0")
    with rw.read:                             # many readers, or ...
        ...
    with rw.write:                            # ... one writer (writers are preferred)
        ...

    Barrier("rebalance", parties=3, store=engine).arrive(timeout=30.0)

Engines: memory, SQLite, PostgreSQL, Redis, etcd. See ``docs/coordination/semaphores.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seawall.coordination.semaphore._barrier import Barrier
from seawall.coordination.semaphore._errors import BarrierTimeoutError, SemaphoreFullError
from seawall.coordination.semaphore._semaphore import ReadWriteLock, Semaphore
from seawall.coordination.semaphore._store import (
    HolderInfo,
    SemaphoreGrant,
    SemaphoreState,
    SemaphoreStore,
    open_semaphore_store,
)
from seawall.coordination.semaphore.memory import MemorySemaphoreStore

if TYPE_CHECKING:
    from seawall.coordination.semaphore.etcd import EtcdSemaphoreStore
    from seawall.coordination.semaphore.postgres import PostgresSemaphoreStore
    from seawall.coordination.semaphore.redis import RedisSemaphoreStore
    from seawall.coordination.semaphore.sqlite import SqliteSemaphoreStore

__all__ = [
    "Barrier",
    "BarrierTimeoutError",
    "EtcdSemaphoreStore",
    "HolderInfo",
    "MemorySemaphoreStore",
    "PostgresSemaphoreStore",
    "ReadWriteLock",
    "RedisSemaphoreStore",
    "Semaphore",
    "SemaphoreFullError",
    "SemaphoreGrant",
    "SemaphoreState",
    "SemaphoreStore",
    "SqliteSemaphoreStore",
    "open_semaphore_store",
]

_LAZY = {
    "EtcdSemaphoreStore": "seawall.coordination.semaphore.etcd",
    "PostgresSemaphoreStore": "seawall.coordination.semaphore.postgres",
    "RedisSemaphoreStore": "seawall.coordination.semaphore.redis",
    "SqliteSemaphoreStore": "seawall.coordination.semaphore.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
