"""``seawall simulate``: run the shop under simulated faults for one seed or many.

Exit codes: 0 every invariant held; 1 a seed broke one (its seed, problems, trace
file and the command that replays it are printed); 2 bad input.
"""

from __future__ import annotations

import tempfile
import time
from enum import StrEnum
from pathlib import Path

import typer

from seawall.errors import ConfigurationError
from seawall.simulation._run import DEFAULT_STEPS, ReplayMismatchError, replay, write_trace
from seawall.simulation._shop import MUTATIONS, SimulationResult, run_shop

__all__ = ["FaultsChoice", "simulate_command"]


def _default_trace_path(seed: int) -> Path:
    return Path(tempfile.gettempdir()) / f"seawall-simulation-seed{seed}.trace"


def _describe(result: SimulationResult) -> str:
    counts = result.counts
    orders = ", ".join(f"{count} {state}" for state, count in sorted(result.orders.items()))
    return (
        f"{result.events:,} events, {result.simulated_seconds:.2f} simulated s; orders: "
        f"{orders or 'none'}; messages: {counts.get('send', 0):,} sent, "
        f"{counts.get('drop', 0):,} dropped, {counts.get('duplicate', 0):,} duplicated; "
        f"{counts.get('crash', 0)} crashes, {counts.get('partition', 0)} partitions"
    )


def _replay_command(result: SimulationResult) -> str:
    command = (
        f"seawall simulate --seed {result.seed} --steps {result.steps} --faults {result.faults}"
    )
    for name in result.mutations:
        command += f" --mutation {name}"
    return command


def _report_failure(result: SimulationResult, trace: Path | None) -> None:
    path = trace if trace is not None else _default_trace_path(result.seed)
    typer.echo(
        f"seed {result.seed} broke {len(result.failures)} invariant(s) "
        f"(faults={result.faults}, steps={result.steps}):",
        err=True,
    )
    for problem in result.failures:
        typer.echo(f"  - {problem}", err=True)
    try:
        written = write_trace(result, path)
    except ReplayMismatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        return
    typer.echo(f"trace: {written} (hash {result.trace_hash})", err=True)
    typer.echo(f"replay: {_replay_command(result)}", err=True)
    typer.echo(f"    or: seawall simulate --replay {written}", err=True)


class FaultsChoice(StrEnum):
    """The fault profiles, as ``--faults`` choices."""

    NONE = "none"
    MILD = "mild"
    WILD = "wild"


_SEED = typer.Option(0, "--seed", min=0, help="The seed (the first one with --seeds).")
_STEPS = typer.Option(DEFAULT_STEPS, "--steps", min=1, help="Events of the faulty phase of a run.")
_SEEDS = typer.Option(1, "--seeds", min=1, help="How many seeds to run: seed, seed+1, ...")
_FAULTS = typer.Option(
    FaultsChoice.MILD, "--faults", help="How hostile the network and the machines are."
)
_TRACE = typer.Option(
    None,
    "--trace",
    help="Write the trace here (of the one seed, or of the first failing seed).",
    dir_okay=False,
)
_REPLAY = typer.Option(
    None,
    "--replay",
    help="Run the seed a trace file records and check that the trace is identical.",
    exists=True,
    dir_okay=False,
)
_MUTATION_HELP = "A deliberately broken variant, to see a failure: " + ", ".join(MUTATIONS)
_MUTATION = typer.Option([], "--mutation", help=_MUTATION_HELP, hidden=True)


def simulate_command(
    seed: int = _SEED,
    steps: int = _STEPS,
    seeds: int = _SEEDS,
    faults: FaultsChoice = _FAULTS,
    trace: Path | None = _TRACE,
    replay_path: Path | None = _REPLAY,
    mutation: list[str] = _MUTATION,
) -> None:
    """Run the shop's logic under a simulated network and clock; same seed, same run."""
    unknown = sorted(set(mutation) - set(MUTATIONS))
    if unknown:
        raise typer.BadParameter(
            f"unknown mutation(s) {unknown}; known: {', '.join(MUTATIONS)}",
            param_hint="--mutation",
        )
    if replay_path is not None:
        _replay(replay_path)
        return
    started = time.perf_counter()
    passed: list[SimulationResult] = []
    for current in range(seed, seed + seeds):
        try:
            result = run_shop(
                current,
                steps,
                faults.value,
                mutations=frozenset(mutation),
                keep_trace=seeds == 1 and trace is not None,
            )
        except ConfigurationError as exc:
            raise typer.BadParameter(str(exc)) from exc
        if not result.ok:
            if passed:
                typer.echo(f"{len(passed)} seed(s) passed before seed {current}.", err=True)
            _report_failure(result, trace)
            raise typer.Exit(1)
        passed.append(result)
        if seeds == 1:
            typer.echo(f"seed {current}: ok; {_describe(result)}; trace hash {result.trace_hash}")
            if trace is not None:
                written = write_trace(result, trace)
                typer.echo(f"trace: {written}")
    if seeds > 1:
        elapsed = time.perf_counter() - started
        events = sum(result.events for result in passed)
        orders: dict[str, int] = {}
        crashes = partitions = 0
        for result in passed:
            for state, count in result.orders.items():
                orders[state] = orders.get(state, 0) + count
            crashes += result.counts.get("crash", 0)
            partitions += result.counts.get("partition", 0)
        summary = ", ".join(f"{count:,} {state}" for state, count in sorted(orders.items()))
        typer.echo(
            f"{seeds} seeds ({seed}..{seed + seeds - 1}, faults={faults.value}, steps={steps}) passed: "
            f"{events:,} events, orders: {summary}; {crashes} crashes, {partitions} partitions; "
            f"{elapsed:.1f} s ({seeds / elapsed:,.1f} seeds/s)"
        )


def _replay(path: Path) -> None:
    try:
        replayed = replay(path)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--replay") from exc
    result = replayed.result
    verdict = "ok" if result.ok else f"{len(result.failures)} invariant(s) broken"
    typer.echo(
        f"replayed seed {result.seed} (faults={result.faults}, steps={result.steps}): {verdict}"
    )
    for problem in result.failures:
        typer.echo(f"  - {problem}")
    if not replayed.same:
        typer.echo(
            f"the trace differs: recorded {replayed.recorded_hash}, replayed {result.trace_hash}",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"same trace hash: {result.trace_hash}")
    if not result.ok:
        raise typer.Exit(1)
