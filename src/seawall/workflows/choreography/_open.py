"""Choosing the tracker store by the engine's kind."""

from __future__ import annotations

from typing import Any

from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.workflows.choreography._store import TrackerStore

__all__ = ["open_tracker_store"]


def open_tracker_store(store: TrackerStore | Engine | str, **options: Any) -> TrackerStore:
    """The tracker store for an engine or URL (memory, SQLite, PostgreSQL); a store is returned as is.

    ``options`` go to the store's constructor (``table_prefix``, ``schema``, ``clock``, ...).
    """
    if isinstance(store, TrackerStore) and not isinstance(store, str | Engine):
        if options:
            raise ConfigurationError(
                f"open_tracker_store() got options {sorted(options)} with a ready store; pass "
                "them when building the store"
            )
        return store
    engine = connect(store)
    if engine.kind == "memory":
        from seawall.workflows.choreography.memory import MemoryTrackerStore

        return MemoryTrackerStore(engine, **options)
    if engine.kind == "sqlite":
        from seawall.workflows.choreography.sqlite import SqliteTrackerStore

        return SqliteTrackerStore(engine, **options)
    if engine.kind == "postgres":
        from seawall.workflows.choreography.postgres import PostgresTrackerStore

        return PostgresTrackerStore(engine, **options)
    raise UnsupportedEngineError(
        f"no tracker store for the {engine.kind!r} engine; use memory://, sqlite:/// or "
        "postgresql://"
    )
