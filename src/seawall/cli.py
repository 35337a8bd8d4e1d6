"""The ``seawall`` command."""

from __future__ import annotations

import typer

from seawall._version import __version__
from seawall.shop._cli import OneLineErrorsGroup

__all__ = ["app", "main"]

app = typer.Typer(
    name="seawall",
    help="Patterns distributed services need to survive a hostile network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
demo_app = typer.Typer(
    cls=OneLineErrorsGroup,
    help="Run the reference shop (four services, a saga, faults) on the embedded default.",
    invoke_without_command=True,
)
app.add_typer(demo_app, name="demo")


def _mount_messaging() -> None:
    from seawall.messaging.queue._cli import queue_app, worker_command

    app.command("worker")(worker_command)
    app.add_typer(queue_app, name="queue")


def _mount_workflows() -> None:
    from seawall.workflows.saga._cli import saga_app

    app.add_typer(saga_app, name="saga")

    from seawall.workflows.choreography._cli import choreography_app

    app.add_typer(choreography_app, name="choreography")


def _mount_simulation() -> None:
    from seawall.simulation._cli import simulate_command

    app.command("simulate")(simulate_command)


_mount_messaging()
_mount_workflows()
_mount_simulation()


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"seawall {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_version_callback,
        is_eager=True,
    ),
) -> None:
    """Patterns distributed services need to survive a hostile network."""


@demo_app.callback()
def _demo_default(
    context: typer.Context,
    orders: int = typer.Option(200, help="Orders to place."),
    clients: int = typer.Option(8, help="Concurrent clients placing them."),
    chaos: str = typer.Option("mild", help="Faults to inject: none, mild or wild."),
    engine: str = typer.Option("sqlite", help="sqlite (embedded) or postgres (with --redis)."),
    data: str | None = typer.Option(
        None, help="Folder for the databases and service logs (default: a temporary one)."
    ),
    postgres: str | None = typer.Option(None, help="PostgreSQL URL, with --engine postgres."),
    redis: str | None = typer.Option(None, help="Redis URL for queues and rate limits."),
    seed: int = typer.Option(7, help="Seed of the fault injector and the order mix."),
    client_rate: float = typer.Option(
        50.0,
        min=0.1,
        help="Orders per second each client may place (burst: a second's worth, at most 20); more get 429.",
    ),
    keep: bool = typer.Option(False, help="Keep the run's PostgreSQL schemas and Redis keys."),
    report_json: str | None = typer.Option(
        None, "--report-json", help="Also write the report as JSON to this file."
    ),
) -> None:
    """Without a sub-command: the reference shop (`seawall demo resilience`: the policy demo).

    Starts orders, payments, inventory and shipping as four processes, places orders
    through an orchestrated saga while injecting faults, then checks the invariants
    (exit code 1 if one fails, 2 for bad options).
    """
    if context.invoked_subcommand is None:
        from seawall.shop._cli import run_demo_command

        run_demo_command(
            orders=orders,
            clients=clients,
            chaos=chaos,
            engine=engine,
            data=data,
            postgres=postgres,
            redis=redis,
            seed=seed,
            keep=keep,
            report_json=report_json,
            client_rate=client_rate,
        )


@demo_app.command("resilience")
def _demo_resilience(
    clients: int = typer.Option(40, min=1, max=1000, help="Concurrent clients."),
    seconds: float = typer.Option(3.0, min=0.5, max=120.0, help="Seconds each run lasts."),
    seed: int = typer.Option(7, help="Seed of the downstream's faults, for a repeatable run."),
) -> None:
    """Many clients call a flaky, slow, sometimes-down downstream: bare, then through a pipeline."""
    _run_resilience(clients, seconds, seed)


def _run_resilience(clients: int, seconds: float, seed: int) -> None:
    from seawall.demo.resilience import run_demo

    raise typer.Exit(run_demo(clients=clients, seconds=seconds, seed=seed))


def main() -> None:
    """Entry point of the ``seawall`` console script."""
    app()
