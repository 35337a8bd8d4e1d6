"""The Redis idempotency store: one Lua script per operation, on Redis time.

Each key is a hash ``<prefix><key>`` (fingerprint, status, token, response, times)
with a ``PEXPIRE`` of the record's time to live, so Redis forgets expired keys by
itself. Claims, completions, releases and lease extensions are scripts that check
and write in one atomic step; leases are judged on Redis's ``TIME`` (``clock=``
replaces it in tests). Redis has no transaction shared with your database: pass
``transaction=None`` (use SQLite or PostgreSQL to store responses in your commit).
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.clock import Clock
from seawall.engines.redis import RedisEngine, redis_errors
from seawall.errors import ConfigurationError
from seawall.idempotency._model import ClaimResult, IdempotencyRecord, KeyStatus

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction

__all__ = ["DEFAULT_PREFIX", "RedisIdempotencyStore"]

DEFAULT_PREFIX = "seawall:idempotency:"


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped, for a SCAN MATCH on a prefix."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _no_transaction(transaction: Transaction | None) -> None:
    if transaction is not None:
        raise ConfigurationError(
            "the Redis idempotency store cannot join a database transaction; use sqlite:/// or "
            "postgresql:// to store responses with your writes, or pass transaction=None"
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _record(key: str, fields: list[Any]) -> IdempotencyRecord:
    fingerprint, status, token, response, created_at, locked_until, expires_at = fields
    return IdempotencyRecord(
        key,
        _text(fingerprint) or "",
        KeyStatus(int(status)),
        _text(token),
        None if response is None else bytes(response),
        float(created_at),
        _float(locked_until),
        float(expires_at),
    )


class RedisIdempotencyStore:
    """Idempotency keys in Redis (sync client and asyncio client of the engine)."""

    kind: ClassVar[str] = "redis"
    supports_transactions: ClassVar[bool] = False

    def __init__(
        self,
        engine: Engine | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines import connect

        connected = connect(engine)
        if not isinstance(connected, RedisEngine):
            raise ConfigurationError(
                f"RedisIdempotencyStore needs a redis:// engine, got {connected!r}"
            )
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix={prefix!r} must be a string")
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise ConfigurationError(f"clock={clock!r} is not a seawall.clock.Clock (or None)")
        self.engine = connected
        self.prefix = prefix
        self._clock = clock
        self._sources = {name: _script(name) for name in ("claim", "settle", "get")}
        self._scripts: dict[str, Any] = {}
        self._async_scripts: dict[str, Any] = {}

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock.now())

    def _run(self, name: str, key: str, *args: Any) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.engine.client.register_script(self._sources[name])
        with redis_errors(self.engine.url):
            return script(keys=[self.prefix + key], args=list(args))

    async def _arun(self, name: str, key: str, *args: Any) -> Any:
        script = self._async_scripts.get(name)
        if script is None:
            script = self._async_scripts[name] = self.engine.async_client.register_script(
                self._sources[name]
            )
        with redis_errors(self.engine.url):
            return await script(keys=[self.prefix + key], args=list(args))

    @staticmethod
    def _claimed(key: str, reply: list[Any]) -> ClaimResult:
        return ClaimResult(_record(key, reply[2:]), bool(int(reply[0])), float(reply[1]))

    @staticmethod
    def _got(key: str, reply: list[Any]) -> IdempotencyRecord | None:
        return _record(key, reply) if reply else None

    def claim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Take the key or read who holds it (one script)."""
        _no_transaction(transaction)
        reply = self._run("claim", key, fingerprint, token, lease, ttl, self._now())
        return self._claimed(key, reply)

    def complete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Store the response if ``token`` still holds the key."""
        _no_transaction(transaction)
        return bool(self._run("settle", key, "complete", token, ttl, response, self._now()))

    def release(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Delete the in-flight record if ``token`` holds it."""
        _no_transaction(transaction)
        return bool(self._run("settle", key, "release", token, 0, b"", self._now()))

    def extend(self, key: str, token: str, lease: float) -> bool:
        """Push the holder's lease ahead."""
        return bool(self._run("settle", key, "extend", token, lease, b"", self._now()))

    def get(self, key: str) -> IdempotencyRecord | None:
        """The key's record unless absent or expired."""
        return self._got(key, self._run("get", key, self._now(), "get"))

    def _expired_candidates(self, limit: int) -> list[str]:
        with redis_errors(self.engine.url):
            names = []
            match = f"{_glob_escape(self.prefix)}*"
            for name in self.engine.client.scan_iter(match=match, count=500):
                names.append(_text(name) or "")
                if len(names) >= limit * 4:
                    break
        return [name[len(self.prefix) :] for name in names]

    def purge_expired(self, limit: int) -> int:
        """Delete up to ``limit`` expired records (Redis also expires them by itself)."""
        deleted = 0
        now = self._now()
        for key in self._expired_candidates(limit):
            if deleted >= limit:
                break
            deleted += int(self._run("get", key, now, "purge"))
        return deleted

    async def aclaim(
        self,
        key: str,
        fingerprint: str,
        token: str,
        lease: float,
        ttl: float,
        transaction: Transaction | None,
    ) -> ClaimResult:
        """Asyncio twin of :meth:`claim`."""
        _no_transaction(transaction)
        reply = await self._arun("claim", key, fingerprint, token, lease, ttl, self._now())
        return self._claimed(key, reply)

    async def acomplete(
        self, key: str, token: str, response: bytes, ttl: float, transaction: Transaction | None
    ) -> bool:
        """Asyncio twin of :meth:`complete`."""
        _no_transaction(transaction)
        return bool(await self._arun("settle", key, "complete", token, ttl, response, self._now()))

    async def arelease(self, key: str, token: str, transaction: Transaction | None) -> bool:
        """Asyncio twin of :meth:`release`."""
        _no_transaction(transaction)
        return bool(await self._arun("settle", key, "release", token, 0, b"", self._now()))

    async def aextend(self, key: str, token: str, lease: float) -> bool:
        """Asyncio twin of :meth:`extend`."""
        return bool(await self._arun("settle", key, "extend", token, lease, b"", self._now()))

    async def aget(self, key: str) -> IdempotencyRecord | None:
        """Asyncio twin of :meth:`get`."""
        return self._got(key, await self._arun("get", key, self._now(), "get"))

    async def apurge_expired(self, limit: int) -> int:
        """Asyncio twin of :meth:`purge_expired` (the key scan is synchronous)."""
        deleted = 0
        now = self._now()
        for key in self._expired_candidates(limit):
            if deleted >= limit:
                break
            deleted += int(await self._arun("get", key, now, "purge"))
        return deleted

    def create_tables(self) -> None:
        """Nothing to create on Redis."""

    def drop_tables(self) -> None:
        """Delete every record under this store's prefix."""
        with redis_errors(self.engine.url):
            match = f"{_glob_escape(self.prefix)}*"
            names = list(self.engine.client.scan_iter(match=match, count=500))
            if names:
                self.engine.client.delete(*names)

    def close(self) -> None:
        """Nothing to release: the engine owns the clients."""

    def __repr__(self) -> str:
        return f"RedisIdempotencyStore({self.engine!r}, prefix={self.prefix!r})"
