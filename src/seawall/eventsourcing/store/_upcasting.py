"""Schema evolution: known event types and the upcasters that modernise old events.

An :class:`EventTypes` registry names the event types a program knows (optionally
with their classes) and holds upcasters: small functions that turn the stored data of
``(type, version)`` into the shape of the next version, or of a renamed type. Events
are written with the current version of their type and upcast step by step when read,
so stored rows never change::

    types = EventTypes()
    types.register(OrderPlaced)                       # dataclass, name "OrderPlaced"

    @types.upcaster("OrderPlaced", version=1)         # v1 -> v2: currency was added
    def _add_currency(data):
        return {**data, "currency": "EUR"}

    types.rename("OrderCreated", "OrderPlaced")       # the old name is read as the new one

New ``OrderPlaced`` events are now written as version 2; old version-1 rows (and
``OrderCreated`` rows) come back as version 2 data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from seawall.errors import ConfigurationError
from seawall.eventsourcing.store._errors import CorruptEventError, UnknownEventTypeError
from seawall.eventsourcing.store._model import RecordedEvent

__all__ = ["EventTypes", "Upcaster"]

Upcaster = Callable[[Any], Any]
"""Turns one version's decoded data into the next version's data."""

_F = TypeVar("_F", bound=Upcaster)
_C = TypeVar("_C", bound=type[Any])

_Plan = tuple[str, int, tuple[Upcaster, ...], bool]
"""Final type, final version, the steps to apply, and whether the result is known."""


@dataclass(frozen=True, slots=True)
class _Step:
    to_type: str
    to_version: int
    function: Upcaster | None


@dataclass(frozen=True, slots=True)
class _Registered:
    cls: type[Any]
    name: str
    encode: Callable[[Any], Any] | None
    decode: Callable[[Any], Any] | None


class EventTypes:
    """The event types a program knows, and the upcasters for their old versions.

    Give it to a store (``open_event_store(engine, types=...)``). With ``strict=True``
    (the default) reading an event whose type is not registered, even after
    upcasting, raises :class:`~seawall.eventsourcing.UnknownEventTypeError`; with
    ``strict=False`` unknown types are returned as plain data.
    """

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self._by_name: dict[str, _Registered | None] = {}
        self._by_class: dict[type[Any], _Registered] = {}
        self._steps: dict[tuple[str, int], _Step] = {}
        self._current: dict[str, int] = {}
        self._plans: dict[tuple[str, int], _Plan] = {}
        self._filters: dict[frozenset[str], tuple[str, ...]] = {}
        self.event_class: type[RecordedEvent] = cast(
            "type[RecordedEvent]",
            type(
                "RecordedEvent",
                (RecordedEvent,),
                {"_types": self, "__module__": RecordedEvent.__module__},
            ),
        )
        """The :class:`RecordedEvent` subclass stores build when reading with this registry."""

    # --- registration ----------------------------------------------------------------

    def register(
        self,
        cls: _C,
        *,
        name: str | None = None,
        encode: Callable[[Any], Any] | None = None,
        decode: Callable[[Any], Any] | None = None,
    ) -> _C:
        """Know ``cls`` as the event type ``name`` (default: the class name); returns ``cls``.

        Usable as a class decorator. ``encode`` turns an instance into JSON-compatible
        data (default: a dataclass's fields); ``decode`` builds an instance back from
        data (default: ``cls(**data)``).
        """
        type_name = cls.__name__ if name is None else name
        _check_name(type_name, "name")
        existing = self._by_name.get(type_name)
        if existing is not None and existing.cls is not cls:
            raise ConfigurationError(
                f"event type name {type_name!r} is already registered for "
                f"{existing.cls.__qualname__}; give {cls.__qualname__} another name"
            )
        entry = _Registered(cls, type_name, encode, decode)
        self._by_name[type_name] = entry
        self._by_class[cls] = entry
        self._invalidate()
        return cls

    def register_name(self, *names: str) -> None:
        """Know event types by name only: their data is read back as plain JSON data."""
        for type_name in names:
            _check_name(type_name, "name")
            self._by_name.setdefault(type_name, None)
        self._invalidate()

    def upcaster(
        self,
        event_type: str,
        version: int,
        *,
        to_type: str | None = None,
        to_version: int | None = None,
    ) -> Callable[[_F], _F]:
        """Decorator: the function turns ``event_type`` data at ``version`` into the next shape.

        The next shape is ``version + 1`` of the same type, or (with ``to_type``) the
        same version of another type unless ``to_version`` says otherwise.
        """

        def decorate(function: _F) -> _F:
            self.add_upcaster(event_type, version, function, to_type=to_type, to_version=to_version)
            return function

        return decorate

    def add_upcaster(
        self,
        event_type: str,
        version: int,
        function: Upcaster | None,
        *,
        to_type: str | None = None,
        to_version: int | None = None,
    ) -> None:
        """Register one upcasting step (``function=None`` only renames or re-versions)."""
        _check_name(event_type, "event_type")
        _check_version(version, "version")
        target_type = event_type if to_type is None else to_type
        _check_name(target_type, "to_type")
        if to_version is None:
            to_version = version + 1 if target_type == event_type else version
        _check_version(to_version, "to_version")
        if target_type == event_type and to_version <= version:
            raise ConfigurationError(
                f"upcaster for {event_type!r} version {version} must go to a later version, "
                f"got to_version={to_version}"
            )
        key = (event_type, version)
        if key in self._steps:
            raise ConfigurationError(
                f"an upcaster for {event_type!r} version {version} is already registered"
            )
        self._steps[key] = _Step(target_type, to_version, function)
        seen = {key}
        walk = (target_type, to_version)
        while walk in self._steps:
            if walk in seen:
                del self._steps[key]
                raise ConfigurationError(
                    f"upcaster {event_type!r} v{version} -> {target_type!r} v{to_version} "
                    "would make a cycle of upcasters"
                )
            seen.add(walk)
            step = self._steps[walk]
            walk = (step.to_type, step.to_version)
        self._invalidate()

    def rename(
        self, old_type: str, new_type: str, *, version: int = 1, to_version: int | None = None
    ) -> None:
        """Read stored ``old_type`` events (at ``version``) as ``new_type`` events."""
        self.add_upcaster(old_type, version, None, to_type=new_type, to_version=to_version)

    # --- queries ---------------------------------------------------------------------

    def current_version(self, event_type: str) -> int:
        """The schema version new ``event_type`` events are written with (1 by default)."""
        current = self._current.get(event_type)
        if current is None:
            current = 1
            for step in self._steps.values():
                if step.to_type == event_type and step.to_version > current:
                    current = step.to_version
            self._current[event_type] = current
        return current

    def is_known(self, event_type: str) -> bool:
        """True when ``event_type`` is registered (by class or by name)."""
        return event_type in self._by_name

    def name_of(self, cls: type[Any]) -> str | None:
        """The registered type name of ``cls``, or ``None``."""
        entry = self._by_class.get(cls)
        return None if entry is None else entry.name

    def class_of(self, event_type: str) -> type[Any] | None:
        """The class registered for ``event_type``, or ``None``."""
        entry = self._by_name.get(event_type)
        return None if entry is None else entry.cls

    def encode_object(self, event: Any) -> tuple[str, Any] | None:
        """``(type name, data)`` for an instance of a registered class, else ``None``."""
        entry = self._by_class.get(type(event))
        if entry is None:
            return None
        return entry.name, event if entry.encode is None else entry.encode(event)

    def stored_names(self, names: Iterable[str]) -> tuple[str, ...]:
        """Every stored type name that reads back as one of ``names`` (for type filters)."""
        key = frozenset(names)
        found = self._filters.get(key)
        if found is None:
            wanted = set(key)
            for stored_type, stored_version in self._steps:
                if self._plan(stored_type, stored_version)[0] in key:
                    wanted.add(stored_type)
            found = self._filters[key] = tuple(sorted(wanted))
        return found

    def resolve(self, event: RecordedEvent) -> tuple[str, int, tuple[Upcaster, ...]]:
        """The current type, version and upcasting steps for a stored event.

        Raises :class:`UnknownEventTypeError` when the result is not a known type
        at its current version.
        """
        final_type, final_version, steps, known = self._plan(event[3], event[4])
        if not known:
            raise UnknownEventTypeError(
                final_type, final_version, stream_id=event[1], version=event[2], position=event[0]
            )
        return final_type, final_version, steps

    def to_object(self, event: RecordedEvent) -> Any:
        """The event's data as an instance of its registered class (plain data if none)."""
        entry = self._by_name.get(event.type)
        data = event.data
        if entry is None:
            return data
        try:
            if entry.decode is not None:
                return entry.decode(data)
            if isinstance(data, dict):
                return entry.cls(**data)
            return entry.cls(data)
        except Exception as exc:
            raise CorruptEventError(
                f"cannot build {entry.cls.__qualname__} from its data ({type(exc).__name__}: "
                f"{exc})",
                stream_id=event.stream_id,
                version=event.version,
                position=event.position,
            ) from exc

    def _plan(self, stored_type: str, stored_version: int) -> _Plan:
        key = (stored_type, stored_version)
        plan = self._plans.get(key)
        if plan is None:
            event_type, version = key
            steps: list[Upcaster] = []
            while (event_type, version) in self._steps:
                step = self._steps[event_type, version]
                if step.function is not None:
                    steps.append(step.function)
                event_type, version = step.to_type, step.to_version
            registered = event_type in self._by_name
            current = self.current_version(event_type)
            if registered or self.strict:
                known = registered and version == current
            else:
                known = current == 1 or version == current
            plan = self._plans[key] = (event_type, version, tuple(steps), known)
        return plan

    def _invalidate(self) -> None:
        self._current.clear()
        self._plans.clear()
        self._filters.clear()

    def __repr__(self) -> str:
        return (
            f"EventTypes(types={len(self._by_name)}, upcasters={len(self._steps)}, "
            f"strict={self.strict})"
        )


def _check_name(value: object, field: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{field}={value!r} must be a non-empty string")


def _check_version(value: object, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"{field}={value!r} must be an int >= 1")
