"""Shared measuring and reporting for seawall's benchmarks.

Every benchmark runs ours and the peers in one process, interleaved inside each
repetition so machine noise hits all alike, and reports the median over the
repetitions. ``BENCH_SCALE`` multiplies operation counts (the smoke test uses a
tiny scale); ``BENCH_REPS`` sets the repetitions (default 5).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
REPS = max(1, int(os.environ.get("BENCH_REPS", "5")))
OURS = "seawall"


@dataclass
class Result:
    """One measured case: the median cost per operation over the repetitions."""

    bench: str
    lib: str
    ns_per_op: float
    ops: int
    reps: int
    min_ns_per_op: float
    max_ns_per_op: float
    config: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return 1e9 / self.ns_per_op if self.ns_per_op else float("inf")


def ops_for(base: int, scale: float | None = None) -> int:
    """Operation count for one repetition: ``base`` scaled, at least 10."""
    return max(10, int(base * (SCALE if scale is None else scale)))


Timer = Callable[[int], float]
"""Runs ``n`` operations and returns the elapsed seconds."""


def sync_timer(operation: Callable[[], object]) -> Timer:
    """A timer that calls ``operation`` n times in a tight loop."""

    def timer(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            operation()
        return time.perf_counter() - started

    return timer


def async_timer(
    loop: asyncio.AbstractEventLoop, operation: Callable[[], Awaitable[object]]
) -> Timer:
    """A timer that awaits ``operation()`` n times inside one coroutine on ``loop``."""

    async def body(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await operation()
        return time.perf_counter() - started

    def timer(n: int) -> float:
        return loop.run_until_complete(body(n))

    return timer


@dataclass
class Case:
    """One library's way of doing the benchmark's operation."""

    bench: str
    lib: str
    timer: Timer
    ops: int
    config: str = ""


def measure(cases: Iterable[Case], reps: int | None = None) -> list[Result]:
    """Run every case once per repetition, interleaved, and return medians."""
    cases = list(cases)
    reps = reps or REPS
    samples: dict[int, list[float]] = {index: [] for index in range(len(cases))}
    for case in cases:  # warm-up
        case.timer(max(1, case.ops // 10))
    for _ in range(reps):
        for index, case in enumerate(cases):
            # The collector stays on while timing, as in the peers' own benchmarks: a
            # rejected call leaves an exception cycle that only it frees.
            gc.collect()
            elapsed = case.timer(case.ops)
            samples[index].append(elapsed * 1e9 / case.ops)
    results = []
    for index, case in enumerate(cases):
        values = sorted(samples[index])
        results.append(
            Result(
                bench=case.bench,
                lib=case.lib,
                ns_per_op=statistics.median(values),
                ops=case.ops,
                reps=len(values),
                min_ns_per_op=values[0],
                max_ns_per_op=values[-1],
                config=case.config,
            )
        )
    return results


def _format_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:,.2f} µs"
    return f"{ns:,.0f} ns"


def print_table(title: str, results: list[Result]) -> None:
    """Print results grouped by benchmark, with each peer's cost as a multiple of ours."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in ("benchmark", "library", "per op", "ops/s", "peer ÷ seawall", "configuration"):
        table.add_column(
            column, justify="right" if column in {"per op", "ops/s", "peer ÷ seawall"} else "left"
        )
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(result.bench, []).append(result)
    for bench, rows in groups.items():
        ours = next((row for row in rows if row.lib == OURS), None)
        for row in rows:
            ratio = "" if ours is None or row is ours else f"{row.ns_per_op / ours.ns_per_op:,.1f}x"
            table.add_row(
                bench,
                row.lib,
                _format_ns(row.ns_per_op),
                f"{row.ops_per_s:,.0f}",
                ratio,
                row.config,
            )
        table.add_section()
    Console(width=160).print(table)


def dump_json(results: list[Result], path: str | None = None) -> None:
    """Write results as JSON lines to ``path`` (or ``BENCH_JSON``), if set."""
    target = path or os.environ.get("BENCH_JSON")
    if not target:
        return
    with open(target, "a", encoding="utf-8") as handle:
        for result in results:
            handle.write(json.dumps(asdict(result)) + "\n")


def run_area_in_child(script: str, area: str) -> list[Result]:
    """Run ``script --area AREA`` in a child process and read its results back.

    One child per area, so one library's leftovers (caches, garbage) cannot slow the
    garbage collector in the areas measured after it.
    """
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "results.jsonl"
        env = dict(os.environ, BENCH_JSON=str(target))
        completed = subprocess.run([sys.executable, script, "--area", area], env=env, check=False)
        if completed.returncode != 0:
            raise SystemExit(
                f"benchmark area {area!r} failed with exit code {completed.returncode}"
            )
        if not target.exists():
            return []
        return [Result(**json.loads(line)) for line in target.read_text().splitlines()]


def run_chosen_areas(script: str, areas: Iterable[str]) -> list[Result] | None:
    """Run the areas ``BENCH_ONLY`` names (all when unset), each in a child process.

    Returns None, after saying which names are valid, when ``BENCH_ONLY`` names an unknown area.
    """
    import sys

    known = list(areas)
    only = {name.strip() for name in os.environ.get("BENCH_ONLY", "").split(",") if name.strip()}
    unknown = only - set(known)
    if unknown:
        print(
            f"unknown BENCH_ONLY area(s) {sorted(unknown)}; choose from {sorted(known)}",
            file=sys.stderr,
        )
        return None
    results: list[Result] = []
    for area in known:
        if not only or area in only:
            results.extend(run_area_in_child(script, area))
    dump_json(results)
    return results


def print_targets(title: str, rows: Iterable[tuple[str, str, str]], measured: str) -> None:
    """The targets table: each target, what was measured (column ``measured``), its status."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("target", measured, "status"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)
