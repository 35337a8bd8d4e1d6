"""The aggregate base: commands decide and emit events, ``apply`` methods change state.

An aggregate is a plain object with no I/O. A command method checks the current
state and calls :meth:`Aggregate.emit` with an event; ``emit`` applies the event at
once (so the next command sees the new state) and keeps it as pending until a
repository saves it. Loading replays stored events through the same ``apply``
methods, so state is only ever changed by events::

    @dataclass
    class Deposited:
        amount: int

    class Account(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.balance = 0

        def deposit(self, amount: int) -> None:          # a command
            if amount <= 0:
                raise ValueError("deposit a positive amount")
            self.emit(Deposited(amount))

        @applies(Deposited)                                # a state change
        def _deposited(self, event: Deposited) -> None:
            self.balance += event.amount
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from seawall.errors import ConfigurationError
from seawall.eventsourcing.aggregate._errors import SnapshotStateError, UnhandledEventError
from seawall.eventsourcing.store._model import encode_json

__all__ = ["Aggregate", "applies"]

_F = TypeVar("_F", bound=Callable[..., Any])
_MARK = "__seawall_applies__"
Applier = Callable[[Any, Any], None]
"""An unbound ``apply`` method: ``(aggregate, event) -> None``."""


def applies(*event_classes: type[Any]) -> Callable[[_F], _F]:
    """Mark an aggregate method as the state change for events of these classes.

    The method takes the event and changes the aggregate's attributes; it must not
    fail or decide anything (commands decide, before they emit).
    """
    if not event_classes:
        raise ConfigurationError("@applies() needs at least one event class, e.g. @applies(Opened)")
    for event_class in event_classes:
        if not isinstance(event_class, type):
            raise ConfigurationError(
                f"@applies({event_class!r}) takes event classes, not {type(event_class).__name__}"
            )

    def mark(method: _F) -> _F:
        existing: tuple[type[Any], ...] = getattr(method, _MARK, ())
        setattr(method, _MARK, (*existing, *event_classes))
        return method

    return mark


class Aggregate:
    """Base of event-sourced aggregates: ``emit`` events from commands, ``apply`` them to state.

    Subclasses keep ``__init__(self, id)`` callable with the id alone (the repository
    builds empty aggregates that way before replaying events). Class options:
    ``stream_prefix`` (stream id = prefix + id; default ``"<ClassName>-"``),
    ``event_types`` (extra event classes when ``apply`` is overridden instead of using
    :func:`applies`) and ``snapshot_schema_version`` (bump it when the snapshot's shape
    changes; older snapshots are then ignored).
    """

    stream_prefix: ClassVar[str] = ""
    event_types: ClassVar[tuple[type[Any], ...]] = ()
    snapshot_schema_version: ClassVar[int] = 1
    _appliers: ClassVar[dict[type[Any], Applier]] = {}
    _inherited: ClassVar[dict[type[Any], Applier]] = {}
    _applies_overridden: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: dict[type[Any], str] = {}
        for klass in reversed(cls.__mro__):
            declared: dict[type[Any], str] = {}
            for attribute, value in vars(klass).items():
                for event_class in getattr(value, _MARK, ()):
                    if event_class in declared:
                        raise ConfigurationError(
                            f"{klass.__qualname__} has two apply methods for "
                            f"{event_class.__qualname__}: {declared[event_class]} and {attribute}"
                        )
                    declared[event_class] = attribute
            names.update(declared)
        cls._appliers = {event_class: getattr(cls, name) for event_class, name in names.items()}
        cls._inherited = {}
        cls._applies_overridden = cls.apply is not Aggregate.apply
        if "stream_prefix" not in vars(cls):
            cls.stream_prefix = f"{cls.__name__}-"
        version = cls.snapshot_schema_version
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigurationError(
                f"{cls.__qualname__}.snapshot_schema_version={version!r} must be an int >= 1"
            )
        if not isinstance(cls.stream_prefix, str):
            raise ConfigurationError(
                f"{cls.__qualname__}.stream_prefix={cls.stream_prefix!r} must be a string"
            )

    def __init__(self, id: str) -> None:
        if not isinstance(id, str) or not id:
            raise ConfigurationError(
                f"{type(self).__name__} id={id!r} must be a non-empty string (use str(uuid) "
                "for UUIDs)"
            )
        self._id = id
        self._version = 0
        self._stored_version = 0
        self._snapshot_version = 0
        self._pending: list[Any] = []

    # --- identity and bookkeeping ----------------------------------------------------------

    @property
    def id(self) -> str:
        """The aggregate's id (its stream is ``stream_prefix + id``)."""
        return self._id

    @property
    def version(self) -> int:
        """The version of the current state: stored events plus pending ones (0 when new)."""
        return self._version

    @property
    def stored_version(self) -> int:
        """The stream's version when this object was loaded or last saved (0: never saved)."""
        return self._stored_version

    @property
    def pending_events(self) -> tuple[Any, ...]:
        """Events emitted since the last load or save, oldest first."""
        return tuple(self._pending)

    @property
    def stream_id(self) -> str:
        """The id of the event stream that holds this aggregate."""
        return self.stream_prefix + self._id

    # --- commands and state changes --------------------------------------------------------

    def emit(self, event: Any) -> None:
        """Record ``event``: apply it to the state now, and keep it for the next save.

        Commands call this once they have decided; if ``apply`` raises, the event is
        not recorded.
        """
        applier = None if self._applies_overridden else self._appliers.get(type(event))
        if applier is None:
            self.apply(event)
        else:  # the common case, without the extra call through apply()
            applier(self, event)
        self._pending.append(event)
        self._version += 1

    def apply(self, event: Any) -> None:
        """Change the state for one event: calls the :func:`applies` method for its class.

        Override it (with ``match`` or ``functools.singledispatchmethod``) to dispatch
        another way; then list the event classes in ``event_types``.
        """
        applier = self._appliers.get(type(event)) or self._inherited.get(type(event))
        if applier is None:
            applier = self._inherited_applier(type(event))
        applier(self, event)

    @classmethod
    def _inherited_applier(cls, event_class: type[Any]) -> Applier:
        for base in event_class.__mro__[1:]:
            applier = cls._appliers.get(base)
            if applier is not None:
                cls._inherited[event_class] = applier
                return applier
        raise UnhandledEventError(cls.__name__, event_class.__name__)

    @classmethod
    def known_event_classes(cls) -> tuple[type[Any], ...]:
        """Every event class this aggregate applies (from ``@applies`` and ``event_types``)."""
        known = dict.fromkeys(cls._appliers)
        known.update(dict.fromkeys(cls.event_types))
        return tuple(known)

    # --- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> Any:
        """The state as JSON-compatible data, for a snapshot.

        The default takes the public attributes (names not starting with ``_``) and
        refuses values JSON would not give back unchanged (tuples, sets, dataclasses,
        ...) with :class:`SnapshotStateError`. Override with :meth:`restore` for
        other state.
        """
        state = {name: value for name, value in vars(self).items() if not name.startswith("_")}
        try:
            text = encode_json(state)
        except (TypeError, ValueError) as exc:
            raise SnapshotStateError(type(self).__name__, str(exc)) from exc
        restored = json.loads(text)
        if restored != state:
            changed = sorted(name for name in state if restored.get(name) != state[name])
            raise SnapshotStateError(
                type(self).__name__,
                f"attribute(s) {', '.join(changed)} would not come back unchanged from JSON",
            )
        return restored

    def restore(self, state: Any) -> None:
        """Set the state from data made by :meth:`snapshot` (the default sets attributes)."""
        if not isinstance(state, dict):
            raise SnapshotStateError(
                type(self).__name__, f"the default restore() expects a dict, got {state!r}"
            )
        vars(self).update(
            (name, value) for name, value in state.items() if not name.startswith("_")
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self._id!r}, version={self._version})"
