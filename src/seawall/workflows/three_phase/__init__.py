"""Three-phase commit: two-phase commit plus a pre-commit phase, so a coordinator crash never blocks.

The protocol is given as sans-I/O state machines (:class:`CoordinatorMachine`,
:class:`ParticipantMachine`) and a deterministic network simulation to run them on
(:class:`ThreePhaseSimulation`: manual clock, delays, crashes, partitions). It avoids
the blocking of two-phase commit when the coordinator dies, and it is unsafe when the
network partitions: both are shown in the tests and in
``docs/workflows/three-phase-commit.md``.

::

    from seawall.workflows.three_phase import ThreePhaseSimulation, PreCommit
    from seawall.workflows.two_phase import MemoryParticipant

    simulation = ThreePhaseSimulation([MemoryParticipant(n) for n in "abc"])
    simulation.crash_after("coordinator", PreCommit, count=1)   # dies mid-broadcast
    simulation.start({"a": {"x": 1}, "b": {"y": 1}, "c": {"z": 1}})
    print(simulation.run())   # every participant committed: nobody blocked
"""

from __future__ import annotations

from seawall.workflows.three_phase._core import (
    Apply,
    CoordinatorMachine,
    Output,
    ParticipantMachine,
    Transition,
)
from seawall.workflows.three_phase._events import ThreePhaseTransitioned
from seawall.workflows.three_phase._model import (
    Ack,
    CanCommit,
    DoAbort,
    DoCommit,
    Message,
    PreCommit,
    Send,
    StateReply,
    StateRequest,
    ThreePhaseParticipant,
    ThreePhaseState,
    ThreePhaseTimeouts,
    VoteReply,
)
from seawall.workflows.three_phase._simulation import COORDINATOR, ThreePhaseSimulation

__all__ = [
    "COORDINATOR",
    "Ack",
    "Apply",
    "CanCommit",
    "CoordinatorMachine",
    "DoAbort",
    "DoCommit",
    "Message",
    "Output",
    "ParticipantMachine",
    "PreCommit",
    "Send",
    "StateReply",
    "StateRequest",
    "ThreePhaseParticipant",
    "ThreePhaseSimulation",
    "ThreePhaseState",
    "ThreePhaseTimeouts",
    "ThreePhaseTransitioned",
    "Transition",
    "VoteReply",
]
