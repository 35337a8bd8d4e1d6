"""``capture(engine, tables=...)``: the change capture that fits the engine."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError, UnsupportedEngineError

if TYPE_CHECKING:
    from seawall.engines._base import Engine
    from seawall.eventsourcing.cdc._capture import AsyncChangeCapture, ChangeCapture

__all__ = ["PLUGINS", "acapture", "capture"]

PLUGINS = ("pgoutput", "test_decoding")
"""The PostgreSQL output plugins change capture can decode."""

_SLOT = re.compile(r"[a-z_][a-z0-9_]{0,39}")


def _check(
    tables: Sequence[str], slot: str, snapshot: bool, plugin: str | None, name: str | None
) -> tuple[list[str], str]:
    if isinstance(tables, str) or not isinstance(tables, Sequence):
        raise ConfigurationError(
            f"tables={tables!r} must be a list of table names, e.g. ['orders', 'sales.items']"
        )
    names = list(tables)
    if not names or not all(isinstance(table, str) and table.strip() for table in names):
        raise ConfigurationError(
            f"tables={tables!r} must name at least one table, each a non-empty string"
        )
    if len(set(names)) != len(names):
        raise ConfigurationError(f"tables={tables!r} names a table twice")
    if not isinstance(slot, str) or not _SLOT.fullmatch(slot):
        raise ConfigurationError(
            f"slot={slot!r} must be 1 to 40 characters of lower-case letters, digits and "
            "underscores, starting with a letter or underscore (a replication slot name)"
        )
    if not isinstance(snapshot, bool):
        raise ConfigurationError(f"snapshot={snapshot!r} must be True or False")
    if plugin is not None and plugin not in PLUGINS:
        raise ConfigurationError(f"plugin={plugin!r} must be one of {PLUGINS}")
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigurationError(f"name={name!r} must be a non-empty string")
    return names, plugin or PLUGINS[0]


def capture(
    engine: Engine | str,
    tables: Sequence[str],
    *,
    slot: str = "seawall",
    snapshot: bool = True,
    plugin: str | None = None,
    full_before_images: bool = False,
    advance_interval: float | None = None,
    name: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> ChangeCapture:
    """Capture the row changes of ``tables`` on ``engine`` (SQLite or PostgreSQL).

    ``slot`` names this consumer's position: a replication slot on PostgreSQL, a set
    of triggers on SQLite; opening the same slot again resumes where the last
    confirmation left off. ``snapshot`` hands out the tables' rows (op ``"r"``)
    before the first change when the slot is created. PostgreSQL only: ``plugin``
    (``"pgoutput"``, the default, or ``"test_decoding"``), ``full_before_images``
    (set ``REPLICA IDENTITY FULL`` on the tables so updates and deletes carry the whole
    old row in ``before``) and ``advance_interval`` (seconds between slot moves,
    default 1.0; 0 moves the slot on every confirm). Nothing is read until the first
    call (or ``open()``).
    """
    from seawall.engines import connect

    names, chosen = _check(tables, slot, snapshot, plugin, name)
    resolved = connect(engine)
    if resolved.kind == "sqlite":
        from seawall.engines.sqlite import SqliteEngine
        from seawall.eventsourcing.cdc.sqlite import SqliteChangeCapture

        _sqlite_only(plugin, full_before_images, advance_interval)
        if not isinstance(resolved, SqliteEngine):  # pragma: no cover - kind says so
            raise TypeError(resolved)
        return SqliteChangeCapture(
            resolved, names, slot=slot, snapshot=snapshot, name=name, clock=clock
        )
    if resolved.kind == "postgres":
        from seawall.engines.postgres import PostgresEngine
        from seawall.eventsourcing.cdc.postgres import PostgresChangeCapture

        if not isinstance(resolved, PostgresEngine):  # pragma: no cover - kind says so
            raise TypeError(resolved)
        return PostgresChangeCapture(
            resolved,
            names,
            slot=slot,
            snapshot=snapshot,
            plugin=chosen,
            full_before_images=bool(full_before_images),
            name=name,
            clock=clock,
            **_interval(advance_interval),
        )
    raise UnsupportedEngineError(
        f"change data capture needs a database with a log or triggers; the {resolved.kind!r} "
        "engine has neither: use sqlite:/// or postgresql://"
    )


def acapture(
    engine: Engine | str,
    tables: Sequence[str],
    *,
    slot: str = "seawall",
    snapshot: bool = True,
    plugin: str | None = None,
    full_before_images: bool = False,
    advance_interval: float | None = None,
    name: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> AsyncChangeCapture:
    """The asyncio twin of :func:`capture`: the same options, every method awaited."""
    from seawall.engines import connect

    names, chosen = _check(tables, slot, snapshot, plugin, name)
    resolved = connect(engine)
    if resolved.kind == "postgres":
        from seawall.engines.postgres import PostgresEngine
        from seawall.eventsourcing.cdc.postgres import AsyncPostgresChangeCapture

        if not isinstance(resolved, PostgresEngine):  # pragma: no cover - kind says so
            raise TypeError(resolved)
        return AsyncPostgresChangeCapture(
            resolved,
            names,
            slot=slot,
            snapshot=snapshot,
            plugin=chosen,
            full_before_images=bool(full_before_images),
            name=name,
            clock=clock,
            **_interval(advance_interval),
        )
    sync = capture(
        resolved,
        names,
        slot=slot,
        snapshot=snapshot,
        plugin=plugin,
        full_before_images=full_before_images,
        advance_interval=advance_interval,
        name=name,
        clock=clock,
    )
    from seawall.eventsourcing.cdc.sqlite import AsyncSqliteChangeCapture, SqliteChangeCapture

    if not isinstance(sync, SqliteChangeCapture):  # pragma: no cover - only SQLite is left
        raise TypeError(sync)
    return AsyncSqliteChangeCapture(sync)


def _interval(advance_interval: float | None) -> dict[str, float]:
    return {} if advance_interval is None else {"advance_interval": advance_interval}


def _sqlite_only(
    plugin: str | None, full_before_images: bool, advance_interval: float | None
) -> None:
    if advance_interval is not None:
        raise ConfigurationError(
            f"advance_interval={advance_interval!r} applies to PostgreSQL only; SQLite "
            "confirms with one DELETE, durable at once"
        )
    if plugin is not None:
        raise ConfigurationError(
            f"plugin={plugin!r} applies to PostgreSQL only; SQLite captures with triggers"
        )
    if full_before_images not in (True, False):
        raise ConfigurationError(f"full_before_images={full_before_images!r} must be a bool")
