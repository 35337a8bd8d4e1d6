"""The storage protocol every semaphore engine implements, and the choice of engine.

A semaphore store keeps, per name, up to ``limit`` **holdings** (an owner token, a
slot, a fencing token, whether it is exclusive, an expiry on the engine's clock), the
**intents** of exclusive waiters, and a per-name counter that only ever grows. Every
operation is one atomic step on the engine (a Lua script, a SQL function or
transaction):

* ``acquire(name, owner, ttl, limit, exclusive=False, intent_ttl=0.0)``: drop expired
  holdings and intents; grant ``owner`` a holding for ``ttl`` seconds when there is
  room, and return a fresh fencing token from the counter and the lowest free slot;
  otherwise return token ``0`` and, when known, how long until a holding that blocks
  the request ends. Room for a *shared* request: fewer than ``limit`` holdings, none
  exclusive, and no live intent of an exclusive waiter (writers are preferred, so a
  stream of readers cannot starve them). Room for an *exclusive* request: no holding
  at all. A refused exclusive request with ``intent_ttl > 0`` records (or refreshes)
  its intent for that long; a granted one removes it. An ``owner`` that already holds
  is granted afresh (new token, same slot): a retry whose reply was lost.
* ``extend(name, owner, ttl)`` / ``release(name, owner)``: compare-and-set on the
  owner, as for locks; ``release`` also withdraws the owner's intent.
* ``state(name)``: the live holdings and the counter's value.
* ``force_release(name, owner)``: end one holding whoever asks (an operator's tool).

``tests/conformance/test_semaphore_stores.py`` holds every store to the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast, runtime_checkable

from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, UnsupportedEngineError

if TYPE_CHECKING:
    from seawall.coordination.semaphore.memory import MemorySemaphoreStore

__all__ = [
    "MAX_LIMIT",
    "HolderInfo",
    "SemaphoreGrant",
    "SemaphoreState",
    "SemaphoreStore",
    "check_limit",
    "default_store",
    "open_semaphore_store",
]

MAX_LIMIT = 2**31 - 1
"""The largest ``limit`` (also "no limit": a read lock's readers)."""


class SemaphoreGrant(NamedTuple):
    """The reply to one semaphore acquire attempt."""

    fencing_token: int
    """The new holding's fencing token (``>= 1``), or ``0`` when refused."""
    slot: int = -1
    """The holding's slot, ``0 <= slot < limit`` (``-1`` when refused)."""
    holder_expires_in: float | None = None
    """When refused: seconds until a blocking holding ends (engine clock), if known."""


@dataclass(frozen=True, slots=True)
class HolderInfo:
    """One live holding as the engine sees it."""

    owner: str
    fencing_token: int
    slot: int
    exclusive: bool
    expires_in: float
    """Seconds until the holding ends on the engine's clock."""


@dataclass(frozen=True, slots=True)
class SemaphoreState:
    """A semaphore's live holdings (by slot) and the last fencing token it issued."""

    name: str
    holders: tuple[HolderInfo, ...]
    last_token: int
    """The counter: how many holdings were ever granted under this name."""


@runtime_checkable
class SemaphoreStore(Protocol):
    """Where semaphore holdings live; every method is one atomic step on the engine."""

    expires: bool

    def acquire(
        self,
        name: str,
        owner: str,
        ttl: float,
        limit: int,
        *,
        exclusive: bool = False,
        intent_ttl: float = 0.0,
    ) -> SemaphoreGrant:
        """Grant ``owner`` a holding when there is room (see the module docstring)."""
        ...

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Restart ``owner``'s holding at ``ttl`` seconds if it still has it."""
        ...

    def release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding (and withdraw its intent); True if it had a holding."""
        ...

    def state(self, name: str) -> SemaphoreState:
        """The live holdings of ``name`` and its counter."""
        ...

    def force_release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding, whoever asks; True if there was one."""
        ...

    async def aacquire(
        self,
        name: str,
        owner: str,
        ttl: float,
        limit: int,
        *,
        exclusive: bool = False,
        intent_ttl: float = 0.0,
    ) -> SemaphoreGrant:
        """Async :meth:`acquire`."""
        ...

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        ...

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        ...

    async def astate(self, name: str) -> SemaphoreState:
        """Async :meth:`state`."""
        ...

    async def aforce_release(self, name: str, owner: str) -> bool:
        """Async :meth:`force_release`."""
        ...

    def close(self) -> None:
        """Release the connections this store opened itself."""
        ...

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        ...


def check_limit(limit: object, field: str = "limit") -> int:
    """``limit`` if it is an int in ``[1, MAX_LIMIT]``, else :class:`ConfigurationError`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(
            f"{field} must be a whole number of holders from 1 to {MAX_LIMIT}, got {limit!r}"
        )
    return limit


_DEFAULT: MemorySemaphoreStore | None = None


def default_store() -> MemorySemaphoreStore:
    """The process-wide in-memory semaphore store used when none is given."""
    global _DEFAULT
    if _DEFAULT is None:
        from seawall.coordination.semaphore.memory import MemorySemaphoreStore

        _DEFAULT = MemorySemaphoreStore()
    return _DEFAULT


def open_semaphore_store(
    store: str | Engine | SemaphoreStore | None,
) -> tuple[SemaphoreStore, bool]:
    """The semaphore store ``store`` names, and whether the caller opened it (must close it).

    ``None`` is the process-wide memory store; a URL or an :class:`~seawall.engines.Engine`
    picks the store of that engine (``memory``, ``sqlite``, ``postgres``, ``redis``, ``etcd``);
    a :class:`SemaphoreStore` is used as is.
    """
    if store is None:
        return default_store(), False
    if isinstance(store, str):
        return store_for_engine(connect(store), owns_engine=True), True
    if isinstance(store, Engine):
        return store_for_engine(store), False
    if isinstance(store, SemaphoreStore):
        return store, False
    raise UnsupportedEngineError(
        f"store must be None, an engine URL, an Engine or a SemaphoreStore, got {store!r}"
    )


def store_for_engine(engine: Engine, *, owns_engine: bool = False) -> SemaphoreStore:
    """The semaphore store implementation for ``engine``'s kind."""
    if engine.kind == "memory":
        from seawall.coordination.semaphore.memory import MemorySemaphoreStore
        from seawall.engines.memory import MemoryEngine

        shared: MemorySemaphoreStore = cast(MemoryEngine, engine).namespace(
            "seawall.coordination.semaphore", MemorySemaphoreStore
        )
        return shared
    if engine.kind == "sqlite":
        from seawall.coordination.semaphore.sqlite import SqliteSemaphoreStore
        from seawall.engines.sqlite import SqliteEngine

        return SqliteSemaphoreStore(cast(SqliteEngine, engine), owns_engine=owns_engine)
    if engine.kind == "postgres":
        from seawall.coordination.semaphore.postgres import PostgresSemaphoreStore
        from seawall.engines.postgres import PostgresEngine

        return PostgresSemaphoreStore(cast(PostgresEngine, engine), owns_engine=owns_engine)
    if engine.kind == "redis":
        from seawall.coordination.semaphore.redis import RedisSemaphoreStore
        from seawall.engines.redis import RedisEngine

        return RedisSemaphoreStore(cast(RedisEngine, engine), owns_engine=owns_engine)
    if engine.kind == "etcd":
        from seawall.coordination.semaphore.etcd import EtcdSemaphoreStore
        from seawall.engines.etcd import EtcdEngine

        return EtcdSemaphoreStore(cast(EtcdEngine, engine), owns_engine=owns_engine)
    raise UnsupportedEngineError(
        f"semaphores have no store for the {engine.kind!r} engine ({engine!r}); "
        "use memory://, sqlite:///..., postgresql://..., redis://... or etcd://..."
    )
