"""The event store contract every engine implements, and the checks they share.

A store holds streams of events. Each event has a version in its stream (1, 2, 3,
...) and a global position across the store that only increases. ``append`` takes an
``expected_version`` for optimistic concurrency: a version number, or one of
:class:`ExpectedVersion`'s constants.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.eventsourcing.store._errors import ConcurrencyError
from seawall.eventsourcing.store._model import AppendRequest, AppendResult, RecordedEvent
from seawall.eventsourcing.store._snapshots import LoadedStream, Snapshot

if TYPE_CHECKING:
    from seawall.engines._base import Engine, Transaction
    from seawall.eventsourcing.store._subscription import (
        AsyncSubscription,
        AsyncWakeups,
        Subscription,
        Wakeups,
    )
    from seawall.eventsourcing.store._upcasting import EventTypes

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AsyncEventStore",
    "EventStore",
    "ExpectedVersion",
    "open_async_event_store",
    "open_event_store",
]


class ExpectedVersion:
    """Special values for ``append(..., expected_version=...)`` besides an exact version."""

    ANY: Final = -1
    """Append whatever the stream's version is (no concurrency check)."""
    NO_STREAM: Final = 0
    """The stream must not exist yet (it has no events)."""
    STREAM_EXISTS: Final = -2
    """The stream must already have at least one event."""


ANY: Final = ExpectedVersion.ANY
NO_STREAM: Final = ExpectedVersion.NO_STREAM
STREAM_EXISTS: Final = ExpectedVersion.STREAM_EXISTS

DEFAULT_PAGE = 1000
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


@runtime_checkable
class EventStore(Protocol):
    """Streams of events with per-stream versions and a global position (synchronous).

    Every write takes an optional ``transaction`` (from ``engine.transaction()``) to
    commit together with the caller's other writes; without one it runs its own.
    """

    @property
    def supports_transactions(self) -> bool:
        """True when writes can join a caller's transaction."""
        ...

    @property
    def types(self) -> EventTypes | None:
        """The registry used to name, upcast and check event types (``None``: none)."""
        ...

    def append(
        self,
        stream_id: str,
        events: Sequence[Any],
        *,
        expected_version: int = ANY,
        transaction: Transaction | None = None,
    ) -> AppendResult:
        """Append ``events`` to the stream, or raise ``ConcurrencyError`` writing nothing."""
        ...

    def append_batch(
        self, requests: Sequence[AppendRequest], *, transaction: Transaction | None = None
    ) -> list[AppendResult]:
        """Append to several streams at once: all requests are written, or none."""
        ...

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        transaction: Transaction | None = None,
    ) -> list[RecordedEvent]:
        """The stream's events from ``from_version`` on (or down from it, backwards)."""
        ...

    def stream_version(self, stream_id: str, *, transaction: Transaction | None = None) -> int:
        """The stream's current version (0 when it has no events)."""
        ...

    def read_all(
        self,
        *,
        after: int = 0,
        limit: int = DEFAULT_PAGE,
        types: Collection[str] | None = None,
        transaction: Transaction | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events with a global position above ``after``, in position order."""
        ...

    def save_snapshot(
        self,
        stream_id: str,
        version: int,
        data: Any,
        *,
        schema_version: int = 1,
        transaction: Transaction | None = None,
    ) -> None:
        """Store the stream's state at ``version`` (kept only if newer than the stored one)."""
        ...

    def load_snapshot(
        self, stream_id: str, *, transaction: Transaction | None = None
    ) -> Snapshot | None:
        """The stream's latest snapshot, or ``None``."""
        ...

    def load(
        self,
        stream_id: str,
        *,
        snapshot_schema_version: int | None = None,
        transaction: Transaction | None = None,
    ) -> LoadedStream:
        """The latest snapshot (of that schema version, if given) plus the events after it."""
        ...

    def load_checkpoint(self, name: str, *, transaction: Transaction | None = None) -> int:
        """The stored position of subscriber ``name`` (0 when it has none)."""
        ...

    def save_checkpoint(
        self, name: str, position: int, *, transaction: Transaction | None = None
    ) -> None:
        """Store subscriber ``name``'s position."""
        ...

    def subscribe(
        self,
        name: str,
        handler: Callable[[RecordedEvent], object],
        *,
        types: Collection[str] | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Subscription:
        """A catch-up-then-live subscription that stores its checkpoint under ``name``."""
        ...

    def wakeups(self, clock: Clock) -> Wakeups:
        """What a subscription waits on between polls (notifications, or the clock)."""
        ...

    def create_tables(self) -> None:
        """Create the store's tables if missing (done on first use too)."""
        ...

    def drop_tables(self) -> None:
        """Drop the store's tables and everything in them (for tests and teardown)."""
        ...

    def close(self) -> None:
        """Release what the store holds (not the engine)."""
        ...


@runtime_checkable
class AsyncEventStore(Protocol):
    """The asyncio twin of :class:`EventStore`: the same methods, awaited."""

    @property
    def supports_transactions(self) -> bool:
        """True when writes can join a caller's transaction."""
        ...

    @property
    def types(self) -> EventTypes | None:
        """The registry used to name, upcast and check event types (``None``: none)."""
        ...

    async def append(
        self,
        stream_id: str,
        events: Sequence[Any],
        *,
        expected_version: int = ANY,
        transaction: Transaction | None = None,
    ) -> AppendResult:
        """Append ``events`` to the stream, or raise ``ConcurrencyError`` writing nothing."""
        ...

    async def append_batch(
        self, requests: Sequence[AppendRequest], *, transaction: Transaction | None = None
    ) -> list[AppendResult]:
        """Append to several streams at once: all requests are written, or none."""
        ...

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        transaction: Transaction | None = None,
    ) -> list[RecordedEvent]:
        """The stream's events from ``from_version`` on (or down from it, backwards)."""
        ...

    async def stream_version(
        self, stream_id: str, *, transaction: Transaction | None = None
    ) -> int:
        """The stream's current version (0 when it has no events)."""
        ...

    async def read_all(
        self,
        *,
        after: int = 0,
        limit: int = DEFAULT_PAGE,
        types: Collection[str] | None = None,
        transaction: Transaction | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events with a global position above ``after``, in position order."""
        ...

    async def save_snapshot(
        self,
        stream_id: str,
        version: int,
        data: Any,
        *,
        schema_version: int = 1,
        transaction: Transaction | None = None,
    ) -> None:
        """Store the stream's state at ``version`` (kept only if newer than the stored one)."""
        ...

    async def load_snapshot(
        self, stream_id: str, *, transaction: Transaction | None = None
    ) -> Snapshot | None:
        """The stream's latest snapshot, or ``None``."""
        ...

    async def load(
        self,
        stream_id: str,
        *,
        snapshot_schema_version: int | None = None,
        transaction: Transaction | None = None,
    ) -> LoadedStream:
        """The latest snapshot (of that schema version, if given) plus the events after it."""
        ...

    async def load_checkpoint(self, name: str, *, transaction: Transaction | None = None) -> int:
        """The stored position of subscriber ``name`` (0 when it has none)."""
        ...

    async def save_checkpoint(
        self, name: str, position: int, *, transaction: Transaction | None = None
    ) -> None:
        """Store subscriber ``name``'s position."""
        ...

    def subscribe(
        self,
        name: str,
        handler: Callable[[RecordedEvent], Awaitable[object]],
        *,
        types: Collection[str] | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> AsyncSubscription:
        """A catch-up-then-live subscription that stores its checkpoint under ``name``."""
        ...

    async def wakeups(self, clock: Clock) -> AsyncWakeups:
        """What a subscription waits on between polls (notifications, or the clock)."""
        ...

    async def create_tables(self) -> None:
        """Create the store's tables if missing (done on first use too)."""
        ...

    async def drop_tables(self) -> None:
        """Drop the store's tables and everything in them (for tests and teardown)."""
        ...

    async def close(self) -> None:
        """Release what the store holds (not the engine)."""
        ...


# --- shared checks -------------------------------------------------------------------------


def conflicts(expected: int, actual: int) -> bool:
    """True when a stream at version ``actual`` fails the ``expected`` version check."""
    if expected == ANY:
        return False
    if expected == STREAM_EXISTS:
        return actual == 0
    return actual != expected


def check_version(stream_id: str, expected: int, actual: int) -> None:
    """Raise :class:`ConcurrencyError` when the stream is not at the expected version."""
    if conflicts(expected, actual):
        raise ConcurrencyError(stream_id, expected, actual)


def check_stream_id(stream_id: object) -> str:
    """A stream id must be a non-empty string without NUL characters."""
    if not isinstance(stream_id, str) or not stream_id or "\x00" in stream_id:
        raise ConfigurationError(
            f"stream_id={stream_id!r} must be a non-empty string without NUL characters"
        )
    return stream_id


def check_expected(expected: object) -> int:
    """``expected_version`` must be a version >= 0 or an :class:`ExpectedVersion` constant."""
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < -2:
        raise ConfigurationError(
            f"expected_version={expected!r} must be a version >= 0, ExpectedVersion.ANY (-1), "
            "ExpectedVersion.NO_STREAM (0) or ExpectedVersion.STREAM_EXISTS (-2)"
        )
    return expected


def check_requests(requests: Sequence[AppendRequest]) -> None:
    """Validate a batch: known request objects, valid ids and versions, no stream twice."""
    seen: set[str] = set()
    for request in requests:
        if not isinstance(request, AppendRequest):
            raise ConfigurationError(
                f"append_batch takes AppendRequest objects, got {type(request).__name__}"
            )
        check_stream_id(request.stream_id)
        check_expected(request.expected_version)
        if request.stream_id in seen:
            raise ConfigurationError(
                f"stream {request.stream_id!r} appears twice in one append_batch; "
                "merge its events into one request"
            )
        seen.add(request.stream_id)


def check_read_stream(from_version: object, limit: object) -> None:
    """Validate ``read_stream`` arguments."""
    if from_version is not None and (
        not isinstance(from_version, int) or isinstance(from_version, bool) or from_version < 0
    ):
        raise ConfigurationError(f"from_version={from_version!r} must be an int >= 0 or None")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigurationError(f"limit={limit!r} must be an int >= 1 or None")


def check_read_all(after: object, limit: object) -> None:
    """Validate ``read_all`` arguments."""
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise ConfigurationError(f"after={after!r} must be a global position >= 0")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ConfigurationError(f"limit={limit!r} must be an int >= 1")


def check_snapshot(version: object, schema_version: object) -> None:
    """Validate ``save_snapshot`` arguments."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigurationError(f"snapshot version={version!r} must be a stream version >= 1")
    if (
        not isinstance(schema_version, int)
        or isinstance(schema_version, bool)
        or schema_version < 1
    ):
        raise ConfigurationError(f"schema_version={schema_version!r} must be an int >= 1")


def check_checkpoint(name: object, position: object = 0) -> None:
    """Validate a checkpoint name and position."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigurationError(f"subscription name={name!r} must be a non-empty string")
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise ConfigurationError(f"checkpoint position={position!r} must be an int >= 0")


def check_identifier(value: str, field: str) -> str:
    """A table prefix or schema name: letters, digits and underscores, not leading digit."""
    if not isinstance(value, str) or (value and not _IDENTIFIER.fullmatch(value)):
        raise ConfigurationError(
            f"{field}={value!r} must be letters, digits and underscores (at most 41), "
            "not starting with a digit"
        )
    return value


def type_filter(
    types: Collection[str] | None, registry: EventTypes | None
) -> tuple[str, ...] | None:
    """The stored type names a ``types=`` filter matches (renamed old names included)."""
    if types is None:
        return None
    if isinstance(types, str):
        raise ConfigurationError(f"types={types!r} must be a collection of names, not a string")
    names = tuple(types)
    return registry.stored_names(names) if registry is not None else names


def open_event_store(
    engine: Engine | str, *, types: EventTypes | None = None, **options: Any
) -> EventStore:
    """The synchronous event store for ``engine`` (an :class:`Engine` or a URL).

    ``options`` go to the engine's store (``table_prefix``, ``schema`` on PostgreSQL,
    ``notify``, ...).
    """
    from seawall.engines import connect

    engine = connect(engine)
    if engine.kind == "memory":
        from seawall.eventsourcing.store.memory import MemoryEventStore

        return MemoryEventStore(engine, types=types, **options)
    if engine.kind == "sqlite":
        from seawall.eventsourcing.store.sqlite import SqliteEventStore

        return SqliteEventStore(engine, types=types, **options)
    if engine.kind == "postgres":
        from seawall.eventsourcing.store.postgres import PostgresEventStore

        return PostgresEventStore(engine, types=types, **options)
    from seawall.errors import UnsupportedEngineError

    raise UnsupportedEngineError(
        f"no event store for the {engine.kind!r} engine; use memory://, sqlite:/// or postgresql://"
    )


def open_async_event_store(
    engine: Engine | str, *, types: EventTypes | None = None, **options: Any
) -> AsyncEventStore:
    """The asyncio event store for ``engine``: native on PostgreSQL, a thread on SQLite."""
    from seawall.engines import connect

    engine = connect(engine)
    if engine.kind == "postgres":
        from seawall.eventsourcing.store.postgres import AsyncPostgresEventStore

        return AsyncPostgresEventStore(engine, types=types, **options)
    if engine.kind == "memory":
        from seawall.eventsourcing.store.memory import AsyncMemoryEventStore

        return AsyncMemoryEventStore(engine, types=types, **options)
    if engine.kind == "sqlite":
        from seawall.eventsourcing.store.sqlite import AsyncSqliteEventStore

        return AsyncSqliteEventStore(engine, types=types, **options)
    from seawall.errors import UnsupportedEngineError

    raise UnsupportedEngineError(
        f"no event store for the {engine.kind!r} engine; use memory://, sqlite:/// or postgresql://"
    )
