"""The storage protocol every rate-limit engine implements, and the choice of engine.

A :class:`RateLimitStore` keeps the state of many limits; :meth:`RateLimitStore.bind`
returns the :class:`BoundRateLimit` of one named limit, which applies its algorithm to a
key atomically: in-process under a guard (memory), in one Lua script (Redis) or in one
SQL statement (PostgreSQL). The conformance suite in
``tests/conformance/test_ratelimit_stores.py`` holds every store to the same contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

from seawall.clock import Clock
from seawall.engines import Engine, connect
from seawall.errors import UnsupportedEngineError
from seawall.resilience.ratelimit._algorithms import RateLimitAlgorithm

if TYPE_CHECKING:
    from seawall.resilience.ratelimit.memory import MemoryRateLimitStore

__all__ = ["BoundRateLimit", "RateLimitDecision", "RateLimitStore", "open_store"]


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """What a limiter decided for one request, with the numbers HTTP headers need."""

    allowed: bool
    """Whether the permits were granted (and taken)."""
    remaining: int
    """Permits the key has left after this decision."""
    retry_after: float | None
    """``0.0`` when allowed; else seconds until the request could pass (``None``: unknown)."""
    reset_after: float
    """Seconds until the key is back to its full allowance."""
    limit: int
    """The most permits the key can hold (the algorithm's capacity)."""


class BoundRateLimit(Protocol):
    """One named limit in one store: applies the algorithm to a key atomically.

    ``take`` returns ``0.0`` when it granted ``cost`` permits and otherwise the seconds
    until they could be granted (``> 0``). ``local`` is true when ``take`` runs in this
    process without blocking, so async callers may call it directly.
    """

    local: bool

    def take(self, key: str, cost: int) -> float:
        """Take ``cost`` permits for ``key`` if available; ``0.0`` or the wait needed."""
        ...

    async def atake(self, key: str, cost: int) -> float:
        """Async :meth:`take`."""
        ...

    def decide(self, key: str, cost: int) -> RateLimitDecision:
        """Like :meth:`take`, reporting remaining permits and reset time too."""
        ...

    async def adecide(self, key: str, cost: int) -> RateLimitDecision:
        """Async :meth:`decide`."""
        ...

    def reset(self, key: str) -> None:
        """Forget ``key``'s state: it gets its full allowance back."""
        ...

    async def areset(self, key: str) -> None:
        """Async :meth:`reset`."""
        ...


@runtime_checkable
class RateLimitStore(Protocol):
    """Where rate-limit state lives; one store serves many named limits."""

    def bind(self, algorithm: RateLimitAlgorithm, name: str, clock: Clock) -> BoundRateLimit:
        """The limit called ``name`` applying ``algorithm``; ``clock`` is used by local stores."""
        ...

    def cleanup(self) -> int:
        """Delete state that is back to full now; returns how many keys it removed."""
        ...

    def close(self) -> None:
        """Release the connections this store opened itself."""
        ...


def open_store(
    store: str | Engine | RateLimitStore | None,
) -> tuple[RateLimitStore, Engine | None]:
    """The store ``store`` names, and the engine opened for it (to close later), if any.

    ``None`` is a private in-memory store; a URL or an :class:`~seawall.engines.Engine`
    picks the store of that engine (``memory``, ``redis`` or ``postgres``); a
    :class:`RateLimitStore` is used as is.
    """
    if store is None:
        from seawall.resilience.ratelimit.memory import MemoryRateLimitStore

        return MemoryRateLimitStore(), None
    owned: Engine | None = None
    if isinstance(store, str):
        engine = owned = connect(store)
    elif isinstance(store, Engine):
        engine = store
    elif isinstance(store, RateLimitStore):
        return store, None
    else:
        raise UnsupportedEngineError(
            f"store must be None, an engine URL, an Engine or a RateLimitStore, got {store!r}"
        )
    return store_for_engine(engine), owned


def store_for_engine(engine: Engine) -> RateLimitStore:
    """The rate-limit store implementation for ``engine``'s kind."""
    if engine.kind == "memory":
        from seawall.engines.memory import MemoryEngine
        from seawall.resilience.ratelimit.memory import MemoryRateLimitStore

        shared: MemoryRateLimitStore = cast(MemoryEngine, engine).namespace(
            "seawall.ratelimit", MemoryRateLimitStore
        )
        return shared
    if engine.kind == "redis":
        from seawall.engines.redis import RedisEngine
        from seawall.resilience.ratelimit.redis import RedisRateLimitStore

        return RedisRateLimitStore(cast(RedisEngine, engine))
    if engine.kind == "postgres":
        from seawall.engines.postgres import PostgresEngine
        from seawall.resilience.ratelimit.postgres import PostgresRateLimitStore

        return PostgresRateLimitStore(cast(PostgresEngine, engine))
    raise UnsupportedEngineError(
        f"rate limiting has no store for the {engine.kind!r} engine ({engine!r}); "
        "use memory://, redis://... or postgresql://..."
    )
