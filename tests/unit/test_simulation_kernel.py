"""The simulation kernel: scheduler order, node crashes, network faults, storage, trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from seawall.errors import ConfigurationError
from seawall.simulation import (
    FAULT_PROFILES,
    FaultProfile,
    LinkFaults,
    Message,
    Node,
    Scheduler,
    SimulatedClock,
    Storage,
    Trace,
    World,
    derived_random,
    fault_profile,
)


def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    scheduler = Scheduler()
    ran: list[str] = []
    scheduler.at(2.0, lambda: ran.append("late"))
    scheduler.at(1.0, lambda: ran.append("first"))
    scheduler.at(1.0, lambda: ran.append("second"))
    scheduler.after(0.5, lambda: ran.append("early"))
    while scheduler.step():
        pass
    assert ran == ["early", "first", "second", "late"]
    assert scheduler.now() == 2.0
    assert scheduler.executed == 4
    assert scheduler.idle()


def test_a_cancelled_timer_never_runs_and_time_never_goes_back() -> None:
    clock = SimulatedClock(5.0)
    scheduler = Scheduler(clock)
    ran: list[float] = []
    timer = scheduler.after(1.0, lambda: ran.append(clock.now()))
    timer.cancel()
    scheduler.at(1.0, lambda: ran.append(clock.now()))  # in the past: runs now
    assert scheduler.next_time() == 5.0
    while scheduler.step():
        pass
    assert ran == [5.0]
    clock.advance_to(3.0)
    assert clock.now() == 5.0
    with pytest.raises(ConfigurationError):
        scheduler.after(-1.0, lambda: None)


def test_derived_random_streams_are_stable_and_independent() -> None:
    first = [derived_random(7, "network").random() for _ in range(3)]
    assert first == [derived_random(7, "network").random() for _ in range(3)]
    assert derived_random(7, "network").random() != derived_random(7, "faults").random()
    assert derived_random(7, "network").random() != derived_random(8, "network").random()


class Echo(Node):
    """Records what it receives and answers pings."""

    def __init__(self, name: str, world: World) -> None:
        super().__init__(name, world)
        self.received: list[Message] = []
        self.booted = 0
        self.fired: list[str] = []

    def boot(self) -> None:
        self.booted += 1

    def on_message(self, message: Message) -> None:
        self.received.append(message)
        if message.kind == "ping":
            self.send(message.source, "pong", {"n": message.body["n"]})


def _world(link: LinkFaults | None = None, *, keep: bool = True) -> tuple[World, Echo, Echo]:
    profile = FaultProfile("test", link or LinkFaults(delay=0.01))
    world = World(1, profile, keep_trace=keep)
    a, b = Echo("a", world), Echo("b", world)
    for node in (a, b):
        world.network.attach(node)
        node.start()
    return world, a, b


def _run(world: World) -> None:
    while world.scheduler.step():
        pass


def test_messages_are_copies_that_arrive_after_the_delay() -> None:
    world, a, b = _world()
    body = {"n": 1, "items": [1, 2]}
    a.send("b", "ping", body)
    body["items"].append(3)  # the sender's object is not shared
    _run(world)
    assert [m.body for m in b.received] == [{"n": 1, "items": [1, 2]}]
    assert [m.kind for m in a.received] == ["pong"]
    assert world.clock.now() == pytest.approx(0.02)
    kinds = [line.split()[1] for line in world.trace.lines]
    assert kinds == ["send", "deliver", "send", "deliver"]


def test_a_lossy_link_drops_and_a_duplicating_link_delivers_twice() -> None:
    world, a, b = _world(LinkFaults(delay=0.01, drop=1.0))
    a.send("b", "note", {})
    _run(world)
    assert b.received == []
    assert world.trace.counts["drop"] == 1

    world, a, b = _world(LinkFaults(delay=0.01, duplicate=1.0))
    a.send("b", "note", {"x": 1})
    _run(world)
    assert [m.copy for m in b.received] == [0, 1]
    assert b.received[0].id == b.received[1].id


def test_jitter_and_reordering_let_messages_overtake() -> None:
    world, a, b = _world(LinkFaults(delay=0.001, jitter=0.05, reorder=0.3))
    for n in range(30):
        a.send("b", "note", {"n": n})
    _run(world)
    order = [m.body["n"] for m in b.received]
    assert sorted(order) == list(range(30))
    assert order != list(range(30))


def test_a_partition_cuts_both_ways_until_it_heals() -> None:
    world, a, b = _world()
    world.network.partition(["a"], ["b"], 1.0)
    a.send("b", "note", {"n": 1})
    b.send("a", "note", {"n": 2})
    world.scheduler.at(1.5, lambda: a.send("b", "note", {"n": 3}))
    _run(world)
    assert [m.body["n"] for m in b.received] == [3]
    assert a.received == []
    assert world.trace.counts["heal"] == 1


def test_a_crash_loses_memory_and_timers_but_keeps_committed_records() -> None:
    world, a, b = _world()
    transaction = a.storage.begin()
    transaction.put("kept", {"v": 1})
    transaction.commit()
    lost = a.storage.begin()
    lost.put("lost", 1)
    a.timer(1.0, lambda: a.fired.append("timer"), "t")
    b.send("a", "note", {})  # arrives while a is down
    a.crash()
    world.scheduler.at(0.5, a.restart)
    _run(world)
    assert a.fired == []
    assert a.received == []
    assert a.storage.get("kept") == {"v": 1}
    assert a.storage.get("lost") is None
    assert a.booted == 2
    assert a.up
    kinds = [line.split()[1] for line in world.trace.lines]
    assert "crash" in kinds
    assert "restart" in kinds
    assert "b->a" in world.trace.lines[0]
    assert any("a is down" in line for line in world.trace.lines)


def test_a_transaction_sees_its_own_writes_and_copies_values() -> None:
    storage = Storage()
    first = storage.begin()
    first.put("row:1", {"n": 1})
    first.put("row:2", {"n": 2})
    first.put("other", 0)
    first.commit()
    transaction = storage.begin()
    row = transaction.get("row:1")
    assert row == {"n": 1}
    row["n"] = 99  # mutating a read changes nothing stored
    assert transaction.get("row:1") == {"n": 1}
    transaction.delete("row:2")
    transaction.put("row:3", {"n": 3})
    assert transaction.keys("row:") == ["row:1", "row:3"]
    assert transaction.get("row:2") is None
    assert storage.keys("row:") == ["row:1", "row:2"]
    transaction.rollback()
    assert storage.snapshot() == {"other": 0, "row:1": {"n": 1}, "row:2": {"n": 2}}


def test_the_trace_hash_covers_every_line_and_the_file_replays(tmp_path: Path) -> None:
    clock = SimulatedClock()
    one, two = Trace(clock.now, keep=True), Trace(clock.now)
    for trace in (one, two):
        trace.record("send", "m1 a->b x {}")
    assert one.digest == two.digest
    two.record("drop", "m1 lost")
    assert one.digest != two.digest
    path = one.write(tmp_path / "run.trace", {"seed": 3, "steps": 10})
    header = Trace.read_header(path)
    assert header["seed"] == 3
    assert header["trace_hash"] == one.digest
    assert path.read_text().splitlines()[1] == "0.000000 send m1 a->b x {}"
    bad = tmp_path / "bad.trace"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="not a seawall simulation trace"):
        Trace.read_header(bad)


def test_fault_profiles_are_named_and_validated() -> None:
    assert set(FAULT_PROFILES) == {"none", "mild", "wild"}
    assert fault_profile("wild") is FAULT_PROFILES["wild"]
    with pytest.raises(ConfigurationError, match="choose one of none, mild, wild"):
        fault_profile("brutal")
    with pytest.raises(ConfigurationError, match="probability"):
        LinkFaults(drop=1.5)
    with pytest.raises(ConfigurationError, match="range"):
        FaultProfile("x", LinkFaults(), down_for=(1.0, 0.5))
    world, a, _ = _world()
    with pytest.raises(ConfigurationError, match="no node named"):
        a.send("nobody", "note", {})
    with pytest.raises(ConfigurationError, match="already attached"):
        world.network.attach(Echo("a", world))
