"""Deterministic simulation: the shop's real logic under a simulated network, clock and crashes.

::

    from seawall.simulation import run_seed

    result = run_seed(42, steps=500, faults="wild")
    assert result.ok, result.failures        # same seed, same trace hash, every time

One process, one seeded random source, one event queue: messages are delayed,
dropped, duplicated and reordered, the network splits and heals, services crash
(losing what they had not committed) and restart (resuming sagas from their log,
sending unacknowledged messages again). The shop's sans-I/O cores run unchanged;
only the clock, the network and the stores are simulated. See ``docs/simulation.md``.
"""

from __future__ import annotations

from seawall.simulation._faults import FAULT_PROFILES, FaultInjector, FaultProfile, fault_profile
from seawall.simulation._kernel import Scheduler, SimulatedClock, Timer, derived_random
from seawall.simulation._network import LinkFaults, Message, Network, Partition
from seawall.simulation._node import Node, RecordsTransaction, Storage
from seawall.simulation._run import (
    Replay,
    ReplayMismatchError,
    replay,
    run_seed,
    run_seeds,
    write_trace,
)
from seawall.simulation._shop import MUTATIONS, SimulationResult
from seawall.simulation._trace import Trace
from seawall.simulation._world import World

__all__ = [
    "FAULT_PROFILES",
    "MUTATIONS",
    "FaultInjector",
    "FaultProfile",
    "LinkFaults",
    "Message",
    "Network",
    "Node",
    "Partition",
    "RecordsTransaction",
    "Replay",
    "ReplayMismatchError",
    "Scheduler",
    "SimulatedClock",
    "SimulationResult",
    "Storage",
    "Timer",
    "Trace",
    "World",
    "derived_random",
    "fault_profile",
    "replay",
    "run_seed",
    "run_seeds",
    "write_trace",
]
