"""Kill -9 queue workers mid-handler while producers run; nothing is lost or done twice.

Two ``seawall worker`` processes consume a SQLite queue with ``--transactional``:
each handler writes its effect (a row keyed by message id) through the transaction
that also acknowledges the message. A producer thread keeps sending while the test
repeatedly SIGKILLs a worker right after it starts a handler, and starts a new one.

Afterwards every sent message has exactly one effect row and is gone from the queue,
or sits in the dead letters with no effect; and each interrupted delivery was given
to a handler again only after the visibility deadline the store had recorded for it.

With a 1 s visibility timeout and eight handler threads queueing for SQLite's write
lock, a live worker's handler (or heartbeat) can wait past the deadline, so another
worker takes the message: its late ack is then stale and its transaction rolls back.
That is at-least-once delivery working; the exactly-once check covers it.

``SEAWALL_CHAOS_MESSAGES`` (default 150) and ``SEAWALL_CHAOS_KILLS`` (default
``max(6, messages // 25)``) scale the run.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

import seawall

MESSAGES = int(os.environ.get("SEAWALL_CHAOS_MESSAGES", "150"))
KILLS = int(os.environ.get("SEAWALL_CHAOS_KILLS", str(max(6, MESSAGES // 25))))
VISIBILITY = 1.0
"""Short, so redeliveries after a kill happen within the run."""
QUEUE = "chaos"

HANDLERS = """
import json, os, random, time

from seawall.messaging.queue import current_message, current_transaction
from seawall.messaging.queue.sqlite import queue_table


def handle(body):
    message, transaction = current_message(), current_transaction()
    # The delivery's visibility deadline as the store recorded it, read in the transaction
    # (which holds the write lock), or -1 if the row already belongs to a later delivery
    # (this handler waited for the lock past its deadline) or is gone.
    row = transaction.execute(
        f"SELECT visible_at, delivery_count FROM {queue_table('chaos')} WHERE id = ?",
        [int(message.id)],
    ).fetchone()
    deadline = row[0] if row is not None and row[1] == message.delivery_count else -1.0
    line = f"{message.id} {message.delivery_count} {os.getpid()} {time.time():.6f} {deadline:.6f}\\n"
    descriptor = os.open(os.environ["CHAOS_ATTEMPTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
    transaction.execute(
        "INSERT INTO chaos_effects (message_id, body, pid) VALUES (?, ?, ?)",
        [message.id, json.dumps(body), os.getpid()],
    )
    time.sleep(random.uniform(0.01, 0.04))  # the window a kill lands in
"""

WRAPPER = (
    "import typer; from seawall.messaging.queue._cli import queue_app, worker_command; "
    "app = typer.Typer(pretty_exceptions_enable=False); "
    "app.command('worker')(worker_command); app.add_typer(queue_app, name='queue'); app()"
)


def seawall_command() -> list[str]:
    """``python -m seawall`` once it mounts the worker command; until then a two-line wrapper."""
    from seawall.cli import app

    if any(command.name == "worker" for command in app.registered_commands):
        return [sys.executable, "-m", "seawall"]
    return [sys.executable, "-c", WRAPPER]


class Attempt:
    """One handler start, as logged by the handler: ``id delivery pid time deadline``."""

    def __init__(self, line: str) -> None:
        message_id, delivery, pid, started, deadline = line.split()
        self.message_id = message_id
        self.delivery = int(delivery)
        self.pid = int(pid)
        self.started = float(started)
        self.deadline = float(deadline)


def read_attempts(path: Path) -> list[Attempt]:
    if not path.exists():
        return []
    return [Attempt(line) for line in path.read_text().splitlines() if line.count(" ") == 4]


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` (real processes: real time); True if it held within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.mark.chaos
@pytest.mark.timeout(max(120, MESSAGES // 2 + KILLS * 10))
def test_kill_9_mid_handler_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chaos.db'}"
    engine = seawall.connect(url)
    queue = engine.queue(QUEUE)
    engine.connection.execute(  # type: ignore[attr-defined]
        "CREATE TABLE chaos_effects (message_id TEXT NOT NULL, body TEXT NOT NULL, "
        "pid INTEGER NOT NULL)"
    )
    (tmp_path / "chaos_handlers.py").write_text(HANDLERS)
    attempts_log = tmp_path / "attempts.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    env["CHAOS_ATTEMPTS"] = str(attempts_log)
    logs: list[IO[str]] = []

    def start_worker() -> subprocess.Popen[str]:
        log = (tmp_path / f"worker-{len(logs)}.log").open("w")
        logs.append(log)
        return subprocess.Popen(
            [
                *seawall_command(),
                "worker",
                url,
                QUEUE,
                "--handler",
                "chaos_handlers:handle",
                "--transactional",
                "--concurrency",
                "4",
                "--visibility-timeout",
                str(VISIBILITY),
                "--max-deliveries",
                "100",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )

    sent: list[str] = []
    produced = threading.Event()

    def produce() -> None:
        producer = seawall.connect(url).queue(QUEUE)
        rng = random.Random(1)
        number = 0
        while number < MESSAGES:
            chunk = min(rng.randint(1, 5), MESSAGES - number)
            bodies = [{"n": number + offset} for offset in range(chunk)]
            sent.extend(producer.send_many(bodies))
            number += chunk
            time.sleep(rng.uniform(0.05, 0.25))
        producer.close()
        produced.set()

    producer_thread = threading.Thread(target=produce, name="chaos-producer", daemon=True)
    producer_thread.start()

    def attempts_by(pid: int) -> int:
        return sum(1 for attempt in read_attempts(attempts_log) if attempt.pid == pid)

    rng = random.Random(2)
    killed: dict[int, float] = {}
    workers = [start_worker(), start_worker()]
    try:
        for _ in range(KILLS):
            victim = workers.pop(rng.randrange(len(workers)))
            target = attempts_by(victim.pid) + rng.randint(1, 6)
            wait_until(  # a handler just started: the kill lands inside it (or soon after)
                lambda pid=victim.pid, goal=target: attempts_by(pid) >= goal,  # type: ignore[misc]
                timeout=10.0,
            )
            killed[victim.pid] = time.time()
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            workers.append(start_worker())

        assert produced.wait(120), "the producer did not finish"
        assert wait_until(lambda: queue.stats().total == 0, timeout=60.0), (
            f"messages left in the queue: {queue.stats()}"
        )
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=60) for worker in workers]
        for log in logs:
            log.close()
    producer_thread.join(timeout=30)

    assert codes == [0, 0], "a worker did not stop gracefully on SIGTERM"
    assert len(sent) == len(set(sent)) == MESSAGES

    # Exactly once: one committed effect per message, or none and a dead letter.
    effects = collections.Counter(
        row[0]
        for row in engine.connection.execute("SELECT message_id FROM chaos_effects")  # type: ignore[attr-defined]
    )
    duplicated = {message_id: count for message_id, count in effects.items() if count > 1}
    assert duplicated == {}, "effects committed more than once"
    dead = {letter.id for letter in queue.dead_letters.list(10_000)}
    assert not (set(effects) & dead), "a dead letter's effect was committed"
    assert set(effects) | dead == set(sent), "messages lost"
    assert queue.stats().total == 0

    # Interrupted deliveries came back, and never before their visibility deadline.
    attempts = read_attempts(attempts_log)
    by_delivery = {(attempt.message_id, attempt.delivery): attempt for attempt in attempts}
    interrupted = [
        (attempt, by_delivery[(attempt.message_id, later)])
        for attempt in attempts
        for later in range(attempt.delivery + 1, attempt.delivery + 100)
        if (attempt.message_id, later) in by_delivery
        and all(
            (attempt.message_id, d) not in by_delivery for d in range(attempt.delivery + 1, later)
        )
    ]
    assert interrupted, "no kill landed inside a handler: nothing was redelivered"
    checked = [(first, second) for first, second in interrupted if first.deadline > 0]
    assert checked, "no interrupted delivery recorded its deadline"
    early = [
        (first.message_id, round(second.started - first.deadline, 3))
        for first, second in checked
        if second.started < first.deadline - 0.001
    ]
    assert early == [], "redelivered before the visibility deadline"
    from_killed = sum(1 for first, _ in interrupted if first.pid in killed)
    assert from_killed >= 1
    queue.close()
    engine.close()
