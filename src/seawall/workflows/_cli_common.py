"""What the workflow CLIs share: opening a store from a URL, failing with one line, times."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol, TypeVar

import typer

from seawall.engines import Engine
from seawall.errors import SeawallError

__all__ = ["fail", "opened_store", "when"]


class _Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=_Closable)


def fail(message: str) -> NoReturn:
    """Print ``message`` in red on stderr and exit with code 1."""
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


@contextmanager
def opened_store(
    url: str, opener: Callable[..., S], table_prefix: str, schema: str | None
) -> Iterator[S]:
    """The store ``opener`` opens at ``url`` without creating tables; errors exit with code 1."""
    from seawall.engines import connect

    engine: Engine
    try:
        engine = connect(url)
    except SeawallError as exc:
        fail(str(exc))
    try:
        options: dict[str, Any] = {}
        if engine.kind in ("sqlite", "postgres"):
            options = {"table_prefix": table_prefix, "create": False}
            if schema is not None and engine.kind == "postgres":
                options["schema"] = schema
        try:
            store = opener(engine, **options)
            try:
                yield store
            finally:
                store.close()
        except SeawallError as exc:
            fail(str(exc))
    finally:
        engine.close()


def when(moment: float | None) -> str:
    """A UTC timestamp with milliseconds, or ``-``."""
    if moment is None:
        return "-"
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
