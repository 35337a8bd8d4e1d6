"""The PostgreSQL engine: psycopg 3 connection pools (sync and asyncio) built from the URL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from seawall.engines._base import Engine, Transaction, redact
from seawall.errors import EngineError, EngineUnavailableError, MissingExtraError

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["PostgresEngine", "postgres_errors"]

DEFAULT_TIMEOUT = 5.0


class PostgresEngine(Engine):
    """PostgreSQL through psycopg 3; ``pool`` and ``async_pool`` open lazily.

    Connections are in autocommit mode: a store's single statement commits on its own,
    and a caller who needs a transaction opens one with ``conn.transaction()``.
    """

    kind: ClassVar[str] = "postgres"
    supports_transactions: ClassVar[bool] = True

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(url.replace("postgres://", "postgresql://", 1))
        try:
            import psycopg  # noqa: F401
            import psycopg_pool  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("postgres", "psycopg") from exc
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] | None = None
        self._async_pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = (
            None
        )

    def _kwargs(self) -> dict[str, Any]:
        return {"autocommit": True, "connect_timeout": max(1, int(self.timeout))}

    @property
    def pool(self) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
        """The shared synchronous pool."""
        if self._pool is None:
            import psycopg_pool

            with postgres_errors(self.url):
                self._pool = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    kwargs=self._kwargs(),
                    timeout=self.timeout,
                    open=True,
                )
        return self._pool

    async def async_pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        """The shared asyncio pool, opened on first use."""
        if self._async_pool is None:
            import psycopg_pool

            pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]] = (
                psycopg_pool.AsyncConnectionPool(
                    self.url,
                    min_size=self.min_size,
                    max_size=self.max_size,
                    kwargs=self._kwargs(),
                    timeout=self.timeout,
                    open=False,
                )
            )
            with postgres_errors(self.url):
                await pool.open()
            self._async_pool = pool
        return self._async_pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """Borrow a pooled connection, translating driver errors."""
        with postgres_errors(self.url), self.pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction on a pooled connection: commits when the block ends, rolls back on error."""
        with self.connection() as conn:
            transaction = Transaction(self, conn)
            with conn.transaction():
                yield transaction
            transaction._run_after_commit()

    @asynccontextmanager
    async def atransaction(self) -> AsyncIterator[Transaction]:
        """The asyncio twin of :meth:`transaction` (``Transaction.connection`` is async)."""
        pool = await self.async_pool()
        with postgres_errors(self.url):
            async with pool.connection() as conn:
                transaction = Transaction(self, conn)
                async with conn.transaction():
                    yield transaction
                transaction._run_after_commit()

    def run_schema(self, statements: Iterable[str], lock_key: str | None = None) -> None:
        """Run DDL ``statements`` in one transaction; with ``lock_key``, under an advisory lock
        on it, so processes creating the same tables at once cannot clash."""
        with self.connection() as conn, conn.transaction():
            if lock_key is not None:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,))
            for statement in statements:
                conn.execute(statement)

    def ping(self) -> None:
        """Raise :class:`EngineUnavailableError` unless the server answers."""
        with self.connection() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        """Close the synchronous pool."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def aclose(self) -> None:
        """Close both pools."""
        self.close()
        if self._async_pool is not None:
            await self._async_pool.close()
            self._async_pool = None


@contextmanager
def postgres_errors(url: str) -> Iterator[None]:
    """Translate psycopg and pool errors into seawall's, naming the server and the fix."""
    import psycopg
    import psycopg_pool

    try:
        yield
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        raise EngineUnavailableError(
            f"PostgreSQL at {redact(url)} is unreachable ({exc}); check that it runs and the URL is right",
            url=url,
        ) from exc
    except psycopg.Error as exc:
        raise EngineError(f"PostgreSQL at {redact(url)} failed: {exc}", url=url) from exc
