"""The simulated network: messages between nodes, with per-link delay, loss, duplication,
reordering and partitions that heal.

A message body is encoded to JSON when sent and decoded again for each delivery, so
nodes never share a mutable object: the only way information moves between them is a
message that survived the network. Every send, delivery and drop goes to the trace.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from seawall.errors import ConfigurationError
from seawall.simulation._kernel import Scheduler
from seawall.simulation._trace import Trace

__all__ = ["Endpoint", "LinkFaults", "Message", "Network", "Partition"]


def _probability(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"LinkFaults({name}={value!r}) must be a probability in [0, 1]")


def _seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1e9:
        raise ConfigurationError(f"LinkFaults({name}={value!r}) must be finite seconds >= 0")


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """How one direction of a link misbehaves.

    A message takes ``delay`` seconds plus an exponentially distributed extra of mean
    ``jitter`` (so messages overtake each other); with probability ``reorder`` it is
    held back ``reorder_delay`` more; it is lost with probability ``drop`` and
    delivered twice with probability ``duplicate``.
    """

    delay: float = 0.001
    jitter: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.05

    def __post_init__(self) -> None:
        for name in ("delay", "jitter", "reorder_delay"):
            _seconds(name, getattr(self, name))
        for name in ("drop", "duplicate", "reorder"):
            _probability(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered copy of a message: who sent it to whom, what kind, and its decoded body."""

    id: int
    source: str
    target: str
    kind: str
    body: Any
    copy: int = 0
    """0 for the first delivery, 1 for a duplicate the network made."""


@dataclass(frozen=True, slots=True)
class Partition:
    """No message crosses between ``left`` and ``right`` (either way) until ``until``."""

    left: tuple[str, ...]
    right: tuple[str, ...]
    until: float

    def cuts(self, source: str, target: str) -> bool:
        """True when this partition separates ``source`` from ``target``."""
        return (source in self.left and target in self.right) or (
            source in self.right and target in self.left
        )


class Endpoint(Protocol):
    """What the network needs from a node."""

    @property
    def name(self) -> str: ...

    @property
    def up(self) -> bool: ...

    def receive(self, message: Message) -> None: ...


class Network:
    """Carries messages between registered endpoints under the configured faults."""

    __slots__ = (
        "_endpoints",
        "_ids",
        "_links",
        "default",
        "partitions",
        "random",
        "scheduler",
        "trace",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        trace: Trace,
        default: LinkFaults | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.random = rng
        self.trace = trace
        self.default = default if default is not None else LinkFaults()
        self._links: dict[tuple[str, str], LinkFaults] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._ids = 0
        self.partitions: list[Partition] = []

    # ------------------------------------------------------------------ setup

    def attach(self, endpoint: Endpoint) -> None:
        """Make ``endpoint`` reachable by its name."""
        if endpoint.name in self._endpoints:
            raise ConfigurationError(f"a node named {endpoint.name!r} is already attached")
        self._endpoints[endpoint.name] = endpoint

    @property
    def names(self) -> list[str]:
        """Every attached node's name, in the order attached."""
        return list(self._endpoints)

    def set_link(self, source: str, target: str, faults: LinkFaults) -> None:
        """Give the link ``source -> target`` its own faults (instead of the default)."""
        self._links[(source, target)] = faults

    def faults(self, source: str, target: str) -> LinkFaults:
        """The faults of the link ``source -> target``."""
        return self._links.get((source, target), self.default)

    def calm(self) -> None:
        """Heal every partition and keep only each link's base delay (for the settling phase)."""
        if self.partitions:
            self.trace.record("heal", "all partitions")
        self.partitions.clear()
        self.default = LinkFaults(delay=self.default.delay)
        self._links = {link: LinkFaults(delay=f.delay) for link, f in self._links.items()}

    # ------------------------------------------------------------- partitions

    def partition(self, left: Iterable[str], right: Iterable[str], duration: float) -> Partition:
        """Cut every link between ``left`` and ``right`` for ``duration`` seconds, then heal."""
        cut = Partition(tuple(left), tuple(right), self.scheduler.now() + duration)
        self.partitions.append(cut)
        self.trace.record(
            "partition", f"{','.join(cut.left)} | {','.join(cut.right)} for {duration:.6f}s"
        )
        self.scheduler.at(cut.until, lambda: self._heal(cut), label="heal")
        return cut

    def _heal(self, cut: Partition) -> None:
        if cut in self.partitions:
            self.partitions.remove(cut)
            self.trace.record("heal", f"{','.join(cut.left)} | {','.join(cut.right)}")

    def cut(self, source: str, target: str) -> bool:
        """True when a partition separates ``source`` from ``target`` now."""
        return any(partition.cuts(source, target) for partition in self.partitions)

    # --------------------------------------------------------------- messages

    def send(self, source: str, target: str, kind: str, body: Any) -> int:
        """Send ``body`` (JSON-compatible) from ``source`` to ``target``; returns the message id."""
        if target not in self._endpoints:
            raise ConfigurationError(f"no node named {target!r} is attached to the network")
        self._ids += 1
        number = self._ids
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        trace = self.trace
        trace.record("send", f"m{number} {source}->{target} {kind} {text}")
        if self.cut(source, target):
            trace.record("drop", f"m{number} partition")
            return number
        faults = self.faults(source, target)
        rng = self.random
        if faults.drop and rng.random() < faults.drop:
            trace.record("drop", f"m{number} lost")
            return number
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        for copy in range(copies):
            delay = faults.delay
            if faults.jitter:
                delay += rng.expovariate(1.0 / faults.jitter)
            if faults.reorder and rng.random() < faults.reorder:
                delay += faults.reorder_delay
            self.scheduler.after(
                delay,
                self._deliverer(number, source, target, kind, text, copy),
                label=f"m{number}",
            )
            if copy:
                trace.record("duplicate", f"m{number} arrives after {delay:.6f}s")
        return number

    def _deliverer(
        self, number: int, source: str, target: str, kind: str, text: str, copy: int
    ) -> Any:
        def deliver() -> None:
            self._deliver(number, source, target, kind, text, copy)

        return deliver

    def _deliver(
        self, number: int, source: str, target: str, kind: str, text: str, copy: int
    ) -> None:
        trace = self.trace
        endpoint = self._endpoints[target]
        if self.cut(source, target):
            trace.record("drop", f"m{number} partition")
            return
        if not endpoint.up:
            trace.record("drop", f"m{number} {target} is down")
            return
        trace.record("deliver", f"m{number}" + (f" copy {copy}" if copy else ""))
        endpoint.receive(Message(number, source, target, kind, json.loads(text), copy))

    def __repr__(self) -> str:
        return f"Network({len(self._endpoints)} nodes, {len(self.partitions)} partitions)"
