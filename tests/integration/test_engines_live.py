from __future__ import annotations

import pytest

import seawall
from seawall.engines.postgres import PostgresEngine
from seawall.engines.redis import RedisEngine
from seawall.errors import EngineUnavailableError


def test_redis_engine_pings(redis_url: str) -> None:
    engine = seawall.connect(redis_url)
    assert isinstance(engine, RedisEngine)
    engine.ping()
    engine.close()


async def test_redis_async_client(redis_url: str) -> None:
    engine = seawall.connect(redis_url)
    assert isinstance(engine, RedisEngine)
    assert await engine.async_client.ping()
    await engine.aclose()


def test_unreachable_redis_fails_fast_with_a_clear_error() -> None:
    engine = seawall.connect("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    assert isinstance(engine, RedisEngine)
    with pytest.raises(EngineUnavailableError, match="unreachable"):
        engine.ping()


def test_postgres_engine_pings(postgres_url: str) -> None:
    engine = seawall.connect(postgres_url)
    assert isinstance(engine, PostgresEngine)
    engine.ping()
    engine.close()


def test_unreachable_postgres_fails_fast_with_a_clear_error() -> None:
    engine = seawall.connect("postgresql://postgres@127.0.0.1:1/test", timeout=1.0)
    with pytest.raises(EngineUnavailableError, match="unreachable"):
        engine.ping()  # type: ignore[attr-defined]


def test_postgres_transaction_is_atomic(postgres_url: str) -> None:
    import uuid

    engine = seawall.connect(postgres_url)
    assert isinstance(engine, PostgresEngine)
    table = f"tx_{uuid.uuid4().hex[:8]}"
    with engine.connection() as conn:
        conn.execute(f"CREATE TABLE {table} (v INTEGER)")
    try:
        with engine.transaction() as tx:
            tx.execute(f"INSERT INTO {table} VALUES (1)")

        def failing_transaction() -> None:
            with engine.transaction() as tx:
                tx.execute(f"INSERT INTO {table} VALUES (2)")
                raise RuntimeError("rollback")

        with pytest.raises(RuntimeError):
            failing_transaction()
        with engine.connection() as conn:
            assert conn.execute(f"SELECT v FROM {table}").fetchall() == [(1,)]
    finally:
        with engine.connection() as conn:
            conn.execute(f"DROP TABLE {table}")
        engine.close()
