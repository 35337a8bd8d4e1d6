"""The SQLite engine: the embedded default, one file, WAL mode, safe across processes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from seawall.engines._base import Engine, Transaction
from seawall.errors import ConfigurationError

__all__ = ["SqliteEngine"]


class SqliteEngine(Engine):
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite://:memory:``.

    Each thread gets its own connection (sqlite3 connections are not shareable
    across threads); file databases use WAL so readers never block the writer.
    """

    kind: ClassVar[str] = "sqlite"
    supports_transactions: ClassVar[bool] = True

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        super().__init__(url)
        rest = url.split("://", 1)[1]
        if rest in {"", ":memory:", "/:memory:"}:
            self.path = ":memory:"
        elif rest.startswith("/"):
            self.path = rest[1:]
        else:
            raise ConfigurationError(
                f"SQLite URL {url!r} needs three slashes: 'sqlite:///relative.db' or 'sqlite:////abs/path.db'"
            )
        if self.path != ":memory:":
            parent = Path(self.path).resolve().parent
            if not parent.is_dir():
                raise ConfigurationError(f"SQLite folder {parent} does not exist; create it first")
        self.timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @property
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; open a transaction with ``BEGIN``)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction (``BEGIN IMMEDIATE``) on this thread's connection.

        Commits when the block ends, rolls back if it raises. Nested use opens a
        savepoint, so a store can join a caller's transaction or run its own; the
        nested block's ``on_commit`` callbacks run when the outermost one commits.
        """
        conn = self.connection
        if conn.in_transaction:
            # Joined to a transaction already open on this connection: a savepoint.
            outer: Transaction | None = getattr(self._local, "transaction", None)
            name = f"seawall_{id(conn)}_{threading.get_ident()}"
            nested = Transaction(self, conn)
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield nested
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                raise
            conn.execute(f"RELEASE {name}")
            if outer is not None:
                outer._after_commit.extend(nested._after_commit)
            else:  # the caller began it by hand: we cannot see its commit
                nested._run_after_commit()
            return
        conn.execute("BEGIN IMMEDIATE")
        transaction = Transaction(self, conn)
        self._local.transaction = transaction
        try:
            yield transaction
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._local.transaction = None
        transaction._run_after_commit()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
