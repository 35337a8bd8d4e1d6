"""Per-thread SQLite connections for stores that keep their own (locks, semaphores, logs)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

from seawall.engines.sqlite import SqliteEngine
from seawall.errors import ConfigurationError, EngineError, EngineUnavailableError

__all__ = [
    "SYNCHRONOUS",
    "SqliteConnections",
    "atomic_write",
    "check_synchronous",
    "declared_names",
    "store_error",
]

SYNCHRONOUS: Final = ("NORMAL", "FULL", "EXTRA")
"""The ``PRAGMA synchronous`` levels a store may be given (OFF is never offered)."""


def check_synchronous(owner: str, synchronous: object) -> str:
    """A ``PRAGMA synchronous`` level the caller may choose, upper-cased."""
    if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS:
        raise ConfigurationError(
            f"{owner}(synchronous={synchronous!r}) is invalid: use one of {SYNCHRONOUS}"
        )
    return synchronous.upper()


class SqliteConnections:
    """One WAL connection per thread (and per durability mode) on a store's database file.

    Connections are reopened after a fork (a child never shares its parent's), the
    ``create`` statements run once on the first connection, and ``close`` closes every
    connection opened here. A ``:memory:`` engine shares its single connection.
    """

    def __init__(
        self,
        engine: SqliteEngine,
        *,
        timeout: float | None = None,
        synchronous: str | None = None,
        create: Sequence[str] = (),
        what: str = "database",
    ) -> None:
        self.engine = engine
        self.timeout = engine.timeout if timeout is None else timeout
        self.synchronous = synchronous
        self.what = what
        self._create = tuple(create)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._pid = os.getpid()
        self._ready = False

    def _open(self, relaxed: bool) -> sqlite3.Connection:
        if self.engine.path == ":memory:":
            return self.engine.connection
        conn = sqlite3.connect(
            self.engine.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        if relaxed:
            conn.execute("PRAGMA synchronous=NORMAL")
        elif self.synchronous is not None:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        with self._guard:
            self._opened.append(conn)
        return conn

    def get(self, relaxed: bool = False) -> sqlite3.Connection:
        """This thread's connection; a *relaxed* one commits without waiting for the disk."""
        if self._pid != os.getpid():  # forked: never share a connection with the parent
            self._local = threading.local()
            self._opened = []
            self._pid = os.getpid()
        attribute = "relaxed" if relaxed else "durable"
        conn: sqlite3.Connection | None = getattr(self._local, attribute, None)
        if conn is None:
            try:
                conn = self._open(relaxed)
                setattr(self._local, attribute, conn)
                if not self._ready:
                    for statement in self._create:
                        conn.execute(statement)
                    self._ready = True
            except sqlite3.Error as exc:
                raise self.error(exc) from exc
        return conn

    def error(self, exc: sqlite3.Error) -> EngineError:
        """The seawall error for a driver error: busy or unopenable files are "unavailable"."""
        if isinstance(exc, sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc) or "unable to open" in str(exc)
        ):
            return EngineUnavailableError(
                f"SQLite {self.what} {self.engine.path!r} did not answer ({exc}); another "
                f"connection held its write lock for over {self.timeout}s or the file cannot "
                "be opened: keep write transactions short, or raise the store's timeout",
                url=self.engine.url,
            )
        return EngineError(
            f"SQLite {self.what} {self.engine.path!r} failed: {exc}", url=self.engine.url
        )

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction on this thread's connection, committed at the end."""
        conn = self.get()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self.error(exc) from exc

    def close(self) -> None:
        """Close every connection opened here (the engine itself stays open)."""
        with self._guard:
            for conn in self._opened:
                conn.close()
            self._opened.clear()
        self._local = threading.local()


def store_error(exc: sqlite3.Error, path: str, store: str) -> EngineError:
    """The error a SQLite ``store`` raises for a driver error, with a hint when it was locked."""
    text = str(exc)
    hint = (
        "; another connection held the write lock longer than the busy timeout: "
        "shorten its transactions or raise the engine's timeout"
        if "locked" in text or "busy" in text
        else ""
    )
    return EngineError(f"SQLite {store} on {path!r} failed: {text}{hint}", url=path)


def declared_names(engine: SqliteEngine, table: str, store: str) -> list[str]:
    """The names listed in the registry ``table`` (a queue's or a topic's), sorted."""
    conn = engine.connection
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if exists is None:
            return []
        return [row[0] for row in conn.execute(f"SELECT name FROM {table} ORDER BY name")]
    except sqlite3.Error as exc:
        raise store_error(exc, engine.path, store) from exc


@contextmanager
def atomic_write(conn: sqlite3.Connection, savepoint: str) -> Iterator[None]:
    """One atomic unit on ``conn``: a savepoint inside the caller's open transaction, or a
    write transaction (``BEGIN IMMEDIATE``) of its own, committed when the block ends."""
    if conn.in_transaction:
        conn.execute(f"SAVEPOINT {savepoint}")
        try:
            yield
        except BaseException:
            conn.execute(f"ROLLBACK TO {savepoint}")
            conn.execute(f"RELEASE {savepoint}")
            raise
        conn.execute(f"RELEASE {savepoint}")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
