"""The Redis semaphore store: one script per operation, on Redis time.

Per name, under one hash tag (one cluster slot): ``<prefix>:{<name>}:holders`` maps each
owner to ``token:slot:exclusive``, ``...:expiry`` is a sorted set of their expiries in
milliseconds, ``...:intents`` the exclusive waiters' intents, and ``...:fence`` the
fencing counter. Every script reads ``TIME`` on the server, drops what expired, and
decides in one atomic step; the holdings keys expire with their last holding, the
counter never does. The guarantees and limits of a single Redis server apply as for
locks (:mod:`seawall.coordination.lock.redis`): a failover to a lagging replica can
forget grants, so fence the writes that correctness depends on.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from seawall.coordination.lock._store import ttl_milliseconds
from seawall.coordination.semaphore._store import HolderInfo, SemaphoreGrant, SemaphoreState
from seawall.engines._base import engine_for
from seawall.engines.redis import RedisEngine, redis_errors
from seawall.errors import ConfigurationError

__all__ = ["DEFAULT_PREFIX", "RedisSemaphoreStore"]

DEFAULT_PREFIX = "seawall:semaphore"


def _source(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisSemaphoreStore:
    """Holdings in Redis under ``<prefix>:{<name>}``; ``engine`` is a RedisEngine or a URL."""

    expires = True

    def __init__(
        self,
        engine: RedisEngine | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_engine: bool = False,
    ) -> None:
        engine, opened = engine_for(engine, RedisEngine, "RedisSemaphoreStore", "redis://")
        owns_engine = owns_engine or opened
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"RedisSemaphoreStore prefix must be a non-empty string, got {prefix!r}"
            )
        self.engine = engine
        self.prefix = prefix
        self._owns_engine = owns_engine
        self._sources = {name: _source(name) for name in ("acquire", "extend", "release", "state")}
        self._scripts: dict[str, Any] = {}
        self._async_scripts: dict[str, Any] = {}

    def keys(self, name: str) -> tuple[str, str, str, str]:
        """The Redis keys of ``name``: holdings, expiries, intents, fencing counter."""
        base = f"{self.prefix}:{{{name}}}"
        return f"{base}:holders", f"{base}:expiry", f"{base}:intents", f"{base}:fence"

    def _script(self, name: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.engine.client.register_script(self._sources[name])
        return script

    def _ascript(self, name: str) -> Any:
        script = self._async_scripts.get(name)
        if script is None:
            client = self.engine.async_client
            script = self._async_scripts[name] = client.register_script(self._sources[name])
        return script

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        with redis_errors(self.engine.url):
            return self._script(script)(keys=keys, args=args)

    async def _arun(self, script: str, keys: list[str], args: list[Any]) -> Any:
        with redis_errors(self.engine.url):
            return await self._ascript(script)(keys=keys, args=args)

    @staticmethod
    def _acquire_args(
        owner: str, ttl: float, limit: int, exclusive: bool, intent_ttl: float
    ) -> list[Any]:
        intent = ttl_milliseconds(intent_ttl) if intent_ttl > 0 else 0
        return [owner, ttl_milliseconds(ttl), int(limit), "1" if exclusive else "0", intent]

    @staticmethod
    def _grant(reply: Any) -> SemaphoreGrant:
        token, slot, hint = (int(part) for part in reply)
        if token:
            return SemaphoreGrant(token, slot)
        return SemaphoreGrant(0, -1, None if hint < 0 else hint / 1000.0)

    @staticmethod
    def _state(name: str, reply: Any) -> SemaphoreState:
        last = int(reply[0])
        holders = []
        for index in range(1, len(reply), 3):
            token, slot, exclusive = _text(reply[index + 1]).split(":")
            holders.append(
                HolderInfo(
                    _text(reply[index]),
                    int(token),
                    int(slot),
                    exclusive == "1",
                    max(0.0, int(reply[index + 2]) / 1000.0),
                )
            )
        holders.sort(key=lambda holder: holder.slot)
        return SemaphoreState(name, tuple(holders), last)

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
        """One script: prune, decide, grant (``INCR`` the counter) or record the intent."""
        args = self._acquire_args(owner, ttl, limit, exclusive, intent_ttl)
        return self._grant(self._run("acquire", list(self.keys(name)), args))

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """Restart ``owner``'s holding at ``ttl`` seconds if it still has it."""
        keys = list(self.keys(name)[:2])
        return bool(self._run("extend", keys, [owner, ttl_milliseconds(ttl)]))

    def release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding and withdraw its intent."""
        return bool(self._run("release", list(self.keys(name)[:3]), [owner]))

    def state(self, name: str) -> SemaphoreState:
        """The live holdings (by slot) and the counter."""
        holders, expiry, _, fence = self.keys(name)
        return self._state(name, self._run("state", [holders, expiry, fence], []))

    def force_release(self, name: str, owner: str) -> bool:
        """End ``owner``'s holding whoever asks."""
        return self.release(name, owner)

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
        args = self._acquire_args(owner, ttl, limit, exclusive, intent_ttl)
        return self._grant(await self._arun("acquire", list(self.keys(name)), args))

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        keys = list(self.keys(name)[:2])
        return bool(await self._arun("extend", keys, [owner, ttl_milliseconds(ttl)]))

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        return bool(await self._arun("release", list(self.keys(name)[:3]), [owner]))

    async def astate(self, name: str) -> SemaphoreState:
        """Async :meth:`state`."""
        holders, expiry, _, fence = self.keys(name)
        return self._state(name, await self._arun("state", [holders, expiry, fence], []))

    async def aforce_release(self, name: str, owner: str) -> bool:
        """Async :meth:`force_release`."""
        return await self.arelease(name, owner)

    def close(self) -> None:
        """Close the engine if this store opened it."""
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close` (the engine's asyncio client too, when it owns it)."""
        self._async_scripts.clear()
        if self._owns_engine:
            await self.engine.aclose()

    def __repr__(self) -> str:
        return f"RedisSemaphoreStore({self.engine!r}, prefix={self.prefix!r})"
