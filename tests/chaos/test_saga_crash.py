"""Kill -9 the saga orchestrator at random points, then resume: nothing lost, nothing doubled.

Each round starts a real orchestrator process that first resumes whatever the previous
(killed) one left, then starts new sagas; the test SIGKILLs it after a random delay.
Participants are idempotent: each effect is one row keyed by the idempotency key, and
a compensation marks it compensated (or leaves a tombstone, so a late action cannot
apply after its undo); every call is also logged, showing at-least-once execution.
Finally the test resumes in-process and checks every saga is completed (all effects
applied once) or compensated (every applied effect compensated, in reverse order).

Small by default; ``SEAWALL_CHAOS_SAGAS=500`` runs a large batch.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.engines import Engine
from seawall.workflows import SagaStatus, open_saga_log

pytestmark = pytest.mark.chaos

SAGAS = int(os.environ.get("SEAWALL_CHAOS_SAGAS", "60"))
BATCH = 25
"""At most this many new sagas per orchestrator process (most are killed before)."""
MAX_ROUNDS = 20 + SAGAS
STEPS = ("reserve", "charge", "pack", "ship")

CHILD = r"""
import sys, sqlite3
import seawall
from seawall.workflows import Parallel, Saga, SagaFailedError, SagaOrchestrator, Step, open_saga_log

def build(url, prefix):
  engine = seawall.connect(url)
  ph = "?" if engine.kind == "sqlite" else "%s"

  def execute(sql, params):
      if engine.kind == "sqlite":
          conn = engine.connection
          conn.execute("BEGIN IMMEDIATE")
          try:
              conn.execute(sql, params)
          except BaseException:
              conn.execute("ROLLBACK")
              raise
          conn.execute("COMMIT")
      else:
          with engine.connection() as conn:
              conn.execute(sql, params)

  def action(name):
      def act(ctx):
          execute(f"INSERT INTO {prefix}calls (key, kind) VALUES ({ph}, 'do')", (ctx.idempotency_key,))
          if name == "ship" and ctx.input["fail"]:
              raise RuntimeError("carrier refused")
          execute(
              f"INSERT INTO {prefix}effects (key, saga_id, step, state) VALUES ({ph}, {ph}, {ph}, 'applied')"
              " ON CONFLICT (key) DO NOTHING",
              (ctx.idempotency_key, ctx.saga_id, name),
          )
          return name
      return act

  def undo(name):
      def compensate(ctx):
          execute(
              f"INSERT INTO {prefix}effects (key, saga_id, step, state) VALUES ({ph}, {ph}, {ph}, 'tombstone')"
              f" ON CONFLICT (key) DO UPDATE SET state = CASE WHEN {prefix}effects.state = 'applied'"
              f" THEN 'compensated' ELSE {prefix}effects.state END, undone_at = {ph}",
              (ctx.idempotency_key, ctx.saga_id, name, __import__("time").time()),
          )
      return compensate

  saga = Saga("order", [
      Step("reserve", action("reserve"), undo("reserve")),
      Parallel(Step("charge", action("charge"), undo("charge")), Step("pack", action("pack"), undo("pack"))),
      Step("ship", action("ship")),
  ])
  return SagaOrchestrator(open_saga_log(engine, table_prefix=prefix), [saga], lease=60.0), saga

if __name__ == "__main__":
    url, prefix, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sagas, saga = build(url, prefix)
    print("ready", flush=True)
    sagas.resume(ignore_leases=True)   # the previous orchestrator was killed: take its sagas now
    for index in range(first, first + count):
        try:
            sagas.run(saga, {"fail": index % 3 == 0}, saga_id=f"saga-{index}")
        except SagaFailedError:
            pass
"""


def _create_tables(engine: Engine, prefix: str) -> None:
    statements = [
        f"CREATE TABLE {prefix}effects (key TEXT PRIMARY KEY, saga_id TEXT, step TEXT,"
        " state TEXT, undone_at DOUBLE PRECISION)",
        f"CREATE TABLE {prefix}calls (key TEXT, kind TEXT)",
    ]
    if engine.kind == "sqlite":
        for statement in statements:
            engine.connection.execute(statement)  # type: ignore[attr-defined]
    else:
        with engine.connection() as connection:  # type: ignore[attr-defined]
            for statement in statements:
                connection.execute(statement)


def _rows(engine: Engine, sql: str) -> list[Any]:
    if engine.kind == "sqlite":
        return list(engine.connection.execute(sql))  # type: ignore[attr-defined]
    with engine.connection() as connection:  # type: ignore[attr-defined]
        return list(connection.execute(sql))


def _count(url: str, prefix: str) -> int:
    engine = seawall.connect(url)
    log = open_saga_log(engine, table_prefix=prefix)
    try:
        return len(log.list(limit=1_000_000))
    finally:
        log.close()
        engine.close()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    prefix = f"chaos_{uuid.uuid4().hex[:8]}_"
    url = (
        f"sqlite:///{tmp_path / 'chaos.db'}"
        if request.param == "sqlite"
        else require_engine("postgres")
    )
    engine = seawall.connect(url)
    _create_tables(engine, prefix)
    try:
        yield url, prefix
    finally:
        if engine.kind == "postgres":
            with engine.connection() as connection:  # type: ignore[attr-defined]
                for table in ("effects", "calls", "sagas", "saga_entries"):
                    connection.execute(f"DROP TABLE IF EXISTS {prefix}{table}")
        engine.close()


def test_killed_orchestrators_lose_and_double_nothing(
    target: tuple[str, str], tmp_path: Path
) -> None:
    url, prefix = target
    script = tmp_path / "orchestrator.py"
    script.write_text(CHILD)
    rng = random.Random(int(os.environ.get("SEAWALL_CHAOS_SEED", "0")) or None)
    kills = 0
    started = time.monotonic()
    created = 0
    round_number = 0
    while created < SAGAS and round_number < MAX_ROUNDS:
        batch = min(BATCH, SAGAS - created)
        child = subprocess.Popen(
            [sys.executable, str(script), url, prefix, str(round_number * BATCH), str(batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        round_number += 1
        assert child.stdout is not None
        child.stdout.readline()  # "ready": imports done, about to resume and run sagas
        try:  # kill it somewhere inside its resume or its batch of sagas
            child.wait(timeout=rng.uniform(0.0, 0.12))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            kills += 1
        _, errors = child.communicate(timeout=60)
        assert child.returncode in (0, -signal.SIGKILL), errors
        created = _count(url, prefix)
    assert time.monotonic() - started < 600

    engine = seawall.connect(url)
    log = open_saga_log(engine, table_prefix=prefix)
    try:
        # resume in this process, with the same definitions and participants
        namespace: dict[str, Any] = {"__name__": "chaos_participants"}
        exec(compile(CHILD, str(script), "exec"), namespace)
        sagas, _ = namespace["build"](url, prefix)
        try:
            sagas.resume(ignore_leases=True)
        finally:
            sagas.log.close()
            if sagas.log.engine is not None:
                sagas.log.engine.close()
        records = log.list(limit=100_000)
        statuses = {record.id: record.status for record in records}
        unsettled = {
            saga_id: status
            for saga_id, status in statuses.items()
            if status not in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
        }
        assert not unsettled

        effects: dict[str, dict[str, str]] = {}
        for _key, saga_id, step, state, _undone in _rows(
            engine, f"SELECT key, saga_id, step, state, undone_at FROM {prefix}effects"
        ):
            effects.setdefault(saga_id, {})[step] = state
        calls = _rows(engine, f"SELECT key FROM {prefix}calls")
        for saga_id, status in statuses.items():
            index = int(saga_id.split("-")[1])
            mine = effects.get(saga_id, {})
            if status is SagaStatus.COMPLETED:
                assert index % 3 != 0
                assert mine == dict.fromkeys(STEPS, "applied"), (saga_id, mine)
            else:
                assert index % 3 == 0, (saga_id, mine)
                # every applied effect was compensated; the failing last step never applied
                assert mine == dict.fromkeys(("reserve", "charge", "pack"), "compensated"), (
                    saga_id,
                    mine,
                )
                record = log.load(saga_id)
                assert record is not None
                completed = [e.step for e in record.entries if e.kind.value == "completed"]
                compensated = [e.step for e in record.entries if e.kind.value == "compensated"]
                assert compensated == completed[::-1], (saga_id, completed, compensated)
        assert len(calls) >= sum(len(steps) for steps in effects.values())
        assert kills >= min(3, round_number - 1)
        print(f"{len(statuses)} sagas, {round_number} processes, {kills} kills, {len(calls)} calls")
    finally:
        log.close()
        engine.close()
