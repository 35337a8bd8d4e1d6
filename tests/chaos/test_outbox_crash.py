"""Kill -9 an outbox relay at random points, many times: every message still arrives, once.

The test process writes orders, each in a business transaction that also adds an
outbox message (keyed by customer), on SQLite or PostgreSQL. A relay runs in a
subprocess, publishing to a seawall SQLite queue without the queue's deduplication,
so any message published twice really reaches the consumer twice. The test SIGKILLs the relay right after it
logs a publish (so most kills land between publishing and marking the batch sent)
and starts a new one, many times, while a queue worker consumes through an inbox.

Afterwards every outbox message was published at least once and had exactly one
effect (the inbox ignored the duplicates), messages of each key took effect in the
order they were written, and nothing is left pending.

``SEAWALL_CHAOS_OUTBOX_KILLS`` (default 12) and ``SEAWALL_CHAOS_OUTBOX_MESSAGES``
(default 300) scale the run.
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
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

import seawall
from _engines import require_engine
from seawall.events import Event
from seawall.messaging.inbox import Inbox, InboxDuplicateIgnored, message_id_of
from seawall.messaging.outbox import Outbox
from seawall.messaging.queue import Worker, current_message

KILLS = int(os.environ.get("SEAWALL_CHAOS_OUTBOX_KILLS", "12"))
MESSAGES = int(os.environ.get("SEAWALL_CHAOS_OUTBOX_MESSAGES", "300"))
KEYS = 5
LEASE = 1.0
"""Short, so messages a killed relay held are claimed again within the run."""
QUEUE = "chaos"

RELAY = """
import os, random, sys, time

import seawall
from seawall.messaging.outbox import Outbox, QueuePublisher

url, queue_url, prefix, log_path = sys.argv[1:5]
outbox = Outbox(seawall.connect(url), table_prefix=prefix, create=False)
send = QueuePublisher(seawall.connect(queue_url).queue("chaos"), deduplicate=False)


def publish(message):
    send(message)
    line = f"{message.id} {os.getpid()}\\n".encode()
    descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
    time.sleep(random.uniform(0.0, 0.01))  # widens the window a kill lands in


relay = outbox.relay(publish, batch_size=8, lease=LEASE, poll_interval=0.05, retry=None)
relay.run()
""".replace("LEASE", repr(LEASE))


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` (real processes: real time); True if it held within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def published_by(log: Path, pid: int) -> int:
    if not log.exists():
        return 0
    suffix = f" {pid}"
    return sum(1 for line in log.read_text().splitlines() if line.endswith(suffix))


@pytest.mark.chaos
@pytest.mark.timeout(max(120, KILLS * 10 + MESSAGES // 5))
@pytest.mark.parametrize(
    "outbox_engine",
    [
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.engine("postgres")),
    ],
)
def test_kill_9_relay_publishes_everything_and_the_inbox_applies_it_once(
    tmp_path: Path, outbox_engine: str, request: pytest.FixtureRequest
) -> None:
    queue_url = f"sqlite:///{tmp_path / 'chaos.db'}"
    url = queue_url if outbox_engine == "sqlite" else require_engine("postgres")
    prefix = f"chaos{uuid.uuid4().hex[:8]}_"
    orders = f"{prefix}orders"
    mark = "?" if outbox_engine == "sqlite" else "%s"
    engine = seawall.connect(url)
    outbox = Outbox(engine, table_prefix=prefix)
    queue_engine = seawall.connect(queue_url)
    queue = queue_engine.queue(QUEUE, visibility_timeout=30.0)
    inbox = Inbox(queue_engine, "chaos-consumer")
    with engine.transaction() as tx:
        tx.execute(f"CREATE TABLE {orders} (n INTEGER PRIMARY KEY, customer TEXT NOT NULL)")

    def drop_tables() -> None:
        with engine.transaction() as tx:
            tx.execute(f"DROP TABLE IF EXISTS {orders}")
        outbox.store.drop_tables()
        outbox.close()
        engine.close()
        queue_engine.close()

    request.addfinalizer(drop_tables)
    with queue_engine.transaction() as tx:
        tx.execute(
            "CREATE TABLE effects (seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL, "
            "n INTEGER NOT NULL, customer TEXT NOT NULL)"
        )
    script = tmp_path / "chaos_relay.py"
    script.write_text(RELAY)
    publish_log = tmp_path / "published.log"
    logs: list[IO[str]] = []

    def start_relay() -> subprocess.Popen[str]:
        log = (tmp_path / f"relay-{len(logs)}.log").open("w")
        logs.append(log)
        return subprocess.Popen(
            [sys.executable, str(script), url, queue_url, prefix, str(publish_log)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )

    produced: dict[str, tuple[int, str]] = {}
    producer_done = threading.Event()

    def produce() -> None:
        writer = seawall.connect(url)
        writer_outbox = Outbox(writer, table_prefix=prefix, create=False)
        rng = random.Random(1)
        number = 0
        while number < MESSAGES:
            chunk = min(rng.randint(1, 6), MESSAGES - number)
            with writer.transaction() as tx:
                for n in range(number, number + chunk):
                    customer = f"c{n % KEYS}"
                    tx.execute(f"INSERT INTO {orders} VALUES ({mark}, {mark})", [n, customer])
                    message_id = writer_outbox.add(
                        "orders", {"n": n, "customer": customer}, key=customer, transaction=tx
                    )
                    produced[message_id] = (n, customer)
            number += chunk
            time.sleep(rng.uniform(0.005, 0.03))
        writer.close()
        producer_done.set()

    def apply(body: dict[str, Any], tx: Any) -> None:
        message = current_message()
        assert message is not None
        tx.execute(
            "INSERT INTO effects (message_id, n, customer) VALUES (?, ?, ?)",
            [message_id_of(message), body["n"], body["customer"]],
        )

    duplicates: list[Event] = []
    inbox.events.subscribe(duplicates.append, types=(InboxDuplicateIgnored,))
    worker = Worker(
        queue,
        inbox.handler(apply),
        concurrency=1,
        transaction=queue_engine.transaction,
    )
    consumer = threading.Thread(
        target=lambda: worker.run(handle_signals=False), name="chaos-consumer", daemon=True
    )
    producer = threading.Thread(target=produce, name="chaos-producer", daemon=True)
    consumer.start()
    producer.start()

    rng = random.Random(2)
    kills = 0
    relay = start_relay()
    try:
        while kills < KILLS:
            pid = relay.pid
            goal = published_by(publish_log, pid) + rng.randint(1, 12)
            reached = wait_until(
                lambda pid=pid, goal=goal: published_by(publish_log, pid) >= goal,  # type: ignore[misc]
                10.0,
            )
            if not reached and producer_done.is_set() and outbox.stats().pending == 0:
                break  # nothing left to publish: more kills would test nothing
            os.kill(relay.pid, signal.SIGKILL)
            relay.wait(timeout=30)
            kills += 1
            relay = start_relay()
        assert producer_done.wait(60.0), "the producer did not finish"
        assert wait_until(lambda: outbox.stats().pending == 0, 60.0), outbox.stats()
    finally:
        relay.kill()
        relay.wait(timeout=30)
        for log in logs:
            log.close()
    try:
        assert wait_until(lambda: queue.stats().total == 0, 60.0), queue.stats()
    finally:
        worker.stop()
        consumer.join(30.0)

    effects = queue_engine.connection.execute(  # type: ignore[attr-defined]
        "SELECT message_id, n, customer FROM effects ORDER BY seq"
    ).fetchall()
    counts = collections.Counter(message_id for message_id, _, _ in effects)
    assert set(counts) == set(produced), "a message was lost"
    assert max(counts.values()) == 1, "a message took effect twice"
    for message_id, n, customer in effects:
        assert produced[message_id] == (n, customer)
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for _, n, customer in effects:
        by_key[customer].append(n)
    for customer, numbers in by_key.items():
        assert numbers == sorted(numbers), f"key {customer} took effect out of order"
    assert inbox.count() == len(produced)
    assert outbox.dead() == []
    if kills >= 5:
        # Kills between publishing and marking sent made the relay publish again.
        assert duplicates, "no kill landed before a batch was marked sent"
    print(  # shown with -s: how hard the run was
        f"\n{outbox_engine}: {kills} kills, {len(produced)} messages, "
        f"{len(duplicates)} duplicate deliveries ignored"
    )
