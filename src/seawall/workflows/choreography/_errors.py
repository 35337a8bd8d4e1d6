"""The errors of choreography, each carrying what a caller needs to act."""

from __future__ import annotations

from collections.abc import Sequence

from seawall.errors import SeawallError

__all__ = ["ChoreographyError", "FlowNotFoundError", "UndeclaredEventError"]


class ChoreographyError(SeawallError):
    """Root of the choreography errors."""


class UndeclaredEventError(ChoreographyError, ValueError):
    """A handler emitted an event type its reaction did not declare; nothing was emitted."""

    def __init__(self, reaction: str, event_type: str, allowed: Sequence[str]) -> None:
        super().__init__(
            f"reaction {reaction!r} emitted {event_type!r}, which it does not declare; it may "
            f"emit {list(allowed)}: add {event_type!r} to its emits= or fails= in the "
            "Choreography, or emit a declared type"
        )
        self.reaction = reaction
        self.event_type = event_type
        self.allowed = tuple(allowed)


class FlowNotFoundError(ChoreographyError, LookupError):
    """The tracker has no business transaction with this correlation id."""

    def __init__(self, correlation_id: str) -> None:
        super().__init__(
            f"no business transaction {correlation_id!r} in the tracker store; check the id "
            "and the store's URL (the tracker records a flow once its first event arrives)"
        )
        self.correlation_id = correlation_id
