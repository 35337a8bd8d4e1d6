"""Defining a choreography: which participant reacts to which event and what it may emit.

A :class:`Choreography` is the flow as data. Each :class:`Reaction` (a step) reacts to
one event type and may emit its success events or its failure events; a step that a
later failure must undo names a :class:`Compensation`, another reaction of the same
participant that listens for the failures and emits the compensating event. Terminal
events end a business transaction: ``completed`` ones in success, ``failed`` ones after
the compensations. The definition is checked when it is built, so a flow that could
never finish or never be undone is refused with a :class:`~seawall.errors.ConfigurationError`
that names the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from seawall.errors import ConfigurationError

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.messaging.outbox import Outbox
    from seawall.messaging.topic import Topic
    from seawall.workflows.choreography._model import ChoreographyEvent

__all__ = [
    "Choreography",
    "Compensation",
    "Emit",
    "Handler",
    "Reaction",
    "ReactionInfo",
]

MAX_NAME_LENGTH: Final = 200


class Emit:
    """The ``emit`` a handler receives: ``emit("StockReserved", {"sku": "A-1"})``.

    Emitted events are collected and published once the handler has returned (nothing is
    published when it raises). Only the event types the reaction declared may be emitted.
    """

    __slots__ = ("_allowed", "_reaction", "emitted")

    def __init__(self, reaction: str, allowed: frozenset[str]) -> None:
        self._reaction = reaction
        self._allowed = allowed
        self.emitted: list[tuple[str, Any]] = []

    def __call__(self, event_type: str, data: Any = None) -> None:
        """Emit ``event_type`` with ``data`` (any value the topic's codec encodes)."""
        if event_type not in self._allowed:
            from seawall.workflows.choreography._errors import UndeclaredEventError

            raise UndeclaredEventError(self._reaction, event_type, sorted(self._allowed))
        self.emitted.append((event_type, data))


Handler = Callable[["ChoreographyEvent", Emit], object]
"""A participant's handler: ``fn(event, emit)``; what it returns is ignored."""


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"{what} {value!r} is invalid: it must be a non-empty str of at most "
            f"{MAX_NAME_LENGTH} characters"
        )
    return value


def _events(value: object, what: str) -> tuple[str, ...]:
    """One event type or an iterable of them, as a tuple without repeats."""
    if isinstance(value, str):
        return (_check_name(value, f"{what} event type"),)
    if value is None:
        return ()
    if not isinstance(value, Iterable):
        raise ConfigurationError(
            f"{what} must be an event type (str) or a list of them, got {value!r}"
        )
    names: list[str] = []
    for item in value:
        name = _check_name(item, f"{what} event type")
        if name not in names:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True, slots=True, init=False)
class Compensation:
    """How a participant undoes its step: on any of the ``on`` events, it emits ``emits``.

    ``on`` lists the failure events (or the compensating events of later steps, to undo
    in reverse order) it reacts to; ``fails`` lists events it may emit when the undo
    itself cannot be done (the business transaction is then ``failed`` for an operator).
    """

    name: str
    on: tuple[str, ...]
    emits: str
    fails: tuple[str, ...]

    def __init__(
        self, name: str, *, on: str | Iterable[str], emits: str, fails: str | Iterable[str] = ()
    ) -> None:
        object.__setattr__(self, "name", _check_name(name, "Compensation name"))
        object.__setattr__(self, "on", _events(on, f"Compensation {name!r} on="))
        object.__setattr__(self, "emits", _check_name(emits, f"Compensation {name!r} emits="))
        object.__setattr__(self, "fails", _events(fails, f"Compensation {name!r} fails="))
        if not self.on:
            raise ConfigurationError(
                f"Compensation {name!r} reacts to no event: pass on='SomethingFailed' (the "
                "failure events that must undo the step)"
            )


@dataclass(frozen=True, slots=True, init=False)
class Reaction:
    """One step of a choreography: on an ``on`` event, a participant emits ``emits`` or ``fails``.

    ``emits`` are its success events, ``fails`` its failure events (a failure turns the
    business transaction back: the completed steps' compensations run). ``compensation``
    undoes the step when a later step fails.
    """

    name: str
    on: tuple[str, ...]
    emits: tuple[str, ...]
    fails: tuple[str, ...]
    compensation: Compensation | None

    def __init__(
        self,
        name: str,
        *,
        on: str | Iterable[str],
        emits: str | Iterable[str] = (),
        fails: str | Iterable[str] = (),
        compensation: Compensation | None = None,
    ) -> None:
        object.__setattr__(self, "name", _check_name(name, "Reaction name"))
        object.__setattr__(self, "on", _events(on, f"Reaction {name!r} on="))
        if not self.on:
            raise ConfigurationError(f"Reaction {name!r} reacts to no event: pass on='OrderPlaced'")
        object.__setattr__(self, "emits", _events(emits, f"Reaction {name!r} emits="))
        object.__setattr__(self, "fails", _events(fails, f"Reaction {name!r} fails="))
        if compensation is not None and not isinstance(compensation, Compensation):
            raise ConfigurationError(
                f"Reaction {name!r} compensation={compensation!r} must be a Compensation(...)"
            )
        object.__setattr__(self, "compensation", compensation)
        if not self.emits and not self.fails:
            raise ConfigurationError(
                f"Reaction {name!r} emits nothing: declare its success events (emits=...) "
                "and/or its failure events (fails=...)"
            )


@dataclass(frozen=True, slots=True)
class ReactionInfo:
    """A reaction or compensation as the runners see it: what it reacts to and may emit."""

    name: str
    on: tuple[str, ...]
    allowed: frozenset[str]
    step: str
    """The step it belongs to (its own name for a forward reaction)."""
    compensating: bool


class Choreography:
    """A choreographed flow: start events, reactions, compensations and terminal events.

    ``start`` are the events that begin a business transaction; ``completed`` the
    terminal success events (at least one); ``failed`` the optional terminal failure
    events (when given, a turned-back transaction is ``compensated`` only once one of
    them has arrived too). ``require_compensation=False`` lets a step that a later
    failure can follow go without a compensation (it then stays done). Handlers are
    attached with :meth:`on`.
    """

    def __init__(
        self,
        name: str,
        reactions: Iterable[Reaction],
        *,
        start: str | Iterable[str],
        completed: str | Iterable[str],
        failed: str | Iterable[str] = (),
        require_compensation: bool = True,
    ) -> None:
        self.name = _check_name(name, "Choreography name")
        self.reactions: tuple[Reaction, ...] = tuple(reactions)
        self.start_events = _events(start, f"Choreography {name!r} start=")
        self.completed_events = _events(completed, f"Choreography {name!r} completed=")
        self.failed_events = _events(failed, f"Choreography {name!r} failed=")
        self.require_compensation = bool(require_compensation)
        self.handlers: dict[str, Handler] = {}
        self._index()
        self._validate()

    # ------------------------------------------------------------------ graph

    def _index(self) -> None:
        where = f"Choreography {self.name!r}"
        if not self.reactions:
            raise ConfigurationError(f"{where} has no reactions: pass at least one Reaction(...)")
        for reaction in self.reactions:
            if not isinstance(reaction, Reaction):
                raise ConfigurationError(f"{where}: {reaction!r} is not a Reaction(...)")
        self.infos: dict[str, ReactionInfo] = {}
        self.step_of: dict[str, str] = {}
        """Event type -> the step (reaction) whose success it reports."""
        self.failure_of: dict[str, str] = {}
        """Event type -> the step whose failure it reports."""
        self.compensated_by: dict[str, str] = {}
        """Compensating event type -> the step it undid."""
        self.compensation_failure_of: dict[str, str] = {}
        """Event type -> the step whose compensation could not be done."""
        emitter: dict[str, str] = {}

        def claim(event: str, owner: str) -> None:
            other = emitter.get(event)
            if other is not None and other != owner:
                raise ConfigurationError(
                    f"{where}: event {event!r} is emitted by both {other!r} and {owner!r}; "
                    "give each its own event type so the tracker knows which step it reports"
                )
            emitter[event] = owner

        for reaction in self.reactions:
            self._add_info(
                ReactionInfo(
                    reaction.name,
                    reaction.on,
                    frozenset(reaction.emits + reaction.fails),
                    reaction.name,
                    False,
                )
            )
            for event in reaction.emits:
                claim(event, reaction.name)
                self.step_of[event] = reaction.name
            for event in reaction.fails:
                claim(event, reaction.name)
                if event in self.step_of:
                    raise ConfigurationError(
                        f"{where}: reaction {reaction.name!r} lists {event!r} both as a success "
                        "(emits=) and as a failure (fails=); keep it in one"
                    )
                self.failure_of[event] = reaction.name
            compensation = reaction.compensation
            if compensation is not None:
                self._add_info(
                    ReactionInfo(
                        compensation.name,
                        compensation.on,
                        frozenset((compensation.emits, *compensation.fails)),
                        reaction.name,
                        True,
                    )
                )
                claim(compensation.emits, compensation.name)
                self.compensated_by[compensation.emits] = reaction.name
                for event in compensation.fails:
                    claim(event, compensation.name)
                    self.compensation_failure_of[event] = reaction.name
        self.emitted: frozenset[str] = frozenset(emitter)
        self.events: frozenset[str] = self.emitted | frozenset(self.start_events)
        self.reacting: dict[str, list[ReactionInfo]] = {}
        for info in self.infos.values():
            for event in info.on:
                self.reacting.setdefault(event, []).append(info)

    def _add_info(self, info: ReactionInfo) -> None:
        if info.name in self.infos:
            raise ConfigurationError(
                f"Choreography {self.name!r}: two reactions or compensations are named "
                f"{info.name!r}; names must be unique (they key handlers, the inbox and the "
                "tracker's history)"
            )
        self.infos[info.name] = info

    def _unknown(self, event: str, what: str) -> ConfigurationError:
        close = difflib.get_close_matches(event, sorted(self.events), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigurationError(
            f"Choreography {self.name!r}: {what} {event!r}, which no reaction emits and is not "
            f"a start event{hint}"
        )

    def _validate(self) -> None:
        where = f"Choreography {self.name!r}"
        if not self.start_events:
            raise ConfigurationError(f"{where} has no start event: pass start='OrderPlaced'")
        if not self.completed_events:
            raise ConfigurationError(
                f"{where} has no terminal event: pass completed='OrderConfirmed' (the event "
                "that ends a business transaction in success), so the tracker knows when it is done"
            )
        for event in self.start_events:
            if event in self.emitted:
                raise ConfigurationError(
                    f"{where}: start event {event!r} is also emitted by a reaction; a start "
                    "event begins a business transaction, use another type inside the flow"
                )
        for info in self.infos.values():
            for event in info.on:
                if event not in self.events:
                    raise self._unknown(event, f"{info.name!r} reacts to")
        for event in self.completed_events:
            if event not in self.step_of:
                raise (
                    self._unknown(event, "the terminal success event is")
                    if (event not in self.emitted)
                    else ConfigurationError(
                        f"{where}: terminal success event {event!r} must be a reaction's success "
                        "event (emits=), not a failure or compensating event"
                    )
                )
        for event in self.failed_events:
            if event not in self.emitted:
                raise self._unknown(event, "the terminal failure event is")
            if event in self.completed_events:
                raise ConfigurationError(
                    f"{where}: {event!r} is both a terminal success and a terminal failure event"
                )
        reachable_completion = any(
            self._downstream(start) & set(self.completed_events) for start in self.start_events
        )
        if not reachable_completion:
            raise ConfigurationError(
                f"{where}: no terminal success event {list(self.completed_events)} can follow "
                f"the start events {list(self.start_events)}; check each reaction's on= and emits="
            )
        self._validate_compensations()

    def _downstream(self, event: str) -> set[str]:
        """Events that can follow ``event`` through forward reactions (failures included)."""
        seen: set[str] = set()
        frontier = [event]
        while frontier:
            current = frontier.pop()
            for info in self.reacting.get(current, ()):
                if info.compensating:
                    continue
                for emitted in info.allowed:
                    if emitted not in seen:
                        seen.add(emitted)
                        frontier.append(emitted)
        return seen

    def _failures(self) -> set[str]:
        return set(self.failure_of) | set(self.failed_events)

    def _fires(self, compensation: Compensation, failure: str, seen: frozenset[str]) -> bool:
        """Whether ``compensation`` runs after ``failure``, directly or after another undo."""
        if failure in compensation.on:
            return True
        for event in compensation.on:
            step = self.compensated_by.get(event)
            if step is None or step in seen:
                continue
            other = self._reaction(step).compensation
            if other is not None and self._fires(other, failure, seen | {step}):
                return True
        return False

    def _reaction(self, name: str) -> Reaction:
        return next(reaction for reaction in self.reactions if reaction.name == name)

    def compensation_of(self, step: str) -> Compensation | None:
        """The compensation of the step (reaction) named ``step``, if it has one."""
        for reaction in self.reactions:
            if reaction.name == step:
                return reaction.compensation
        return None

    def _validate_compensations(self) -> None:
        where = f"Choreography {self.name!r}"
        failures = self._failures()
        for reaction in self.reactions:
            later: set[str] = set()
            for event in reaction.emits:
                later |= self._downstream(event) & failures
            if not later:
                continue
            compensation = reaction.compensation
            if compensation is None:
                if self.require_compensation:
                    raise ConfigurationError(
                        f"{where}: step {reaction.name!r} has no compensation, but "
                        f"{sorted(later)} can follow it; add compensation=Compensation(...), or "
                        "pass require_compensation=False if the step never needs undoing"
                    )
                continue
            for failure in sorted(later):
                if not self._fires(compensation, failure, frozenset({reaction.name})):
                    raise ConfigurationError(
                        f"{where}: compensation {compensation.name!r} of step {reaction.name!r} "
                        f"does not run after {failure!r}, which can follow the step; add it to "
                        "the compensation's on= (or a later step's compensating event)"
                    )

    # -------------------------------------------------------------- handlers

    def on(self, event_type: str, *, reaction: str | None = None) -> Callable[[Handler], Handler]:
        """Attach the decorated ``fn(event, emit)`` as the handler of a reaction to ``event_type``.

        The reaction is the one named ``reaction``, else the one named like the function,
        else the only reaction (or compensation) to ``event_type``.
        """
        candidates = self.reacting.get(event_type)
        if not candidates:
            raise (
                self._unknown(event_type, "no reaction or compensation reacts to")
                if (event_type not in self.events)
                else ConfigurationError(
                    f"Choreography {self.name!r}: no reaction or compensation reacts to "
                    f"{event_type!r}; declare one with on={event_type!r} first"
                )
            )

        def attach(handler: Handler) -> Handler:
            if not callable(handler):
                raise ConfigurationError(f"{handler!r} is not callable: decorate a function")
            names = [info.name for info in candidates]
            chosen = reaction if reaction is not None else str(getattr(handler, "__name__", ""))
            if chosen not in names:
                if reaction is not None or len(names) != 1:
                    raise ConfigurationError(
                        f"Choreography {self.name!r}: reactions to {event_type!r} are {names}; "
                        f"name the one this handler runs: @flow.on({event_type!r}, "
                        f"reaction={names[0]!r})"
                    )
                chosen = names[0]
            if chosen in self.handlers:
                raise ConfigurationError(
                    f"Choreography {self.name!r}: reaction {chosen!r} already has a handler"
                )
            self.handlers[chosen] = handler
            return handler

        return attach

    def handle(self, reaction: str, handler: Handler) -> None:
        """Attach ``handler`` to the reaction or compensation named ``reaction`` (no decorator)."""
        info = self.infos.get(reaction)
        if info is None:
            raise ConfigurationError(
                f"Choreography {self.name!r} has no reaction or compensation {reaction!r}; "
                f"known: {sorted(self.infos)}"
            )
        self.on(info.on[0], reaction=reaction)(handler)

    def reactions_to(
        self, event_type: str, names: Iterable[str] | None = None
    ) -> list[ReactionInfo]:
        """The reactions (of ``names``, or all) that run on ``event_type``."""
        found = self.reacting.get(event_type, [])
        if names is None:
            return list(found)
        chosen = set(names)
        return [info for info in found if info.name in chosen]

    def start(
        self,
        topic: Topic,
        data: Any = None,
        *,
        event: str | None = None,
        correlation_id: str | None = None,
        transaction: Transaction | None = None,
        outbox: Outbox | None = None,
    ) -> str:
        """Begin a business transaction: publish a start event to ``topic``; returns its correlation id.

        ``event`` is the start event type (default: the only one declared);
        ``correlation_id`` defaults to a fresh random id (pass your order id, so that the
        tracker shows the transaction under it). ``transaction`` publishes it in your
        commit (SQL topics), ``outbox`` through a transactional outbox.
        """
        from seawall.workflows.choreography._model import ChoreographyEvent, new_id
        from seawall.workflows.choreography._participant import publish_events

        if event is None:
            if len(self.start_events) != 1:
                raise ConfigurationError(
                    f"Choreography {self.name!r} has several start events "
                    f"{list(self.start_events)}: pass event=..."
                )
            event = self.start_events[0]
        elif event not in self.start_events:
            raise ConfigurationError(
                f"{event!r} is not a start event of Choreography {self.name!r}; start events: "
                f"{list(self.start_events)}"
            )
        cid = new_id() if correlation_id is None else _check_name(correlation_id, "correlation_id")
        started = ChoreographyEvent(
            type=event, data=data, flow=self.name, correlation_id=cid, event_id=new_id()
        )
        publish_events(topic, [started], transaction=transaction, outbox=outbox)
        return cid

    def describe(self) -> Mapping[str, Any]:
        """The flow as plain data (for docs, the CLI and tests)."""
        return {
            "name": self.name,
            "start": list(self.start_events),
            "completed": list(self.completed_events),
            "failed": list(self.failed_events),
            "reactions": [
                {
                    "name": reaction.name,
                    "on": reaction.on,
                    "emits": list(reaction.emits),
                    "fails": list(reaction.fails),
                    "compensation": None
                    if reaction.compensation is None
                    else {
                        "name": reaction.compensation.name,
                        "on": list(reaction.compensation.on),
                        "emits": reaction.compensation.emits,
                        "fails": list(reaction.compensation.fails),
                    },
                }
                for reaction in self.reactions
            ],
        }

    def __repr__(self) -> str:
        return f"Choreography({self.name!r}, reactions={[r.name for r in self.reactions]})"
