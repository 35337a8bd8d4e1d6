"""``seawall demo`` as a user runs it: real processes, faults, and the invariants at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from _engines import require_engine


def _demo(*arguments: str, timeout: float = 100.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seawall", "demo", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _services_of(folder: Path) -> list[int]:
    """Pids of live shop service processes started with this data folder's config."""
    config = str(folder / "shop-config.json")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"seawall.shop._service" in command and config.encode() in command:
            found.append(int(entry.name))
    return found


def _check_report(folder: Path, completed: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report: dict[str, Any] = json.loads((folder / "report.json").read_text())
    assert report["ok"] is True
    assert report["checked"] is True
    assert report["problems"] == []
    assert report["still_running"] == 0
    assert report["confirmed"] + report["compensated"] == report["orders_accepted"]
    assert "all invariants hold" in completed.stdout
    assert _services_of(folder) == []
    return report


def test_demo_with_mild_chaos_keeps_every_invariant(tmp_path: Path) -> None:
    completed = _demo(
        "--orders", "40", "--clients", "4", "--chaos", "mild", "--data", str(tmp_path),
        "--report-json", str(tmp_path / "report.json"),
    )  # fmt: skip
    report = _check_report(tmp_path, completed)
    assert report["orders_accepted"] == 40
    assert report["confirmed"] > 0


def test_demo_with_wild_chaos_keeps_every_invariant(tmp_path: Path) -> None:
    completed = _demo(
        "--orders", "60", "--clients", "6", "--chaos", "wild", "--seed", "3",
        "--data", str(tmp_path), "--report-json", str(tmp_path / "report.json"),
    )  # fmt: skip
    report = _check_report(tmp_path, completed)
    assert report["kills"] >= 1
    assert report["restarts"] == report["kills"]
    assert report["counters"]["injected_errors"] > 0


def test_a_low_client_rate_throttles_clients_who_retry_and_finish(tmp_path: Path) -> None:
    completed = _demo(
        "--orders", "24", "--clients", "3", "--chaos", "none", "--client-rate", "2",
        "--data", str(tmp_path), "--report-json", str(tmp_path / "report.json"),
    )  # fmt: skip
    report = _check_report(tmp_path, completed)
    assert report["counters"]["rate_limited"] >= 1
    assert report["orders_accepted"] == 24


def test_demo_on_postgres_and_redis_keeps_every_invariant_and_cleans_up(tmp_path: Path) -> None:
    postgres = require_engine("postgres")
    redis_url = require_engine("redis")
    completed = _demo(
        "--orders", "30", "--clients", "4", "--chaos", "mild", "--engine", "postgres",
        "--postgres", postgres, "--redis", redis_url, "--data", str(tmp_path),
        "--report-json", str(tmp_path / "report.json"),
    )  # fmt: skip
    report = _check_report(tmp_path, completed)
    assert report["engine"] == "postgres + redis"
    run_id = json.loads((tmp_path / "shop-config.json").read_text())["run_id"]

    import psycopg
    import redis

    with psycopg.connect(postgres, autocommit=True) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
            [f"seawall_shop_{run_id}_%"],
        ).fetchall()
    assert schemas == []
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"*shop-{run_id}-*")) == []
        assert list(client.scan_iter(match=f"seawall:shop:{run_id}:*")) == []
    finally:
        client.close()


def test_ctrl_c_stops_the_services_and_still_reports(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "seawall", "demo", "--orders", "5000", "--clients", "4",
            "--chaos", "none", "--data", str(tmp_path),
            "--report-json", str(tmp_path / "report.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        orders_db = tmp_path / "orders.db"
        while time.monotonic() < deadline and len(_services_of(tmp_path)) < 4:
            time.sleep(0.2)
        while time.monotonic() < deadline and (
            not orders_db.exists() or orders_db.stat().st_size < 100_000
        ):
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stdout[-3000:] + stderr[-3000:]
    assert "(interrupted)" in stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["interrupted"] is True
    assert 0 < report["orders_accepted"] < 5000
    assert report["problems"] == []
    assert _services_of(tmp_path) == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--bogus"], "No such option: --bogus"),
        (["--engine", "postgres"], "needs --postgres URL"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(arguments: list[str], expected: str) -> None:
    completed = _demo(*arguments, timeout=60)
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert expected in lines[0]
