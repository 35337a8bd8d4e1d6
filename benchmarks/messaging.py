"""The messaging layer beside its peers: one command, the whole table, then the targets.

    python benchmarks/messaging.py                         # everything, several minutes
    BENCH_ONLY=queue-postgres,channels python benchmarks/messaging.py
    BENCH_SCALE=0.01 BENCH_REPS=1 python benchmarks/messaging.py    # smoke size

The same work everywhere: 10,000 messages of 100 bytes (``BENCH_SCALE`` scales it);
the produce rate, then the receive+ack rate, with one consumer and with four.

Areas, each in a child process of its own (one library's leftovers cannot slow
another's garbage collection, and a server section that cannot connect is skipped
with a note instead of failing the rest):

* ``queue-sqlite``: seawall beside persist-queue (SQLiteAckQueue), litequeue and
  huey's SQLite storage, at each library's durability setting (journal mode and
  ``synchronous``, read back from the connection and printed), plus batches;
* ``queue-postgres``: seawall beside procrastinate and pgqueuer (and a raw psycopg
  floor), with the server's ``fsync``/``synchronous_commit`` and each library's commit
  policy in the table;
* ``queue-redis``: seawall beside the single-client PING rate, the limit of one round
  trip;
* ``channels``: in-process channels beside ``queue.Queue`` and ``asyncio.Queue``.

The final table checks the issue's targets (printed, never asserted). Server URLs:
``SEAWALL_BENCH_POSTGRES_URL`` and ``SEAWALL_BENCH_REDIS_URL`` (see
``messaging_queue.py``).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Result, dump_json, print_table, print_targets, run_chosen_areas

AREAS: dict[str, tuple[str, dict[str, str], str]] = {
    # name: (module, environment for the child, table title)
    "queue-sqlite": (
        "messaging_queue",
        {"BENCH_QUEUE_ENGINES": "sqlite"},
        "seawall messaging: durable queues on SQLite (per message)",
    ),
    "queue-postgres": (
        "messaging_queue",
        {"BENCH_QUEUE_ENGINES": "postgres"},
        "seawall messaging: durable queues on PostgreSQL (per message)",
    ),
    "queue-redis": (
        "messaging_queue",
        {"BENCH_QUEUE_ENGINES": "redis"},
        "seawall messaging: durable queues on Redis (per message)",
    ),
    "channels": ("messaging_channels", {}, "seawall messaging: in-process channels"),
}


def check_targets(results: list[Result]) -> list[tuple[str, str, str]]:
    """Every area's targets with the measured ratio and whether it was met (not asserted)."""
    import messaging_channels
    import messaging_queue

    return messaging_queue.check_targets(results) + messaging_channels.check_targets(results)


def _child(area: str) -> int:
    module, environment, title = AREAS[area]
    os.environ.update(environment)
    results = importlib.import_module(module).run()
    print_table(title, results)
    dump_json(results)
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--area":
        return _child(sys.argv[2])
    results = run_chosen_areas(__file__, AREAS)
    if results is None:
        return 2
    print_targets("targets (issue 3: messaging)", check_targets(results), "measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
