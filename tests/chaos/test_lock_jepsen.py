"""A Jepsen-style check of locks and leader election under pauses and kills.

Worker processes (this file run as a script) repeatedly take a PostgreSQL lock and do a
read-modify-write of a shared counter in PostgreSQL: one transaction reads it, a second
writes ``read + 1``, and each transaction first runs ``sql_fence`` with the lease's
token. The read is fenced too: a fenced write alone cannot stop a lost update when the
stale holder writes *before* the new holder does, but a fenced read moves the fence
forward, so every write of an older holder is refused from then on. Each accepted write
records ``(seq, worker, token, read, wrote)`` in the same transaction; ``seq`` comes
from a sequence taken while the counter row is locked, so it is the commit order.

The fault injector watches the workers' "read done" lines and SIGSTOPs a worker right
after it read (it is then between read and write, holding the lease), keeps it stopped
for three TTLs so the lease expires and another worker takes over, then SIGCONTs it; it
also SIGKILLs workers and starts new ones. The history must then show no lost update
(accepted writes wrote 1, 2, 3, ... once each, the counter equals their number) and
fencing tokens strictly increasing in commit order, and the stale writes must have
been refused.

The same run without the fence documents why fencing exists: the resumed holder's
stale write goes through and the check finds lost updates (asserted: they must occur).

Leader election runs under the same faults: leaders append to a log fenced with their
term number; no term may have two leaders with accepted writes, terms must not go back
in commit order, and a paused leader's late write must be refused.

``SEAWALL_CHAOS_LOCK_SECONDS`` (default 10) sets each run's length; the file stays under
a minute by default.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

SECONDS = float(os.environ.get("SEAWALL_CHAOS_LOCK_SECONDS", "10"))
TTL = 0.5
"""Lease length: a pause of three TTLs always lets another holder in."""
PAUSE = 3 * TTL
THINK = 0.08
"""Seconds a worker spends between its read and its write: the window a pause lands in."""
WORKERS = 4

pytestmark = [pytest.mark.chaos, pytest.mark.engine("postgres")]


# ---------------------------------------------------------------------- the worker processes


def _lock_worker(url: str, prefix: str, worker: str, fenced: bool, deadline: float) -> None:
    """Take the lock, read the counter, think, write read + 1; print what happens."""
    import psycopg

    from seawall.coordination import FencingError, Lock, LockLostError, LockTimeoutError, SqlFence
    from seawall.coordination.lock.postgres import PostgresLockStore

    fence = SqlFence(f"{prefix}_fence")
    lock = Lock(
        "counter",
        ttl=TTL,
        store=PostgresLockStore(url, table=f"{prefix}_locks"),
        poll_interval=0.02,
    )
    conn = psycopg.connect(url, autocommit=True)
    while time.time() < deadline:
        try:
            lease = lock.acquire(wait=1.0)
        except LockTimeoutError:
            continue
        try:
            with conn.transaction():
                if fenced:
                    fence.check(conn, "counter", lease)
                row = conn.execute(f"SELECT value FROM {prefix}_counter WHERE id = 1").fetchone()
            value = int(row[0])
            print(f"READ {worker} {lease.fencing_token}", flush=True)
            time.sleep(THINK)
            with conn.transaction():
                if fenced:
                    fence.check(conn, "counter", lease)
                conn.execute(f"UPDATE {prefix}_counter SET value = %s WHERE id = 1", (value + 1,))
                conn.execute(
                    f"INSERT INTO {prefix}_history (seq, worker, token, read, wrote) "
                    f"VALUES (nextval('{prefix}_seq'), %s, %s, %s, %s)",
                    (worker, lease.fencing_token, value, value + 1),
                )
            print(f"WROTE {worker} {lease.fencing_token}", flush=True)
        except FencingError:
            print(f"REFUSED {worker} {lease.fencing_token}", flush=True)
        finally:
            with contextlib.suppress(LockLostError):
                lock.release(lease)
    conn.close()
    lock.close()


def _election_worker(url: str, prefix: str, worker: str, deadline: float) -> None:
    """Campaign; while leading, append to a log fenced with the term number."""
    import psycopg

    from seawall.coordination import Election, ElectionTimeoutError, FencingError, SqlFence
    from seawall.coordination.lock.postgres import PostgresLockStore

    fence = SqlFence(f"{prefix}_fence")
    election = Election(
        "jepsen",
        ttl=TTL,
        store=PostgresLockStore(url, table=f"{prefix}_locks"),
        identity=worker,
        poll_interval=0.02,
    )
    conn = psycopg.connect(url, autocommit=True)
    while time.time() < deadline:
        try:
            term = election.campaign(wait=1.0)
        except ElectionTimeoutError:
            continue
        print(f"LEADER {worker} {term.number}", flush=True)
        while term.held and time.time() < deadline:
            print(f"WRITE {worker} {term.number}", flush=True)
            time.sleep(THINK)
            try:
                with conn.transaction():
                    fence.check(conn, "leader-log", term.number)
                    conn.execute(
                        f"INSERT INTO {prefix}_log (seq, term, identity) "
                        f"VALUES (nextval('{prefix}_seq'), %s, %s)",
                        (term.number, worker),
                    )
            except FencingError:
                print(f"REFUSED {worker} {term.number}", flush=True)
                break
        election.resign()
    conn.close()
    election.close()


# ---------------------------------------------------------------------- the harness


@dataclass
class Event:
    """One line a worker printed."""

    kind: str
    worker: str
    token: int
    at: float


@dataclass
class Cluster:
    """The worker processes, their output, and the faults injected into them."""

    mode: str
    url: str
    prefix: str
    fenced: bool
    deadline: float
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    readers: dict[str, threading.Thread] = field(default_factory=dict)
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    log: list[Event] = field(default_factory=list)
    pauses: int = 0
    kills: int = 0
    spawned: int = 0

    def spawn(self) -> None:
        name = f"w{self.spawned}"
        self.spawned += 1
        process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                self.mode,
                self.url,
                self.prefix,
                name,
                "1" if self.fenced else "0",
                str(self.deadline),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes[name] = process
        assert process.stdout is not None
        reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        reader.start()
        self.readers[name] = reader

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            parts = line.split()
            if len(parts) == 3:
                self.events.put(Event(parts[0], parts[1], int(parts[2]), time.monotonic()))

    def next_event(self, kinds: set[str], timeout: float) -> Event | None:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                return None
            self.log.append(event)
            fresh = time.monotonic() - event.at < THINK / 2  # still between read and write
            if event.kind in kinds and event.worker in self.processes and fresh:
                return event
        return None

    def pause(self, worker: str) -> None:
        """SIGSTOP past the TTL, then SIGCONT."""
        process = self.processes[worker]
        process.send_signal(signal.SIGSTOP)
        time.sleep(PAUSE)
        process.send_signal(signal.SIGCONT)
        self.pauses += 1

    def kill(self) -> None:
        worker = random.choice(sorted(self.processes))
        process = self.processes.pop(worker)
        process.kill()
        process.wait(10)
        self._close(worker, process)
        self.kills += 1
        self.spawn()

    def _close(self, worker: str, process: subprocess.Popen[str]) -> None:
        self.readers.pop(worker).join(5)  # the pipe reached its end: the process is gone
        if process.stdout is not None:
            process.stdout.close()

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.log.append(self.events.get_nowait())

    def stop(self) -> None:
        """End the workers (a transaction cut short rolls back) and collect their output."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for worker, process in list(self.processes.items()):
            self._close(worker, process)
        self.drain()


@contextlib.contextmanager
def _cluster(
    mode: str, url: str, prefix: str, *, fenced: bool, seconds: float
) -> Iterator[Cluster]:
    cluster = Cluster(mode, url, prefix, fenced, deadline=time.time() + seconds + 2.0)
    for _ in range(WORKERS):
        cluster.spawn()
    try:
        yield cluster
    finally:
        cluster.stop()


def _inject(cluster: Cluster, *, pause_on: str, seconds: float, kill_share: float) -> None:
    """Pause a worker right after it printed ``pause_on``; now and then kill one instead."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if random.random() < kill_share:
            time.sleep(random.uniform(0.1, 0.4))
            cluster.kill()
            continue
        event = cluster.next_event({pause_on}, timeout=1.0)
        if event is not None:
            cluster.pause(event.worker)
            time.sleep(random.uniform(0.05, 0.3))


@pytest.fixture
def database(postgres_url: str) -> Iterator[tuple[str, str]]:
    import psycopg

    prefix = f"jepsen_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {prefix}_counter (id INT PRIMARY KEY, value BIGINT NOT NULL)")
        conn.execute(f"INSERT INTO {prefix}_counter VALUES (1, 0)")
        conn.execute(f"CREATE SEQUENCE {prefix}_seq")
        conn.execute(
            f"CREATE TABLE {prefix}_history (seq BIGINT PRIMARY KEY, worker TEXT NOT NULL, "
            "token BIGINT NOT NULL, read BIGINT NOT NULL, wrote BIGINT NOT NULL)"
        )
        conn.execute(
            f"CREATE TABLE {prefix}_log (seq BIGINT PRIMARY KEY, term BIGINT NOT NULL, "
            "identity TEXT NOT NULL)"
        )
    try:
        yield postgres_url, prefix
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for table in ("counter", "history", "log", "locks", "fence"):
                conn.execute(f"DROP TABLE IF EXISTS {prefix}_{table}")
            conn.execute(f"DROP SEQUENCE IF EXISTS {prefix}_seq")


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql).fetchall())


def _lost_updates(history: list[tuple[Any, ...]], final: int) -> int:
    """Accepted writes whose increment vanished: writes minus the counter's growth."""
    return len(history) - final


# ---------------------------------------------------------------------- the checks


@pytest.mark.timeout(SECONDS * 3 + 60)
def test_fenced_read_modify_write_loses_nothing_under_pauses_and_kills(
    database: tuple[str, str],
) -> None:
    url, prefix = database
    with _cluster("lock", url, prefix, fenced=True, seconds=SECONDS) as cluster:
        _inject(cluster, pause_on="READ", seconds=SECONDS, kill_share=0.2)
    history = _rows(
        url, f"SELECT seq, worker, token, read, wrote FROM {prefix}_history ORDER BY seq"
    )
    [(final,)] = _rows(url, f"SELECT value FROM {prefix}_counter")
    refused = [event for event in cluster.log if event.kind == "REFUSED"]
    summary = (
        f"fenced: {len(history)} accepted writes, counter {final}, {len(refused)} stale "
        f"operations refused, {cluster.pauses} pauses, {cluster.kills} kills"
    )
    print(summary)
    assert len(history) >= 10, summary
    assert cluster.pauses >= 2, summary
    # no lost update: the accepted writes wrote 1, 2, 3, ... in commit order, once each
    assert [row[4] for row in history] == list(range(1, len(history) + 1)), summary
    assert all(row[4] == row[3] + 1 for row in history)
    assert final == len(history)
    # tokens accepted by the resource strictly increase in commit order
    tokens = [row[2] for row in history]
    assert all(later > earlier for earlier, later in itertools.pairwise(tokens))
    # the pauses hit the window between read and write: stale holders were refused
    assert refused, summary


@pytest.mark.timeout(SECONDS * 3 + 60)
def test_without_fencing_a_paused_holder_loses_updates(database: tuple[str, str]) -> None:
    """Documents why fencing exists: the lock alone lets a stale holder's write through."""
    url, prefix = database
    lost = 0
    history: list[tuple[Any, ...]] = []
    with _cluster("lock", url, prefix, fenced=False, seconds=SECONDS) as cluster:
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            event = cluster.next_event({"READ"}, timeout=1.0)
            if event is not None:
                cluster.pause(event.worker)
                time.sleep(0.3)  # let the resumed holder's stale write land
                history = _rows(url, f"SELECT seq, token, wrote FROM {prefix}_history")
                [(final,)] = _rows(url, f"SELECT value FROM {prefix}_counter")
                lost = _lost_updates(history, final)
                if lost >= 2 and cluster.pauses >= 2:
                    break
    history = _rows(
        url, f"SELECT seq, worker, token, read, wrote FROM {prefix}_history ORDER BY seq"
    )
    [(final,)] = _rows(url, f"SELECT value FROM {prefix}_counter")
    lost = _lost_updates(history, final)
    tokens = [row[2] for row in history]
    went_back = sum(later < earlier for earlier, later in itertools.pairwise(tokens))
    duplicates = len(history) - len({row[4] for row in history})
    print(
        f"unfenced: {len(history)} accepted writes, counter {final}: {lost} lost updates, "
        f"{duplicates} values written twice, {went_back} writes with an older token than the "
        f"one before, after {cluster.pauses} pauses"
    )
    assert lost >= 1, "a stale holder's write should have overwritten a newer one"
    assert duplicates >= 1
    assert went_back >= 1


@pytest.mark.timeout(SECONDS * 3 + 60)
def test_a_fenced_resource_accepts_one_leader_per_term_under_faults(
    database: tuple[str, str],
) -> None:
    url, prefix = database
    with _cluster("election", url, prefix, fenced=True, seconds=SECONDS) as cluster:
        _inject(cluster, pause_on="WRITE", seconds=SECONDS, kill_share=0.2)
    log = _rows(url, f"SELECT seq, term, identity FROM {prefix}_log ORDER BY seq")
    leaders: dict[int, set[str]] = {}
    for _, term, identity in log:
        leaders.setdefault(term, set()).add(identity)
    refused = [event for event in cluster.log if event.kind == "REFUSED"]
    summary = (
        f"election: {len(log)} accepted writes over {len(leaders)} terms, {len(refused)} "
        f"stale leader writes refused, {cluster.pauses} pauses, {cluster.kills} kills"
    )
    print(summary)
    assert len(leaders) >= 3, summary  # the faults forced failovers
    assert all(len(identities) == 1 for identities in leaders.values()), leaders
    terms = [row[1] for row in log]
    assert terms == sorted(terms), "a former leader's write was accepted after a newer term's"
    assert refused, summary


# ---------------------------------------------------------------------- entry point of workers


if __name__ == "__main__":
    mode, url, prefix, worker, fenced, deadline = sys.argv[1:7]
    if mode == "lock":
        _lock_worker(url, prefix, worker, fenced == "1", float(deadline))
    else:
        _election_worker(url, prefix, worker, float(deadline))
