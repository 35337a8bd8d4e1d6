"""The errors of aggregates and repositories, each carrying the data a caller needs.

::

    SeawallError
    └── AggregateError
        ├── AggregateNotFoundError      no stream (and no snapshot) for that id (also LookupError)
        ├── UnhandledEventError         an event the aggregate has no ``apply`` for (also TypeError)
        └── SnapshotStateError          the default snapshot cannot hold the state (also TypeError)

A conflicting save raises the store's :class:`~seawall.eventsourcing.ConcurrencyError`.
"""

from __future__ import annotations

from seawall.errors import SeawallError

__all__ = ["AggregateError", "AggregateNotFoundError", "SnapshotStateError", "UnhandledEventError"]


class AggregateError(SeawallError):
    """Root of the aggregate and repository errors."""


class AggregateNotFoundError(AggregateError, LookupError):
    """``Repository.get`` found no events and no snapshot for the aggregate."""

    def __init__(self, aggregate_type: str, aggregate_id: str, stream_id: str) -> None:
        super().__init__(
            f"no {aggregate_type} with id {aggregate_id!r} (stream {stream_id!r} has no "
            "events): create it with repository.new(id) and save it, or use "
            "repository.find(id) / get_or_new(id) when it may not exist"
        )
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.stream_id = stream_id


class UnhandledEventError(AggregateError, TypeError):
    """The aggregate was given (or its stream holds) an event it has no ``apply`` for."""

    def __init__(
        self, aggregate_type: str, event_type: str, *, stream_id: str | None = None
    ) -> None:
        where = "" if stream_id is None else f" (stream {stream_id!r})"
        super().__init__(
            f"{aggregate_type} has no apply method for event {event_type!r}{where}: add "
            f"@applies({event_type}) to a method of {aggregate_type}, list the class in "
            "its event_types, or override apply()"
        )
        self.aggregate_type = aggregate_type
        self.event_type = event_type
        self.stream_id = stream_id


class SnapshotStateError(AggregateError, TypeError):
    """The default ``snapshot()`` cannot store this aggregate's state faithfully.

    The default keeps the public attributes as JSON; values that would come back
    different (tuples, sets, dataclasses, datetimes, ...) are refused rather than
    silently changed. Override ``snapshot()`` and ``restore()`` for such state.
    """

    def __init__(self, aggregate_type: str, reason: str) -> None:
        super().__init__(
            f"cannot snapshot {aggregate_type} with the default snapshot(): {reason}; "
            f"override {aggregate_type}.snapshot() and restore() to convert that state "
            "to JSON data and back"
        )
        self.aggregate_type = aggregate_type
        self.reason = reason
