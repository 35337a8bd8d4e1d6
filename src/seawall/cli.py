"""The ``seawall`` command."""

from __future__ import annotations

import typer

from seawall._version import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="seawall",
    help="Patterns distributed services need to survive a hostile network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
demo_app = typer.Typer(
    help="Run a demonstration on the embedded default (nothing to install).",
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


_mount_messaging()
_mount_workflows()


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
    clients: int = typer.Option(40, min=1, max=1000, help="Concurrent clients."),
    seconds: float = typer.Option(3.0, min=0.5, max=120.0, help="Seconds each run lasts."),
    seed: int = typer.Option(7, help="Seed of the downstream's faults, for a repeatable run."),
) -> None:
    """Without a sub-command: the resilience demo."""
    if context.invoked_subcommand is None:
        _run_resilience(clients, seconds, seed)


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
