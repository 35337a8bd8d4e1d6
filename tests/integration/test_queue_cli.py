"""``seawall worker`` and ``seawall queue ...`` as a user runs them: real processes, a SQLite file.

Until ``seawall.cli`` mounts the queue commands, the tests run them through a
two-line typer app built from ``seawall.messaging.queue._cli``; once mounted, they
run ``python -m seawall`` itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import seawall
from seawall.messaging.queue import Queue
from seawall.messaging.queue._cli import queue_app, worker_command

HANDLERS = Path(__file__).parent
"""Where ``_worker_handlers.py`` lives (put on the worker's PYTHONPATH)."""

WRAPPER = (
    "import typer; from seawall.messaging.queue._cli import queue_app, worker_command; "
    "app = typer.Typer(pretty_exceptions_enable=False); "
    "app.command('worker')(worker_command); app.add_typer(queue_app, name='queue'); app()"
)


def _mounted() -> bool:
    from seawall.cli import app

    return any(command.name == "worker" for command in app.registered_commands) and any(
        group.name == "queue" for group in app.registered_groups
    )


def seawall_command() -> list[str]:
    """The argv prefix that runs the ``seawall`` command in a subprocess."""
    if _mounted():
        return [sys.executable, "-m", "seawall"]
    return [sys.executable, "-c", WRAPPER]


def cli_app() -> typer.Typer:
    """The typer app to drive with CliRunner: ``seawall``'s own once the commands are mounted."""
    if _mounted():
        from seawall.cli import app

        return app
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("worker")(worker_command)
    app.add_typer(queue_app, name="queue")
    return app


runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(cli_app(), list(args), input=input, env={"COLUMNS": "250"})


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds (real processes: real time), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str, Queue]]:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    queue = seawall.connect(url).queue("emails")
    yield url, queue
    queue.close()


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    return tmp_path / "effects.jsonl"


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def start_worker(url: str, effects: Path, *options: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HANDLERS), env.get("PYTHONPATH")]))
    env["SEAWALL_TEST_EFFECTS"] = str(effects)
    return subprocess.Popen(
        [*seawall_command(), "worker", url, "emails", *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        raise AssertionError(f"the worker did not exit: {stderr[-3000:]}") from None
    return process.returncode, stderr


# -- seawall worker ---------------------------------------------------------------------------


def test_a_worker_handles_everything_and_exits_0_on_sigterm(
    database: tuple[str, Queue], effects: Path
) -> None:
    url, queue = database
    ids = queue.send_many([{"n": n} for n in range(20)])
    worker = start_worker(url, effects, "--handler", "_worker_handlers:record", "-c", "4")
    try:
        wait_until(lambda: len(_records(effects)) >= 20)
        queue.send({"n": 20})  # sent while the worker runs
        ids.append(queue.send({"n": 21}))
        wait_until(lambda: queue.stats().total == 0 and len(_records(effects)) >= 22)
    finally:
        worker.send_signal(signal.SIGTERM)
    code, stderr = finish(worker)

    assert code == 0, stderr[-3000:]
    assert sorted(record["body"]["n"] for record in _records(effects)) == list(range(22))
    assert set(ids) <= {record["id"] for record in _records(effects)}
    assert "stopped: 22 handled, 0 failed, 0 released" in stderr


def test_sigterm_lets_a_running_handler_finish_before_exiting(
    database: tuple[str, Queue], effects: Path
) -> None:
    url, queue = database
    queue.send({"seconds": 1.0})
    worker = start_worker(url, effects, "--handler", "_worker_handlers:slow")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(worker.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    wait_until(lambda: any(record["event"] == "started" for record in _records(effects)))
    worker.send_signal(signal.SIGTERM)
    wait_until(lambda: any("no longer receiving" in line for line in lines))
    queue.send({"seconds": 0.0})  # after the worker stopped receiving: must stay queued
    code = worker.wait(timeout=30)
    reader.join(timeout=30)
    worker.stderr.close()  # type: ignore[union-attr]
    stderr = "".join(lines)

    assert code == 0, stderr[-3000:]
    assert [record["event"] for record in _records(effects)] == ["started", "finished"]
    assert [message.body for message in queue.peek()] == [{"seconds": 0.0}]
    assert queue.stats().in_flight == 0
    assert "stopped: 1 handled, 0 failed, 0 released" in stderr


def test_an_async_handler_runs_under_asyncio(database: tuple[str, Queue], effects: Path) -> None:
    url, queue = database
    queue.send_many(["a", "b", "c"])
    worker = start_worker(
        url, effects, "--handler", "_worker_handlers:arecord", "--stop-when-empty"
    )
    code, stderr = finish(worker)

    assert code == 0, stderr[-3000:]
    assert sorted(record["body"] for record in _records(effects)) == ["a", "b", "c"]
    assert queue.stats().total == 0


def test_a_failing_handler_s_messages_end_in_the_dead_letters(
    database: tuple[str, Queue], effects: Path
) -> None:
    url, queue = database
    queue.send("poison")
    worker = start_worker(
        url,
        effects,
        "--handler",
        "_worker_handlers:fail",
        "--max-deliveries",
        "1",
        "--stop-when-empty",
    )
    code, stderr = finish(worker)

    assert code == 0, stderr[-3000:]
    [letter] = queue.dead_letters.list()
    assert letter.last_error == "ValueError: cannot handle 'poison'"
    result = invoke("queue", "dlq", url, "emails")
    assert result.exit_code == 0
    assert "ValueError: cannot handle 'poison'" in result.output
    assert letter.id in result.output


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        ("_worker_handlers:missing", "has no attribute 'missing'"),
        ("no_such_module:handle", "no module named 'no_such_module'"),
        ("_worker_handlers", "must look like 'module:function'"),
    ],
)
def test_a_handler_that_cannot_be_imported_exits_2_with_one_line(
    database: tuple[str, Queue], effects: Path, handler: str, expected: str
) -> None:
    url, _ = database
    code, stderr = finish(start_worker(url, effects, "--handler", handler))

    assert code == 2
    assert stderr.count("\n") == 1
    assert stderr.startswith("seawall: error: ")
    assert expected in stderr


def test_an_unknown_queue_exits_2_and_names_the_fix(tmp_path: Path, effects: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    seawall.connect(url).queue("orders")
    code, stderr = finish(start_worker(url, effects, "--handler", "_worker_handlers:record"))

    assert code == 2
    assert stderr.count("\n") == 1
    assert "queue 'emails' does not exist" in stderr
    assert "known queues: 'orders'" in stderr
    assert "--create" in stderr


# -- seawall queue ... (CliRunner) ------------------------------------------------------------


def test_stats_shows_each_state(database: tuple[str, Queue]) -> None:
    url, queue = database
    queue.send_many(["a", "b"])
    queue.send("later", delay=3600)
    queue.receive()

    result = invoke("queue", "stats", url, "emails")

    assert result.exit_code == 0, result.output
    header, values = [line for line in result.output.splitlines() if "│" in line or "┃" in line]
    assert [cell.strip() for cell in header.strip("┃ ").split("┃")] == [
        "ready",
        "in flight",
        "delayed",
        "dead letters",
        "total",
    ]
    assert [cell.strip() for cell in values.strip("│ ").split("│")] == ["1", "1", "1", "0", "3"]


def test_peek_lists_ready_messages_without_claiming_them(database: tuple[str, Queue]) -> None:
    url, queue = database
    first = queue.send({"to": "a@example.com"})
    queue.send({"to": "[bold]b@example.com[/bold]"}, priority=9)

    result = invoke("queue", "peek", url, "emails", "--limit", "5")

    assert result.exit_code == 0, result.output
    assert '{"to": "[bold]b@example.com[/bold]"}' in result.output  # bodies are not markup
    assert result.output.index("[bold]") < result.output.index("a@example.com")  # priority first
    assert first in result.output
    assert queue.stats().ready == 2


def test_redrive_one_or_all_and_report_unknown_ids(database: tuple[str, Queue]) -> None:
    url, queue = database
    ids = queue.send_many(["a", "b", "c"])
    for message in queue.receive(3):
        queue.store.dead_letter(message.id, message.token, "test")

    one = invoke("queue", "redrive", url, "emails", ids[0])
    assert (one.exit_code, one.output.strip()) == (0, "redrove 1 dead letter(s) to 'emails'")
    assert queue.dead_letters.count() == 2

    unknown = invoke("queue", "redrive", url, "emails", ids[1], "no-such-id")
    assert unknown.exit_code == 1
    assert "not in the dead letters of 'emails': no-such-id" in unknown.output

    rest = invoke("queue", "redrive", url, "emails", "--all")
    assert rest.exit_code == 0
    assert "redrove 1 dead letter(s)" in rest.output
    assert queue.stats().ready == 3

    neither = invoke("queue", "redrive", url, "emails")
    assert neither.exit_code == 2
    assert "or pass --all" in neither.output


def test_purge_asks_first_unless_yes(database: tuple[str, Queue]) -> None:
    url, queue = database
    queue.send_many(["a", "b"])

    declined = invoke("queue", "purge", url, "emails", input="n\n")
    assert declined.exit_code == 1
    assert "Delete 2 message(s)" in declined.output
    assert "nothing was deleted" in declined.output
    assert queue.stats().ready == 2

    confirmed = invoke("queue", "purge", url, "emails", input="y\n")
    assert confirmed.exit_code == 0
    assert "deleted 2 message(s)" in confirmed.output
    assert queue.stats().total == 0

    queue.send("c")
    for message in queue.receive():
        queue.store.dead_letter(message.id, message.token, "test")
    dead = invoke("queue", "purge", url, "emails", "--dead-letters", "--yes")
    assert dead.exit_code == 0
    assert "deleted 1 dead letter(s)" in dead.output
    assert queue.dead_letters.count() == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("bogus://x", "unknown engine scheme 'bogus'"),
        ("sqlite://relative.db", "needs three slashes"),
        ("shop.db", "has no scheme"),
    ],
)
def test_a_malformed_url_exits_2_with_one_line(url: str, expected: str) -> None:
    result = invoke("queue", "stats", url, "emails")

    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert expected in result.output


def test_an_unknown_queue_or_database_exits_2(database: tuple[str, Queue], tmp_path: Path) -> None:
    url, _ = database
    unknown = invoke("queue", "peek", url, "emailz")
    assert unknown.exit_code == 2
    assert "queue 'emailz' does not exist" in unknown.output
    assert "known queues: 'emails'" in unknown.output

    missing_file = f"sqlite:///{tmp_path / 'typo.db'}"
    missing = invoke("queue", "stats", missing_file, "emails")
    assert missing.exit_code == 2
    assert "does not exist; check the path" in missing.output
    assert not (tmp_path / "typo.db").exists()


def test_the_commands_work_from_a_subprocess(database: tuple[str, Queue]) -> None:
    url, queue = database
    queue.send("x")
    completed = subprocess.run(
        [*seawall_command(), "queue", "stats", url, "emails"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "ready" in completed.stdout
