"""Three-phase commit on a simulated network: no blocking on a coordinator crash, split brain on a partition."""

from __future__ import annotations

from typing import Any

import pytest

from seawall.errors import ConfigurationError
from seawall.events import hub
from seawall.workflows.three_phase import (
    COORDINATOR,
    CanCommit,
    CoordinatorMachine,
    DoAbort,
    DoCommit,
    ParticipantMachine,
    PreCommit,
    Send,
    ThreePhaseSimulation,
    ThreePhaseState,
    ThreePhaseTimeouts,
    ThreePhaseTransitioned,
    VoteReply,
)
from seawall.workflows.two_phase import MemoryParticipant, ParticipantState

NAMES = ("a", "b", "c")
WORK = {"a": {"x": 1}, "b": {"y": 1}, "c": {"z": 1}}


def _simulation(**options: Any) -> tuple[ThreePhaseSimulation, list[MemoryParticipant]]:
    participants = [MemoryParticipant(name) for name in NAMES]
    return ThreePhaseSimulation(participants, **options), participants


def _final(simulation: ThreePhaseSimulation) -> set[ThreePhaseState]:
    return set(simulation.participant_states().values())


def test_without_faults_everyone_commits_in_three_round_trips() -> None:
    simulation, participants = _simulation()
    simulation.start(WORK)
    outcome = simulation.run()
    assert outcome == dict.fromkeys((COORDINATOR, *NAMES), "committed")
    assert [p.data for p in participants] == [{"x": 1}, {"y": 1}, {"z": 1}]
    assert simulation.clock.now() == pytest.approx(0.05)  # five 0.01 s hops, no timeout
    assert all(p.in_doubt() == [] for p in participants)


def test_a_no_vote_aborts_everyone() -> None:
    simulation, participants = _simulation()
    participants[1].prepare("other", {"y": 0})  # b's key is locked: b votes no
    simulation.start(WORK)
    simulation.run()
    assert _final(simulation) == {ThreePhaseState.ABORTED}
    assert participants[0].data == {}
    assert participants[0].in_doubt() == []


def test_a_coordinator_crash_mid_pre_commit_does_not_block_everyone_commits() -> None:
    simulation, participants = _simulation()
    simulation.crash_after(COORDINATOR, PreCommit, count=1)  # only a hears the pre-commit
    simulation.start(WORK)
    outcome = simulation.run()
    assert outcome[COORDINATOR] == "crashed:pre-committed"
    assert _final(simulation) == {ThreePhaseState.COMMITTED}
    assert [p.data for p in participants] == [{"x": 1}, {"y": 1}, {"z": 1}]
    reasons = [e.reason for e in simulation.history if e.node == "b"]
    assert reasons[-1].startswith("termination")


def test_a_coordinator_crash_before_the_pre_commit_aborts_everyone() -> None:
    simulation, participants = _simulation()
    simulation.crash_after(COORDINATOR, CanCommit, count=3)
    simulation.start(WORK)
    simulation.run()
    assert _final(simulation) == {ThreePhaseState.ABORTED}
    for participant in participants:
        assert participant.in_doubt() == []  # nothing left prepared: nobody blocks
        assert participant.status("3pc:1") is ParticipantState.ABORTED


def test_every_coordinator_crash_point_ends_in_one_outcome_without_blocking() -> None:
    sends = 3 * 3  # CanCommit, PreCommit and DoCommit to each of the three
    for crash_at in range(1, sends + 1):
        simulation, participants = _simulation()
        simulation.crash_after(COORDINATOR, object, count=crash_at)  # any message
        simulation.start(WORK)
        simulation.run()
        states = _final(simulation)
        assert len(states) == 1, (crash_at, simulation.participant_states())
        assert next(iter(states)).final, crash_at
        committed = {bool(p.data) for p in participants}
        assert len(committed) == 1, crash_at
        assert all(p.in_doubt() == [] for p in participants), crash_at


def test_a_partition_after_one_pre_commit_splits_the_outcome() -> None:
    simulation, participants = _simulation()

    def split(sender: str, send: Send) -> None:
        if isinstance(send.message, PreCommit) and send.to == "a":
            simulation.partition({COORDINATOR, "a"}, {"b", "c"})

    simulation.on_send(split)
    simulation.start(WORK)
    outcome = simulation.run()
    # the coordinator's side commits (a pre-committed), the other side aborts: split brain
    assert outcome == {
        COORDINATOR: "committed",
        "a": "committed",
        "b": "aborted",
        "c": "aborted",
    }
    assert [p.data for p in participants] == [{"x": 1}, {}, {}]
    simulation.heal()  # healing does not undo it: the outcome is final on both sides
    simulation.run()
    assert simulation.participant_states()["b"] is ThreePhaseState.ABORTED


def test_without_the_termination_protocol_timeouts_alone_disagree() -> None:
    simulation, _ = _simulation(timeouts=ThreePhaseTimeouts(termination=0))
    simulation.crash_after(COORDINATOR, PreCommit, count=1)
    simulation.start(WORK)
    simulation.run()
    assert simulation.participant_states() == {
        "a": ThreePhaseState.COMMITTED,  # timed out pre-committed
        "b": ThreePhaseState.ABORTED,  # timed out waiting
        "c": ThreePhaseState.ABORTED,
    }


def test_runs_are_deterministic_and_emit_an_event_per_transition() -> None:
    histories = []
    for _ in range(2):
        seen: list[ThreePhaseTransitioned] = []
        unsubscribe = hub.subscribe(seen.append, types=(ThreePhaseTransitioned,))
        try:
            simulation, _ = _simulation()
            simulation.crash_after(COORDINATOR, PreCommit, count=2)
            simulation.start(WORK)
            simulation.run()
        finally:
            unsubscribe()
        assert seen == simulation.history
        histories.append([(e.at, e.node, e.state, e.reason) for e in seen])
    assert histories[0] == histories[1]


def test_the_machines_follow_the_timeout_rules_directly() -> None:
    timeouts = ThreePhaseTimeouts(votes=1, pre_commit=2, acks=1, commit=3, termination=0)
    participant = ParticipantMachine("a", "t", COORDINATOR, ["a"], timeouts)
    assert participant.peers == ()
    participant.receive(0.0, CanCommit("t", COORDINATOR))
    outputs = participant.voted(0.0, True)
    assert Send(COORDINATOR, VoteReply("t", "a", True)) in outputs
    assert participant.deadline == 2.0
    assert participant.tick(1.9) == []
    participant.receive(1.0, PreCommit("t", COORDINATOR))
    assert participant.state is ThreePhaseState.PRE_COMMITTED
    participant.tick(4.0)
    assert participant.state is ThreePhaseState.COMMITTED
    participant.receive(5.0, DoAbort("t", COORDINATOR))  # final: ignored
    assert participant.state is ThreePhaseState.COMMITTED

    coordinator = CoordinatorMachine(COORDINATOR, "t", ["a", "b"], timeouts)
    coordinator.start(0.0)
    coordinator.receive(0.1, VoteReply("t", "a", True))
    coordinator.tick(1.0)  # b never voted
    assert coordinator.state is ThreePhaseState.ABORTED
    coordinator = CoordinatorMachine(COORDINATOR, "t", ["a", "b"], timeouts)
    coordinator.start(0.0)
    coordinator.receive(0.1, VoteReply("t", "a", True))
    outputs = coordinator.receive(0.1, VoteReply("t", "b", True))
    assert Send("b", PreCommit("t", COORDINATOR)) in outputs
    assert Send("b", DoCommit("t", COORDINATOR)) in coordinator.tick(1.1)  # acks missing
    assert coordinator.state is ThreePhaseState.COMMITTED


def test_bad_setups_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="votes=-1"):
        ThreePhaseTimeouts(votes=-1)
    with pytest.raises(ConfigurationError, match="taken"):
        ThreePhaseSimulation([MemoryParticipant("a"), MemoryParticipant("a")])
    with pytest.raises(ConfigurationError, match="taken"):
        ThreePhaseSimulation([MemoryParticipant(COORDINATOR)])
    with pytest.raises(ConfigurationError, match="not a three-phase participant"):
        ThreePhaseSimulation([object()])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="at least one"):
        ThreePhaseSimulation([])
    simulation, _ = _simulation()
    with pytest.raises(ConfigurationError, match="no node named 'z'"):
        simulation.crash("z")
