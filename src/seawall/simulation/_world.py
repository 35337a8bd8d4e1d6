"""A simulated world: one seed, one clock, one event queue, one network, one trace.

Every source of nondeterminism a distributed system meets (time, message timing and
loss, crashes) comes from here, and all of it from the seed. Random numbers come from
named streams of the seed, so a change in, say, the workload's draws does not shift
the network's.
"""

from __future__ import annotations

import random

from seawall.simulation._faults import FaultInjector, FaultProfile
from seawall.simulation._kernel import Scheduler, SimulatedClock, derived_random
from seawall.simulation._network import Network
from seawall.simulation._trace import Trace

__all__ = ["World"]


class World:
    """The shared machinery of one simulated run."""

    __slots__ = ("_streams", "clock", "faults", "network", "scheduler", "seed", "trace")

    def __init__(self, seed: int, profile: FaultProfile, *, keep_trace: bool = False) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}
        self.clock = SimulatedClock()
        self.scheduler = Scheduler(self.clock)
        self.trace = Trace(self.clock.now, keep=keep_trace)
        self.network = Network(self.scheduler, self.random("network"), self.trace, profile.link)
        self.faults = FaultInjector(self, profile, self.random("faults"), ())

    def random(self, stream: str) -> random.Random:
        """The random stream called ``stream`` of this world's seed (the same object each time)."""
        found = self._streams.get(stream)
        if found is None:
            found = self._streams[stream] = derived_random(self.seed, stream)
        return found

    def __repr__(self) -> str:
        return f"World(seed={self.seed!r}, now={self.clock.now()!r})"
