"""``seawall demo`` options: checked up front, so bad input gets one line and exit code 2."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from seawall.engines._base import redact
from seawall.shop._config import CHAOS_LEVELS

__all__ = ["OneLineErrorsGroup", "check_options", "run_demo_command"]


def _fail(message: str) -> NoReturn:
    typer.echo(f"seawall demo: {message}", err=True)
    raise typer.Exit(2)


class OneLineErrorsGroup(TyperGroup):
    """A command group whose own usage errors (unknown flag, bad value) are one line, exit 2."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as error:
            # Usage errors (unknown flag, bad value) carry exit code 2 and a message; typer
            # ships its own copy of click, so they are recognised by shape, not by class.
            if getattr(error, "exit_code", None) != 2 or not hasattr(error, "format_message"):
                raise
            message = error.format_message()
            _fail(f"{message} (run 'seawall demo --help' to see the options)")


def _check_folder(data: str) -> None:
    folder = Path(data)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".seawall-check-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        _fail(
            f"cannot write to the data folder {str(folder)!r} ({reason}); pass --data with a "
            "writable folder, or leave it out to use a temporary one"
        )


def _check_postgres(url: str) -> None:
    if not url.startswith(("postgresql://", "postgres://")):
        _fail(f"--postgres {url!r} is not a PostgreSQL URL; pass postgresql://user@host:port/db")
    try:
        import psycopg
    except ImportError:
        _fail("the PostgreSQL driver is missing; pip install 'seawall[postgres]'")
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        _fail(
            f"cannot reach PostgreSQL at {redact(url)} ({first}); start it or pass a reachable "
            "--postgres URL"
        )


def _check_redis(url: str) -> None:
    if not url.startswith(("redis://", "rediss://")):
        _fail(f"--redis {url!r} is not a Redis URL; pass redis://host:port/db")
    try:
        import redis
    except ImportError:
        _fail("the Redis driver is missing; pip install 'seawall[redis]'")
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except Exception as error:
        _fail(
            f"cannot reach Redis at {redact(url)} ({error}); start it or pass a reachable "
            "--redis URL"
        )
    finally:
        client.close()


def check_options(
    *,
    orders: int,
    clients: int,
    chaos: str,
    engine: str,
    data: str | None,
    postgres: str | None,
    redis: str | None,
) -> None:
    """Exit with code 2 and one line naming the fix when an option cannot work."""
    if chaos not in CHAOS_LEVELS:
        _fail(f"--chaos {chaos!r} is not a level; use one of {', '.join(CHAOS_LEVELS)}")
    if engine not in ("sqlite", "postgres"):
        _fail(f"--engine {engine!r} is not supported; use sqlite (the default) or postgres")
    if not 1 <= orders <= 1_000_000:
        _fail(f"--orders {orders} is out of range; use 1 to 1000000")
    if not 1 <= clients <= 256:
        _fail(f"--clients {clients} is out of range; use 1 to 256")
    if engine == "sqlite" and (postgres or redis):
        _fail("--postgres and --redis go with --engine postgres; add it, or drop them")
    if engine == "postgres" and not postgres:
        _fail(
            "--engine postgres needs --postgres URL (and --redis URL for the queues), e.g. "
            "--postgres postgresql://postgres@127.0.0.1:5432/test --redis redis://127.0.0.1:6379/0"
        )
    missing = [name for name in ("starlette", "uvicorn", "httpx") if find_spec(name) is None]
    if missing:
        _fail(f"the shop needs {', '.join(missing)}; pip install 'seawall[shop]'")
    if data is not None:
        _check_folder(data)
    if postgres:
        _check_postgres(postgres)
    if redis:
        _check_redis(redis)


def run_demo_command(
    *,
    orders: int,
    clients: int,
    chaos: str,
    engine: str,
    data: str | None,
    postgres: str | None,
    redis: str | None,
    seed: int,
    keep: bool,
    report_json: str | None,
    client_rate: float = 50.0,
) -> NoReturn:
    """Check the options, run the shop, exit with the report's code."""
    check_options(
        orders=orders,
        clients=clients,
        chaos=chaos,
        engine=engine,
        data=data,
        postgres=postgres,
        redis=redis,
    )
    from seawall.shop._demo import DemoOptions, run_shop

    options = DemoOptions(
        orders=orders,
        clients=clients,
        chaos=chaos,
        engine=engine,
        data=data,
        postgres_url=postgres,
        redis_url=redis,
        seed=seed,
        keep=keep,
        report_json=report_json,
        client_rate=client_rate,
    )
    try:
        report = run_shop(options)
    except Exception as error:  # a service that would not start, an engine that went away
        hint = "" if data else " (run with --data DIR to keep the service logs)"
        _fail(f"{error}{hint}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    raise typer.Exit(report.exit_code())
