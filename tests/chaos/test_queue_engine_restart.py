"""Restart PostgreSQL or Redis during a run: producers and workers reconnect, nothing is lost.

Each case starts a server of its own (a private PostgreSQL cluster, or a private
``redis-server`` with ``appendfsync always``), two producer processes and two
``seawall worker`` processes on one queue, and restarts the server a few times while
they run, each time down for a second (PostgreSQL: ``pg_ctl stop -m fast``; Redis:
SIGTERM, then SIGKILL, which loses nothing Redis acknowledged since every write is
fsynced before the reply).

A producer sends numbered messages one at a time; a send that fails is sent again
until the store acknowledges it, and only then does the producer log the message id.
A worker's handler logs every delivery it handles (id and delivery count). Afterwards:

* every acknowledged send was handled;
* a message handled more than once was handled at distinct delivery counts (the store
  recorded each redelivery: a restart between the handler and its ack, or a lost
  ack, brings the message back after its visibility timeout, never silently);
* the queue drains (nothing ready, in flight, delayed or dead), and the workers stop
  gracefully on SIGTERM.

A send whose outcome was unknown (the connection dropped after the server committed
it) may store the message twice under two ids; both are then handled, which
at-least-once allows. ``SEAWALL_CHAOS_SCALE`` (default 1) multiplies the messages
and the restarts.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

import seawall
from _engines import REQUIRED

SCALE = float(os.environ.get("SEAWALL_CHAOS_SCALE", "1"))
MESSAGES = max(20, int(150 * SCALE))
"""Messages per producer."""
PRODUCERS = 2
RESTARTS = max(2, int(2 * SCALE))
VISIBILITY = 2.0
"""Seconds before a delivery whose ack was lost comes back."""
DOWNTIME = 1.0
"""Seconds the server stays down at each restart."""
PACE = 0.01
"""Seconds a producer pauses between sends, so the run spans the restarts."""

PRODUCER = """
import os, sys, time

import seawall

url, queue_name, producer, count, log_path = sys.argv[1:6]
queue = seawall.connect(url).queue(queue_name, create=False)
failures = 0
with open(log_path, "a", buffering=1) as log:
    for number in range(int(count)):
        while True:
            try:
                message_id = queue.send({"producer": producer, "n": number})
            except Exception as error:  # the server is restarting: send again
                failures += 1
                log.write(f"failed {type(error).__name__}\\n")
                time.sleep(0.05)
                continue
            log.write(f"sent {number} {message_id}\\n")
            break
        time.sleep(float(os.environ.get("CHAOS_PACE", "0.01")))
    log.write(f"done {failures}\\n")
"""

HANDLERS = """
import os


def handle(message):
    line = f"{message.id} {message.delivery_count} {os.getpid()}\\n"
    descriptor = os.open(os.environ["CHAOS_HANDLED"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
"""

WRAPPER = (
    "import typer; from seawall.messaging.queue._cli import queue_app, worker_command; "
    "app = typer.Typer(pretty_exceptions_enable=False); "
    "app.command('worker')(worker_command); app.add_typer(queue_app, name='queue'); app()"
)


def seawall_command() -> list[str]:
    """``python -m seawall`` once it mounts the worker command; until then a small wrapper."""
    from seawall.cli import app

    if any(command.name == "worker" for command in app.registered_commands):
        return [sys.executable, "-m", "seawall"]
    return [sys.executable, "-c", WRAPPER]


def _unavailable(message: str) -> None:
    if any(name in REQUIRED for name in ("postgres", "redis")):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class Server:
    """The private server of one case: its URL, and how to restart it (the n-th time)."""

    def __init__(self, url: str, restart: Callable[[int], None], name: str) -> None:
        self.url = url
        self.restart = restart
        self.name = name


@contextlib.contextmanager
def private_postgres() -> Iterator[Server]:
    from _pg_cluster import ClusterUnavailableError, PrivateCluster, pg_bin_dir

    if pg_bin_dir() is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = PrivateCluster({"max_connections": "60"})
    try:
        cluster.start()
    except ClusterUnavailableError as error:
        _unavailable(str(error))
    try:
        url = cluster.create_database("chaos")

        def restart(_: int) -> None:
            cluster.halt("fast")
            time.sleep(DOWNTIME)
            cluster.start()

        yield Server(url, restart, "postgres")
    finally:
        cluster.stop()


@contextlib.contextmanager
def private_redis() -> Iterator[Server]:
    from _redis_private import PrivateRedis, RedisUnavailableError, redis_server_binary

    if redis_server_binary() is None:
        _unavailable("redis-server is not installed")
    server = PrivateRedis()
    try:
        server.start()
    except RedisUnavailableError as error:
        _unavailable(str(error))
    try:

        def restart(number: int) -> None:
            server.halt(kill=number % 2 == 1)
            time.sleep(DOWNTIME)
            server.start()

        yield Server(server.url(), restart, "redis")
    finally:
        server.stop()


SERVERS = {"postgres": private_postgres, "redis": private_redis}


def wait_until(condition: Callable[[], bool], timeout: float, pause: float = 0.02) -> bool:
    """Poll ``condition`` (real processes: real time); True if it held within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
    return True


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def handled_deliveries(path: Path) -> dict[str, list[int]]:
    """Message id -> the delivery counts it was handled at, from the handlers' log."""
    deliveries: dict[str, list[int]] = collections.defaultdict(list)
    for line in lines(path):
        parts = line.split()
        if len(parts) == 3:
            deliveries[parts[0]].append(int(parts[1]))
    return deliveries


def retrying(action: Callable[[], object], timeout: float = 30.0) -> object:
    """Run ``action`` until the (restarting) server lets it succeed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except seawall.errors.EngineUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.chaos
@pytest.mark.timeout(max(120, int(60 * SCALE) + 60))
@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_server_restart_mid_run_loses_nothing_acknowledged(kind: str, tmp_path: Path) -> None:
    with SERVERS[kind]() as server:
        run_against(server, tmp_path)


def run_against(server: Server, tmp_path: Path) -> None:
    queue_name = f"chaos-restart-{uuid.uuid4().hex[:8]}"
    engine = seawall.connect(server.url)
    queue = engine.queue(queue_name)
    (tmp_path / "restart_handlers.py").write_text(HANDLERS)
    (tmp_path / "producer.py").write_text(PRODUCER)
    handled_log = tmp_path / "handled.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    env["CHAOS_HANDLED"] = str(handled_log)
    env["CHAOS_PACE"] = str(PACE)
    logs: list[IO[str]] = []

    def spawn(arguments: list[str], name: str) -> subprocess.Popen[str]:
        log = (tmp_path / f"{name}.err").open("w")
        logs.append(log)
        return subprocess.Popen(
            arguments, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True
        )

    producer_logs = [tmp_path / f"producer-{number}.log" for number in range(PRODUCERS)]
    producers = []
    for number in range(PRODUCERS):
        arguments = [sys.executable, str(tmp_path / "producer.py"), server.url, queue_name]
        arguments += [str(number), str(MESSAGES), str(producer_logs[number])]
        producers.append(spawn(arguments, f"producer-{number}"))
    worker_arguments = [
        *seawall_command(), "worker", server.url, queue_name,
        "--handler", "restart_handlers:handle", "--pass-message",
        "--concurrency", "4", "--visibility-timeout", str(VISIBILITY),
        "--max-deliveries", "1000", "--grace", "10", "--log-level", "error",
    ]  # fmt: skip
    workers = [spawn(worker_arguments, f"worker-{number}") for number in range(2)]

    def sent_count() -> int:
        return sum(1 for path in producer_logs for line in lines(path) if line.startswith("sent"))

    restarted_mid_run = 0
    try:
        total = PRODUCERS * MESSAGES
        for number in range(RESTARTS):
            # Restart while producers still send and workers still handle.
            goal = total * (number + 1) // (RESTARTS + 1)
            assert wait_until(lambda goal=goal: sent_count() >= goal, timeout=60.0), (  # type: ignore[misc]
                f"producers stalled at {sent_count()} of {total} sends"
            )
            if sent_count() < total and len(lines(handled_log)) > 0:
                restarted_mid_run += 1
            server.restart(number)
        for producer in producers:
            assert producer.wait(timeout=60) == 0, "a producer failed"

        def drained() -> bool:
            try:
                return queue.stats().total == 0
            except seawall.errors.EngineUnavailableError:
                return False

        assert wait_until(drained, timeout=30.0 + 2 * VISIBILITY, pause=0.1), (
            f"the queue did not drain: {retrying(queue.stats)}"
        )
    finally:
        for process in workers + producers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=60) for worker in workers]
        for producer in producers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                producer.wait(timeout=10)
        for log in logs:
            log.close()

    errors = {path.name: path.read_text()[-2000:] for path in tmp_path.glob("*.err")}
    assert codes == [0, 0], f"a worker did not stop gracefully on SIGTERM: {errors}"
    assert restarted_mid_run >= 1, "no restart landed in the middle of the run"

    acknowledged: dict[str, tuple[int, int]] = {}
    failed_sends = 0
    for producer, path in enumerate(producer_logs):
        numbers = []
        for line in lines(path):
            parts = line.split()
            if parts[0] == "sent":
                numbers.append(int(parts[1]))
                acknowledged[parts[2]] = (producer, int(parts[1]))
            elif parts[0] == "failed":
                failed_sends += 1
        assert numbers == list(range(MESSAGES)), f"producer {producer} did not finish its sends"
    assert len(acknowledged) == PRODUCERS * MESSAGES, "two acknowledged sends share an id"

    deliveries = handled_deliveries(handled_log)
    lost = sorted(set(acknowledged) - set(deliveries))
    assert lost == [], f"acknowledged sends never handled: {lost[:20]}"
    unrecorded = {
        message_id: counts
        for message_id, counts in deliveries.items()
        if len(counts) != len(set(counts))
    }
    assert unrecorded == {}, "handled twice at the same delivery count (redelivery unrecorded)"
    stats = retrying(queue.stats)
    assert stats.total == 0, stats  # type: ignore[attr-defined]
    assert stats.dead == 0, stats  # type: ignore[attr-defined]

    redelivered = sum(1 for counts in deliveries.values() if len(counts) > 1)
    print(
        f"{server.name}: {len(acknowledged)} acknowledged sends, {failed_sends} failed sends "
        f"retried, {len(deliveries)} messages handled, {redelivered} redelivered, "
        f"{RESTARTS} restarts"
    )
    retrying(queue.close)
    engine.close()
