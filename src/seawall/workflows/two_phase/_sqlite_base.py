"""Per-thread SQLite connections with chosen durability, shared by the SQLite log and participant."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from seawall.errors import ConfigurationError, EngineError, EngineUnavailableError

if TYPE_CHECKING:
    from seawall.engines.sqlite import SqliteEngine

__all__ = ["SYNCHRONOUS", "SqliteConnections", "check_synchronous"]

SYNCHRONOUS: Final = ("NORMAL", "FULL", "EXTRA")


def check_synchronous(owner: str, synchronous: object) -> str:
    """A ``PRAGMA synchronous`` level the caller may choose."""
    if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS:
        raise ConfigurationError(
            f"{owner}(synchronous={synchronous!r}) is invalid: use one of {SYNCHRONOUS}"
        )
    return synchronous.upper()


class SqliteConnections:
    """One autocommit connection per thread on the engine's file, WAL and ``synchronous`` set."""

    def __init__(self, engine: SqliteEngine, synchronous: str, what: str) -> None:
        self.engine = engine
        self.synchronous = synchronous
        self.what = what
        self._local = threading.local()
        self._guard = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    def get(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            engine = self.engine
            try:
                conn = sqlite3.connect(
                    engine.path, timeout=engine.timeout, isolation_level=None,
                    check_same_thread=False,
                )  # fmt: skip
                if engine.path != ":memory:":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
                conn.execute(f"PRAGMA busy_timeout={int(engine.timeout * 1000)}")
            except sqlite3.Error as exc:
                raise self.error(exc) from exc
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    def error(self, exc: sqlite3.Error) -> EngineError:
        """The seawall error for a driver error, naming the file and the fix."""
        url = self.engine.url
        if isinstance(exc, sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc)
        ):
            return EngineUnavailableError(
                f"SQLite {self.what} at {url} stayed locked by another writer ({exc}); keep "
                "write transactions short, or raise the engine's timeout",
                url=url,
            )
        return EngineError(f"SQLite {self.what} at {url} failed: {exc}", url=url)

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction, committed when the block ends."""
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
        """Close every thread's connection."""
        with self._guard:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
