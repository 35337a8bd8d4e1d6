"""The codecs queues use: JSON by default, bytes pass-through, and the errors they raise."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest

from seawall.codec import (
    BytesCodec,
    Codec,
    DecodeError,
    EncodeError,
    JsonCodec,
    resolve_codec,
)
from seawall.errors import ConfigurationError, SeawallError


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -7, 1.5, "text", "ünïcødé ✓", [], {}, {"a": [1, {"b": None}]}, [1, "2", 3.0]],
)
def test_json_round_trips_what_json_can_represent(value: Any) -> None:
    codec = JsonCodec()
    data = codec.encode(value)
    assert isinstance(data, bytes)
    assert codec.decode(data) == value


def test_json_is_compact_utf8() -> None:
    assert JsonCodec().encode({"a": [1, 2], "é": "x"}) == '{"a":[1,2],"é":"x"}'.encode()


def test_tuples_come_back_as_lists() -> None:
    codec = JsonCodec()
    assert codec.decode(codec.encode((1, 2))) == [1, 2]


@pytest.mark.parametrize(
    ("value", "type_name", "path"),
    [
        (datetime.date(2024, 1, 2), "date", "$"),
        ({"when": datetime.date(2024, 1, 2)}, "date", "$['when']"),
        ({"items": [1, 2, {"price": decimal.Decimal("1.5")}]}, "Decimal", "$['items'][2]['price']"),
        ({"tags": {"a", "b"}}, "set", "$['tags']"),
        ([b"raw"], "bytes", "$[0]"),
        (object(), "object", "$"),
    ],
)
def test_unencodable_values_fail_naming_the_type_and_where(
    value: Any, type_name: str, path: str
) -> None:
    with pytest.raises(EncodeError) as caught:
        JsonCodec().encode(value)
    error = caught.value
    assert error.type_name == type_name
    assert error.path == path
    assert f"type {type_name!r}" in str(error)
    assert isinstance(error, TypeError)
    assert isinstance(error, SeawallError)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused(number: float) -> None:
    with pytest.raises(EncodeError, match="not valid JSON") as caught:
        JsonCodec().encode({"x": [number]})
    assert caught.value.type_name == "float"
    assert caught.value.path == "$['x'][0]"


def test_a_key_json_cannot_encode_is_named() -> None:
    with pytest.raises(EncodeError, match="dict keys") as caught:
        JsonCodec().encode({"outer": {(1, 2): "tuple key"}})
    assert caught.value.type_name == "tuple"
    assert caught.value.path == "$['outer']"


def test_a_circular_structure_fails_cleanly() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(EncodeError, match="Circular"):
        JsonCodec().encode(looped)


def test_default_converts_other_types() -> None:
    codec = JsonCodec(default=str)
    assert codec.decode(codec.encode({"on": datetime.date(2024, 1, 2)})) == {"on": "2024-01-02"}


def test_a_default_that_refuses_still_names_the_type() -> None:
    def only_dates(value: Any) -> Any:
        if isinstance(value, datetime.date):
            return value.isoformat()
        raise TypeError("no")

    with pytest.raises(EncodeError) as caught:
        JsonCodec(default=only_dates).encode([datetime.date(2024, 1, 2), {1, 2}])
    assert caught.value.type_name == "set"
    assert caught.value.path == "$[1]"


@pytest.mark.parametrize("data", [b"\xff\xfe", b"{not json", b"", b'{"a": 1} trailing'])
def test_invalid_bytes_fail_to_decode_with_the_reason(data: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        JsonCodec().decode(data)
    assert caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_bytes_codec_passes_bytes_through() -> None:
    codec = BytesCodec()
    assert codec.encode(b"\x00\x01") == b"\x00\x01"
    assert codec.encode(bytearray(b"ab")) == b"ab"
    assert codec.encode(memoryview(b"cd")) == b"cd"
    assert codec.decode(b"\xff") == b"\xff"
    with pytest.raises(EncodeError, match="only bytes") as caught:
        codec.encode("text")
    assert caught.value.type_name == "str"


def test_resolve_codec_by_name_instance_or_default() -> None:
    assert isinstance(resolve_codec(None), JsonCodec)
    assert isinstance(resolve_codec("json"), JsonCodec)
    assert isinstance(resolve_codec("BYTES"), BytesCodec)
    custom = BytesCodec()
    assert resolve_codec(custom) is custom
    assert isinstance(custom, Codec)
    with pytest.raises(ConfigurationError, match="'pickle' is not a known codec"):
        resolve_codec("pickle")
    with pytest.raises(ConfigurationError, match="no encode/decode"):
        resolve_codec(42)  # type: ignore[arg-type]


def test_reprs_are_readable() -> None:
    assert repr(JsonCodec()) == "JsonCodec()"
    assert repr(BytesCodec()) == "BytesCodec()"
    assert "default=" in repr(JsonCodec(default=str))
