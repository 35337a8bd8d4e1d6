"""Every benchmark runs at a tiny size, so none can rot. Speed is not asserted here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, BENCH_SCALE="0.0005", BENCH_REPS="1", BENCH_JSON=str(tmp_path / "out.jsonl")
    )
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_resilience_benchmark_runs_every_area(tmp_path: Path) -> None:
    completed = _run("resilience.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for area in ("retry", "breaker", "ratelimit", "misc"):
        assert f"seawall resilience: {area}" in completed.stdout
    assert "targets (issue 2)" in completed.stdout
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall"' in line for line in lines)


def test_the_messaging_benchmark_runs_every_area(tmp_path: Path) -> None:
    # messaging.py runs messaging_queue.py (per engine) and messaging_channels.py as children
    completed = _run("messaging.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for title in ("durable queues on SQLite", "in-process channels"):
        assert title in completed.stdout
    assert "targets (issue 3: messaging)" in completed.stdout
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall' in line for line in lines)


def test_the_coordination_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("coordination.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "targets (issue 6)" in completed.stdout
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall' in line for line in lines)


def test_the_eventsourcing_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("eventsourcing.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall' in line for line in lines)


def test_the_workflows_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("workflows.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "targets (issue 5: saga orchestration)" in completed.stdout


def test_the_cdc_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("cdc.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall' in line for line in lines)


def test_the_outbox_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("outbox.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall' in line for line in lines)


def test_the_choreography_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("workflows_choreography.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "choreography beside orchestration" in completed.stdout
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall"' in line for line in lines)


def test_the_commit_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("workflows_commit.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "seawall two-phase commit" in completed.stdout
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall"' in line for line in lines)


def test_the_shop_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("shop.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "seawall shop end to end" in completed.stdout
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall"' in line for line in lines)


def test_the_simulation_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("simulation.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "seawall simulation" in completed.stdout


def test_the_request_reply_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("messaging_request_reply.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "request-reply and claim check" in completed.stdout


def test_the_topics_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("messaging_topics.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall"' in line for line in lines)


def test_the_brokers_benchmark_runs(tmp_path: Path) -> None:
    completed = _run("messaging_brokers.py", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert any('"lib": "seawall"' in line for line in lines)
