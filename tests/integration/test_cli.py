"""The ``seawall`` command as a user runs it."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import seawall
from seawall.cli import app

runner = CliRunner()


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"seawall {seawall.__version__}"


def test_help_lists_the_demo() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output


def test_unknown_option_is_a_usage_error() -> None:
    result = runner.invoke(app, ["demo", "--no-such-flag"])
    assert result.exit_code == 2


def test_demo_runs_both_passes_and_prints_the_comparison() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "seawall",
            "demo",
            "resilience",
            "--seconds",
            "1",
            "--clients",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "bare calls" in completed.stdout
    assert "seawall pipeline" in completed.stdout
    assert "fewer calls to the dead downstream" in completed.stdout
