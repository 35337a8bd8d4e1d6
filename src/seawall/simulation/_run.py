"""Running seeds, writing a failing seed's trace, and replaying a trace file.

A sweep runs each seed once, keeping only the trace hash. When a seed breaks an
invariant it is run again with every trace line kept: that second run is itself the
proof of replay (it must give the same hash) and its lines go to the trace file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from seawall.errors import ConfigurationError, SeawallError
from seawall.simulation._faults import FaultProfile
from seawall.simulation._shop import SimulationResult, run_shop
from seawall.simulation._trace import Trace

__all__ = ["ReplayMismatchError", "Replay", "replay", "run_seed", "run_seeds", "write_trace"]

DEFAULT_STEPS = 500


class ReplayMismatchError(SeawallError):
    """A replayed seed gave another trace than the recorded one: the run is not deterministic."""

    def __init__(self, seed: int, expected: str, actual: str) -> None:
        super().__init__(
            f"replaying seed {seed} gave trace hash {actual[:16]}..., the recording says "
            f"{expected[:16]}...: something in the simulated code reads the wall clock, "
            "unseeded randomness or hash-ordered sets; find the first differing trace line"
        )
        self.seed = seed
        self.expected = expected
        self.actual = actual


def run_seed(
    seed: int,
    steps: int = DEFAULT_STEPS,
    faults: str | FaultProfile = "mild",
    *,
    mutations: Iterable[str] = (),
    keep_trace: bool = False,
) -> SimulationResult:
    """Simulate the shop for one seed and check its invariants (see :func:`run_shop`)."""
    return run_shop(seed, steps, faults, mutations=frozenset(mutations), keep_trace=keep_trace)


def run_seeds(
    seeds: Iterable[int],
    steps: int = DEFAULT_STEPS,
    faults: str | FaultProfile = "mild",
    *,
    mutations: Iterable[str] = (),
) -> Iterator[SimulationResult]:
    """Simulate each seed in turn (traces hashed, not kept)."""
    broken = frozenset(mutations)
    for seed in seeds:
        yield run_shop(seed, steps, faults, mutations=broken)


def write_trace(result: SimulationResult, path: str | Path) -> Path:
    """Run ``result``'s seed again keeping every line, check the hash, and write the trace file.

    Raises :class:`ReplayMismatchError` when the second run differs from the first.
    """
    again = result
    if result.trace is None:
        again = run_shop(
            result.seed,
            result.steps,
            result.faults,
            mutations=frozenset(result.mutations),
            keep_trace=True,
        )
    if again.trace_hash != result.trace_hash:
        raise ReplayMismatchError(result.seed, result.trace_hash, again.trace_hash)
    trace = again.trace
    if trace is None:  # pragma: no cover - a result carries its trace when it was kept
        raise ReplayMismatchError(result.seed, result.trace_hash, "no trace kept")
    return trace.write(path, again.parameters())


@dataclass(frozen=True)
class Replay:
    """A trace file run again: its recorded hash, and the new run."""

    recorded_hash: str
    result: SimulationResult

    @property
    def same(self) -> bool:
        """True when the replay gave exactly the recorded trace."""
        return self.recorded_hash == self.result.trace_hash


def replay(path: str | Path) -> Replay:
    """Run the seed a trace file records, with its parameters, and compare the trace hashes."""
    try:
        header = Trace.read_header(path)
        seed = int(header["seed"])
        steps = int(header["steps"])
        faults = str(header["faults"])
        mutations = frozenset(str(name) for name in header.get("mutations", ()))
        recorded = str(header["trace_hash"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"cannot replay {path}: {exc}") from exc
    result = run_shop(seed, steps, faults, mutations=mutations, keep_trace=True)
    return Replay(recorded, result)
