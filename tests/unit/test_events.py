from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from seawall.events import Event, EventHub, hub, log_events


@dataclass(frozen=True, slots=True)
class Ping(Event):
    count: int


@dataclass(frozen=True, slots=True)
class Pong(Event):
    pass


def test_hub_is_inactive_until_someone_listens() -> None:
    root = EventHub()
    child = EventHub(parent=root)
    assert not root.active
    assert not child.active
    unsubscribe = root.subscribe(lambda event: None)
    assert child.active, "a child hears its parent's listeners, so it must emit"
    unsubscribe()
    assert not child.active


def test_events_reach_own_and_parent_listeners_with_type_filter() -> None:
    root = EventHub()
    child = EventHub(parent=root)
    seen_root: list[Event] = []
    seen_pings: list[Event] = []
    root.subscribe(seen_root.append)
    child.subscribe(seen_pings.append, types=(Ping,))
    child.emit(Ping("c", 1))
    child.emit(Pong("c"))
    assert seen_pings == [Ping("c", 1)]
    assert seen_root == [Ping("c", 1), Pong("c")]


def test_failing_listener_is_logged_and_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    local = EventHub()
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    local.subscribe(broken)
    local.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="seawall.events"):
        local.emit(Pong("x"))
    assert seen == [Pong("x")]
    assert "listener bug" in caplog.text


def test_log_events_logs_through_the_global_hub(caplog: pytest.LogCaptureFixture) -> None:
    child = EventHub(parent=hub)
    assert not child.active
    unsubscribe = log_events()
    try:
        assert child.active
        with caplog.at_level(logging.INFO, logger="seawall"):
            child.emit(Ping("svc", 7))
        assert "Ping(source='svc', count=7)" in caplog.text
    finally:
        unsubscribe()
    assert not child.active


def test_on_active_change_reports_each_flip_once() -> None:
    root = EventHub()
    flips: list[bool] = []
    child = EventHub(parent=root, on_active_change=flips.append)
    undo_root = root.subscribe(lambda event: None)
    undo_child = child.subscribe(lambda event: None)
    undo_root()
    assert flips == [True], "still active through its own listener"
    undo_child()
    assert flips == [True, False]
