"""The Redis rate-limit store: one EVALSHA per decision, on Redis server time.

Each algorithm is a Lua script (``lua/<kind>.lua``, package data) that reads the key's
state, calls ``TIME``, decides, writes the new state with a ``PX`` expiry at the moment
the key is full again (so idle keys vanish on their own) and replies with the wait in
microseconds. Redis runs a script atomically, so concurrent clients never exceed a
limit, and every client uses the server's clock, so skew between hosts does not matter.
Needs Redis 5 or newer (scripts that call ``TIME`` rely on effects replication).

The hot path packs the ``EVALSHA`` command once per limit (only the key and a non-default
cost change), keeps a few connections of its own so a call is one write and one read
on a socket, and loads the script only if Redis answers ``NOSCRIPT``. A broken or
unreachable server raises :class:`~seawall.errors.EngineUnavailableError` within the
engine's socket timeout (5 s by default), never hangs.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any, NoReturn

from seawall.clock import Clock
from seawall.engines import connect
from seawall.engines._redis_scripts import ScriptConnections, bulk
from seawall.engines.redis import RedisEngine, redis_errors
from seawall.errors import ConfigurationError, EngineError, MissingExtraError
from seawall.resilience.ratelimit._algorithms import (
    GCRA,
    FixedWindow,
    RateLimitAlgorithm,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from seawall.resilience.ratelimit._store import RateLimitDecision

try:
    import redis
    import redis.exceptions
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("redis", "redis") from exc

__all__ = ["RedisLimit", "RedisRateLimitStore"]

DEFAULT_PREFIX = "seawall:ratelimit"
_TAKE = b"0"
_DECIDE = b"1"


@cache
def _script(kind: str) -> tuple[bytes, bytes]:
    """The Lua source of ``kind`` and its SHA1 (what ``EVALSHA`` names it by)."""
    source = resources.files(__package__).joinpath("lua", f"{kind}.lua").read_bytes()
    return source, hashlib.sha1(source, usedforsecurity=False).hexdigest().encode()


def _number(value: float) -> bytes:
    return repr(float(value)).encode()


def _parameters(algorithm: RateLimitAlgorithm) -> tuple[bytes, bytes]:
    """The script's ARGV[3] and ARGV[4] for ``algorithm``, in microseconds."""
    if isinstance(algorithm, GCRA):
        return _number(algorithm.interval * 1e6), b"%d" % algorithm.burst
    if isinstance(algorithm, TokenBucket):
        return _number(algorithm.refill_rate / 1e6), b"%d" % algorithm.burst
    if isinstance(algorithm, FixedWindow | SlidingWindowLog | SlidingWindowCounter):
        window = round(algorithm.window * 1e6)
        if window < 1:
            raise ConfigurationError(
                f"{algorithm.describe()}: the Redis store resolves time to 1 microsecond, "
                f"so window must be >= 1e-6 seconds, got {algorithm.window!r}"
            )
        return b"%d" % window, b"%d" % algorithm.limit
    raise ConfigurationError(f"the Redis store has no script for {algorithm!r}")


class RedisRateLimitStore:
    """Rate-limit state in Redis, under ``prefix:<limit name>:<algorithm>:<key>``.

    ``engine`` is a :class:`~seawall.engines.redis.RedisEngine` or a ``redis://`` URL.
    Keys expire by themselves (``PX``), so :meth:`cleanup` has nothing to do.
    """

    def __init__(self, engine: RedisEngine | str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._owned: RedisEngine | None = None
        if isinstance(engine, str):
            opened = connect(engine)
            if not isinstance(opened, RedisEngine):
                raise ConfigurationError(
                    f"RedisRateLimitStore needs a redis:// URL, got {engine!r}"
                )
            engine = self._owned = opened
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"RedisRateLimitStore prefix must be a non-empty string, got {prefix!r}"
            )
        self.engine = engine
        self.prefix = prefix
        self._scripts = ScriptConnections(engine, self._raise)

    def bind(self, algorithm: RateLimitAlgorithm, name: str, clock: Clock) -> RedisLimit:
        """The limit called ``name`` (``clock`` is unused: Redis keeps the time)."""
        return RedisLimit(self, algorithm, name)

    def cleanup(self) -> int:
        """Nothing to do: every key carries its own expiry."""
        return 0

    def close(self) -> None:
        """Close this store's own connections (and the engine it opened from a URL)."""
        self._scripts.close()
        if self._owned is not None:
            self._owned.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()
        if self._owned is not None:
            await self._owned.aclose()

    # ------------------------------------------------------------------ round trips

    def execute(self, command: bytes, source: bytes) -> Any:
        """Send one packed ``EVALSHA`` and return the reply (loading the script if needed)."""
        return self._scripts.execute(command, source)

    async def aexecute(self, command: bytes, source: bytes) -> Any:
        """Async :meth:`execute`, on the engine's asyncio client pool."""
        pool: Any = self.engine.async_client.connection_pool
        with redis_errors(self.engine.url):
            connection = await pool.get_connection()
        try:
            with redis_errors(self.engine.url):
                await connection.send_packed_command((command,), False)
                try:
                    return await connection.read_response()
                except redis.exceptions.NoScriptError:
                    await connection.send_command("SCRIPT", "LOAD", source)
                    await connection.read_response()
                    await connection.send_packed_command((command,), False)
                    return await connection.read_response()
        finally:
            await pool.release(connection)

    def _raise(self, error: BaseException) -> NoReturn:
        with redis_errors(self.engine.url):
            raise error
        raise EngineError(str(error), url=self.engine.url)  # pragma: no cover - raised above

    def __repr__(self) -> str:
        return f"RedisRateLimitStore({self.engine!r}, prefix={self.prefix!r})"


class RedisLimit:
    """One named limit in Redis; every call is one ``EVALSHA`` of the algorithm's script."""

    local = False

    def __init__(
        self, store: RedisRateLimitStore, algorithm: RateLimitAlgorithm, name: str
    ) -> None:
        self.store = store
        self.algorithm = algorithm
        self.name = name
        self._source, sha = _script(algorithm.kind)
        self._parameters = b"".join(bulk(value) for value in _parameters(algorithm))
        self._key_prefix = f"{store.prefix}:{name}:{algorithm.kind}:".encode()
        self._two_keys = isinstance(algorithm, SlidingWindowLog)
        keys = 2 if self._two_keys else 1
        self._head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n%d\r\n" % (keys + 7, sha, keys)
        self._take_one_tail = bulk(b"1") + bulk(_TAKE) + self._parameters
        self._execute = store.execute

    def keys(self, key: str) -> list[bytes]:
        """The Redis keys holding ``key``'s state."""
        base = self._key_prefix + key.encode()
        if self._two_keys:
            return [b"{%s}:log" % base, b"{%s}:total" % base]
        return [base]

    def _command(self, key: str, cost: int, mode: bytes) -> bytes:
        keys = b"".join(bulk(name) for name in self.keys(key))
        return self._head + keys + bulk(b"%d" % cost) + bulk(mode) + self._parameters

    def take(self, key: str, cost: int) -> float:
        """One ``EVALSHA``: ``0.0`` when granted, else seconds to wait."""
        if cost == 1 and not self._two_keys:
            full = self._key_prefix + key.encode()
            command = b"%s$%d\r\n%s\r\n%s" % (self._head, len(full), full, self._take_one_tail)
        else:
            command = self._command(key, cost, _TAKE)
        wait = self._execute(command, self._source)
        return wait / 1e6 if wait else 0.0

    async def atake(self, key: str, cost: int) -> float:
        """Async :meth:`take`."""
        wait = await self.store.aexecute(self._command(key, cost, _TAKE), self._source)
        return float(wait) / 1e6 if wait else 0.0

    def decide(self, key: str, cost: int) -> RateLimitDecision:
        """One ``EVALSHA`` returning the whole decision."""
        return self._decision(self._execute(self._command(key, cost, _DECIDE), self._source))

    async def adecide(self, key: str, cost: int) -> RateLimitDecision:
        """Async :meth:`decide`."""
        reply = await self.store.aexecute(self._command(key, cost, _DECIDE), self._source)
        return self._decision(reply)

    def _decision(self, reply: Any) -> RateLimitDecision:
        allowed, remaining, wait, reset = reply
        return RateLimitDecision(
            allowed=bool(allowed),
            remaining=max(0, int(remaining)),
            retry_after=wait / 1e6,
            reset_after=max(0, reset) / 1e6,
            limit=self.algorithm.capacity,
        )

    def reset(self, key: str) -> None:
        """Delete ``key``'s state."""
        with redis_errors(self.store.engine.url):
            self.store.engine.client.delete(*self.keys(key))

    async def areset(self, key: str) -> None:
        """Async :meth:`reset`."""
        with redis_errors(self.store.engine.url):
            await self.store.engine.async_client.delete(*self.keys(key))

    def __repr__(self) -> str:
        return f"RedisLimit({self.name!r}, {self.algorithm.describe()})"
