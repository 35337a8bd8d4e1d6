"""A deterministic network to run three-phase commit on: a manual clock, delays, crashes, partitions.

:class:`ThreePhaseSimulation` wires one :class:`CoordinatorMachine` and a
:class:`ParticipantMachine` per participant to a simulated network. Messages arrive
after ``delay`` seconds of the manual clock unless the sender or receiver has crashed or
a partition separates them; ``run`` moves the clock from one delivery or deadline to
the next, so a run is instant and the same every time. Each participant carries out its
machine's actions on a real :class:`ThreePhaseParticipant` (e.g. a
:class:`~seawall.workflows.two_phase.MemoryParticipant`). Hooks let a test crash a node
right after it sent a given message, which is how the coordinator dies "between the
phases".
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from seawall.clock import ManualClock
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.workflows.three_phase._core import (
    Apply,
    CoordinatorMachine,
    Output,
    ParticipantMachine,
    Transition,
)
from seawall.workflows.three_phase._events import ThreePhaseTransitioned
from seawall.workflows.three_phase._model import (
    Message,
    Send,
    ThreePhaseParticipant,
    ThreePhaseState,
    ThreePhaseTimeouts,
)
from seawall.workflows.two_phase._model import Vote

__all__ = ["COORDINATOR", "ThreePhaseSimulation"]

COORDINATOR = "coordinator"
"""The coordinator's node name in a simulation."""

SendHook = Callable[[str, Send], None]


class ThreePhaseSimulation:
    """One three-phase transaction over ``participants`` on a simulated network.

    ``delay``: seconds every message takes; ``timeouts``: the protocol's timeouts;
    ``clock``: the manual clock that the run moves (a fresh one by default).
    """

    def __init__(
        self,
        participants: Iterable[ThreePhaseParticipant],
        *,
        txid: str = "3pc:1",
        delay: float = 0.01,
        timeouts: ThreePhaseTimeouts | None = None,
        clock: ManualClock | None = None,
    ) -> None:
        self.resources: dict[str, ThreePhaseParticipant] = {}
        for participant in participants:
            if not isinstance(participant, ThreePhaseParticipant):
                raise ConfigurationError(
                    f"{participant!r} is not a three-phase participant (a two-phase one with "
                    "pre_commit)"
                )
            if participant.name in self.resources or participant.name == COORDINATOR:
                raise ConfigurationError(
                    f"participant name {participant.name!r} is taken; give each a unique name"
                )
            self.resources[participant.name] = participant
        if not self.resources:
            raise ConfigurationError("a simulation needs at least one participant")
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < 1e6:
            raise ConfigurationError(f"delay={delay!r} is invalid: pass seconds >= 0")
        self.txid = txid
        self.delay = float(delay)
        self.timeouts = timeouts or ThreePhaseTimeouts()
        self.clock = clock or ManualClock()
        self.events = EventHub(parent=hub)
        names = tuple(self.resources)
        self.coordinator = CoordinatorMachine(COORDINATOR, txid, names, self.timeouts)
        self.machines: dict[str, ParticipantMachine] = {
            name: ParticipantMachine(name, txid, COORDINATOR, names, self.timeouts)
            for name in names
        }
        self.crashed: set[str] = set()
        self.groups: list[frozenset[str]] | None = None
        self.history: list[ThreePhaseTransitioned] = []
        self.delivered: list[tuple[float, str, Message]] = []
        self._queue: list[tuple[float, int, str, Message]] = []
        self._sequence = itertools.count()
        self._hooks: list[SendHook] = []
        self._work: Mapping[str, Any] = {}

    # ----------------------------------------------------------------- faults

    def crash(self, node: str) -> None:
        """Stop ``node`` for good: it sends and receives nothing more."""
        self._known(node)
        self.crashed.add(node)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: messages only flow within a group (unlisted nodes are alone)."""
        self.groups = [frozenset(group) for group in groups]
        for group in self.groups:
            for node in group:
                self._known(node)

    def heal(self) -> None:
        """Join the network again."""
        self.groups = None

    def on_send(self, hook: SendHook) -> None:
        """Call ``hook(sender, send)`` for every message sent (before it travels)."""
        self._hooks.append(hook)

    def crash_after(self, node: str, message_type: type, count: int = 1) -> None:
        """Crash ``node`` right after it has sent ``count`` messages of ``message_type``."""
        sent = 0

        def hook(sender: str, send: Send) -> None:
            nonlocal sent
            if sender == node and isinstance(send.message, message_type):
                sent += 1
                if sent == count:
                    self.crash(node)

        self.on_send(hook)

    # ---------------------------------------------------------------- running

    def start(self, work: Mapping[str, Any] | None = None) -> None:
        """Begin the transaction; ``work`` maps participant names to what each prepares."""
        self._work = dict(work or {})
        self._dispatch(COORDINATOR, self.coordinator.start(self.clock.now()))

    def run(self, until: float | None = None, *, max_steps: int = 100_000) -> dict[str, str]:
        """Deliver messages and fire timeouts until nothing is left (or the clock passes ``until``).

        Returns every node's final state (``outcome``).
        """
        for _ in range(max_steps):
            at = self._next_time()
            if at is None or (until is not None and at > until):
                break
            if at > self.clock.now():
                self.clock.advance(at - self.clock.now())
            self._step()
        if until is not None and until > self.clock.now():
            self.clock.advance(until - self.clock.now())
        return self.outcome()

    def outcome(self) -> dict[str, str]:
        """Each node's state (``"crashed:<state>"`` for a crashed one)."""
        states = {
            COORDINATOR: self.coordinator.state,
            **{n: m.state for n, m in self.machines.items()},
        }
        return {
            node: f"crashed:{state.value}" if node in self.crashed else state.value
            for node, state in states.items()
        }

    def participant_states(self) -> dict[str, ThreePhaseState]:
        """Each participant's state."""
        return {name: machine.state for name, machine in self.machines.items()}

    # -------------------------------------------------------------- internals

    def _known(self, node: str) -> None:
        if node != COORDINATOR and node not in self.machines:
            raise ConfigurationError(f"no node named {node!r} in this simulation")

    def _connected(self, sender: str, receiver: str) -> bool:
        if self.groups is None:
            return True
        return any(sender in group and receiver in group for group in self.groups)

    def _next_time(self) -> float | None:
        times = [self._queue[0][0]] if self._queue else []
        if COORDINATOR not in self.crashed and self.coordinator.deadline is not None:
            times.append(self.coordinator.deadline)
        times.extend(
            machine.deadline
            for name, machine in self.machines.items()
            if name not in self.crashed and machine.deadline is not None
        )
        return min(times) if times else None

    def _step(self) -> None:
        now = self.clock.now()
        while self._queue and self._queue[0][0] <= now:
            _, _, receiver, message = heapq.heappop(self._queue)
            if receiver in self.crashed:
                continue
            self.delivered.append((now, receiver, message))
            if receiver == COORDINATOR:
                self._dispatch(receiver, self.coordinator.receive(now, message))
            else:
                self._dispatch(receiver, self.machines[receiver].receive(now, message))
        if COORDINATOR not in self.crashed:
            self._dispatch(COORDINATOR, self.coordinator.tick(now))
        for name, machine in self.machines.items():
            if name not in self.crashed:
                self._dispatch(name, machine.tick(now))

    def _dispatch(self, node: str, outputs: list[Output]) -> None:
        now = self.clock.now()
        for output in outputs:
            if node in self.crashed:
                return
            if isinstance(output, Send):
                self._send(node, output)
            elif isinstance(output, Transition):
                event = ThreePhaseTransitioned(
                    "3pc",
                    self.txid,
                    output.node,
                    output.previous.value,
                    output.state.value,
                    output.reason,
                    now,
                )
                self.history.append(event)
                if self.events.active:
                    self.events.emit(event)
            elif isinstance(output, Apply):
                self._apply(node, output)

    def _apply(self, node: str, output: Apply) -> None:
        resource = self.resources[node]
        if output.action == "prepare":
            try:
                vote = resource.prepare(self.txid, self._work.get(node))
            except Exception:
                vote = Vote.NO
            self._dispatch(node, self.machines[node].voted(self.clock.now(), vote is not Vote.NO))
        elif output.action == "pre_commit":
            resource.pre_commit(self.txid)
        elif output.action == "commit":
            resource.commit(self.txid)
        else:
            resource.abort(self.txid)

    def _send(self, sender: str, send: Send) -> None:
        for hook in tuple(self._hooks):
            hook(sender, send)
        if not self._connected(sender, send.to):
            return
        at = self.clock.now() + self.delay
        heapq.heappush(self._queue, (at, next(self._sequence), send.to, send.message))
