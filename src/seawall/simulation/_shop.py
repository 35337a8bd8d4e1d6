"""The reference shop under simulation: one seed, a number of steps, a verdict.

A run has two phases. For ``steps`` events the clients place orders while the fault
profile does its worst (lost, duplicated, delayed and reordered messages, partitions,
crashes and restarts). Then the shop settles: no new orders, no new faults, every
partition healed and every node back up, and the queue runs until nothing is left to
do. The shop's invariants (:func:`seawall.shop.logic.check_invariants`) are checked on
the settled state; a shop that does not settle within its budget fails too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from seawall.errors import ConfigurationError
from seawall.shop import logic
from seawall.simulation._faults import FaultProfile, fault_profile
from seawall.simulation._orders import OrdersService
from seawall.simulation._services import Client, Participant, ReadModel
from seawall.simulation._trace import Trace
from seawall.simulation._world import World

__all__ = ["MUTATIONS", "SimulationResult", "run_shop"]

MUTATIONS: Final[dict[str, str]] = {
    "double-charge": "payments takes the money again on a repeated charge (not idempotent)",
    "skip-release": "the order saga never runs the release compensation of reserved stock",
    "forget-sagas": "a restarted orders service does not resume the sagas in its log",
}
"""Deliberately broken variants, to prove that the simulation finds bugs (for tests)."""

CLIENTS: Final = 3
ORDER_RATE: Final = 20.0
"""Orders per simulated second per client."""
SETTLE_EVENTS: Final = 200_000
"""Most events the settling phase may run before the shop counts as stuck."""


@dataclass(frozen=True)
class SimulationResult:
    """How one seed went: its trace hash, the invariants it broke, and what happened."""

    seed: int
    steps: int
    faults: str
    mutations: tuple[str, ...]
    trace_hash: str
    failures: tuple[str, ...]
    events: int
    """Events run in both phases."""
    simulated_seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    """Trace entries by kind (send, deliver, drop, duplicate, crash, restart, ...)."""
    orders: dict[str, int] = field(default_factory=dict)
    """Orders by final state."""
    trace: Trace | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """True when every invariant held."""
        return not self.failures

    def parameters(self) -> dict[str, Any]:
        """What reproduces this run (the trace file's header)."""
        return {
            "seed": self.seed,
            "steps": self.steps,
            "faults": self.faults,
            "mutations": list(self.mutations),
        }


def _check_mutations(mutations: frozenset[str]) -> None:
    unknown = sorted(mutations - set(MUTATIONS))
    if unknown:
        raise ConfigurationError(
            f"unknown mutation(s) {unknown}; known: {', '.join(sorted(MUTATIONS))}"
        )


def run_shop(
    seed: int,
    steps: int,
    faults: str | FaultProfile = "mild",
    *,
    mutations: frozenset[str] | tuple[str, ...] = frozenset(),
    keep_trace: bool = False,
) -> SimulationResult:
    """Run the shop for ``steps`` events under ``faults``, settle it, and check its invariants."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigurationError(f"seed={seed!r} is invalid: pass an int >= 0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigurationError(f"steps={steps!r} is invalid: pass an int >= 1")
    profile = fault_profile(faults)
    broken = frozenset(mutations)
    _check_mutations(broken)

    world = World(seed, profile, keep_trace=keep_trace)
    trace = world.trace
    trace.record(
        "begin",
        f"seed={seed} steps={steps} faults={profile.name} mutations={','.join(sorted(broken))}",
    )
    orders = OrdersService("orders", world, broken)
    participants = [
        Participant(name, world, broken) for name in ("inventory", "payments", "shipping")
    ]
    read_model = ReadModel("readmodel", world, broken)
    clients = [Client(f"c{number}", world, rate=ORDER_RATE) for number in range(1, CLIENTS + 1)]
    services = [orders, *participants, read_model]
    for node in [*services, *clients]:
        world.network.attach(node)
    world.faults.targets = list(services)
    for node in [*services, *clients]:
        node.start()
    for client in clients:
        client.begin()
    world.faults.start()

    scheduler = world.scheduler
    failures: list[str] = []
    while scheduler.executed < steps and scheduler.step():
        pass

    # Settle: no new orders or faults, heal the network, bring every node back.
    trace.record("settle", f"after {scheduler.executed} events")
    world.faults.stop()
    for client in clients:
        client.stop()
    world.network.calm()
    for node in services:
        if not node.up:
            node.restart()
    budget = scheduler.executed + SETTLE_EVENTS
    while scheduler.executed < budget and scheduler.step():
        pass
    if not scheduler.idle():
        failures.append(
            f"the shop did not settle: still busy after {SETTLE_EVENTS} events of the "
            "settling phase"
        )

    snapshot = logic.ShopSnapshot(
        orders=orders.orders(),
        inventory=participants[0].storage.snapshot(),
        payments=participants[1].storage.snapshot(),
        shipping=participants[2].storage.snapshot(),
        read_model=read_model.read_model(),
        events=orders.events(),
    )
    failures.extend(logic.check_invariants(snapshot))
    for problem in failures:
        trace.record("violated", problem)
    trace.record("end", f"{len(failures)} problems")
    return SimulationResult(
        seed=seed,
        steps=steps,
        faults=profile.name,
        mutations=tuple(sorted(broken)),
        trace_hash=trace.digest,
        failures=tuple(failures),
        events=scheduler.executed,
        simulated_seconds=world.clock.now(),
        counts=dict(trace.counts),
        orders=snapshot.orders_by_state(),
        trace=trace if keep_trace else None,
    )
