"""The shop under deterministic simulation: reproducible, invariant-checked, and able to find bugs.

The sweep runs ``SEAWALL_SIMULATION_SEEDS`` seeds (default 300, half under the
``mild`` profile, half under ``wild``) of ``SEAWALL_SIMULATION_STEPS`` events (default
500). A failing seed is reported with its trace file and the command that replays it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from seawall.errors import ConfigurationError
from seawall.simulation import MUTATIONS, replay, run_seed, run_seeds, write_trace
from seawall.simulation._cli import simulate_command

SEEDS = int(os.environ.get("SEAWALL_SIMULATION_SEEDS", "300"))
STEPS = int(os.environ.get("SEAWALL_SIMULATION_STEPS", "500"))

app = typer.Typer()
app.command("simulate")(simulate_command)


@app.callback()
def _root() -> None:
    """A stand-in for the ``seawall`` command."""


runner = CliRunner()


@pytest.mark.parametrize("faults", ["mild", "wild"])
def test_every_seed_of_the_sweep_keeps_every_invariant(faults: str, tmp_path: Path) -> None:
    first = 0 if faults == "mild" else 1_000_000
    count = SEEDS // 2 + (SEEDS % 2 if faults == "mild" else 0)
    ran = 0
    for result in run_seeds(range(first, first + count), STEPS, faults):
        ran += 1
        if not result.ok:
            path = write_trace(result, tmp_path / f"seed{result.seed}.trace")
            pytest.fail(
                f"seed {result.seed} ({faults}, {STEPS} steps) broke invariants: "
                f"{list(result.failures)}; trace {path}; replay: seawall simulate --seed "
                f"{result.seed} --steps {STEPS} --faults {faults}"
            )
        assert result.orders, "every run places orders"
    assert ran == count


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    first = run_seed(11, 400, "wild")
    second = run_seed(11, 400, "wild")
    assert first.trace_hash == second.trace_hash
    assert first == second
    assert run_seed(12, 400, "wild").trace_hash != first.trace_hash
    assert run_seed(11, 400, "mild").trace_hash != first.trace_hash


def test_wild_runs_really_inject_every_kind_of_fault() -> None:
    counts: dict[str, int] = {}
    orders: dict[str, int] = {}
    for result in run_seeds(range(10), 1_000, "wild"):
        for kind, count in result.counts.items():
            counts[kind] = counts.get(kind, 0) + count
        for state, count in result.orders.items():
            orders[state] = orders.get(state, 0) + count
    for kind in ("drop", "duplicate", "crash", "restart", "partition", "heal"):
        assert counts.get(kind, 0) > 0, kind
    assert orders.get("confirmed", 0) > 0
    assert orders.get("compensated", 0) > 0
    assert set(orders) <= {"confirmed", "compensated"}


def test_no_faults_means_no_drops_crashes_or_duplicates() -> None:
    result = run_seed(5, 300, "none")
    assert result.ok
    for kind in ("drop", "duplicate", "crash", "partition"):
        assert result.counts.get(kind, 0) == 0


_HASH_SCRIPT = (
    "from seawall.simulation import run_seed; print(run_seed(21, 300, 'wild').trace_hash)"
)


def test_the_trace_does_not_depend_on_the_process_hash_seed() -> None:
    hashes = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        completed = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        hashes.add(completed.stdout.strip())
    assert hashes == {run_seed(21, 300, "wild").trace_hash}


@pytest.mark.parametrize(
    ("mutation", "faults", "expected"),
    [
        ("double-charge", "mild", "charged 2 times"),
        ("skip-release", "none", "still holds stock"),
        ("forget-sagas", "mild", "still running"),
    ],
)
def test_a_broken_variant_is_caught_and_its_seed_replays(
    mutation: str, faults: str, expected: str, tmp_path: Path
) -> None:
    failing = next(
        (r for r in run_seeds(range(20), STEPS, faults, mutations=[mutation]) if not r.ok), None
    )
    assert failing is not None, f"no seed in 0..19 caught the {mutation} bug"
    assert any(expected in problem for problem in failing.failures), failing.failures
    again = run_seed(failing.seed, STEPS, faults, mutations=[mutation])
    assert again.trace_hash == failing.trace_hash
    assert again.failures == failing.failures
    path = write_trace(failing, tmp_path / "failure.trace")
    replayed = replay(path)
    assert replayed.same
    assert replayed.result.failures == failing.failures
    trace = path.read_text()
    assert "violated" in trace
    assert f"mutations={mutation}" in trace
    # The correct shop passes the same seed.
    assert run_seed(failing.seed, STEPS, faults).ok


def test_the_cli_reports_a_failing_seed_with_its_trace_and_replay_command(tmp_path: Path) -> None:
    path = tmp_path / "failure.trace"
    result = runner.invoke(
        app,
        [
            "simulate",
            "--seeds",
            "5",
            "--faults",
            "none",
            "--mutation",
            "skip-release",
            "--trace",
            str(path),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "seed 0 broke" in result.output
    assert "still holds stock" in result.output
    assert f"trace: {path}" in result.output
    assert "replay: seawall simulate --seed 0 --steps 500 --faults none" in result.output
    replayed = runner.invoke(app, ["simulate", "--replay", str(path)])
    assert replayed.exit_code == 1
    assert "same trace hash" in replayed.output


def test_the_cli_runs_one_seed_or_many(tmp_path: Path) -> None:
    path = tmp_path / "ok.trace"
    one = runner.invoke(app, ["simulate", "--seed", "4", "--steps", "200", "--trace", str(path)])
    assert one.exit_code == 0, one.output
    assert "seed 4: ok" in one.output
    assert f"trace: {path}" in one.output
    assert run_seed(4, 200, "mild").trace_hash in one.output
    assert path.read_text().count("\n") > 100
    replayed = runner.invoke(app, ["simulate", "--replay", str(path)])
    assert replayed.exit_code == 0
    assert "same trace hash" in replayed.output
    many = runner.invoke(app, ["simulate", "--seeds", "4", "--steps", "200", "--faults", "wild"])
    assert many.exit_code == 0, many.output
    assert "4 seeds (0..3, faults=wild, steps=200) passed" in many.output


@pytest.mark.parametrize(
    "arguments",
    [
        ["--faults", "brutal"],
        ["--seeds", "0"],
        ["--steps", "0"],
        ["--seed", "-1"],
        ["--mutation", "nonsense"],
    ],
)
def test_the_cli_refuses_bad_input_with_exit_code_2(arguments: list[str]) -> None:
    result = runner.invoke(app, ["simulate", *arguments])
    assert result.exit_code == 2, result.output


def test_a_tampered_trace_does_not_replay_the_same(tmp_path: Path) -> None:
    path = write_trace(run_seed(2, 200, "mild"), tmp_path / "run.trace")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace('"steps": 200', '"steps": 201'), *lines[1:]]))
    result = runner.invoke(app, ["simulate", "--replay", str(path)])
    assert result.exit_code == 1
    assert "the trace differs" in result.output
    garbage = tmp_path / "garbage.trace"
    garbage.write_text("not a trace\n")
    assert runner.invoke(app, ["simulate", "--replay", str(garbage)]).exit_code == 2


def test_bad_arguments_to_the_api_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="seed"):
        run_seed(-1)
    with pytest.raises(ConfigurationError, match="steps"):
        run_seed(1, 0)
    with pytest.raises(ConfigurationError, match="unknown mutation"):
        run_seed(1, mutations=["gremlins"])
    with pytest.raises(ConfigurationError, match="fault profile"):
        run_seed(1, faults="brutal")
    assert set(MUTATIONS) == {"double-charge", "forget-sagas", "skip-release"}
