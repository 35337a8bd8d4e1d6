"""Fault profiles (``none``, ``mild``, ``wild``) and the injector that plays them on a world.

The injector draws every fault from its own random stream of the run's seed: when the
next node crashes and for how long, when the network splits and where, and whether a
node dies in the middle of handling a request (before or after its commit).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from seawall.errors import ConfigurationError
from seawall.simulation._network import LinkFaults

if TYPE_CHECKING:
    from seawall.simulation._node import Node
    from seawall.simulation._world import World

__all__ = ["FAULT_PROFILES", "CrashPoint", "FaultInjector", "FaultProfile", "fault_profile"]

CrashPoint = Literal["before-commit", "after-commit"]
"""Where a node dies while handling a request: its writes lost, or its reply lost."""


@dataclass(frozen=True, slots=True)
class FaultProfile:
    """How hostile a run is: link faults plus crash and partition rates (per simulated second)."""

    name: str
    link: LinkFaults
    crash_rate: float = 0.0
    """Node crashes per simulated second (across the crashable nodes)."""
    down_for: tuple[float, float] = (0.05, 0.5)
    """A crashed node restarts after a uniform draw from this range of seconds."""
    partition_rate: float = 0.0
    """Network partitions per simulated second."""
    partition_for: tuple[float, float] = (0.05, 0.5)
    """A partition heals after a uniform draw from this range of seconds."""
    crash_in_handler: float = 0.0
    """Probability that a node dies while handling one request (half before its commit)."""

    def __post_init__(self) -> None:
        for field in ("crash_rate", "partition_rate"):
            value = getattr(self, field)
            if not 0.0 <= value < 1e6:
                raise ConfigurationError(f"FaultProfile({field}={value!r}) must be >= 0")
        if not 0.0 <= self.crash_in_handler <= 1.0:
            raise ConfigurationError(
                f"FaultProfile(crash_in_handler={self.crash_in_handler!r}) must be in [0, 1]"
            )
        for field in ("down_for", "partition_for"):
            low, high = getattr(self, field)
            if not 0.0 < low <= high:
                raise ConfigurationError(
                    f"FaultProfile({field}={(low, high)!r}) must be a range 0 < low <= high"
                )


FAULT_PROFILES: dict[str, FaultProfile] = {
    "none": FaultProfile("none", LinkFaults(delay=0.001, jitter=0.002)),
    "mild": FaultProfile(
        "mild",
        LinkFaults(delay=0.001, jitter=0.004, drop=0.02, duplicate=0.02, reorder=0.02),
        crash_rate=0.5,
        partition_rate=0.3,
        crash_in_handler=0.01,
    ),
    "wild": FaultProfile(
        "wild",
        LinkFaults(
            delay=0.001, jitter=0.01, drop=0.1, duplicate=0.1, reorder=0.1, reorder_delay=0.1
        ),
        crash_rate=2.0,
        down_for=(0.02, 1.0),
        partition_rate=1.5,
        partition_for=(0.05, 1.0),
        crash_in_handler=0.02,
    ),
}
"""The named profiles of ``seawall simulate --faults``."""


def fault_profile(name: str | FaultProfile) -> FaultProfile:
    """The profile called ``name`` (or ``name`` itself when it is a profile)."""
    if isinstance(name, FaultProfile):
        return name
    try:
        return FAULT_PROFILES[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown fault profile {name!r}; choose one of {', '.join(FAULT_PROFILES)}"
        ) from None


class FaultInjector:
    """Schedules crashes, restarts and partitions on a world while it is active."""

    __slots__ = ("active", "profile", "random", "targets", "world")

    def __init__(
        self,
        world: World,
        profile: FaultProfile,
        rng: random.Random,
        targets: Sequence[Node],
    ) -> None:
        self.world = world
        self.profile = profile
        self.random = rng
        self.targets = list(targets)
        self.active = False

    def start(self) -> None:
        """Begin injecting faults."""
        self.active = True
        if self.profile.crash_rate and self.targets:
            self._schedule_crash()
        if self.profile.partition_rate and len(self.world.network.names) > 1:
            self._schedule_partition()

    def stop(self) -> None:
        """Inject nothing more (restarts already scheduled still happen)."""
        self.active = False

    def crash_point(self, node: Node) -> CrashPoint | None:
        """Whether ``node`` dies while handling the current request, and where."""
        chance = self.profile.crash_in_handler
        if not self.active or not chance or self.random.random() >= chance:
            return None
        return "before-commit" if self.random.random() < 0.5 else "after-commit"

    def schedule_restart(self, node: Node) -> None:
        """Bring ``node`` back after a random down time."""
        low, high = self.profile.down_for
        self.world.scheduler.after(
            self.random.uniform(low, high), node.restart, label=f"restart {node.name}"
        )

    # ------------------------------------------------------------------ internals

    def _schedule_crash(self) -> None:
        delay = self.random.expovariate(self.profile.crash_rate)
        self.world.scheduler.after(delay, self._crash, label="crash")

    def _crash(self) -> None:
        if not self.active:
            return
        node = self.targets[self.random.randrange(len(self.targets))]
        if node.up:
            node.crash()
            self.schedule_restart(node)
        self._schedule_crash()

    def _schedule_partition(self) -> None:
        delay = self.random.expovariate(self.profile.partition_rate)
        self.world.scheduler.after(delay, self._partition, label="partition")

    def _partition(self) -> None:
        if not self.active:
            return
        names = self.world.network.names
        shuffled = list(names)
        self.random.shuffle(shuffled)
        size = self.random.randint(1, len(shuffled) - 1)
        low, high = self.profile.partition_for
        self.world.network.partition(
            sorted(shuffled[:size]), sorted(shuffled[size:]), self.random.uniform(low, high)
        )
        self._schedule_partition()
