"""``seawall saga list|show|retry|resolve URL [ID]``: look into a saga log and settle stuck sagas.

The commands need no saga definitions: ``retry`` marks a stuck saga so that the next
``resume`` of an orchestrator that knows it continues it; ``resolve`` settles it for
good once an operator has fixed things by hand.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import typer

from seawall.workflows._cli_common import fail, opened_store, when
from seawall.workflows.saga._base import open_saga_log, resolve_saga, retry_saga
from seawall.workflows.saga._log import SagaLog
from seawall.workflows.saga._model import SagaRecord, SagaStatus

__all__ = ["saga_app"]

saga_app = typer.Typer(
    help="Inspect a saga log; retry or resolve stuck sagas.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_URL = typer.Argument(..., help="The saga log's engine URL, e.g. sqlite:///shop.db")
_ID = typer.Argument(..., help="The saga's id (see `seawall saga list`).")
_PREFIX = typer.Option("seawall_", "--table-prefix", help="Prefix of the saga log's tables.")
_SCHEMA = typer.Option(None, "--schema", help="PostgreSQL schema of the tables.")


def _opened(url: str, table_prefix: str, schema: str | None) -> AbstractContextManager[SagaLog]:
    """The store at ``url`` (tables are not created); errors become a message and exit code 1."""
    return opened_store(url, open_saga_log, table_prefix, schema)


def _summary_line(record: SagaRecord) -> str:
    reason = f"  {record.reason}" if record.reason else ""
    return (
        f"{record.id:<34} {record.name:<20} {record.status.value:<13} "
        f"{when(record.updated_at)}{reason}"
    )


@saga_app.command("list")
def list_sagas(
    url: str = _URL,
    status: list[SagaStatus] | None = typer.Option(  # noqa: B008 - typer's declaration style
        None, "--status", "-s", help="Only sagas in this status (repeatable)."
    ),
    name: str | None = typer.Option(None, "--name", help="Only sagas of this definition."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="At most this many."),
    table_prefix: str = _PREFIX,
    schema: str | None = _SCHEMA,
) -> None:
    """List sagas, most recently updated first."""
    with _opened(url, table_prefix, schema) as log:
        records = log.list(status=status or None, name=name, limit=limit)
    if not records:
        typer.echo("no sagas")
        return
    typer.echo(f"{'ID':<34} {'SAGA':<20} {'STATUS':<13} {'UPDATED (UTC)':<23}  REASON")
    for record in records:
        typer.echo(_summary_line(record))


@saga_app.command("show")
def show_saga(
    url: str = _URL,
    saga_id: str = _ID,
    table_prefix: str = _PREFIX,
    schema: str | None = _SCHEMA,
) -> None:
    """Show one saga: status, reason, timings and its whole history."""
    with _opened(url, table_prefix, schema) as log:
        record = log.load(saga_id)
    if record is None:
        fail(f"no saga {saga_id!r} in the saga log at {url}")
        return
    typer.echo(f"saga      {record.name} ({record.id})")
    typer.echo(f"status    {record.status.value}")
    if record.reason:
        typer.echo(f"reason    {record.reason}")
    typer.echo(f"created   {when(record.created_at)} UTC")
    typer.echo(f"updated   {when(record.updated_at)} UTC")
    if record.deadline_at is not None:
        passed = " (passed)" if record.deadline_passed else ""
        typer.echo(f"deadline  {when(record.deadline_at)} UTC{passed}")
    if record.owner:
        typer.echo(f"owner     {record.owner} (lease until {when(record.lease_until)} UTC)")
    if record.cancel_requested:
        typer.echo("cancel    requested")
    typer.echo(f"steps     {' -> '.join(' | '.join(group) for group in record.plan)}")
    typer.echo(f"input     {record.input}")
    timings = record.timings()
    if timings:
        typer.echo("timings")
        for step, seconds in timings.items():
            typer.echo(f"  {step:<24} {seconds * 1000:10.1f} ms")
    typer.echo("history")
    for entry in record.entries:
        step = entry.step or ""
        data = f"  {entry.data}" if entry.data is not None else ""
        typer.echo(f"  {entry.seq:>4}  {when(entry.at)}  {entry.kind.value:<12} {step:<20}{data}")


@saga_app.command("retry")
def retry_command(
    url: str = _URL,
    saga_id: str = _ID,
    note: str = typer.Option("", "--note", help="Why, for the saga's history."),
    table_prefix: str = _PREFIX,
    schema: str | None = _SCHEMA,
) -> None:
    """Mark a stuck saga to be tried again by the next `resume` of an orchestrator."""
    with _opened(url, table_prefix, schema) as log:
        record = retry_saga(log, saga_id, note)
    typer.echo(
        f"saga {record.id} is {record.status.value} again; the next resume of an orchestrator "
        f"that knows {record.name!r} continues it"
    )


@saga_app.command("resolve")
def resolve_command(
    url: str = _URL,
    saga_id: str = _ID,
    note: str = typer.Option(..., "--note", help="What was done by hand (kept in the history)."),
    table_prefix: str = _PREFIX,
    schema: str | None = _SCHEMA,
) -> None:
    """Settle a stuck saga by hand: it becomes `resolved` and never runs again."""
    with _opened(url, table_prefix, schema) as log:
        record = resolve_saga(log, saga_id, note)
    typer.echo(f"saga {record.id} is resolved")
