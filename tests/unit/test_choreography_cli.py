"""``seawall choreography list|show URL [ID]`` through typer's test runner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from seawall.clock import ManualClock
from seawall.workflows.choreography import ChoreographyEvent, Tracker
from seawall.workflows.choreography._cli import choreography_app

runner = CliRunner()


def test_list_and_show(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    clock = ManualClock(1_700_000_000.0)
    tracker = Tracker(url, [], clock=clock, stuck_after=10.0)
    tracker.track(ChoreographyEvent("OrderPlaced", {"sku": "A-1"}, "order", "o-1", "e0"))
    clock.advance(0.25)
    tracker.track(
        ChoreographyEvent(
            "StockReserved", None, "order", "o-1", "e1", causation_id="e0", step="reserve"
        )
    )
    tracker.track(ChoreographyEvent("OrderPlaced", None, "order", "o-2", "f0"))
    clock.advance(30.0)
    tracker.sweep()
    tracker.close()

    listed = runner.invoke(choreography_app, ["list", url])
    assert listed.exit_code == 0, listed.output
    assert "o-1" in listed.output
    assert "stuck (running)" in listed.output
    only = runner.invoke(choreography_app, ["list", url, "--status", "stuck", "--limit", "1"])
    assert only.output.count("order") == 1

    shown = runner.invoke(choreography_app, ["show", url, "o-1"])
    assert shown.exit_code == 0, shown.output
    assert "status       stuck (running)" in shown.output
    assert "reserve" in shown.output
    assert "250.0 ms" in shown.output
    assert '{"sku":"A-1"}' in shown.output

    missing = runner.invoke(choreography_app, ["show", url, "nope"])
    assert missing.exit_code == 1
    assert "no business transaction 'nope'" in missing.output
    empty = runner.invoke(choreography_app, ["list", "memory://"])
    assert "no business transactions" in empty.output
    bad = runner.invoke(choreography_app, ["list", "nope://x"])
    assert bad.exit_code == 1
