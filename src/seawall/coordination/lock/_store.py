"""The storage protocol every lock engine implements, and the choice of engine.

A lock store keeps *leases*: for each lock name at most one ``owner`` token with an
expiry on the engine's clock, plus a per-name fencing counter that only ever grows.
Every operation is one atomic step on the engine (one Lua script, one SQL statement):

* ``acquire(name, owner, ttl)``: if nobody holds ``name`` (or the lease expired),
  make ``owner`` the holder for ``ttl`` seconds, increment the counter and return it
  as the fencing token; otherwise return token ``0`` and, when known, the holder's
  remaining lease. When ``owner`` already holds it (a retry whose reply was lost:
  owner tokens are unique per acquire call), it is granted afresh with a new token.
* ``extend(name, owner, ttl)``: compare-and-set on ``owner``: the lease ends ``ttl``
  seconds from now if ``owner`` still holds it; False otherwise.
* ``release(name, owner)``: compare-and-set on ``owner``: end the lease if ``owner``
  still holds it; False otherwise. The fencing counter is kept.
* ``inspect(name)``: the current holder, or ``None``.
* ``force_release(name)``: end whoever's lease (an operator's tool); keeps the counter.

Later coordination recipes reuse the same shape: a leader-election term is a lease
whose fencing token is the term number; a semaphore is N leases under one name.
``tests/conformance/test_lock_stores.py`` holds every store to the contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast, runtime_checkable

from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, UnsupportedEngineError

if TYPE_CHECKING:
    from seawall.coordination.lock.memory import MemoryLockStore

__all__ = [
    "Acquisition",
    "LeaseInfo",
    "LockStore",
    "default_store",
    "open_lock_store",
    "store_for_engine",
]


class Acquisition(NamedTuple):
    """The reply to one acquire attempt."""

    fencing_token: int
    """The new lease's fencing token (``>= 1``), or ``0`` when another holder has the lock."""
    holder_expires_in: float | None = None
    """When refused: the holder's remaining lease in seconds (engine clock), if known."""


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lock's current holder as the engine sees it."""

    name: str
    owner: str
    """The holder's owner token."""
    fencing_token: int
    """The holder's fencing token."""
    expires_in: float
    """Seconds until the lease ends on the engine's clock (``math.inf``: session-scoped)."""


@runtime_checkable
class LockStore(Protocol):
    """Where leases live. ``expires`` is False for session-scoped stores (advisory locks)."""

    expires: bool
    """True when a lease ends by itself after its TTL (False: when its session ends)."""

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Make ``owner`` the holder for ``ttl`` seconds if the lock is free."""
        ...

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Restart ``owner``'s lease at ``ttl`` seconds if it still holds it."""
        ...

    def release(self, name: str, owner: str) -> bool:
        """End ``owner``'s lease if it still holds it."""
        ...

    def inspect(self, name: str) -> LeaseInfo | None:
        """The current holder of ``name``, or ``None``."""
        ...

    def force_release(self, name: str) -> bool:
        """End the lease of whoever holds ``name``; True if there was one."""
        ...

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Async :meth:`acquire`."""
        ...

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        ...

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        ...

    async def ainspect(self, name: str) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        ...

    async def aforce_release(self, name: str) -> bool:
        """Async :meth:`force_release`."""
        ...

    def close(self) -> None:
        """Release the connections this store opened itself."""
        ...

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        ...


_DEFAULT: MemoryLockStore | None = None


def default_store() -> MemoryLockStore:
    """The process-wide in-memory lock store used when a lock is given no store."""
    global _DEFAULT
    if _DEFAULT is None:
        from seawall.coordination.lock.memory import MemoryLockStore

        _DEFAULT = MemoryLockStore()
    return _DEFAULT


def open_lock_store(store: str | Engine | LockStore | None) -> tuple[LockStore, bool]:
    """The lock store ``store`` names, and whether the caller opened it (and must close it).

    ``None`` is the process-wide memory store; a URL or an :class:`~seawall.engines.Engine`
    picks the store of that engine (``memory``, ``sqlite``, ``redis``, ``postgres`` or ``etcd``);
    a :class:`LockStore` (such as a :class:`~seawall.coordination.RedlockStore`) is used as is.
    """
    if store is None:
        return default_store(), False
    if isinstance(store, str):
        engine = connect(store)
        return store_for_engine(engine, owns_engine=True), True
    if isinstance(store, Engine):
        return store_for_engine(store), False
    if isinstance(store, LockStore):
        return store, False
    raise UnsupportedEngineError(
        f"store must be None, an engine URL, an Engine or a LockStore, got {store!r}"
    )


def store_for_engine(engine: Engine, *, owns_engine: bool = False) -> LockStore:
    """The lock store implementation for ``engine``'s kind (closing the engine if it owns it)."""
    if engine.kind == "memory":
        from seawall.coordination.lock.memory import MemoryLockStore
        from seawall.engines.memory import MemoryEngine

        shared: MemoryLockStore = cast(MemoryEngine, engine).namespace(
            "seawall.coordination.lock", MemoryLockStore
        )
        return shared
    if engine.kind == "redis":
        from seawall.coordination.lock.redis import RedisLockStore
        from seawall.engines.redis import RedisEngine

        return RedisLockStore(cast(RedisEngine, engine), owns_engine=owns_engine)
    if engine.kind == "postgres":
        from seawall.coordination.lock.postgres import PostgresLockStore
        from seawall.engines.postgres import PostgresEngine

        return PostgresLockStore(cast(PostgresEngine, engine), owns_engine=owns_engine)
    if engine.kind == "sqlite":
        from seawall.coordination.lock.sqlite import SqliteLockStore
        from seawall.engines.sqlite import SqliteEngine

        return SqliteLockStore(cast(SqliteEngine, engine), owns_engine=owns_engine)
    if engine.kind == "etcd":
        from seawall.coordination.lock.etcd import EtcdLockStore
        from seawall.engines.etcd import EtcdEngine

        return EtcdLockStore(cast(EtcdEngine, engine), owns_engine=owns_engine)
    raise UnsupportedEngineError(
        f"locks have no store for the {engine.kind!r} engine ({engine!r}); "
        "use memory://, sqlite:///..., redis://..., postgresql://... or etcd://..., "
        "or pass a LockStore such as RedlockStore"
    )


def ttl_milliseconds(ttl: float) -> int:
    """``ttl`` in whole milliseconds, rounded up so the engine never ends a lease early."""
    if not ttl > 0 or not math.isfinite(ttl):
        raise ConfigurationError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
    return max(1, math.ceil(ttl * 1000.0 - 1e-9))
