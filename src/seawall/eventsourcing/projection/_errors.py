"""The errors of projections, each carrying the data a caller needs.

::

    SeawallError
    └── ProjectionError
        └── ProjectionHandlerError     a handler raised on an event (the cause is chained)
"""

from __future__ import annotations

from seawall.errors import SeawallError

__all__ = ["ProjectionError", "ProjectionHandlerError"]


class ProjectionError(SeawallError):
    """Root of the projection errors."""


class ProjectionHandlerError(ProjectionError):
    """A projection's handler raised on an event; ``__cause__`` is the handler's error.

    With a transactional :class:`~seawall.eventsourcing.Projection` the whole batch was
    rolled back with its checkpoint; with an ``ExternalProjection`` the checkpoint was
    stored just before this event. Either way the next run starts at this event.
    """

    def __init__(
        self,
        projection: str,
        *,
        event_type: str,
        stream_id: str,
        version: int,
        position: int,
        rolled_back: bool,
    ) -> None:
        outcome = (
            "the batch and its checkpoint were rolled back"
            if rolled_back
            else "the checkpoint stays just before this event"
        )
        super().__init__(
            f"projection {projection!r} failed on event {event_type!r} (stream {stream_id!r} "
            f"version {version}, position {position}); {outcome}: fix the handler (or the "
            "data) and run the projection again, it resumes at this event"
        )
        self.projection = projection
        self.event_type = event_type
        self.stream_id = stream_id
        self.version = version
        self.position = position
        self.rolled_back = rolled_back
