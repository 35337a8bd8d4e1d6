"""EventTypes: registration, upcasting chains, renames and type filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.errors import ConfigurationError
from seawall.eventsourcing import (
    CorruptEventError,
    EventTypes,
    RecordedEvent,
    UnknownEventTypeError,
)


@dataclass
class Placed:
    sku: str
    qty: int


def _event(types: EventTypes, event_type: str, version: int, data: str) -> RecordedEvent:
    row = (1, "s", 1, event_type, version, data, '["00000000-0000-0000-0000-000000000001",0]')
    return tuple.__new__(types.event_class, row)


def test_current_version_follows_the_upcasters() -> None:
    types = EventTypes()
    assert types.current_version("T") == 1
    types.add_upcaster("T", 1, lambda d: d)
    types.add_upcaster("T", 2, lambda d: d, to_version=5)
    assert types.current_version("T") == 5
    types.rename("Old", "T", version=1, to_version=5)
    assert types.current_version("Old") == 1


def test_registration_errors_name_the_problem() -> None:
    types = EventTypes()
    types.register(Placed)
    with pytest.raises(ConfigurationError, match="already registered"):
        types.register(dict, name="Placed")
    types.register(Placed)  # the same class again is fine
    with pytest.raises(ConfigurationError, match="later version"):
        types.add_upcaster("T", 2, None, to_version=2)
    types.add_upcaster("T", 1, None)
    with pytest.raises(ConfigurationError, match="already registered"):
        types.add_upcaster("T", 1, None)
    with pytest.raises(ConfigurationError, match="version"):
        types.add_upcaster("T", 0, None)
    with pytest.raises(ConfigurationError, match="non-empty"):
        types.register_name("")


def test_a_cycle_of_renames_is_refused() -> None:
    types = EventTypes()
    types.rename("A", "B")
    types.rename("B", "C")
    with pytest.raises(ConfigurationError, match="cycle"):
        types.rename("C", "A")
    types.register_name("C")
    assert _event(types, "A", 1, "{}").type == "C"


def test_upcasting_applies_every_step_in_order() -> None:
    types = EventTypes()
    types.register(Placed)

    @types.upcaster("Placed", version=1)
    def quantity(data: dict[str, Any]) -> dict[str, Any]:
        return {"sku": data["sku"], "qty": 1}

    types.rename("Ordered", "Placed")
    event = _event(types, "Ordered", 1, '{"sku":"A"}')
    assert (event.type, event.schema_version) == ("Placed", 2)
    assert event.data == {"sku": "A", "qty": 1}
    assert event.event == Placed("A", 1)
    assert types.stored_names(["Placed"]) == ("Ordered", "Placed")


def test_unknown_types_and_versions() -> None:
    types = EventTypes()
    types.register_name("Known")
    with pytest.raises(UnknownEventTypeError, match="Mystery"):
        _ = _event(types, "Mystery", 1, "{}").type
    with pytest.raises(UnknownEventTypeError) as caught:
        _ = _event(types, "Known", 2, "{}").data
    assert caught.value.schema_version == 2
    lenient = EventTypes(strict=False)
    assert _event(lenient, "Mystery", 4, '{"a":1}').data == {"a": 1}
    lenient.add_upcaster("Changing", 1, lambda d: d)
    with pytest.raises(UnknownEventTypeError):
        _ = _event(lenient, "Changing", 7, "{}").type


def test_decoding_into_a_class_reports_a_mismatch_as_corrupt() -> None:
    types = EventTypes()
    types.register(Placed)
    with pytest.raises(CorruptEventError, match="cannot build Placed"):
        _ = _event(types, "Placed", 1, '{"sku":"A"}').event


def test_custom_encoders_and_decoders() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    types = EventTypes()
    types.register(Money, encode=lambda m: {"c": m.cents}, decode=lambda d: Money(d["c"]))
    assert types.encode_object(Money(5)) == ("Money", {"c": 5})
    assert types.name_of(Money) == "Money"
    assert types.class_of("Money") is Money
    assert types.encode_object(3) is None
    decoded = _event(types, "Money", 1, '{"c":9}').event
    assert isinstance(decoded, Money)
    assert decoded.cents == 9


@given(st.lists(st.integers(min_value=-5, max_value=5), min_size=1, max_size=8))
def test_a_chain_equals_composing_its_steps(increments: list[int]) -> None:
    types = EventTypes()
    types.register_name("N")
    for version, increment in enumerate(increments, start=1):
        types.add_upcaster("N", version, lambda d, k=increment: {"n": d["n"] + k})
    event = _event(types, "N", 1, '{"n":0}')
    assert event.data == {"n": sum(increments)}
    assert event.schema_version == len(increments) + 1
    middle = len(increments) // 2 + 1
    later = _event(types, "N", middle, '{"n":0}')
    assert later.data == {"n": sum(increments[middle - 1 :])}
