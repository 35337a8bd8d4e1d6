"""What a projection runner decides, with no I/O, and the checks both runners share.

:class:`RunnerCore` holds the checkpoint name, the type filter, the dispatch table,
the cached position and the :class:`~seawall.eventsourcing.Pacer`; the synchronous
and the asyncio runner do the I/O around it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from seawall.errors import ConfigurationError
from seawall.eventsourcing.projection._errors import ProjectionHandlerError
from seawall.eventsourcing.projection._projection import ProjectionBase
from seawall.eventsourcing.store._subscription import Pacer

if TYPE_CHECKING:
    from seawall.engines._base import Engine
    from seawall.eventsourcing.store._model import RecordedEvent
    from seawall.eventsourcing.store._upcasting import EventTypes

__all__ = [
    "COUNT_PAGE",
    "ProjectionLag",
    "RunnerCore",
    "check_transactional",
    "count_pages",
    "engine_of",
    "utc_now",
]

COUNT_PAGE = 1000
"""Events per ``read_all`` page when lag is counted without SQL (the memory store)."""


@dataclass(frozen=True, slots=True)
class ProjectionLag:
    """How far a projection is behind the event log.

    ``events`` counts the stored events after the checkpoint that the projection
    reads (its type filter applied); ``seconds`` is the age of the oldest of them
    (0.0 when caught up).
    """

    name: str
    checkpoint: int
    events: int
    seconds: float


class RunnerCore:
    """What a projection runner decides, with no I/O.

    The checkpoint name, the type filter, the handler table (``None`` when the
    projection overrides ``handle``), the position last committed by this runner,
    and the :class:`~seawall.eventsourcing.Pacer` that spaces polls.
    """

    __slots__ = ("name", "pacer", "position", "ready", "stored_types", "table", "types")

    def __init__(
        self,
        projection: ProjectionBase,
        registry: EventTypes | None,
        *,
        batch_size: int,
        poll_interval: float,
    ) -> None:
        projection._check_usable()
        self.name = projection.name
        self.types = projection._read_types(registry)
        self.stored_types: tuple[str, ...] | None = (
            None
            if self.types is None
            else registry.stored_names(self.types)
            if registry is not None
            else self.types
        )
        self.table = None if projection._handle_overridden else projection._handler_table(registry)
        self.pacer = Pacer(batch_size, poll_interval)
        self.position: int | None = None
        """The checkpoint this runner last read or committed (a hint; the store decides)."""
        self.ready = False
        """Whether ``setup`` has run."""

    @property
    def batch_size(self) -> int:
        """Events per batch (and per transaction)."""
        return self.pacer.batch_size

    def failure(
        self, event: RecordedEvent, exc: BaseException, *, rolled_back: bool
    ) -> ProjectionHandlerError:
        """The error that reports a handler failing on ``event``."""
        return ProjectionHandlerError(
            self.name,
            event_type=event.type,
            stream_id=event.stream_id,
            version=event.version,
            position=event.position,
            rolled_back=rolled_back,
        )

    def lag(
        self, checkpoint: int, count: int, oldest: RecordedEvent | None, now: datetime
    ) -> ProjectionLag:
        """The lag from the checkpoint, the count of events after it and the oldest of them."""
        seconds = 0.0 if oldest is None else max(0.0, (now - oldest.timestamp).total_seconds())
        return ProjectionLag(self.name, checkpoint, count, seconds)


def engine_of(store: object, engine: Engine | None) -> Engine:
    """``engine``, or the store's own."""
    if engine is not None:
        return engine
    found = getattr(store, "engine", None)
    if found is None:
        raise ConfigurationError(
            f"store {store!r} has no engine attribute; pass engine= to the runner"
        )
    return cast("Engine", found)


def check_transactional(store: Any, engine: Engine, projection: ProjectionBase) -> None:
    """Refuse a transactional projection whose checkpoint cannot share its transaction."""
    if not getattr(store, "supports_transactions", False) or engine.kind not in {
        "sqlite",
        "postgres",
    }:
        raise ConfigurationError(
            f"{type(projection).__qualname__} is a transactional projection, but the "
            f"{engine.kind} store has no SQL transactions: use SQLite or PostgreSQL, or "
            "make it an ExternalProjection (at-least-once)"
        )
    store_engine = getattr(store, "engine", None)
    if store_engine is not None and store_engine is not engine and store_engine.url != engine.url:
        raise ConfigurationError(
            f"engine {engine!r} is not the store's engine {store_engine!r}: the read model "
            "and the checkpoint must share one database transaction"
        )


def utc_now(now: datetime | None) -> datetime:
    """``now``, or the current time (UTC)."""
    return datetime.now(UTC) if now is None else now


def count_pages(
    read_all: Callable[..., list[RecordedEvent]], after: int, types: Sequence[str] | None
) -> int:
    """Count the events after ``after`` by paging through ``read_all``."""
    count = 0
    while True:
        page = read_all(after=after, limit=COUNT_PAGE, types=types)
        count += len(page)
        if len(page) < COUNT_PAGE:
            return count
        after = page[-1].position
