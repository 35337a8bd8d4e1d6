"""What goes into an event store and what comes out of it.

:class:`NewEvent` is an event to append (type, data and metadata);
:class:`RecordedEvent` is an event read back, with its stream version and global
position. A recorded event is a small immutable tuple of the stored columns; its
data and metadata are decoded (and upcast) the first time they are used, so a
subscriber that only looks at types and positions never pays for JSON decoding.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from enum import Enum
from os import urandom
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload
from uuid import UUID

from seawall.eventsourcing.store._errors import CorruptEventError, EventSerializationError

if TYPE_CHECKING:
    from seawall.eventsourcing.store._upcasting import EventTypes

__all__ = [
    "AppendRequest",
    "AppendResult",
    "EncodedEvent",
    "NewEvent",
    "RecordedEvent",
    "encode_events",
    "encode_json",
    "new_event_id",
]

MAX_EVENTS_PER_APPEND = (1 << 20) - 1
"""The most events one append (or one PostgreSQL transaction) may hold."""

_T = TypeVar("_T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: its type name, its JSON-compatible data and its metadata.

    ``id`` is generated when left out. ``schema_version`` defaults to the current
    version the store's :class:`~seawall.eventsourcing.EventTypes` knows for the type
    (1 without a registry). ``headers`` are free-form string pairs of the caller's.
    """

    type: str
    data: Any = None
    id: UUID | None = None
    causation_id: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, str] | None = None
    schema_version: int | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: the stream's new version and the last event's global position.

    ``position`` is 0 when no event was appended (an append of an empty list only
    checks the expected version).
    """

    stream_id: str
    version: int
    position: int


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One stream's part of a multi-stream :meth:`append_batch`."""

    stream_id: str
    events: Sequence[Any]
    expected_version: int = -1


class _Lazy(Generic[_T]):
    """A computed attribute stored in the instance's ``__dict__`` on first use.

    Like :func:`functools.cached_property` without its lock (which costs more than
    the work it guards on Python 3.11).
    """

    __slots__ = ("function", "name")

    def __init__(self, function: Callable[[Any], _T]) -> None:
        self.function = function
        self.name = function.__name__

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> _Lazy[_T]: ...
    @overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> _T: ...
    def __get__(self, instance: object | None, owner: type[Any] | None = None) -> _T | _Lazy[_T]:
        if instance is None:
            return self
        value = self.function(instance)
        instance.__dict__[self.name] = value
        return value


StoredRow = tuple[int, str, int, str, int, str, str]
"""position, stream_id, version, stored type, stored schema version, data JSON, metadata JSON."""


class RecordedEvent(tuple[int, str, int, str, int, str, str]):
    """An event read from a store: stream, version, global position, type, data, metadata.

    Immutable. ``data``, ``id``, ``timestamp``, the correlation fields and ``headers``
    are decoded on first access; with an :class:`~seawall.eventsourcing.EventTypes`
    registry, ``type``, ``schema_version`` and ``data`` are the upcast (current) ones,
    and ``stored_type`` / ``stored_schema_version`` keep what the row holds.
    """

    _types: ClassVar[EventTypes | None] = None

    @property
    def position(self) -> int:
        """Global position: increases with every event in the store (gaps are allowed)."""
        return self[0]

    @property
    def stream_id(self) -> str:
        """The stream the event belongs to."""
        return self[1]

    @property
    def version(self) -> int:
        """The event's version in its stream: 1 for the first event, then 2, 3, ..."""
        return self[2]

    @property
    def stored_type(self) -> str:
        """The type name as stored (before any upcaster renamed it)."""
        return self[3]

    @property
    def stored_schema_version(self) -> int:
        """The schema version as stored (before upcasting)."""
        return self[4]

    @_Lazy
    def _resolved(self) -> tuple[str, int, tuple[Callable[[Any], Any], ...]]:
        types = self._types
        if types is None:
            return self[3], self[4], ()
        return types.resolve(self)

    @property
    def type(self) -> str:
        """The event's type name (after upcasting, when a registry renames it)."""
        return self[3] if self._types is None else self._resolved[0]

    @property
    def schema_version(self) -> int:
        """The schema version of ``data`` (the current one after upcasting)."""
        return self[4] if self._types is None else self._resolved[1]

    @_Lazy
    def data(self) -> Any:
        """The event's data decoded from JSON and upcast to the current shape."""
        try:
            value = json.loads(self[5])
        except ValueError as exc:
            raise self._corrupt(f"its data is not valid JSON ({exc})") from exc
        if self._types is not None:
            for step in self._resolved[2]:
                try:
                    value = step(value)
                except Exception as exc:
                    raise self._corrupt(
                        f"upcaster {getattr(step, '__qualname__', step)!r} failed: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        return value

    @_Lazy
    def event(self) -> Any:
        """The data as an object of the class registered for ``type`` (or ``data`` itself)."""
        if self._types is None:
            return self.data
        return self._types.to_object(self)

    @_Lazy
    def _metadata(self) -> list[Any]:
        try:
            meta = json.loads(self[6])
        except ValueError as exc:
            raise self._corrupt(f"its metadata is not valid JSON ({exc})") from exc
        if not isinstance(meta, list) or len(meta) < 2:
            raise self._corrupt(f"its metadata {self[6]!r} is not [id, timestamp, ...]")
        meta.extend([None] * (5 - len(meta)))
        return meta

    @_Lazy
    def id(self) -> UUID:
        """The event's unique id."""
        try:
            return UUID(self._metadata[0])
        except (TypeError, ValueError, AttributeError) as exc:
            raise self._corrupt(f"its id {self._metadata[0]!r} is not a UUID") from exc

    @_Lazy
    def timestamp(self) -> datetime:
        """When the event was recorded (UTC)."""
        micros = self._metadata[1]
        if not isinstance(micros, int):
            raise self._corrupt(f"its timestamp {micros!r} is not an integer of microseconds")
        return _EPOCH + timedelta(microseconds=micros)

    @property
    def causation_id(self) -> str | None:
        """Id of the message or event that caused this one, if recorded."""
        return self._text_metadata(2, "causation id")

    @property
    def correlation_id(self) -> str | None:
        """Id shared by every message of one conversation or workflow, if recorded."""
        return self._text_metadata(3, "correlation id")

    @property
    def headers(self) -> Mapping[str, str]:
        """The caller's free-form headers (empty when none were given)."""
        value = self._metadata[4]
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._corrupt(f"its headers {value!r} are not an object")
        return value

    def _text_metadata(self, index: int, what: str) -> str | None:
        value = self._metadata[index]
        if value is None or isinstance(value, str):
            return value
        raise self._corrupt(f"its {what} {value!r} is not a string")

    def _corrupt(self, reason: str) -> CorruptEventError:
        return CorruptEventError(reason, stream_id=self[1], version=self[2], position=self[0])

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(stream_id={self[1]!r}, version={self[2]}, position={self[0]}, "
            f"type={self[3]!r})"
        )


def make_recorded(event_class: type[RecordedEvent]) -> Callable[[Any], RecordedEvent]:
    """A fast factory turning one stored row tuple into ``event_class``."""

    def make(row: Any) -> RecordedEvent:
        return tuple.__new__(event_class, row)

    return make


# --- encoding ---------------------------------------------------------------------------

_FIELDS: dict[type[Any], tuple[str, ...]] = {}


def _fields_of(cls: type[Any]) -> tuple[str, ...] | None:
    names = _FIELDS.get(cls)
    if names is None:
        if not is_dataclass(cls):
            return None
        names = _FIELDS[cls] = tuple(field.name for field in fields(cls))
    return names


def _default(value: Any) -> Any:
    names = _fields_of(type(value))
    if names is not None:
        return {name: getattr(value, name) for name in names}
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, date | dt_time):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__qualname__} value {value!r} is not JSON serializable")


_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
).encode
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def encode_json(value: Any) -> str:
    """Compact JSON for ``value``; raises ``TypeError``/``ValueError`` with the reason.

    Dataclasses, UUIDs, datetimes, sets, enums and decimals are converted; NaN and
    infinities, NUL characters and lone surrogates are refused (PostgreSQL's text and
    jsonb cannot hold them, and every engine must behave the same).
    """
    text = _encode(value)
    if "\\u0000" in text and _NUL.search(text):
        raise ValueError("it contains a NUL character (\\u0000)")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"it contains an unpaired surrogate ({exc.reason})") from exc
    return text


def new_event_id() -> str:
    """A random (version 4) UUID as text, faster than ``str(uuid.uuid4())``."""
    digits = urandom(16).hex()
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-"
        f"{_VARIANT[digits[16]]}{digits[17:20]}-{digits[20:]}"
    )


EncodedEvent = tuple[str, int, str, str, str | None, str | None, str | None]
"""type, schema version, data JSON, id, causation id, correlation id, headers JSON."""


def encode_events(events: Sequence[Any], types: EventTypes | None) -> list[EncodedEvent]:
    """Encode every event before anything is written; a bad one raises and nothing is stored.

    Items are :class:`NewEvent` objects, or plain objects (dataclasses, or classes
    registered in ``types``) whose type name comes from the registry or the class name.
    """
    if isinstance(events, str | bytes | Mapping) or not isinstance(events, Sequence):
        raise EventSerializationError(
            type(events).__name__, 0, "append takes a list of events, not a single value"
        )
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise EventSerializationError(
            "-", len(events), f"one append holds at most {MAX_EVENTS_PER_APPEND} events"
        )
    encoded: list[EncodedEvent] = []
    append = encoded.append
    for index, event in enumerate(events):
        if isinstance(event, NewEvent):
            event_type = event.type
            if not isinstance(event_type, str) or not event_type:
                raise EventSerializationError(
                    repr(event_type), index, "the type must be a non-empty string"
                )
            data = event.data
            schema_version = event.schema_version
            if schema_version is None:
                schema_version = 1 if types is None else types.current_version(event_type)
            elif not isinstance(schema_version, int) or schema_version < 1:
                raise EventSerializationError(
                    event_type, index, f"schema_version {schema_version!r} must be an int >= 1"
                )
            if event.id is None:
                event_id = new_event_id()
            elif isinstance(event.id, UUID):
                event_id = str(event.id)
            else:
                raise EventSerializationError(event_type, index, f"id {event.id!r} must be a UUID")
            causation = event.causation_id
            correlation = event.correlation_id
            headers = event.headers
        else:
            event_type, data = _name_and_data(event, index, types)
            schema_version = 1 if types is None else types.current_version(event_type)
            event_id = new_event_id()
            causation = correlation = None
            headers = None
        try:
            data_json = encode_json(data)
        except (TypeError, ValueError) as exc:
            raise EventSerializationError(event_type, index, f"its data {exc}") from exc
        headers_json = None
        if headers:
            headers_json = _encode_headers(headers, event_type, index)
        if causation is not None:
            _check_text(causation, "causation_id", event_type, index)
        if correlation is not None:
            _check_text(correlation, "correlation_id", event_type, index)
        append(
            (event_type, schema_version, data_json, event_id, causation, correlation, headers_json)
        )
    return encoded


def _name_and_data(event: Any, index: int, types: EventTypes | None) -> tuple[str, Any]:
    if types is not None:
        named = types.encode_object(event)
        if named is not None:
            return named
    if isinstance(event, Mapping) or _fields_of(type(event)) is None:
        raise EventSerializationError(
            type(event).__qualname__,
            index,
            "it is neither a NewEvent, a dataclass nor a registered type: wrap it in "
            "NewEvent(type, data) or register its class",
        )
    if types is not None and types.strict:
        raise EventSerializationError(
            type(event).__qualname__,
            index,
            "its class is not registered in the store's EventTypes (it could not be read back)",
        )
    return type(event).__name__, event


def _check_text(value: Any, field: str, event_type: str, index: int) -> None:
    if not isinstance(value, str):
        raise EventSerializationError(event_type, index, f"{field} {value!r} must be a string")
    try:
        encode_json(value)
    except ValueError as exc:
        raise EventSerializationError(event_type, index, f"its {field} {exc}") from exc


def _encode_headers(headers: Any, event_type: str, index: int) -> str:
    if not isinstance(headers, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in headers.items()
    ):
        raise EventSerializationError(
            event_type, index, f"headers must map strings to strings, got {headers!r}"
        )
    try:
        return encode_json(dict(headers))
    except ValueError as exc:
        raise EventSerializationError(event_type, index, f"its headers {exc}") from exc


def now_micros() -> int:
    """Wall-clock time in microseconds since the Unix epoch (the recorded timestamp)."""
    return time.time_ns() // 1000


def metadata_json(event: EncodedEvent, timestamp: int) -> str:
    """The stored metadata column: ``[id, timestamp, causation, correlation, headers]``."""
    causation, correlation, headers = event[4], event[5], event[6]
    if causation is None and correlation is None and headers is None:
        return f'["{event[3]}",{timestamp}]'
    return (
        f'["{event[3]}",{timestamp},{encode_json(causation)},{encode_json(correlation)},'
        f"{headers or 'null'}]"
    )


def metadata_parts(event: EncodedEvent) -> tuple[str, str]:
    """The metadata column around its timestamp, for engines that stamp it themselves."""
    causation, correlation, headers = event[4], event[5], event[6]
    if causation is None and correlation is None and headers is None:
        return f'["{event[3]}",', "]"
    return (
        f'["{event[3]}",',
        f",{encode_json(causation)},{encode_json(correlation)},{headers or 'null'}]",
    )
