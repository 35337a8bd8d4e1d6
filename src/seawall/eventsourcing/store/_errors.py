"""The errors an event store raises, each carrying the data a caller needs.

::

    SeawallError
    └── EventStoreError
        ├── ConcurrencyError              the stream was not at the expected version
        ├── EventSerializationError       an event could not be turned into JSON
        │   (also TypeError)
        └── EventDecodingError            a stored event could not be read back
            ├── UnknownEventTypeError     no registered type (or upcaster) for it
            └── CorruptEventError         the stored row itself is damaged

Every error is raised before anything is written, or while reading, so nothing
already committed is ever changed by it.
"""

from __future__ import annotations

from seawall.errors import SeawallError

__all__ = [
    "ConcurrencyError",
    "CorruptEventError",
    "EventDecodingError",
    "EventSerializationError",
    "EventStoreError",
    "UnknownEventTypeError",
]


def describe_expected(expected: int) -> str:
    """Human words for an expected-version value (``ANY``, ``NO_STREAM``, ...)."""
    if expected == -1:
        return "any version"
    if expected == -2:
        return "an existing stream"
    if expected == 0:
        return "no stream (version 0)"
    return f"version {expected}"


class EventStoreError(SeawallError):
    """Root of the event store's errors."""


class ConcurrencyError(EventStoreError):
    """An append expected the stream at one version and found it at another.

    ``expected`` is the caller's ``expected_version`` (a version, or one of the
    ``ExpectedVersion`` constants); ``actual`` is the stream's version when the
    append was refused. Nothing of the refused append was written.
    """

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual} but the append expected "
            f"{describe_expected(expected)}; nothing was written: reload the stream, "
            "decide again on the new state and retry the append"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class EventSerializationError(EventStoreError, TypeError):
    """An event (or its headers) could not be encoded as JSON; nothing was written.

    ``index`` is the event's position in the list given to ``append``.
    """

    def __init__(self, event_type: str, index: int, reason: str) -> None:
        super().__init__(
            f"event #{index} of type {event_type!r} cannot be stored: {reason}; nothing was "
            "written: use JSON-compatible data (dict, list, str, int, float, bool, None), "
            "a dataclass of those, or register an encoder for the type"
        )
        self.event_type = event_type
        self.index = index
        self.reason = reason


class EventDecodingError(EventStoreError):
    """A stored event could not be turned back into data; the stored row is unchanged."""

    def __init__(self, message: str, *, stream_id: str, version: int, position: int) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.version = version
        self.position = position


class UnknownEventTypeError(EventDecodingError):
    """A stored event has a type (or schema version) this code does not know.

    Register the type, or an upcaster that turns the stored shape into a known one.
    """

    def __init__(
        self, event_type: str, schema_version: int, *, stream_id: str, version: int, position: int
    ) -> None:
        super().__init__(
            f"event {event_type!r} (schema version {schema_version}) at stream {stream_id!r} "
            f"version {version}, position {position} has no registered type or upcaster; "
            f"register {event_type!r} in the store's EventTypes, or add an upcaster (or a "
            "rename) that turns it into a registered type",
            stream_id=stream_id,
            version=version,
            position=position,
        )
        self.event_type = event_type
        self.schema_version = schema_version


class CorruptEventError(EventDecodingError):
    """A stored row cannot be decoded (bad JSON, wrong shape, an upcaster that fails)."""

    def __init__(self, reason: str, *, stream_id: str, version: int, position: int) -> None:
        super().__init__(
            f"stored event at stream {stream_id!r} version {version}, position {position} "
            f"cannot be read: {reason}; the row was left as it is: repair it in the database, "
            "or add an upcaster that handles this shape",
            stream_id=stream_id,
            version=version,
            position=position,
        )
        self.reason = reason
