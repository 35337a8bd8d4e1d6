"""The Redis lock store: one ``EVALSHA`` per acquire, extend and release, on Redis time.

A lease is the key ``<prefix>:{<name>}`` holding the owner token with a ``PX`` expiry,
so Redis itself ends an abandoned lease on its own clock. Next to it,
``<prefix>:{<name>}:fence`` counts grants: the acquire script does ``SET NX PX`` and, in
the same atomic step, ``INCR`` on the counter, whose value is the fencing token. The
counter has no expiry and survives release, so tokens never repeat while the data
survives. Release and extend are scripts that compare the owner token first.

Guarantees and limits: a single Redis server is a single point of truth. With
asynchronous replication a failover can lose the latest writes (a granted lease, a
counter increment), so after a failover two holders can overlap and a token can be
issued twice; fence every write (:func:`~seawall.coordination.sql_fence`) when that
matters, or use PostgreSQL. Keep the counters safe from eviction: run Redis with
``maxmemory-policy noeviction`` or a ``volatile-*`` policy (counters carry no TTL).

The hot path packs each command by hand, keeps a few connections of its own so a call
is one write and one read on a socket, and loads a script only when Redis answers
``NOSCRIPT``. Its asyncio connections belong to one event loop at a time: ``aclose()``
the store before using it from another loop. An unreachable server raises :class:`~seawall.errors.EngineUnavailableError`
within the engine's socket timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections import deque
from importlib import resources
from typing import Any, NoReturn

from seawall.coordination.lock._store import Acquisition, LeaseInfo, ttl_milliseconds
from seawall.engines._base import engine_for
from seawall.engines._redis_scripts import ScriptConnections, bulk
from seawall.engines.redis import RedisEngine, redis_errors
from seawall.errors import ConfigurationError, EngineError, MissingExtraError

try:
    import redis
    import redis.exceptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("redis", "redis") from exc

__all__ = ["DEFAULT_PREFIX", "RedisLockStore"]

DEFAULT_PREFIX = "seawall:lock"
_KEY_CACHE_SIZE = 4096


class _Script:
    """A Lua script of this package, with its SHA1 and the packed ``EVALSHA`` head."""

    __slots__ = ("head", "source")

    def __init__(self, name: str, keys: int, arguments: int) -> None:
        self.source = resources.files(__package__).joinpath("lua", f"{name}.lua").read_bytes()
        sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()
        self.head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n%d\r\n" % (
            3 + keys + arguments,
            sha,
            keys,
        )


ACQUIRE = _Script("acquire", 2, 2)
RELEASE = _Script("release", 1, 1)
EXTEND = _Script("extend", 1, 2)
INSPECT = _Script("inspect", 2, 0)
RAISE_FENCE = _Script("raise_fence", 2, 2)


async def _around_trip(connection: Any, command: bytes, source: bytes) -> Any:
    """Async :func:`~seawall.engines._redis_scripts.round_trip`."""
    await connection.send_packed_command((command,), False)
    try:
        return await connection.read_response()
    except redis.exceptions.NoScriptError:
        await connection.send_command("SCRIPT", "LOAD", source)
        await connection.read_response()
        await connection.send_packed_command((command,), False)
        return await connection.read_response()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLockStore:
    """Leases in Redis under ``<prefix>:{<name>}``; ``engine`` is a RedisEngine or a URL."""

    expires = True

    def __init__(
        self,
        engine: RedisEngine | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_engine: bool = False,
    ) -> None:
        engine, opened = engine_for(engine, RedisEngine, "RedisLockStore", "redis://")
        owns_engine = owns_engine or opened
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"RedisLockStore prefix must be a non-empty string, got {prefix!r}"
            )
        self.engine = engine
        self.prefix = prefix
        self._owns_engine = owns_engine
        self._scripts = ScriptConnections(engine, self._raise)
        self._async_idle: deque[Any] = deque()
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        self._keys: dict[str, tuple[bytes, bytes]] = {}

    def keys(self, name: str) -> tuple[str, str]:
        """The Redis keys of ``name``: the lease and its fencing counter."""
        lease = f"{self.prefix}:{{{name}}}"
        return lease, f"{lease}:fence"

    def _packed(self, name: str) -> tuple[bytes, bytes]:
        """(lease key + counter key, lease key) of ``name``, packed as RESP bulk strings."""
        packed = self._keys.get(name)
        if packed is None:
            lease, fence = (key.encode() for key in self.keys(name))
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            lease_bulk = bulk(lease)
            packed = self._keys[name] = (lease_bulk + bulk(fence), lease_bulk)
        return packed

    # ------------------------------------------------------------------ round trips

    def execute(self, command: bytes, source: bytes) -> Any:
        """Send one packed ``EVALSHA`` on a connection of this store and return the reply."""
        return self._scripts.execute(command, source)

    def _new_async_connection(self) -> Any:
        pool = self.engine.async_client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def _async_connections(self) -> deque[Any]:
        """This event loop's idle connections (a store serves one loop at a time)."""
        loop = asyncio.get_running_loop()
        if self._async_loop is not loop:
            for connection in self._async_idle:  # sockets of a loop that is gone
                with contextlib.suppress(Exception):
                    connection._close()
            self._async_idle = deque()
            self._async_loop = loop
        return self._async_idle

    async def aexecute(self, command: bytes, source: bytes) -> Any:
        """Async :meth:`execute`: one write and one read on an asyncio connection of its own."""
        idle = self._async_connections()
        try:
            connection = idle.pop()
            reused = True
        except IndexError:
            connection = self._new_async_connection()
            reused = False
        try:
            reply = await _around_trip(connection, command, source)
        except redis.ConnectionError as error:
            await connection.disconnect(nowait=True)
            if not reused:
                self._raise(error)
            connection = self._new_async_connection()
            try:
                reply = await _around_trip(connection, command, source)
            except BaseException as retry_error:
                await connection.disconnect(nowait=True)
                if isinstance(retry_error, redis.RedisError):
                    self._raise(retry_error)
                raise
        except redis.ResponseError as error:
            idle.append(connection)
            self._raise(error)
        except redis.RedisError as error:
            await connection.disconnect(nowait=True)
            self._raise(error)
        except BaseException:  # cancelled mid round trip: the reply may still be in flight
            await connection.disconnect(nowait=True)
            raise
        idle.append(connection)
        return reply

    def _raise(self, error: BaseException) -> NoReturn:
        with redis_errors(self.engine.url):
            raise error
        raise EngineError(str(error), url=self.engine.url)  # pragma: no cover - raised above

    # ------------------------------------------------------------------ commands

    def _acquire_command(self, name: str, owner: str, ttl: float) -> bytes:
        return b"%s%s%s%s" % (
            ACQUIRE.head,
            self._packed(name)[0],
            bulk(owner.encode()),
            bulk(b"%d" % ttl_milliseconds(ttl)),
        )

    @staticmethod
    def _acquisition(reply: int) -> Acquisition:
        if reply > 0:
            return Acquisition(reply)
        return Acquisition(0, -reply / 1000.0 if reply else None)

    def _extend_command(self, name: str, owner: str, ttl: float) -> bytes:
        return b"%s%s%s%s" % (
            EXTEND.head,
            self._packed(name)[1],
            bulk(owner.encode()),
            bulk(b"%d" % ttl_milliseconds(ttl)),
        )

    def _release_command(self, name: str, owner: str) -> bytes:
        return b"%s%s%s" % (RELEASE.head, self._packed(name)[1], bulk(owner.encode()))

    def _inspect_command(self, name: str) -> bytes:
        return INSPECT.head + self._packed(name)[0]

    def _fence_command(self, name: str, owner: str, token: int) -> bytes:
        return b"%s%s%s%s" % (
            RAISE_FENCE.head,
            self._packed(name)[0],
            bulk(owner.encode()),
            bulk(b"%d" % token),
        )

    @staticmethod
    def _lease_info(name: str, reply: Any) -> LeaseInfo | None:
        if not reply:
            return None
        owner, token, left = reply
        return LeaseInfo(name, _text(owner), int(token), max(0.0, int(left) / 1000.0))

    def acquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """One ``EVALSHA``: ``SET NX PX`` and ``INCR`` of the fencing counter."""
        reply: int = self.execute(self._acquire_command(name, owner, ttl), ACQUIRE.source)
        if reply > 0:
            return Acquisition(reply)
        return Acquisition(0, -reply / 1000.0 if reply else None)

    def extend(self, name: str, owner: str, ttl: float) -> bool:
        """One ``EVALSHA``: ``PEXPIRE`` if ``owner`` holds the lease."""
        return bool(self.execute(self._extend_command(name, owner, ttl), EXTEND.source))

    def release(self, name: str, owner: str) -> bool:
        """One ``EVALSHA``: ``DEL`` if ``owner`` holds the lease."""
        return bool(self.execute(self._release_command(name, owner), RELEASE.source))

    def inspect(self, name: str) -> LeaseInfo | None:
        """The holder, its fencing token and its remaining ``PTTL``."""
        return self._lease_info(name, self.execute(self._inspect_command(name), INSPECT.source))

    def raise_fence(self, name: str, owner: str, token: int) -> bool:
        """Raise the fencing counter to ``token`` while ``owner`` holds the lease (Redlock)."""
        return bool(self.execute(self._fence_command(name, owner, token), RAISE_FENCE.source))

    def force_release(self, name: str) -> bool:
        """Delete the lease whoever holds it; the fencing counter is kept."""
        with redis_errors(self.engine.url):
            return bool(self.engine.client.delete(self.keys(name)[0]))

    async def aacquire(self, name: str, owner: str, ttl: float) -> Acquisition:
        """Async :meth:`acquire`."""
        command = self._acquire_command(name, owner, ttl)
        return self._acquisition(await self.aexecute(command, ACQUIRE.source))

    async def aextend(self, name: str, owner: str, ttl: float) -> bool:
        """Async :meth:`extend`."""
        command = self._extend_command(name, owner, ttl)
        return bool(await self.aexecute(command, EXTEND.source))

    async def arelease(self, name: str, owner: str) -> bool:
        """Async :meth:`release`."""
        return bool(await self.aexecute(self._release_command(name, owner), RELEASE.source))

    async def ainspect(self, name: str) -> LeaseInfo | None:
        """Async :meth:`inspect`."""
        reply = await self.aexecute(self._inspect_command(name), INSPECT.source)
        return self._lease_info(name, reply)

    async def araise_fence(self, name: str, owner: str, token: int) -> bool:
        """Async :meth:`raise_fence`."""
        command = self._fence_command(name, owner, token)
        return bool(await self.aexecute(command, RAISE_FENCE.source))

    async def aforce_release(self, name: str) -> bool:
        """Async :meth:`force_release`."""
        with redis_errors(self.engine.url):
            return bool(await self.engine.async_client.delete(self.keys(name)[0]))

    def close(self) -> None:
        """Close this store's own connections (and the engine, when it opened it)."""
        self._scripts.close()
        if self._owns_engine:
            self.engine.close()

    async def aclose(self) -> None:
        """Async :meth:`close` (closes the engine's asyncio client too when it owns it)."""
        self._scripts.close()
        while self._async_idle:
            connection = self._async_idle.pop()
            await connection.disconnect()
        if self._owns_engine:
            await self.engine.aclose()

    def __repr__(self) -> str:
        return f"RedisLockStore({self.engine!r}, prefix={self.prefix!r})"
