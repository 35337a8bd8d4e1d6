"""Typed events and the listeners that receive them.

Every component (a breaker, a retry policy, a queue worker) owns an :class:`EventHub`
chained to the process-wide :data:`hub`. A listener subscribed to a component's hub
hears that component; one subscribed to :data:`hub` hears everything::

    from seawall import events
    events.hub.subscribe(print)                                   # everything
    breaker.events.subscribe(alert, types=(CircuitStateChanged,)) # one component, one type

Emitting is free when nobody listens: components test ``hub.active`` (a plain
attribute) before building an event object. A listener that raises is logged and
skipped; it never breaks the call being observed.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Event", "EventHub", "Listener", "hub", "log_events"]

_logger = logging.getLogger("seawall.events")


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event: ``source`` is the name of the component that emitted it."""

    source: str


Listener = Callable[[Any], None]
"""A callable that receives one event. Typed as ``Any`` so a listener may narrow it."""


class EventHub:
    """The listeners of one component, chained to a parent hub.

    ``active`` is true when this hub or any ancestor has a listener; it is kept up to
    date on subscribe/unsubscribe so the check on a hot path is one attribute read.
    """

    __slots__ = ("__weakref__", "_children", "_listeners", "_on_active_change", "_parent", "active")

    def __init__(
        self,
        parent: EventHub | None = None,
        *,
        on_active_change: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_active_change(active)`` is called whenever ``active`` flips, so a component
        can switch between a fast unobserved path and an emitting one."""
        self._parent = parent
        self._on_active_change = on_active_change
        self._listeners: list[tuple[Listener, tuple[type[Event], ...] | None]] = []
        self._children: weakref.WeakSet[EventHub] = weakref.WeakSet()
        self.active: bool = bool(parent is not None and parent.active)
        if parent is not None:
            parent._children.add(self)

    def subscribe(
        self, listener: Listener, *, types: tuple[type[Event], ...] | None = None
    ) -> Callable[[], None]:
        """Call ``listener`` with every event (or only those of ``types``); returns an unsubscriber."""
        entry = (listener, types)
        self._listeners.append(entry)
        self._refresh()

        def unsubscribe() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)
                self._refresh()

        return unsubscribe

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to this hub's listeners, then to the parent's."""
        for listener, types in tuple(self._listeners):
            if types is not None and not isinstance(event, types):
                continue
            try:
                listener(event)
            except Exception:
                _logger.exception("event listener %r failed on %r", listener, event)
        if self._parent is not None and self._parent.active:
            self._parent.emit(event)

    def _refresh(self) -> None:
        was = self.active
        self.active = bool(self._listeners) or bool(
            self._parent is not None and self._parent.active
        )
        if self.active != was and self._on_active_change is not None:
            self._on_active_change(self.active)
        for child in tuple(self._children):
            child._refresh()

    def __repr__(self) -> str:
        return f"EventHub(listeners={len(self._listeners)}, active={self.active})"


hub = EventHub()
"""The process-wide hub: every component's hub forwards to it."""


def log_events(
    logger: logging.Logger | None = None, level: int = logging.INFO
) -> Callable[[], None]:
    """Log every seawall event through ``logger`` (default ``seawall``); returns an unsubscriber."""
    target = logger or logging.getLogger("seawall")

    def listener(event: Event) -> None:
        target.log(level, "%s", event, extra={"seawall_event": event})

    return hub.subscribe(listener)
