"""The engine registry and the base every engine shares."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from seawall.errors import ConfigurationError, UnsupportedEngineError

if TYPE_CHECKING:
    from seawall.messaging.queue import Queue
    from seawall.messaging.topic import Topic

__all__ = ["Engine", "connect", "register_engine"]


class Engine:
    """A connection to one storage technology; subclasses add the driver objects.

    ``kind`` names the technology (``"memory"``, ``"redis"``, ...) so that a store
    factory can choose its implementation. An engine is a context manager that
    closes its connections on exit.
    """

    kind: ClassVar[str] = ""
    supports_transactions: ClassVar[bool] = False
    """True when :meth:`transaction` works (SQLite, PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def queue(self, name: str, **options: Any) -> Queue:
        """The durable queue ``name`` on this engine (see :mod:`seawall.messaging.queue`)."""
        from seawall.messaging.queue import open_queue

        return open_queue(self, name, **options)

    def topic(self, name: str, **options: Any) -> Topic:
        """The pub/sub topic ``name`` on this engine (see :mod:`seawall.messaging.topic`)."""
        from seawall.messaging.topic import open_topic

        return open_topic(self, name, **options)

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A database transaction that several stores can join (SQLite and PostgreSQL).

        Engines without transactions (memory, Redis, etcd) refuse with an error that
        names the engines that have them.
        """
        raise UnsupportedEngineError(
            f"the {self.kind or type(self).__name__} engine has no transactions; use "
            "'sqlite:///path.db' or 'postgresql://...' to write several stores in one commit"
        )

    def close(self) -> None:
        """Release every connection this engine holds."""

    async def aclose(self) -> None:
        """Release every connection, including those of the async driver."""
        self.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.url)!r})"


class Transaction:
    """One database transaction that several seawall stores can join.

    Business rows (``tx.execute``), events, outbox messages, saga state and
    idempotency records written through the same ``Transaction`` commit together or
    not at all. ``connection`` is the driver's connection (``sqlite3.Connection`` or
    ``psycopg.Connection``) for stores and for the caller's own SQL.
    """

    def __init__(self, engine: Engine, connection: Any) -> None:
        self.engine = engine
        self.connection = connection
        self._after_commit: list[Callable[[], object]] = []

    def on_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the outermost transaction has committed (never on rollback).

        Stores use it for work that must not happen inside the transaction, such as
        waking consumers with a notification. A callback that raises is logged.
        """
        self._after_commit.append(callback)

    def _run_after_commit(self) -> None:
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logging.getLogger("seawall.engines").exception(
                    "after-commit callback %r failed", callback
                )

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        """Run one statement of the caller's inside the transaction; returns the cursor."""
        return self.connection.execute(sql, parameters)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine!r})"


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, safe for logs and errors."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


_REGISTRY: dict[str, str] = {
    "memory": "seawall.engines.memory:MemoryEngine",
    "sqlite": "seawall.engines.sqlite:SqliteEngine",
    "redis": "seawall.engines.redis:RedisEngine",
    "rediss": "seawall.engines.redis:RedisEngine",
    "postgresql": "seawall.engines.postgres:PostgresEngine",
    "postgres": "seawall.engines.postgres:PostgresEngine",
    "etcd": "seawall.engines.etcd:EtcdEngine",
    "nats": "seawall.engines.nats:NatsEngine",
    "tls": "seawall.engines.nats:NatsEngine",
    "amqp": "seawall.engines.amqp:AmqpEngine",
    "amqps": "seawall.engines.amqp:AmqpEngine",
}


E = TypeVar("E", bound=Engine)


def engine_for(engine: E | str, engine_class: type[E], store: str, scheme: str) -> tuple[E, bool]:
    """The engine a store runs on, opened from a URL when given one.

    Returns the engine and whether it was opened here (then the store owns and closes
    it). Anything else than an ``engine_class`` is refused, naming the ``scheme`` to use.
    """
    if isinstance(engine, str):
        opened = connect(engine)
        if not isinstance(opened, engine_class):
            raise ConfigurationError(f"{store} needs a {scheme} URL, got {engine!r}")
        return opened, True
    if not isinstance(engine, engine_class):
        raise ConfigurationError(f"{store} needs a {engine_class.__name__}, got {engine!r}")
    return engine, False


def register_engine(scheme: str, target: str | type[Engine]) -> None:
    """Map a URL scheme to an engine class (or ``"module:Class"`` path imported on use)."""
    _REGISTRY[scheme] = (
        target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    )


def connect(url: str | Engine, **options: Any) -> Engine:
    """Open the engine a URL names; an :class:`Engine` passed in is returned as is.

    ``options`` go to the engine's constructor (pool sizes, timeouts, ...).
    """
    if isinstance(url, Engine):
        return url
    if not isinstance(url, str) or "://" not in url:
        raise UnsupportedEngineError(
            f"engine URL {url!r} has no scheme; use e.g. 'memory://', 'sqlite:///path.db', "
            "'redis://127.0.0.1:6379/0' or 'postgresql://user@host/db'"
        )
    scheme = url.split("://", 1)[0].lower()
    target = _REGISTRY.get(scheme)
    if target is None:
        known = ", ".join(sorted(f"{name}://" for name in _REGISTRY))
        raise UnsupportedEngineError(
            f"unknown engine scheme {scheme!r} in {redact(url)!r}; known: {known}"
        )
    module_name, _, class_name = target.partition(":")
    engine_class: type[Engine] = getattr(importlib.import_module(module_name), class_name)
    return engine_class(url, **options)
