"""Resource-side fencing: the Python guard and the SQL guard on SQLite."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from seawall.clock import ManualClock
from seawall.coordination import (
    FenceGuard,
    FencingError,
    Lock,
    MemoryLockStore,
    SqlFence,
    sql_fence,
)
from seawall.engines import connect
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError, SeawallError

# ---------------------------------------------------------------------- FenceGuard


def test_the_guard_accepts_rising_and_equal_tokens_and_refuses_lower_ones() -> None:
    guard = FenceGuard()
    assert guard.last_seen("orders") is None
    guard.check("orders", 3)
    guard.check("orders", 3)
    guard.check("orders", 5)
    with pytest.raises(FencingError) as caught:
        guard.check("orders", 4)
    assert isinstance(caught.value, SeawallError)
    assert (caught.value.resource, caught.value.token, caught.value.last_seen) == ("orders", 4, 5)
    assert "re-acquire the lock" in str(caught.value)
    assert guard.last_seen("orders") == 5
    guard.check("invoices", 1)  # resources are independent
    assert guard.last_seen("invoices") == 1


@pytest.mark.parametrize("token", [0, -1, True, 1.5, "7", None])
def test_the_guard_refuses_something_that_is_not_a_token(token: object) -> None:
    with pytest.raises(ConfigurationError, match="fencing token"):
        FenceGuard().check("orders", token)  # type: ignore[arg-type]


def test_the_guard_takes_a_lease_and_refuses_a_stale_holder(clock: ManualClock) -> None:
    store = MemoryLockStore(clock)
    guard = FenceGuard()
    paused = Lock("orders", ttl=1.0, store=store, clock=clock).acquire()
    clock.advance(2.0)  # the first holder pauses past its lease
    fresh = Lock("orders", ttl=1.0, store=store, clock=clock).acquire()
    guard.check("orders", fresh)
    with pytest.raises(FencingError):
        guard.check("orders", paused)


def test_fenced_holds_the_resource_for_the_write() -> None:
    guard = FenceGuard()
    seen_from_other_thread: list[bool] = []

    def try_check() -> None:
        resource_lock = guard._resource_lock("orders")
        acquired = resource_lock.acquire(blocking=False)
        seen_from_other_thread.append(acquired)
        if acquired:
            resource_lock.release()

    with guard.fenced("orders", 2):
        other = threading.Thread(target=try_check)
        other.start()
        other.join(5)
    assert seen_from_other_thread == [False]  # another writer of "orders" must wait
    try_check()
    assert seen_from_other_thread == [False, True]
    with pytest.raises(FencingError), guard.fenced("orders", 1):
        pytest.fail("a stale write must not run")


def test_the_guard_is_safe_under_concurrent_writers() -> None:
    guard = FenceGuard()
    accepted: list[int] = []
    lock = threading.Lock()

    def writer(token: int) -> None:
        try:
            with guard.fenced("counter", token), lock:
                accepted.append(token)
        except FencingError:
            pass

    threads = [threading.Thread(target=writer, args=(token,)) for token in range(1, 60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert accepted == sorted(accepted)
    assert guard.last_seen("counter") == accepted[-1]
    assert "resources=1" in repr(guard)


# ---------------------------------------------------------------------- SqlFence on SQLite


@pytest.fixture
def db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE balance (id INTEGER PRIMARY KEY, amount INTEGER)")
    conn.execute("INSERT INTO balance VALUES (1, 100)")
    return conn


def _write(conn: sqlite3.Connection, token: int, amount: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        sql_fence(conn, "balance:1", token)
        conn.execute("UPDATE balance SET amount = ? WHERE id = 1", (amount,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def test_the_sql_fence_creates_its_table_and_moves_only_forward(db: sqlite3.Connection) -> None:
    _write(db, 5, 150)
    _write(db, 5, 160)
    _write(db, 8, 170)
    with pytest.raises(FencingError) as caught:
        _write(db, 7, 0)
    assert (caught.value.token, caught.value.last_seen) == (7, 8)
    assert db.execute("SELECT amount FROM balance").fetchone() == (170,)
    assert SqlFence().last_seen(db, "balance:1") == 8


def test_the_stale_write_rolls_back_with_the_callers_transaction(db: sqlite3.Connection) -> None:
    _write(db, 2, 120)
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE balance SET amount = 0 WHERE id = 1")  # written before the fence
    with pytest.raises(FencingError):
        sql_fence(db, "balance:1", 1)
    db.execute("ROLLBACK")
    assert db.execute("SELECT amount FROM balance").fetchone() == (120,)


def test_the_sql_fence_joins_a_seawall_transaction(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path}/shop.db")
    assert isinstance(engine, SqliteEngine)
    fence = SqlFence("shop_fence")
    with engine.transaction() as tx:
        fence.create(tx)
        fence.check(tx, "orders", 4)

    def stale_write() -> None:
        with engine.transaction() as tx:
            tx.execute("CREATE TABLE audit (line TEXT)")
            fence.check(tx, "orders", 3)

    with pytest.raises(FencingError):
        stale_write()
    assert engine.connection.execute(  # the stale transaction rolled back whole
        "SELECT count(*) FROM sqlite_master WHERE name = 'audit'"
    ).fetchone() == (0,)
    assert fence.last_seen(engine.connection, "orders") == 4
    assert fence.last_seen(engine.connection, "unknown") is None
    assert SqlFence("no_such_table").last_seen(engine.connection, "orders") is None
    engine.close()


@pytest.mark.parametrize("table", ["", "1abc", "drop table; --", "a" * 64, None])
def test_the_sql_fence_refuses_a_table_name_that_is_not_an_identifier(table: object) -> None:
    with pytest.raises(ConfigurationError, match="identifier"):
        SqlFence(table)  # type: ignore[arg-type]


def test_the_sql_fence_refuses_a_resource_name_it_cannot_store(db: sqlite3.Connection) -> None:
    with pytest.raises(ConfigurationError, match="NUL"):
        sql_fence(db, "bad\x00", 1)
