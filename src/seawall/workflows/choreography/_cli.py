"""``seawall choreography list|show URL [ID]``: where each choreographed business transaction stands.

Reads the tracker store at ``URL`` (the tracker records every event in its own consumer
group); needs no flow definitions.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import typer

from seawall.workflows._cli_common import fail, opened_store, when
from seawall.workflows.choreography._model import FlowRecord, FlowStatus
from seawall.workflows.choreography._open import open_tracker_store
from seawall.workflows.choreography._store import TrackerStore

__all__ = ["choreography_app"]

choreography_app = typer.Typer(
    help="Inspect a choreography tracker: business transactions, their status and history.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_URL = typer.Argument(..., help="The tracker store's engine URL, e.g. sqlite:///shop.db")
_ID = typer.Argument(..., help="The business transaction's correlation id (see `list`).")
_PREFIX = typer.Option("seawall_", "--table-prefix", help="Prefix of the tracker's tables.")
_SCHEMA = typer.Option(None, "--schema", help="PostgreSQL schema of the tables.")


def _opened(
    url: str, table_prefix: str, schema: str | None
) -> AbstractContextManager[TrackerStore]:
    """The store at ``url`` (tables are not created); errors become a message and exit code 1."""
    return opened_store(url, open_tracker_store, table_prefix, schema)


def _status(record: FlowRecord) -> str:
    if record.status is FlowStatus.STUCK:
        return f"stuck ({record.state.status.value})"
    return record.status.value


@choreography_app.command("list")
def list_flows(
    url: str = _URL,
    status: list[FlowStatus] | None = typer.Option(  # noqa: B008 - typer's declaration style
        None, "--status", "-s", help="Only transactions in this status (repeatable)."
    ),
    flow: str | None = typer.Option(None, "--flow", help="Only transactions of this flow."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="At most this many."),
    table_prefix: str = _PREFIX,
    schema: str | None = _SCHEMA,
) -> None:
    """List business transactions, most recently updated first."""
    with _opened(url, table_prefix, schema) as store:
        records = store.list(status=status or None, flow=flow, limit=limit)
    if not records:
        typer.echo("no business transactions")
        return
    typer.echo(
        f"{'CORRELATION ID':<34} {'FLOW':<16} {'STATUS':<26} {'EVENTS':>6}  "
        f"{'UPDATED (UTC)':<23}  REASON"
    )
    for record in records:
        reason = f"  {record.reason}" if record.reason else ""
        typer.echo(
            f"{record.correlation_id:<34} {record.flow:<16} {_status(record):<26} "
            f"{record.event_count:>6}  {when(record.updated_at)}{reason}"
        )


@choreography_app.command("show")
def show_flow(
    url: str = _URL,
    correlation_id: str = _ID,
    table_prefix: str = _PREFIX,
    schema: str | None = _SCHEMA,
) -> None:
    """Show one business transaction: status, steps, timings and every event."""
    with _opened(url, table_prefix, schema) as store:
        record = store.load(correlation_id)
    if record is None:
        fail(f"no business transaction {correlation_id!r} in the tracker store at {url}")
        return
    state = record.state
    typer.echo(f"flow         {record.flow} ({record.correlation_id})")
    typer.echo(f"status       {_status(record)}")
    if record.reason:
        typer.echo(f"reason       {record.reason}")
    typer.echo(f"started      {when(record.started_at)} UTC")
    typer.echo(f"updated      {when(record.updated_at)} UTC")
    typer.echo(f"completed    {', '.join(state.completed) or '-'}")
    if state.failed_step or state.failure:
        typer.echo(f"failed       {state.failed_step or '-'} ({state.failure})")
    if state.owed:
        typer.echo(f"owed         {', '.join(state.owed)} (compensations awaited)")
    if state.compensated:
        typer.echo(f"compensated  {', '.join(state.compensated)}")
    for anomaly in state.anomalies:
        typer.echo(f"anomaly      {anomaly}")
    timings = record.timings()
    if timings:
        typer.echo("timings")
        for step, seconds in timings.items():
            typer.echo(f"  {step:<24} {seconds * 1000:10.1f} ms")
    typer.echo("events")
    for event in record.events:
        step = event.step or "(start)"
        data = f"  {event.data}" if event.data is not None else ""
        typer.echo(
            f"  {event.seq:>4}  {when(event.at)}  {event.type:<22} {step:<16} "
            f"{event.event_id[:12]}{data}"
        )
