"""Kill -9 a projection runner at random moments, many times: the read model stays exact.

A writer thread keeps appending deposits while the test starts a real runner process
(``ProjectionRunner.run()`` over a transactional projection), lets it work for a
random moment and SIGKILLs it, again and again. The projection is deliberately not
idempotent: it adds each amount to a running total and logs every position it
applies, so an event applied twice (or skipped) would show. A final runner process
catches up; then the read model must equal one computed from scratch in this process
(a rebuild of the same projection into fresh tables), every event must be logged
exactly once, and the checkpoint must sit on the last event.

SQLite (a file) always; PostgreSQL when it answers. ``SEAWALL_CHAOS_PROJECTION_KILLS``
(default 12) sets the number of kills per engine.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.engines import Engine
from seawall.eventsourcing import EventStore, ProjectionRunner, ReadModel, open_event_store

pytestmark = pytest.mark.chaos

KILLS = int(os.environ.get("SEAWALL_CHAOS_PROJECTION_KILLS", "12"))
INITIAL_EVENTS = 600
STREAMS = 25
BATCH = 10
ROOT = Path(__file__).resolve().parents[2]

PROJECTION = r'''
import random, time
from seawall.eventsourcing import Projection, handles


class Totals(Projection):
    """Adds every deposit to its stream's total and logs the position (not idempotent)."""

    def __init__(self, name, table, placeholder, slow=False):
        self.name = name
        self.totals = f"{table}_totals"
        self.log = f"{table}_log"
        self.p = placeholder
        self.slow = slow

    def setup(self, tx):
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {self.totals}"
            " (stream TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)"
        )
        tx.execute(f"CREATE TABLE IF NOT EXISTS {self.log} (position BIGINT NOT NULL)")

    @handles("Deposited")
    def _deposited(self, event, tx):
        p = self.p
        tx.execute(
            f"INSERT INTO {self.totals} (stream, total, events) VALUES ({p}, {p}, 1)"
            f" ON CONFLICT (stream) DO UPDATE SET total = {self.totals}.total + excluded.total,"
            f" events = {self.totals}.events + 1",
            [event.stream_id, event.data["amount"]],
        )
        tx.execute(f"INSERT INTO {self.log} (position) VALUES ({p})", [event.position])
        if self.slow:
            time.sleep(random.uniform(0.0, 0.002))  # widen the window a kill lands in

    def reset(self, tx):
        tx.execute(f"DELETE FROM {self.totals}")
        tx.execute(f"DELETE FROM {self.log}")
'''

CHILD = (
    r"""
import sys
import seawall
from seawall.eventsourcing import ProjectionRunner, open_event_store
"""
    + PROJECTION
    + r"""
url, prefix, table, mode = sys.argv[1:5]
engine = seawall.connect(url)
placeholder = "?" if engine.kind == "sqlite" else "%s"
store = open_event_store(engine, table_prefix=prefix, create=False)
runner = ProjectionRunner(
    store, Totals("totals", table, placeholder, slow=mode == "run"), batch_size=int(sys.argv[5]),
    poll_interval=0.02,
)
print("ready", flush=True)
if mode == "run":
    runner.run()
else:
    runner.catch_up()
    print("caught-up", runner.position, flush=True)
"""
)


def _projection_class() -> Any:
    namespace: dict[str, Any] = {}
    exec(PROJECTION, namespace)
    return namespace["Totals"]


def _child(url: str, prefix: str, table: str, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, prefix, table, mode, str(BATCH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


class Writer(threading.Thread):
    """Appends deposits to random streams until stopped; remembers nothing (the log does)."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random()
        try:
            while not self.stopped.is_set():
                deposit(self.store, rng, rng.randint(1, 3))
                self.stopped.wait(0.01)
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc


def deposit(store: EventStore, rng: random.Random, count: int) -> None:
    from seawall.eventsourcing import NewEvent

    for _ in range(count):
        stream = f"acct-{rng.randrange(STREAMS)}"
        store.append(stream, [NewEvent("Deposited", {"amount": rng.randint(-50, 1000)})])


def all_positions(store: EventStore) -> list[int]:
    found: list[int] = []
    after = 0
    while page := store.read_all(after=after, limit=1000):
        found.extend(event.position for event in page)
        after = page[-1].position
    return found


def read_totals(engine: Engine, table: str) -> dict[str, tuple[int, int]]:
    rows = ReadModel(engine).query(f"SELECT stream, total, events FROM {table}_totals")
    return {row["stream"]: (int(row["total"]), int(row["events"])) for row in rows}


def crash_many_times(url: str, settle: float) -> None:
    prefix = f"chaos_{uuid.uuid4().hex[:8]}_"
    table = f"{prefix}rm"
    engine = seawall.connect(url)
    store = open_event_store(engine, table_prefix=prefix)
    try:
        deposit(store, random.Random(7), INITIAL_EVENTS)
        writer = Writer(store)
        writer.start()
        progress: list[int] = []
        try:
            for _ in range(KILLS):
                child = _child(url, prefix, table, "run")
                assert child.stdout is not None
                line = child.stdout.readline()
                assert line.strip() == "ready", child.stderr.read() if child.stderr else line
                time.sleep(random.uniform(0.02, 0.35))
                child.send_signal(signal.SIGKILL)
                child.wait(10)
                child.stdout.close()
                if child.stderr is not None:
                    child.stderr.close()
                progress.append(store.load_checkpoint("totals"))
        finally:
            writer.stopped.set()
            writer.join(10)
        assert writer.error is None
        advanced = sum(
            1 for before, after in zip([0, *progress[:-1]], progress, strict=True) if after > before
        )
        assert advanced >= KILLS // 2, f"the runner rarely got to work: checkpoints {progress}"

        expected = all_positions(store)
        deadline = time.monotonic() + settle
        while len(expected) < INITIAL_EVENTS and time.monotonic() < deadline:
            time.sleep(0.05)
            expected = all_positions(store)
        final = _child(url, prefix, table, "catch-up")
        output, err = final.communicate(timeout=120)
        assert final.returncode == 0, err[-3000:]
        assert "caught-up" in output
        if settle:  # PostgreSQL: events can show late; let a runner here finish the tail
            placeholder = "%s"
            runner = ProjectionRunner(
                store, _projection_class()("totals", table, placeholder), batch_size=BATCH
            )
            while store.load_checkpoint("totals") < expected[-1] and time.monotonic() < deadline:
                runner.catch_up()
                time.sleep(0.05)

        placeholder = "?" if engine.kind == "sqlite" else "%s"
        fresh = _projection_class()("from-scratch", f"{table}_fresh", placeholder)
        scratch = ProjectionRunner(store, fresh, batch_size=500)
        scratch.rebuild()
        assert store.load_checkpoint("from-scratch") == expected[-1]

        assert read_totals(engine, table) == read_totals(engine, f"{table}_fresh")
        logged = ReadModel(engine).query(f"SELECT position FROM {table}_log ORDER BY position")
        assert [int(row["position"]) for row in logged] == expected  # each exactly once
        assert store.load_checkpoint("totals") == expected[-1]
    finally:
        with engine.transaction() as tx:
            for name in ("rm_totals", "rm_log", "rm_fresh_totals", "rm_fresh_log"):
                tx.execute(f"DROP TABLE IF EXISTS {prefix}{name}")
        store.drop_tables()
        store.close()
        engine.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chaos.db'}"


@pytest.mark.timeout(60 + KILLS * 10)
def test_sqlite_projection_survives_kill_9(sqlite_url: str) -> None:
    crash_many_times(sqlite_url, settle=0.0)


@pytest.mark.engine("postgres")
@pytest.mark.timeout(60 + KILLS * 10)
def test_postgres_projection_survives_kill_9() -> None:
    crash_many_times(require_engine("postgres"), settle=15.0)
