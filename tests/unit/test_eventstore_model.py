"""Encoding events, decoding recorded ones, and the package's public surface."""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

import seawall.eventsourcing
import seawall.eventsourcing.store
from seawall.errors import ConfigurationError, SeawallError, UnsupportedEngineError
from seawall.eventsourcing import (
    ConcurrencyError,
    CorruptEventError,
    EventSerializationError,
    EventStoreError,
    EventTypes,
    NewEvent,
    RecordedEvent,
    UnknownEventTypeError,
    open_event_store,
)
from seawall.eventsourcing.store._model import (
    encode_events,
    encode_json,
    metadata_json,
    new_event_id,
)


class Colour(enum.Enum):
    RED = "red"


@dataclass
class Shipped:
    order: str
    on: date
    total: Decimal
    colour: Colour
    tags: frozenset[str]


def _recorded(data: str = '{"a":1}', meta: str | None = None) -> RecordedEvent:
    meta = meta if meta is not None else f'["{uuid.UUID(int=5)}",1700000000000000]'
    return tuple.__new__(RecordedEvent, (7, "s", 2, "T", 1, data, meta))


def test_the_public_names_are_exactly_the_exported_ones() -> None:
    for module in (seawall.eventsourcing, seawall.eventsourcing.store):
        public = {
            name
            for name in dir(module)
            if not name.startswith("_") and not isinstance(getattr(module, name), type(module))
        }
        public -= {"annotations"}
        assert set(module.__all__) == public
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_every_error_is_a_seawall_error_with_data() -> None:
    error = ConcurrencyError("s", 3, 5)
    assert isinstance(error, EventStoreError)
    assert isinstance(error, SeawallError)
    assert (error.stream_id, error.expected, error.actual) == ("s", 3, 5)
    assert "version 3" in str(error)
    assert "version 5" in str(error)
    assert "any version" in str(ConcurrencyError("s", -1, 2))
    assert "an existing stream" in str(ConcurrencyError("s", -2, 0))
    assert "no stream" in str(ConcurrencyError("s", 0, 1))
    assert isinstance(EventSerializationError("T", 0, "why"), TypeError)
    unknown = UnknownEventTypeError("T", 2, stream_id="s", version=1, position=9)
    assert (unknown.event_type, unknown.schema_version, unknown.position) == ("T", 2, 9)


def test_dataclasses_and_common_types_encode() -> None:
    event = Shipped("o-1", date(2024, 5, 1), Decimal("9.90"), Colour.RED, frozenset({"x"}))
    ((event_type, version, data, event_id, *_),) = encode_events([event], None)
    assert (event_type, version) == ("Shipped", 1)
    assert json.loads(data) == {
        "order": "o-1",
        "on": "2024-05-01",
        "total": "9.90",
        "colour": "red",
        "tags": ["x"],
    }
    assert uuid.UUID(event_id).version == 4
    assert json.loads(
        encode_json({"id": uuid.UUID(int=1), "at": datetime(2024, 1, 1, tzinfo=UTC)})
    ) == {
        "id": str(uuid.UUID(int=1)),
        "at": "2024-01-01T00:00:00+00:00",
    }


def test_a_literal_backslash_u0000_is_not_mistaken_for_nul() -> None:
    assert json.loads(encode_json({"text": "\\u0000"})) == {"text": "\\u0000"}
    with pytest.raises(ValueError, match="NUL"):
        encode_json({"text": "a\x00"})


def test_new_event_ids_are_valid_random_uuids() -> None:
    ids = {new_event_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in list(ids)[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_schema_versions_come_from_the_registry() -> None:
    types = EventTypes()
    types.register_name("T")
    types.add_upcaster("T", 1, lambda data: data)
    ((_, version, *_),) = encode_events([NewEvent("T", {})], types)
    assert version == 2
    ((_, explicit, *_),) = encode_events([NewEvent("T", {}, schema_version=1)], types)
    assert explicit == 1
    with pytest.raises(EventSerializationError, match="schema_version"):
        encode_events([NewEvent("T", {}, schema_version=0)], types)


def test_unregistered_classes_are_refused_by_a_strict_registry() -> None:
    with pytest.raises(EventSerializationError, match="not registered"):
        encode_events(
            [Shipped("o", date.today(), Decimal(1), Colour.RED, frozenset())], EventTypes()
        )
    lenient = EventTypes(strict=False)
    ((event_type, *_),) = encode_events(
        [Shipped("o", date.today(), Decimal(1), Colour.RED, frozenset())], lenient
    )
    assert event_type == "Shipped"


def test_metadata_json_is_compact_and_complete() -> None:
    plain = ("T", 1, "{}", "id-1", None, None, None)
    assert json.loads(metadata_json(plain, 12)) == ["id-1", 12]
    full = ("T", 1, "{}", "id-1", 'c"1', "k", '{"h":"v"}')
    assert json.loads(metadata_json(full, 12)) == ["id-1", 12, 'c"1', "k", {"h": "v"}]


def test_recorded_events_decode_lazily_and_cache() -> None:
    event = _recorded()
    assert (event.position, event.stream_id, event.version, event.type) == (7, "s", 2, "T")
    assert event.data is event.data == {"a": 1}
    assert event.id == uuid.UUID(int=5)
    assert event.timestamp == datetime.fromtimestamp(1_700_000_000, UTC)
    assert (event.causation_id, event.correlation_id, event.headers) == (None, None, {})
    assert event.event == {"a": 1}
    assert "stream_id='s'" in repr(event)


@pytest.mark.parametrize(
    ("meta", "attribute", "reason"),
    [
        ("nope", "id", "metadata is not valid JSON"),
        ("{}", "id", "not \\[id, timestamp"),
        ('["not-a-uuid", 1]', "id", "is not a UUID"),
        ('["x", "soon"]', "timestamp", "timestamp"),
        ('["x", 1, 5]', "causation_id", "causation id"),
        ('["x", 1, null, null, [1]]', "headers", "headers"),
    ],
)
def test_damaged_metadata_raises_corrupt_event(meta: str, attribute: str, reason: str) -> None:
    event = _recorded(meta=meta)
    with pytest.raises(CorruptEventError, match=reason) as caught:
        getattr(event, attribute)
    assert (caught.value.stream_id, caught.value.version, caught.value.position) == ("s", 2, 7)


def test_unsupported_engines_and_bad_prefixes_are_refused(tmp_path: object) -> None:
    with pytest.raises(ConfigurationError, match="table_prefix"):
        open_event_store("memory://", table_prefix="bad-name")
    with pytest.raises(UnsupportedEngineError, match="no event store"):
        open_event_store("redis://127.0.0.1:6379/0")
