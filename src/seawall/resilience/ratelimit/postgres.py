"""The PostgreSQL rate-limit store: one upsert statement per decision, on server time.

Each algorithm has a table (``<prefix>_<kind>``, created idempotently on first use or by
:meth:`PostgresRateLimitStore.setup`) and one ``INSERT ... ON CONFLICT DO UPDATE ...
RETURNING`` statement (``sql/<kind>.sql``, package data): a new key is inserted as
granted, an existing row is locked and recomputed with ``clock_timestamp()`` read after
the lock is held, so concurrent callers queue on the row and never exceed the limit,
and every host uses the database's clock. One statement is one round trip and commits
on its own (or inside the caller's transaction when it joins one).

Each row carries ``expires_at``, the moment its key is back to full; rows past it are
deleted by :meth:`PostgresRateLimitStore.cleanup`, which also runs by itself at most
every ``cleanup_interval`` seconds after a decision.
"""

from __future__ import annotations

import contextlib
import re
import threading
from functools import cache
from importlib import resources
from typing import Any

from seawall.clock import Clock
from seawall.engines import connect
from seawall.engines.postgres import PostgresEngine, postgres_errors
from seawall.errors import ConfigurationError, EngineError
from seawall.resilience.ratelimit._algorithms import (
    GCRA,
    FixedWindow,
    RateLimitAlgorithm,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)
from seawall.resilience.ratelimit._store import RateLimitDecision

__all__ = ["PostgresLimit", "PostgresRateLimitStore"]

DEFAULT_TABLE_PREFIX = "seawall_ratelimit"
KINDS = (
    TokenBucket.kind,
    GCRA.kind,
    FixedWindow.kind,
    SlidingWindowLog.kind,
    SlidingWindowCounter.kind,
)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,29}")


@cache
def _statements(kind: str) -> dict[str, str]:
    """The named SQL blocks (``-- name: x``) of ``sql/<kind>.sql`` and ``sql/common.sql``."""
    statements: dict[str, str] = {}
    for file in ("common", kind):
        text = resources.files(__package__).joinpath("sql", f"{file}.sql").read_text()
        for block in text.split("-- name: ")[1:]:
            name, _, body = block.partition("\n")
            statements[name.strip()] = body.strip()
    return statements


def _parameters(algorithm: RateLimitAlgorithm) -> dict[str, float | int]:
    if isinstance(algorithm, GCRA):
        return {"emission": algorithm.interval, "burst": algorithm.burst}
    if isinstance(algorithm, TokenBucket):
        return {"refill": algorithm.refill_rate, "burst": algorithm.burst}
    if isinstance(algorithm, FixedWindow | SlidingWindowLog | SlidingWindowCounter):
        return {"window": algorithm.window, "limit": algorithm.limit}
    raise ConfigurationError(f"the PostgreSQL store has no statement for {algorithm!r}")


class PostgresRateLimitStore:
    """Rate-limit state in PostgreSQL tables named ``<table_prefix>_<algorithm>``.

    ``engine`` is a :class:`~seawall.engines.postgres.PostgresEngine` or a
    ``postgresql://`` URL. ``cleanup_interval`` (seconds, ``None`` = never) runs
    :meth:`cleanup` after a decision when that long has passed; ``unlogged=True`` creates
    ``UNLOGGED`` tables (faster writes; the state is lost on a crash and not replicated).
    """

    def __init__(
        self,
        engine: PostgresEngine | str,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        cleanup_interval: float | None = 60.0,
        unlogged: bool = False,
    ) -> None:
        self._owned: PostgresEngine | None = None
        if isinstance(engine, str):
            opened = connect(engine)
            if not isinstance(opened, PostgresEngine):
                raise ConfigurationError(
                    f"PostgresRateLimitStore needs a postgresql:// URL, got {engine!r}"
                )
            engine = self._owned = opened
        if not isinstance(table_prefix, str) or not _IDENTIFIER.fullmatch(table_prefix):
            raise ConfigurationError(
                "PostgresRateLimitStore table_prefix must be 1-30 lowercase letters, digits "
                f"or underscores, starting with a letter or underscore; got {table_prefix!r}"
            )
        if cleanup_interval is not None and (
            isinstance(cleanup_interval, bool)
            or not isinstance(cleanup_interval, int | float)
            or not cleanup_interval > 0
        ):
            raise ConfigurationError(
                "PostgresRateLimitStore cleanup_interval must be seconds > 0 or None (never), "
                f"got {cleanup_interval!r}"
            )
        self.engine = engine
        self.table_prefix = table_prefix
        self.cleanup_interval = cleanup_interval
        self.unlogged = unlogged
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def table(self, kind: str) -> str:
        """The table holding state of algorithm ``kind``."""
        return f"{self.table_prefix}_{kind}"

    def statement(self, kind: str, name: str) -> str:
        """The SQL statement ``name`` (``create``, ``take``, ``cleanup``, ``reset``) of ``kind``."""
        return (
            _statements(kind)[name]
            .replace("{table}", self.table(kind))
            .replace("{unlogged}", "UNLOGGED" if self.unlogged else "")
        )

    # ------------------------------------------------------------------ schema

    def setup(self) -> None:
        """Create every algorithm's table (idempotent); otherwise each is made on first use."""
        for kind in KINDS:
            self.ensure(kind)

    async def asetup(self) -> None:
        """Async :meth:`setup`."""
        for kind in KINDS:
            await self.aensure(kind)

    def ensure(self, kind: str) -> None:
        """Create the table of ``kind`` unless this store already did."""
        if kind in self._ready:
            return
        import psycopg

        with self._lock, self.engine.connection() as conn:
            # another process may create it at the same moment
            with contextlib.suppress(psycopg.errors.UniqueViolation):
                conn.execute(self.statement(kind, "create"))
            self._ready.add(kind)

    async def aensure(self, kind: str) -> None:
        """Async :meth:`ensure`."""
        if kind in self._ready:
            return
        import psycopg

        pool = await self.engine.async_pool()
        with postgres_errors(self.engine.url):
            async with pool.connection() as conn:
                # another process may create it at the same moment
                with contextlib.suppress(psycopg.errors.UniqueViolation):
                    await conn.execute(self.statement(kind, "create"))
        self._ready.add(kind)

    # ------------------------------------------------------------------ protocol

    def bind(self, algorithm: RateLimitAlgorithm, name: str, clock: Clock) -> PostgresLimit:
        """The limit called ``name``; ``clock`` only schedules the automatic cleanup."""
        return PostgresLimit(self, algorithm, name, clock)

    def cleanup(self) -> int:
        """Delete every row whose key is back to full; returns how many."""
        removed = 0
        for kind in sorted(self._ready):
            with self.engine.connection() as conn:
                removed += conn.execute(self.statement(kind, "cleanup")).rowcount
        return removed

    async def acleanup(self) -> int:
        """Async :meth:`cleanup`."""
        removed = 0
        pool = await self.engine.async_pool()
        for kind in sorted(self._ready):
            with postgres_errors(self.engine.url):
                async with pool.connection() as conn:
                    cursor = await conn.execute(self.statement(kind, "cleanup"))
                    removed += cursor.rowcount
        return removed

    def close(self) -> None:
        """Close the engine if this store opened it from a URL."""
        if self._owned is not None:
            self._owned.close()

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        if self._owned is not None:
            await self._owned.aclose()

    def __repr__(self) -> str:
        return f"PostgresRateLimitStore({self.engine!r}, table_prefix={self.table_prefix!r})"


class PostgresLimit:
    """One named limit in PostgreSQL; every call is one upsert statement."""

    local = False

    def __init__(
        self, store: PostgresRateLimitStore, algorithm: RateLimitAlgorithm, name: str, clock: Clock
    ) -> None:
        self.store = store
        self.algorithm = algorithm
        self.name = name
        self.kind = algorithm.kind
        self._clock = clock
        self._take_sql = store.statement(self.kind, "take")
        self._parameters = {"limiter": name, **_parameters(algorithm)}
        interval = store.cleanup_interval
        self._next_cleanup = None if interval is None else clock.now() + interval

    def _run(self, key: str, cost: int) -> tuple[Any, ...]:
        store = self.store
        if self.kind not in store._ready:
            store.ensure(self.kind)
        with store.engine.connection() as conn:
            row = conn.execute(
                self._take_sql, {**self._parameters, "key": key, "cost": cost}
            ).fetchone()
        if self._next_cleanup is not None and self._clock.now() >= self._next_cleanup:
            self._cleanup()
        if row is None:  # pragma: no cover - an upsert's RETURNING always yields its row
            raise EngineError(f"rate-limit upsert on {store.table(self.kind)} returned no row")
        return tuple(row)

    async def _arun(self, key: str, cost: int) -> tuple[Any, ...]:
        store = self.store
        if self.kind not in store._ready:
            await store.aensure(self.kind)
        pool = await store.engine.async_pool()
        with postgres_errors(store.engine.url):
            async with pool.connection() as conn:
                cursor = await conn.execute(
                    self._take_sql, {**self._parameters, "key": key, "cost": cost}
                )
                row = await cursor.fetchone()
        if self._next_cleanup is not None and self._clock.now() >= self._next_cleanup:
            await self._acleanup()
        if row is None:  # pragma: no cover - an upsert's RETURNING always yields its row
            raise EngineError(f"rate-limit upsert on {store.table(self.kind)} returned no row")
        return tuple(row)

    def _cleanup(self) -> None:
        interval = self.store.cleanup_interval or 0.0
        self._next_cleanup = self._clock.now() + interval
        with self.store.engine.connection() as conn:
            conn.execute(self.store.statement(self.kind, "cleanup"))

    async def _acleanup(self) -> None:
        interval = self.store.cleanup_interval or 0.0
        self._next_cleanup = self._clock.now() + interval
        pool = await self.store.engine.async_pool()
        with postgres_errors(self.store.engine.url):
            async with pool.connection() as conn:
                await conn.execute(self.store.statement(self.kind, "cleanup"))

    def take(self, key: str, cost: int) -> float:
        """One upsert: ``0.0`` when granted, else seconds to wait."""
        allowed, _, retry_after, _ = self._run(key, cost)
        return 0.0 if allowed else max(float(retry_after), 1e-9)

    async def atake(self, key: str, cost: int) -> float:
        """Async :meth:`take`."""
        allowed, _, retry_after, _ = await self._arun(key, cost)
        return 0.0 if allowed else max(float(retry_after), 1e-9)

    def decide(self, key: str, cost: int) -> RateLimitDecision:
        """One upsert returning the whole decision."""
        return self._decision(self._run(key, cost))

    async def adecide(self, key: str, cost: int) -> RateLimitDecision:
        """Async :meth:`decide`."""
        return self._decision(await self._arun(key, cost))

    def _decision(self, row: tuple[Any, ...]) -> RateLimitDecision:
        allowed, remaining, retry_after, reset_after = row
        return RateLimitDecision(
            allowed=bool(allowed),
            remaining=max(0, int(remaining)),
            retry_after=0.0 if allowed else max(float(retry_after), 1e-9),
            reset_after=max(0.0, float(reset_after)),
            limit=self.algorithm.capacity,
        )

    def reset(self, key: str) -> None:
        """Delete ``key``'s row."""
        store = self.store
        store.ensure(self.kind)
        with store.engine.connection() as conn:
            conn.execute(store.statement(self.kind, "reset"), {"limiter": self.name, "key": key})

    async def areset(self, key: str) -> None:
        """Async :meth:`reset`."""
        store = self.store
        await store.aensure(self.kind)
        pool = await store.engine.async_pool()
        with postgres_errors(store.engine.url):
            async with pool.connection() as conn:
                await conn.execute(
                    store.statement(self.kind, "reset"), {"limiter": self.name, "key": key}
                )

    def __repr__(self) -> str:
        return f"PostgresLimit({self.name!r}, {self.algorithm.describe()})"
