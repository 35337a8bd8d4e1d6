"""Per-thread autocommit PostgreSQL connections, shared by the PostgreSQL log and participant."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from seawall.errors import ConfigurationError

if TYPE_CHECKING:
    import psycopg

    from seawall.engines.postgres import PostgresEngine

__all__ = ["PgConnections", "qualified"]


def qualified(schema: str | None, name: str) -> str:
    """``"schema"."name"`` or ``"name"``: identifiers already checked to be plain."""
    return f'"{schema}"."{name}"' if schema else f'"{name}"'


def check_schema(schema: object) -> str | None:
    """``None`` or a plain lowercase schema name."""
    if schema is None:
        return None
    from seawall.workflows.saga._log import check_prefix

    checked = check_prefix(schema)
    if not checked:
        raise ConfigurationError("schema='' is invalid: pass None or a schema name")
    return checked


class PgConnections:
    """One autocommit connection per thread, opened on first use, replaced when broken."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine
        self._local = threading.local()
        self._guard = threading.Lock()
        self._connections: list[psycopg.Connection[Any]] = []

    def get(self) -> psycopg.Connection[Any]:
        """This thread's connection."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            import psycopg

            from seawall.engines.postgres import postgres_errors

            with postgres_errors(self.engine.url):
                conn = psycopg.connect(
                    self.engine.url,
                    autocommit=True,
                    connect_timeout=max(1, int(self.engine.timeout)),
                )
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    @contextmanager
    def using(self) -> Iterator[psycopg.Connection[Any]]:
        """This thread's connection with errors translated; a broken one is dropped."""
        import psycopg

        from seawall.engines.postgres import postgres_errors

        with postgres_errors(self.engine.url):
            conn = self.get()
            try:
                yield conn
            except psycopg.OperationalError:
                conn.close()
                raise

    def execute(self, sql: str, parameters: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement (its own commit) and return its rows (none for a command)."""
        with self.using() as conn:
            cursor = conn.execute(sql, parameters, prepare=True)
            return list(cursor.fetchall()) if cursor.description is not None else []

    def close(self) -> None:
        """Close every thread's connection."""
        with self._guard:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
