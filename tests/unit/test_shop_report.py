"""The shop's report, configuration and option checks (no processes started)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from seawall.cli import app
from seawall.shop import logic
from seawall.shop._config import CHAOS_LEVELS, ChaosSettings, ShopConfig
from seawall.shop._report import ShopReport, percentile, snapshot_from_services

runner = CliRunner()


def finished_shop(count: int = 80) -> dict[str, Any]:
    """The services' ``GET /snapshot`` answers after ``count`` orders ran without faults."""
    shop = {name: logic.MemoryRecords() for name in logic.SERVICES}
    logic.setup_inventory(shop["inventory"])
    events: list[dict[str, Any]] = []
    read_model = logic.MemoryRecords()
    for index in range(count):
        logic.run_order(shop, f"o{index}", logic.sample_items(index), "c", events, read_model)
    parts: dict[str, Any] = {name: {"records": logic.dump(shop[name])} for name in shop}
    parts["orders"]["events"] = events
    parts["orders"]["read_model"] = {
        key.removeprefix("summary:"): row for key, row in logic.dump(read_model).items()
    }
    return parts


def new_report() -> ShopReport:
    return ShopReport(engine="sqlite", chaos="mild", orders_requested=80, clients=4)


def test_a_clean_snapshot_gives_exit_code_0() -> None:
    report = new_report()
    report.apply_snapshot(snapshot_from_services(finished_shop()))
    assert report.checked
    assert report.problems == []
    assert report.confirmed + report.compensated == 80
    assert report.exit_code() == 0


def test_a_violated_invariant_gives_a_non_zero_exit_code() -> None:
    parts = finished_shop()
    inventory = parts["inventory"]["records"]
    inventory["stock:mug"] = inventory["stock:mug"] + 1  # one mug appeared from nowhere
    report = new_report()
    report.apply_snapshot(snapshot_from_services(parts))
    assert report.exit_code() == 1
    assert any("stock of mug" in problem for problem in report.problems)
    output = io.StringIO()
    report.print(Console(file=output, width=200))
    assert "invariant problem" in output.getvalue()


def test_an_order_left_running_fails_the_run() -> None:
    parts = finished_shop()
    orders = parts["orders"]["records"]
    key = next(iter(orders))
    orders[key] = {**orders[key], "state": "pending"}
    report = new_report()
    report.apply_snapshot(snapshot_from_services(parts))
    assert report.still_running == 1
    assert report.exit_code() == 1


def test_unchecked_and_interrupted_runs() -> None:
    report = new_report()
    assert report.exit_code() == 1  # never checked: not a success
    report.interrupted = True
    assert report.exit_code() == 130


def test_report_json_and_table(tmp_path: Path) -> None:
    report = new_report()
    report.apply_snapshot(snapshot_from_services(finished_shop(20)))
    report.seconds = 2.0
    report.latencies = [0.1, 0.2, 0.3, 0.4]
    report.counters = {"retries": 3, "deduplicated": 2}
    path = tmp_path / "report.json"
    report.dump(str(path))
    data = json.loads(path.read_text())
    assert data["ok"] is True
    assert data["orders_per_second"] == 10.0
    assert data["p50_ms"] == 300.0
    assert "latencies" not in data
    output = io.StringIO()
    report.print(Console(file=output, width=200))
    assert "all invariants hold" in output.getvalue()
    assert "messages deduplicated" in output.getvalue()


def test_percentile() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0], 0.99) == 2.0


def test_config_round_trip_and_urls(tmp_path: Path) -> None:
    ports = dict(zip(logic.SERVICES, range(9001, 9005), strict=True))
    config = ShopConfig(run_id="abc", engine="sqlite", data_dir=str(tmp_path), ports=ports)
    assert ShopConfig.from_json(config.to_json()) == config
    assert config.database_url("orders") == f"sqlite:///{tmp_path.resolve()}/orders.db"
    assert config.queue_url.endswith("queues.db")
    assert config.service_url("payments") == "http://127.0.0.1:9002"
    postgres = ShopConfig(
        run_id="abc",
        engine="postgres",
        data_dir=str(tmp_path),
        ports=ports,
        postgres_url="postgresql://u@h/db",
        redis_url="redis://h:6379/0",
    )
    assert "search_path%3Dseawall_shop_abc_orders" in postgres.database_url("orders")
    assert postgres.queue_url == "redis://h:6379/0"


def test_chaos_settings_round_trip() -> None:
    for settings, _ in CHAOS_LEVELS.values():
        assert ChaosSettings.from_json(settings.to_json()) == settings
    assert ChaosSettings.from_json({"error_rate": 0.5, "unknown": 1}).error_rate == 0.5


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--no-such-flag"], "No such option: --no-such-flag"),
        (["--orders", "many"], "Invalid value for '--orders'"),
        (["--orders", "0"], "--orders 0 is out of range"),
        (["--chaos", "apocalyptic"], "use one of none, mild, wild"),
        (["--engine", "oracle"], "use sqlite (the default) or postgres"),
        (["--engine", "postgres"], "--engine postgres needs --postgres URL"),
        (["--redis", "redis://127.0.0.1:6379/0"], "go with --engine postgres"),
        (
            ["--engine", "postgres", "--postgres", "mysql://x"],
            "is not a PostgreSQL URL",
        ),
        (
            ["--engine", "postgres", "--postgres", "postgresql://postgres@127.0.0.1:1/x"],
            "cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:1/x",
        ),
    ],
)
def test_bad_options_get_one_line_and_exit_code_2(arguments: list[str], expected: str) -> None:
    result = runner.invoke(app, ["demo", *arguments])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("seawall demo: ")
    assert expected in lines[0]


def test_a_data_folder_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["demo", "--data", str(blocker / "shop")])
    assert result.exit_code == 2
    assert "cannot write to the data folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
