"""The Redis engine: a redis-py client (sync and asyncio) built from the URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.engines._base import Engine, redact
from seawall.errors import EngineError, EngineUnavailableError, MissingExtraError

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisEngine", "redis_errors"]

DEFAULT_TIMEOUT = 5.0


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError("redis", "redis") from exc
    return redis


class RedisEngine(Engine):
    """Redis through redis-py; ``client`` is sync, ``async_client`` is asyncio.

    Connect and socket timeouts default to 5 seconds (override with
    ``socket_timeout=...`` or in the URL) so an unreachable server fails with
    :class:`~seawall.errors.EngineUnavailableError` instead of hanging.
    """

    kind: ClassVar[str] = "redis"

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", **options: Any) -> None:
        super().__init__(url)
        _import_redis()
        options.setdefault("socket_connect_timeout", DEFAULT_TIMEOUT)
        options.setdefault("socket_timeout", DEFAULT_TIMEOUT)
        self.options = options
        self._client: redis.Redis | None = None
        self._async_client: redis.asyncio.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        """The shared synchronous client (thread-safe connection pool)."""
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.url, **self.options)
        return self._client

    @property
    def async_client(self) -> redis.asyncio.Redis:
        """The shared asyncio client; use it from one event loop."""
        if self._async_client is None:
            import redis.asyncio

            self._async_client = redis.asyncio.Redis.from_url(self.url, **self.options)
        return self._async_client

    def ping(self) -> None:
        """Raise :class:`EngineUnavailableError` unless the server answers."""
        with redis_errors(self.url):
            self.client.ping()

    def close(self) -> None:
        """Close the sync client's connections (the async one needs :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close both clients."""
        self.close()
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None


@contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Translate redis-py errors into seawall's, naming the server and the fix."""
    import redis

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise EngineUnavailableError(
            f"Redis at {redact(url)} is unreachable ({exc}); check that it runs and the URL is right",
            url=url,
        ) from exc
    except redis.RedisError as exc:
        raise EngineError(f"Redis at {redact(url)} failed: {exc}", url=url) from exc
