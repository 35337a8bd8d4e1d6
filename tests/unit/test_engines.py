from __future__ import annotations

from pathlib import Path

import pytest

import seawall
from seawall.engines.memory import MemoryEngine
from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError, UnsupportedEngineError


def test_memory_engine_by_url_and_named_sharing() -> None:
    first = seawall.connect("memory://shared-test")
    second = seawall.connect("memory://shared-test")
    private = seawall.connect("memory://")
    assert isinstance(first, MemoryEngine)
    assert first.namespace("x", list) is second.namespace("x", list)
    assert private.namespace("x", list) is not first.namespace("x", list)


def test_an_engine_object_passes_through() -> None:
    engine = MemoryEngine()
    assert seawall.connect(engine) is engine


@pytest.mark.parametrize("url", ["nope://x", "127.0.0.1:6379", ""])
def test_bad_urls_name_the_fix(url: str) -> None:
    with pytest.raises(UnsupportedEngineError, match="memory://"):
        seawall.connect(url)


def test_sqlite_engine_opens_a_wal_file(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(engine, SqliteEngine)
    mode = engine.connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    engine.close()


def test_sqlite_engine_rejects_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        seawall.connect(f"sqlite:///{tmp_path / 'missing' / 'a.db'}")


def test_passwords_are_redacted_in_repr() -> None:
    engine = seawall.connect("memory://")
    assert repr(engine) == "MemoryEngine('memory://')"
    from seawall.engines._base import redact

    assert redact("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"


def test_version_is_exposed() -> None:
    assert seawall.__version__.count(".") == 2


def test_sqlite_transaction_commits_or_rolls_back_as_one(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'tx.db'}")
    assert isinstance(engine, SqliteEngine)
    engine.connection.execute("CREATE TABLE stock (sku TEXT PRIMARY KEY, n INTEGER)")
    with engine.transaction() as tx:
        tx.execute("INSERT INTO stock VALUES (?, ?)", ("a", 1))

    def fail_after_nested_writes() -> None:
        with engine.transaction() as tx:
            tx.execute("INSERT INTO stock VALUES (?, ?)", ("b", 2))
            with engine.transaction() as inner:  # nested: a savepoint in the same transaction
                inner.execute("INSERT INTO stock VALUES (?, ?)", ("c", 3))
            raise RuntimeError("business rule failed")

    with pytest.raises(RuntimeError):
        fail_after_nested_writes()
    rows = engine.connection.execute("SELECT sku FROM stock ORDER BY sku").fetchall()
    assert rows == [("a",)]
    engine.close()


def test_sqlite_nested_failure_rolls_back_only_the_savepoint(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'tx.db'}")
    assert isinstance(engine, SqliteEngine)
    engine.connection.execute("CREATE TABLE t (v INTEGER)")

    def failing_inner_step() -> None:
        with engine.transaction() as inner:
            inner.execute("INSERT INTO t VALUES (2)")
            raise KeyError("inner step failed")

    with engine.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(KeyError):
            failing_inner_step()
    assert engine.connection.execute("SELECT v FROM t").fetchall() == [(1,)]
    engine.close()


def test_after_commit_callbacks_run_once_after_the_outer_commit(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'cb.db'}")
    assert isinstance(engine, SqliteEngine)
    engine.connection.execute("CREATE TABLE t (v INTEGER)")
    ran: list[str] = []

    def rolled_back_inner() -> None:
        with engine.transaction() as inner:
            inner.on_commit(lambda: ran.append("discarded"))
            raise KeyError("inner failed")

    with engine.transaction() as tx:
        tx.on_commit(lambda: ran.append("outer"))
        with engine.transaction() as inner:
            inner.on_commit(lambda: ran.append("inner"))
        with pytest.raises(KeyError):
            rolled_back_inner()
        assert ran == [], "nothing runs before the commit"
    assert ran == ["outer", "inner"]

    def rolled_back() -> None:
        with engine.transaction() as tx:
            tx.on_commit(lambda: ran.append("never"))
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert ran == ["outer", "inner"]
    engine.close()


def test_engines_without_transactions_say_which_have_them() -> None:
    with pytest.raises(UnsupportedEngineError, match="sqlite:///"):
        seawall.connect("memory://").transaction()


def test_only_sql_engines_claim_transactions(tmp_path: Path) -> None:
    assert not seawall.connect("memory://").supports_transactions
    assert seawall.connect(f"sqlite:///{tmp_path / 'x.db'}").supports_transactions
