"""``seawall saga list|show|retry|resolve URL [ID]`` through typer's test runner."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seawall.clock import ManualClock
from seawall.resilience import Retry
from seawall.workflows import (
    Saga,
    SagaFailedError,
    SagaOrchestrator,
    SagaStatus,
    SqliteSagaLog,
    Step,
    StepContext,
)
from seawall.workflows.saga._cli import saga_app

runner = CliRunner()


class Refunds:
    """A compensation that fails until it is repaired."""

    def __init__(self) -> None:
        self.broken = True
        self.done: list[str] = []

    def undo(self, context: StepContext) -> None:
        if self.broken:
            raise RuntimeError("refund service down")
        self.done.append(context.step)


def fail(context: StepContext) -> None:
    raise ValueError("card declined")


def stuck_saga(url: str, refunds: Refunds, clock: ManualClock) -> tuple[SagaOrchestrator, Saga]:
    saga = Saga("order", [Step("charge", lambda c: "ok", refunds.undo), Step("ship", fail)])
    sagas = SagaOrchestrator(
        url, [saga], clock=clock, compensation_policy=Retry(2, wait=0, clock=clock)
    )
    with pytest.raises(SagaFailedError):
        sagas.run(saga, {"order": 1}, saga_id="o-1")
    return sagas, saga


@pytest.fixture
def url() -> str:
    return f"memory://cli-{uuid.uuid4().hex}"


def test_list_show_retry_then_resume(url: str, clock: ManualClock) -> None:
    refunds = Refunds()
    sagas, _ = stuck_saga(url, refunds, clock)

    listed = runner.invoke(saga_app, ["list", url])
    assert listed.exit_code == 0
    assert "o-1" in listed.output
    assert "stuck" in listed.output
    assert "compensation of step 'charge' failed" in listed.output

    shown = runner.invoke(saga_app, ["show", url, "o-1"])
    assert shown.exit_code == 0
    for expected in (
        "status    stuck",
        "steps     charge -> ship",
        '{"order":1}',
        "failed",
        "card declined",
    ):
        assert expected in shown.output
    assert "timings" in shown.output

    only_running = runner.invoke(saga_app, ["list", url, "--status", "running"])
    assert only_running.exit_code == 0
    assert "no sagas" in only_running.output

    refunds.broken = False
    retried = runner.invoke(saga_app, ["retry", url, "o-1", "--note", "refunds back"])
    assert retried.exit_code == 0
    assert "compensating again" in retried.output
    (result,) = sagas.resume()
    assert result.status is SagaStatus.COMPENSATED
    assert refunds.done == ["charge"]


def test_resolve_needs_a_note_and_a_stuck_saga(url: str, clock: ManualClock) -> None:
    stuck_saga(url, Refunds(), clock)
    missing_note = runner.invoke(saga_app, ["resolve", url, "o-1"])
    assert missing_note.exit_code != 0
    resolved = runner.invoke(saga_app, ["resolve", url, "o-1", "--note", "refunded by phone"])
    assert resolved.exit_code == 0
    assert "resolved" in resolved.output
    again = runner.invoke(saga_app, ["resolve", url, "o-1", "--note", "x"])
    assert again.exit_code == 1
    assert "it is resolved, and resolve applies to stuck sagas only" in again.output
    shown = runner.invoke(saga_app, ["show", url, "o-1"])
    assert "refunded by phone" in shown.output


def test_unknown_ids_and_urls_fail_with_a_message(url: str) -> None:
    missing = runner.invoke(saga_app, ["show", url, "nope"])
    assert missing.exit_code == 1
    assert "no saga 'nope'" in missing.output
    retry = runner.invoke(saga_app, ["retry", url, "nope"])
    assert retry.exit_code == 1
    assert "no saga 'nope'" in retry.output
    bad = runner.invoke(saga_app, ["list", "nosuch://x"])
    assert bad.exit_code == 1
    assert "unknown engine scheme" in bad.output
    empty = runner.invoke(saga_app, ["list", url])
    assert empty.exit_code == 0
    assert "no sagas" in empty.output


def test_sqlite_log_with_a_table_prefix(tmp_path: Path, clock: ManualClock) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    log = SqliteSagaLog(url, table_prefix="shop_")
    try:
        stuck_saga_on(log, clock)
        listed = runner.invoke(saga_app, ["list", url, "--table-prefix", "shop_"])
        assert listed.exit_code == 0
        assert "o-1" in listed.output
        wrong = runner.invoke(saga_app, ["list", url])  # default prefix: no such table
        assert wrong.exit_code == 1
        assert "no such table" in wrong.output
    finally:
        log.close()


def stuck_saga_on(log: SqliteSagaLog, clock: ManualClock) -> None:
    refunds = Refunds()
    saga = Saga("order", [Step("charge", lambda c: "ok", refunds.undo), Step("ship", fail)])
    sagas = SagaOrchestrator(log, [saga], clock=clock, compensation_policy=Retry(1, clock=clock))
    with pytest.raises(SagaFailedError):
        sagas.run(saga, saga_id="o-1")
