"""The queue commands: ``seawall worker`` runs a worker, ``seawall queue ...`` inspects and repairs.

::

    seawall worker sqlite:///shop.db emails --handler myapp.tasks:send_email --concurrency 8
    seawall queue stats sqlite:///shop.db emails
    seawall queue peek sqlite:///shop.db emails --limit 5
    seawall queue dlq sqlite:///shop.db emails
    seawall queue redrive sqlite:///shop.db emails 42        # or --all
    seawall queue purge sqlite:///shop.db emails --yes        # --dead-letters for the DLQ

The ``seawall`` command mounts them (``app.command("worker")(worker_command)`` and
``app.add_typer(queue_app, name="queue")``). Bad input ends with one line on stderr
and exit code 2 (a malformed URL, an unknown queue, a handler that cannot be
imported), naming the fix; an engine failure exits with 1.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from seawall.engines import Engine, connect
from seawall.engines._base import redact
from seawall.errors import ConfigurationError, SeawallError
from seawall.messaging.queue._errors import UnknownQueueError
from seawall.messaging.queue._open import (
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_VISIBILITY_TIMEOUT,
    open_queue,
)
from seawall.messaging.queue._queue import Queue
from seawall.messaging.queue._worker import MessageHandled, Worker

__all__ = ["load_handler", "queue_app", "worker_command"]

USAGE_ERROR = 2
"""Exit code for bad input (URL, queue name, handler, options), as click uses for usage errors."""
FAILURE = 1
"""Exit code when the engine fails or the user declines."""

_BODY_WIDTH = 80
_ERROR_WIDTH = 300
_LOG_LEVELS = ("debug", "info", "warning", "error")

queue_app = typer.Typer(
    name="queue",
    help="Inspect and repair a durable queue: stats, peek, dlq, redrive, purge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

UrlArgument = Annotated[
    str,
    typer.Argument(
        help="Engine URL: sqlite:///app.db, postgresql://user@host/db, redis://host:6379/0.",
        show_default=False,
    ),
]
QueueArgument = Annotated[str, typer.Argument(help="Queue name.", show_default=False)]


class CommandError(Exception):
    """A command cannot go on: ``message`` is printed as one line, then exit with ``code``."""

    def __init__(self, message: str, code: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(error: CommandError) -> NoReturn:
    typer.echo(f"seawall: error: {_one_line(str(error))}", err=True)
    raise typer.Exit(error.code)


@contextmanager
def _errors_as_exit_codes() -> Iterator[None]:
    """Turn a :class:`CommandError` or an engine failure into one line on stderr and an exit code."""
    try:
        yield
    except CommandError as error:
        _fail(error)
    except ConfigurationError as exc:
        _fail(CommandError(str(exc)))
    except SeawallError as exc:
        _fail(CommandError(f"{type(exc).__name__}: {exc}", FAILURE))


# -- shared pieces ---------------------------------------------------------------------------


def load_handler(target: str) -> Callable[[Any], Any]:
    """Import the handler ``module:function`` (``module:Class.method`` works too).

    The current directory is put on ``sys.path`` first, as Celery and uvicorn do,
    so ``--handler tasks:send`` finds ``./tasks.py``. Raises :class:`CommandError`
    naming the fix when the module or attribute cannot be found.
    """
    module_name, separator, attribute = target.partition(":")
    if not separator or not module_name or not attribute:
        raise CommandError(
            f"--handler {target!r} must look like 'module:function', "
            "e.g. --handler myapp.tasks:send_email"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise CommandError(
                f"--handler {target!r}: no module named {module_name!r}; check the spelling, "
                "and run from the folder that contains it or add that folder to PYTHONPATH"
            ) from exc
        raise CommandError(
            f"--handler {target!r}: importing {module_name!r} failed: {exc}; "
            "install the missing package or fix the import"
        ) from exc
    except Exception as exc:  # any error while the user's module runs
        raise CommandError(
            f"--handler {target!r}: importing {module_name!r} failed: "
            f"{type(exc).__name__}: {exc}; fix the module so it imports cleanly"
        ) from exc
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CommandError(
                f"--handler {target!r}: module {module_name!r} has no attribute {attribute!r}; "
                "check the name after the colon"
            ) from None
    if not callable(found):
        raise CommandError(
            f"--handler {target!r} is a {type(found).__name__}, not a function; "
            "point it at the function that handles one message"
        )
    handler: Callable[[Any], Any] = found
    return handler


def _connect(url: str) -> Engine:
    try:
        return connect(url)
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from exc


def _open(url: str, name: str, *, create: bool, fix: str, **options: Any) -> tuple[Engine, Queue]:
    """Open the engine and the queue; a missing database or queue is a usage error."""
    engine = _connect(url)
    path = getattr(engine, "path", None)
    if (
        engine.kind == "sqlite"
        and isinstance(path, str)
        and path != ":memory:"
        and not create
        and not Path(path).exists()
    ):
        engine.close()
        raise CommandError(
            f"SQLite database {path!r} (from {redact(url)!r}) does not exist; check the path{fix}"
        )
    try:
        queue = open_queue(engine, name, create=create, **options)
    except UnknownQueueError as exc:
        engine.close()
        known = ", ".join(repr(queue_name) for queue_name in exc.known[:20]) or "none"
        raise CommandError(
            f"queue {name!r} does not exist on {redact(url)} (known queues: {known}); "
            f"check the name{fix}"
        ) from exc
    except ConfigurationError as exc:
        engine.close()
        raise CommandError(str(exc)) from exc
    return engine, queue


@contextmanager
def _opened(url: str, name: str) -> Iterator[Queue]:
    """The existing queue ``name`` on ``url``, closed (with its engine) afterwards."""
    engine, queue = _open(url, name, create=False, fix="")
    try:
        yield queue
    finally:
        queue.close()
        engine.close()


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _when(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{timestamp:.3f}"


def _shown(value: Any, width: int = _BODY_WIDTH) -> Text:
    """A body or error as plain text (never rich markup), cut to ``width`` characters."""
    if value is None:
        return Text("")
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes | bytearray):
        text = repr(bytes(value))
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            text = repr(value)
    text = _one_line(text)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return Text(text)


# -- seawall worker --------------------------------------------------------------------------


def worker_command(
    url: UrlArgument,
    queue: QueueArgument,
    handler: Annotated[
        str,
        typer.Option(
            "--handler",
            help="The function called with each message body, as module:function.",
            show_default=False,
        ),
    ],
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=10_000, help="Handlers at once.")
    ] = 4,
    visibility_timeout: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Seconds a received message stays hidden; heartbeats renew it every third.",
        ),
    ] = DEFAULT_VISIBILITY_TIMEOUT,
    max_deliveries: Annotated[
        int,
        typer.Option(min=1, help="Deliveries before a failing message moves to the dead letters."),
    ] = DEFAULT_MAX_DELIVERIES,
    grace: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="On SIGTERM/SIGINT, seconds running handlers get before their messages are "
            "released. A second signal releases them at once.",
        ),
    ] = 25.0,
    transactional: Annotated[
        bool,
        typer.Option(
            help="Run each handler in a database transaction that also acks the message "
            "(SQLite, PostgreSQL): writes through current_transaction() happen exactly once.",
        ),
    ] = False,
    pass_message: Annotated[
        bool,
        typer.Option(
            help="Call the handler with the Message (id, headers, ...) instead of the body."
        ),
    ] = False,
    create: Annotated[
        bool,
        typer.Option(help="Declare the queue (and the SQLite file) if it does not exist yet."),
    ] = False,
    stop_when_empty: Annotated[
        bool,
        typer.Option(help="Exit once no message is ready and none is running (a batch run)."),
    ] = False,
    log_level: Annotated[
        str, typer.Option(help="Logging level: debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run a worker: call the handler for each message of QUEUE, acking on success.

    A failing message comes back later with exponential backoff and moves to the dead
    letters after --max-deliveries. SIGTERM or Ctrl-C stops gracefully: no new
    messages, running handlers finish (up to --grace seconds), the rest are released.
    """
    with _errors_as_exit_codes():
        level = log_level.lower()
        if level not in _LOG_LEVELS:
            raise CommandError(f"--log-level {log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
        logging.basicConfig(
            level=level.upper(),
            format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        function = load_handler(handler)
        engine, opened = _open(
            url,
            queue,
            create=create,
            fix=", or pass --create to declare it",
            visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries,
        )
        try:
            transaction = None
            if transactional:
                if not engine.supports_transactions:
                    raise CommandError(
                        f"--transactional needs an engine with transactions (SQLite, "
                        f"PostgreSQL); {engine.kind or type(engine).__name__} has none"
                    )
                transaction = engine.transaction
            worker = Worker(
                opened,
                function,
                concurrency=concurrency,
                visibility_timeout=visibility_timeout,
                grace=grace,
                transaction=transaction,
                pass_message=pass_message,
                name=f"worker:{queue}:{os.getpid()}",
            )
            if level == "debug":
                worker.events.subscribe(_log_handled, types=(MessageHandled,))
            typer.echo(
                f"seawall worker: consuming {queue!r} on {redact(url)} with {handler} "
                f"(concurrency {concurrency}, visibility timeout {visibility_timeout:g} s); "
                "SIGTERM or Ctrl-C stops gracefully",
                err=True,
            )
            if worker.handler_is_async:
                stats = asyncio.run(worker.arun(stop_when_empty=stop_when_empty))
            else:
                stats = worker.run(stop_when_empty=stop_when_empty)
            typer.echo(
                f"seawall worker: stopped: {stats.handled} handled, {stats.failed} failed, "
                f"{stats.released} released",
                err=True,
            )
        finally:
            opened.close()
            engine.close()


def _log_handled(event: MessageHandled) -> None:
    logging.getLogger("seawall.messaging.worker").debug(
        "handled message %s (delivery %d) in %.4f s",
        event.message_id,
        event.delivery_count,
        event.duration,
    )


# -- seawall queue ... -----------------------------------------------------------------------


@queue_app.command("stats")
def stats_command(url: UrlArgument, queue: QueueArgument) -> None:
    """How many messages are ready, in flight, delayed and dead."""
    with _errors_as_exit_codes(), _opened(url, queue) as opened:
        stats = opened.stats()
        table = Table(title=f"queue {queue!r} on {redact(url)}", title_justify="left")
        for column in ("ready", "in flight", "delayed", "dead letters", "total"):
            table.add_column(column, justify="right")
        table.add_row(
            str(stats.ready),
            str(stats.in_flight),
            str(stats.delayed),
            str(stats.dead),
            str(stats.total),
        )
        _console().print(table)


@queue_app.command("peek")
def peek_command(
    url: UrlArgument,
    queue: QueueArgument,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 10,
) -> None:
    """The next ready messages, in the order a receive would take them (nothing is claimed)."""
    with _errors_as_exit_codes(), _opened(url, queue) as opened:
        messages = opened.peek(limit)
        table = Table(
            title=f"next {len(messages)} ready message(s) of {queue!r}", title_justify="left"
        )
        table.add_column("id", no_wrap=True)
        table.add_column("priority", justify="right")
        table.add_column("deliveries", justify="right")
        table.add_column("enqueued (UTC)", no_wrap=True)
        table.add_column("body", overflow="fold")
        table.add_column("last error", overflow="fold")
        for message in messages:
            table.add_row(
                Text(message.id),
                str(message.priority),
                str(message.delivery_count),
                _when(message.enqueued_at),
                _shown(message.body),
                _shown(message.last_error, _ERROR_WIDTH),
            )
        _console().print(table)


@queue_app.command("dlq")
def dead_letters_command(
    url: UrlArgument,
    queue: QueueArgument,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 20,
) -> None:
    """The dead letters, oldest first, with why they died and their last error."""
    with _errors_as_exit_codes(), _opened(url, queue) as opened:
        letters = opened.dead_letters.list(limit)
        total = opened.dead_letters.count()
        table = Table(
            title=f"{len(letters)} of {total} dead letter(s) of {queue!r}", title_justify="left"
        )
        table.add_column("id", no_wrap=True)
        table.add_column("deliveries", justify="right")
        table.add_column("died (UTC)", no_wrap=True)
        table.add_column("reason", overflow="fold")
        table.add_column("last error", overflow="fold")
        table.add_column("body", overflow="fold")
        for letter in letters:
            table.add_row(
                Text(letter.id),
                str(letter.delivery_count),
                _when(letter.dead_at),
                _shown(letter.reason, _ERROR_WIDTH),
                _shown(letter.last_error, _ERROR_WIDTH),
                _shown(letter.body),
            )
        _console().print(table)


@queue_app.command("redrive")
def redrive_command(
    url: UrlArgument,
    queue: QueueArgument,
    message_ids: Annotated[
        list[str] | None,
        typer.Argument(help="Ids of the dead letters to send back.", show_default=False),
    ] = None,
    all_letters: Annotated[
        bool, typer.Option("--all", help="Send every dead letter back.")
    ] = False,
) -> None:
    """Send dead letters back to the queue (delivery count reset): the ids given, or --all."""
    with _errors_as_exit_codes():
        if all_letters == bool(message_ids):
            raise CommandError(
                "name the dead letters to redrive (their ids, see `seawall queue dlq`) "
                "or pass --all, not both"
            )
        with _opened(url, queue) as opened:
            if all_letters:
                moved = opened.dead_letters.redrive(None)
                typer.echo(f"redrove {moved} dead letter(s) to {queue!r}")
                return
            ids = list(message_ids or [])
            missing = [
                message_id for message_id in ids if opened.dead_letters.peek(message_id) is None
            ]
            moved = opened.dead_letters.redrive([i for i in ids if i not in missing])
            typer.echo(f"redrove {moved} dead letter(s) to {queue!r}")
            if missing:
                raise CommandError(
                    f"not in the dead letters of {queue!r}: {', '.join(missing)} "
                    "(see `seawall queue dlq` for their ids)",
                    FAILURE,
                )


@queue_app.command("purge")
def purge_command(
    url: UrlArgument,
    queue: QueueArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dead_letters: Annotated[
        bool,
        typer.Option("--dead-letters", help="Purge the dead letters instead of the queue."),
    ] = False,
) -> None:
    """Delete every message of the queue (ready, delayed, in flight), or its dead letters."""
    with _errors_as_exit_codes(), _opened(url, queue) as opened:
        stats = opened.stats()
        what = "dead letter(s)" if dead_letters else "message(s) (ready, delayed and in flight)"
        count = stats.dead if dead_letters else stats.total
        if not yes and not typer.confirm(
            f"Delete {count} {what} of queue {queue!r} on {redact(url)} for good?", default=False
        ):
            raise CommandError("aborted; nothing was deleted", FAILURE)
        deleted = opened.dead_letters.purge() if dead_letters else opened.purge()
        typer.echo(f"deleted {deleted} {what.split(' (')[0]} of {queue!r}")
