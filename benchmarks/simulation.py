"""Deterministic simulation: how many seeds and simulated events per second.

    python benchmarks/simulation.py                       # ~1 minute
    BENCH_SCALE=0.1 BENCH_REPS=3 python benchmarks/simulation.py

One operation is one seed of the shop simulation (``seawall.simulation.run_seed``):
``STEPS`` events of the faulty phase, then the settling phase and the invariant
check, for each fault profile. Events per second divides the events the seeds ran
(both phases) by the time they took. Every seed runs the shop's real handlers, the
saga core, retry and breaker cores; traces are hashed, not kept.

No peer: no Python library offers deterministic simulation of a distributed
application (the technique of FoundationDB and TigerBeetle), so the table has only
seawall's rows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import SCALE, Case, Result, dump_json, measure, ops_for, print_table
from seawall.simulation import run_seed

STEPS = max(50, int(500 * min(1.0, SCALE * 20)))
PROFILES = ("none", "mild", "wild")


def _seed_timer(faults: str, counter: dict[str, int]) -> Callable[[int], float]:
    next_seed = [0]

    def timer(n: int) -> float:
        started = time.perf_counter()
        events = 0
        for _ in range(n):
            result = run_seed(next_seed[0], STEPS, faults)
            next_seed[0] += 1
            events += result.events
        elapsed = time.perf_counter() - started
        counter["events"] += events
        counter["seconds_x1e9"] += int(elapsed * 1e9)
        return elapsed

    return timer


def run() -> list[Result]:
    counters = {faults: {"events": 0, "seconds_x1e9": 0} for faults in PROFILES}
    cases = [
        Case(
            bench=f"one seed ({STEPS} steps + settling), faults={faults}",
            lib="seawall",
            timer=_seed_timer(faults, counters[faults]),
            ops=ops_for(100),
            config="no peer exists (see the module docs)",
        )
        for faults in PROFILES
    ]
    results = measure(cases)
    for result, faults in zip(results, PROFILES, strict=True):
        counter = counters[faults]
        seconds = counter["seconds_x1e9"] / 1e9
        result.extra = {
            "events_per_s": counter["events"] / seconds if seconds else 0.0,
            "events_per_seed": counter["events"] / max(1, _seeds_run(counter, result)),
        }
    return results


def _seeds_run(counter: dict[str, int], result: Result) -> int:
    # warm-up (ops // 10, at least 1) plus one run per repetition
    return max(1, result.ops // 10) + result.ops * result.reps


def main() -> int:
    results = run()
    print_table("seawall simulation: seeds per second (no peer)", results)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="simulated events per second (both phases, all seeds timed)")
    for column in ("profile", "events/s", "events per seed", "seeds/s (median)"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for result, faults in zip(results, PROFILES, strict=True):
        table.add_row(
            faults,
            f"{result.extra['events_per_s']:,.0f}",
            f"{result.extra['events_per_seed']:,.0f}",
            f"{result.ops_per_s:,.1f}",
        )
    Console(width=160).print(table)
    dump_json(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
