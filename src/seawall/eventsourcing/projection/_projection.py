"""Projections: turn the event log into read models.

A projection has a ``name`` (its checkpoint) and handles events, usually one method
per event type marked with :func:`handles`::

    class OrderTotals(Projection):
        name = "order-totals"

        def setup(self, tx: Transaction) -> None:
            tx.execute("CREATE TABLE IF NOT EXISTS order_totals (id TEXT PRIMARY KEY, total INT)")

        @handles(OrderPlaced)
        def _placed(self, event: RecordedEvent, tx: Transaction) -> None:
            tx.execute("INSERT INTO order_totals VALUES (?, ?)",
                       [event.stream_id, event.data["total"]])

        def reset(self, tx: Transaction) -> None:
            tx.execute("DELETE FROM order_totals")

Four flavours, by where the read model lives and how the code runs:

* :class:`Projection` / :class:`AsyncProjection`: the read model is in the event
  store's SQL database; each batch and its checkpoint commit in one transaction
  (``tx``), so every event is applied exactly once, whatever crashes.
* :class:`ExternalProjection` / :class:`AsyncExternalProjection`: the read model is
  elsewhere (a cache, a search index, another database); the checkpoint is stored
  after the handlers ran, so after a crash events may be handled again (at least
  once): make the handlers idempotent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from seawall.errors import ConfigurationError

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.eventsourcing.store._model import RecordedEvent
    from seawall.eventsourcing.store._upcasting import EventTypes

__all__ = [
    "AsyncExternalProjection",
    "AsyncProjection",
    "ExternalProjection",
    "Projection",
    "ProjectionBase",
    "handles",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_MARK = "__seawall_handles__"


def handles(*event_types: type[Any] | str) -> Callable[[_F], _F]:
    """Mark a projection method as the handler of these event types (classes or type names).

    A class stands for its name in the store's ``EventTypes`` (or its class name).
    The method receives the :class:`~seawall.eventsourcing.RecordedEvent` (its
    ``data``, ``event``, ``stream_id``, ``position``, ...) and, for transactional
    projections, the transaction.
    """
    if not event_types:
        raise ConfigurationError("@handles() needs at least one event class or type name")
    for event_type in event_types:
        if not (isinstance(event_type, type) or (isinstance(event_type, str) and event_type)):
            raise ConfigurationError(
                f"@handles({event_type!r}) takes event classes or non-empty type names"
            )

    def mark(method: _F) -> _F:
        existing: tuple[type[Any] | str, ...] = getattr(method, _MARK, ())
        setattr(method, _MARK, (*existing, *event_types))
        return method

    return mark


def type_name(event_type: type[Any] | str, registry: EventTypes | None) -> str:
    """The stored type name an event class (or a name) stands for."""
    if isinstance(event_type, str):
        return event_type
    if registry is not None:
        name = registry.name_of(event_type)
        if name is not None:
            return name
    return event_type.__name__


class ProjectionBase:
    """What every projection flavour shares: its name, type filter and ``@handles`` methods.

    ``name`` names the checkpoint (required). ``types`` limits the events read to those
    type names; by default a projection that uses :func:`handles` reads only the
    types it handles, and one that overrides ``handle`` reads every event.
    """

    name: str = ""
    types: Collection[str] | None = None
    _handlers: ClassVar[dict[type[Any] | str, str]] = {}
    _handle_overridden: ClassVar[bool] = False
    _default_handle: ClassVar[bool] = False
    """Set by each flavour class whose ``handle`` dispatches to ``@handles`` methods."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type[Any] | str, str] = {}
        for klass in reversed(cls.__mro__):
            declared: dict[type[Any] | str, str] = {}
            for attribute, value in vars(klass).items():
                for event_type in getattr(value, _MARK, ()):
                    if event_type in declared:
                        raise ConfigurationError(
                            f"{klass.__qualname__} has two handlers for {event_type!r}: "
                            f"{declared[event_type]} and {attribute}"
                        )
                    declared[event_type] = attribute
            handlers.update(declared)
        cls._handlers = handlers
        default = next(
            (vars(klass)["handle"] for klass in cls.__mro__ if vars(klass).get("_default_handle")),
            None,
        )
        cls._handle_overridden = getattr(cls, "handle", None) is not default

    def _handler_table(self, registry: EventTypes | None) -> dict[str, Callable[..., Any]]:
        """Type name -> bound handler method, for the ``@handles`` methods."""
        table: dict[str, Callable[..., Any]] = {}
        for event_type, attribute in self._handlers.items():
            name = type_name(event_type, registry)
            if name in table:
                raise ConfigurationError(
                    f"{type(self).__qualname__} has two handlers for event type {name!r}"
                )
            table[name] = getattr(self, attribute)
        return table

    def _read_types(self, registry: EventTypes | None) -> tuple[str, ...] | None:
        """The type names to read from the log (``None``: every event)."""
        if self.types is not None:
            if isinstance(self.types, str):
                raise ConfigurationError(
                    f"{type(self).__qualname__}.types={self.types!r} must be a collection "
                    "of type names, not a string"
                )
            return tuple(self.types)
        if self._handle_overridden or not self._handlers:
            return None
        return tuple(self._handler_table(registry))

    def _check_usable(self) -> None:
        """Raise :class:`ConfigurationError` unless the projection is usable."""
        if not isinstance(self.name, str) or not self.name or "\x00" in self.name:
            raise ConfigurationError(
                f"{type(self).__qualname__}.name={self.name!r} must be a non-empty string "
                "(it names the projection's checkpoint)"
            )
        if not self._handle_overridden and not self._handlers:
            raise ConfigurationError(
                f"{type(self).__qualname__} handles nothing: mark methods with "
                "@handles(EventClass) or override handle()"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _dispatch(projection: ProjectionBase, event: RecordedEvent) -> Callable[..., Any] | None:
    table: dict[str, Callable[..., Any]] | None = projection.__dict__.get("_table")
    if table is None:
        table = projection.__dict__["_table"] = projection._handler_table(None)
    return table.get(event.type)


class Projection(ProjectionBase):
    """A read model in the event store's SQL database, updated exactly once per event.

    The runner calls ``handle(event, tx)`` for each event of a batch and stores the
    checkpoint in the same transaction ``tx``. Events without a handler are skipped.
    """

    _default_handle = True

    def setup(self, tx: Transaction) -> None:
        """Create the read model's tables if missing (runs once per runner, before events)."""

    def handle(self, event: RecordedEvent, tx: Transaction) -> None:
        """Apply one event to the read model inside ``tx`` (default: its ``@handles`` method)."""
        handler = _dispatch(self, event)
        if handler is not None:
            handler(event, tx)

    def reset(self, tx: Transaction) -> None:
        """Empty the read model, for a rebuild from the first event."""
        raise NotImplementedError(
            f"{type(self).__qualname__} cannot be rebuilt: override reset(tx) to delete "
            "its read model's rows"
        )


class AsyncProjection(ProjectionBase):
    """The asyncio flavour of :class:`Projection` (``tx`` from ``engine.atransaction()``)."""

    _default_handle = True

    async def setup(self, tx: Transaction) -> None:
        """Create the read model's tables if missing (runs once per runner, before events)."""

    async def handle(self, event: RecordedEvent, tx: Transaction) -> None:
        """Apply one event to the read model inside ``tx`` (default: its ``@handles`` method)."""
        handler = _dispatch(self, event)
        if handler is not None:
            await handler(event, tx)

    async def reset(self, tx: Transaction) -> None:
        """Empty the read model, for a rebuild from the first event."""
        raise NotImplementedError(
            f"{type(self).__qualname__} cannot be rebuilt: override reset(tx) to delete "
            "its read model's rows"
        )


class ExternalProjection(ProjectionBase):
    """A read model outside the event store's database, updated at least once per event.

    The checkpoint is stored after each batch's handlers ran; a crash in between
    hands those events to the handlers again, so they must be idempotent (upserts,
    or remembering the last applied ``event.position``).
    """

    _default_handle = True

    def setup(self) -> None:
        """Prepare the read model (runs once per runner, before events)."""

    def handle(self, event: RecordedEvent) -> None:
        """Apply one event to the read model (default: its ``@handles`` method)."""
        handler = _dispatch(self, event)
        if handler is not None:
            handler(event)

    def reset(self) -> None:
        """Empty the read model, for a rebuild from the first event."""
        raise NotImplementedError(
            f"{type(self).__qualname__} cannot be rebuilt: override reset() to empty its read model"
        )


class AsyncExternalProjection(ProjectionBase):
    """The asyncio flavour of :class:`ExternalProjection` (at-least-once)."""

    _default_handle = True

    async def setup(self) -> None:
        """Prepare the read model (runs once per runner, before events)."""

    async def handle(self, event: RecordedEvent) -> None:
        """Apply one event to the read model (default: its ``@handles`` method)."""
        handler = _dispatch(self, event)
        if handler is not None:
            result: Awaitable[object] = handler(event)
            await result

    async def reset(self) -> None:
        """Empty the read model, for a rebuild from the first event."""
        raise NotImplementedError(
            f"{type(self).__qualname__} cannot be rebuilt: override reset() to empty its read model"
        )
