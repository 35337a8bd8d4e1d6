"""Codecs: how a message body becomes bytes in a store and comes back.

Every durable component (queues now; outbox, event store and topics later) stores
bytes and asks a :class:`Codec` to turn values into bytes and back. The default,
:class:`JsonCodec`, accepts what JSON can represent and fails **at send**, naming the
offending type and where it sits (``$.items[2].when``), so bad input never reaches
storage. :class:`BytesCodec` passes ``bytes`` through untouched. Any object with
``encode``/``decode`` (and a ``name``) can be plugged in::

    queue = seawall.connect("sqlite:///shop.db").queue("emails", codec=JsonCodec(default=str))
"""

from __future__ import annotations

import json
import json.scanner
import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from seawall.errors import ConfigurationError, SeawallError

__all__ = [
    "BytesCodec",
    "Codec",
    "CodecError",
    "DecodeError",
    "EncodeError",
    "JsonCodec",
    "resolve_codec",
]


class CodecError(SeawallError):
    """A value could not be turned into bytes, or bytes back into a value."""


class EncodeError(CodecError, TypeError):
    """The value cannot be encoded: ``type_name`` names the offending type, ``path`` where it is.

    Also a ``TypeError``, like the error ``json.dumps`` raises for the same input.
    """

    def __init__(self, codec: str, type_name: str, path: str, detail: str = "") -> None:
        where = f" at {path}" if path and path != "$" else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"cannot encode a value of type {type_name!r}{where} with the {codec} codec{extra}; "
            "convert it to a supported type first, or pass a codec that handles it "
            "(e.g. JsonCodec(default=...))"
        )
        self.codec = codec
        self.type_name = type_name
        self.path = path


class DecodeError(CodecError, ValueError):
    """Stored bytes could not be decoded; ``reason`` says why (kept with a dead letter)."""

    def __init__(self, codec: str, reason: str) -> None:
        super().__init__(f"cannot decode a message body with the {codec} codec: {reason}")
        self.codec = codec
        self.reason = reason


@runtime_checkable
class Codec(Protocol):
    """Turns values into bytes and back; ``name`` appears in errors."""

    name: str

    def encode(self, value: Any) -> bytes:
        """The bytes for ``value``; raise :class:`EncodeError` when it cannot be encoded."""
        ...

    def decode(self, data: bytes) -> Any:
        """The value ``data`` encodes; raise :class:`DecodeError` when it is not valid."""
        ...


class _UnencodableError(Exception):
    """Internal signal from the ``default`` hook: carries the object json could not handle."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


class JsonCodec:
    """JSON as UTF-8: dicts, lists, strings, numbers, booleans and ``None``.

    ``default`` converts other types (called for each object JSON cannot encode, as in
    ``json.dumps``); without it they fail with :class:`EncodeError`. NaN and
    infinities are refused, since other engines (PostgreSQL ``jsonb``) reject them.
    """

    __slots__ = ("_decode", "_default", "_encode", "_scan", "name")

    def __init__(self, *, default: Callable[[Any], Any] | None = None) -> None:
        self.name = "json"
        self._default = default
        self._encode = json.JSONEncoder(
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
            default=self._fallback,
        ).encode
        decoder = json.JSONDecoder()
        self._decode = decoder.decode
        # typeshed types the scanner's context as another scanner; a JSONDecoder is what CPython takes
        self._scan = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]

    def _fallback(self, value: Any) -> Any:
        if self._default is not None:
            try:
                return self._default(value)
            except TypeError:
                pass
        raise _UnencodableError(value)

    def encode(self, value: Any) -> bytes:
        """UTF-8 JSON for ``value``; :class:`EncodeError` names the first unsupported type."""
        try:
            return self._encode(value).encode()
        except _UnencodableError as signal:
            culprit = signal.value
            raise EncodeError(self.name, type(culprit).__name__, _path_to(value, culprit)) from None
        except ValueError as exc:  # NaN / infinity, or a circular reference
            culprit_path, culprit = _find_invalid_float(value)
            if culprit is not None:
                raise EncodeError(
                    self.name, "float", culprit_path, f"{culprit!r} is not valid JSON"
                ) from None
            raise EncodeError(self.name, type(value).__name__, "$", str(exc)) from None
        except TypeError as exc:  # a dict key json cannot turn into a string
            path, key = _find_bad_key(value)
            raise EncodeError(
                self.name,
                type(key).__name__ if key is not None else type(value).__name__,
                path,
                f"dict keys must be str, int, float, bool or None: {exc}",
            ) from None

    def decode(self, data: bytes) -> Any:
        """The value encoded in ``data``; :class:`DecodeError` when it is not UTF-8 JSON."""
        try:
            text = data.decode()
            try:  # fast path for compact JSON (what encode writes): one C scan, no regex
                value, end = self._scan(text, 0)
                if end == len(text):
                    return value
            except StopIteration:
                pass
            return self._decode(text)  # whitespace around the value, or an error to explain
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecodeError(self.name, f"{type(exc).__name__}: {exc}") from None
        except AttributeError:
            raise DecodeError(self.name, f"expected bytes, got {type(data).__name__}") from None

    def __repr__(self) -> str:
        return "JsonCodec()" if self._default is None else f"JsonCodec(default={self._default!r})"


class BytesCodec:
    """Bytes in, bytes out: for payloads the caller has already serialised."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = "bytes"

    def encode(self, value: Any) -> bytes:
        """``value`` itself when it is bytes-like; :class:`EncodeError` otherwise."""
        if type(value) is bytes:
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        raise EncodeError(self.name, type(value).__name__, "$", "only bytes are accepted")

    def decode(self, data: bytes) -> Any:
        """The stored bytes, unchanged."""
        return bytes(data)

    def __repr__(self) -> str:
        return "BytesCodec()"


_NAMED: dict[str, Callable[[], Codec]] = {"json": JsonCodec, "bytes": BytesCodec}


def resolve_codec(codec: Codec | str | None) -> Codec:
    """A codec from an instance, a name (``"json"``, ``"bytes"``) or ``None`` (JSON)."""
    if codec is None:
        return JsonCodec()
    if isinstance(codec, str):
        factory = _NAMED.get(codec.lower())
        if factory is None:
            raise ConfigurationError(
                f"codec={codec!r} is not a known codec name; use one of "
                f"{sorted(_NAMED)} or pass an object with encode(value) -> bytes and decode(bytes)"
            )
        return factory()
    if not (callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))):
        raise ConfigurationError(
            f"codec={codec!r} has no encode/decode methods; pass a Codec such as JsonCodec()"
        )
    return codec


def _walk(root: Any) -> Iterator[tuple[str, Any]]:
    """Every value inside ``root`` with its JSONPath-like location, each container once."""
    stack: list[tuple[Any, str]] = [(root, "$")]
    seen: set[int] = set()
    while stack:
        value, path = stack.pop()
        yield path, value
        if isinstance(value, dict | list | tuple):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                stack.extend((item, f"{path}[{key!r}]") for key, item in reversed(value.items()))
            else:
                stack.extend(
                    (item, f"{path}[{index}]") for index, item in reversed(list(enumerate(value)))
                )


def _path_to(root: Any, target: object) -> str:
    """The location of ``target`` (by identity) inside ``root``."""
    return next((path for path, value in _walk(root) if value is target), "$")


def _find_invalid_float(root: Any) -> tuple[str, float | None]:
    """The location and value of the first NaN or infinity inside ``root``."""
    for path, value in _walk(root):
        if isinstance(value, float) and not math.isfinite(value):
            return path, value
    return "$", None


def _find_bad_key(root: Any) -> tuple[str, object | None]:
    """The location of the dict holding the first key JSON cannot encode, and that key."""
    for path, value in _walk(root):
        if isinstance(value, dict):
            for key in value:
                if key is not None and not isinstance(key, str | int | float | bool):
                    return path, key
    return "$", None
