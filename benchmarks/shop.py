"""The reference shop end to end: orders per second and order latency, with and without chaos.

    python benchmarks/shop.py                          # 1,000 orders per run, ~3-5 minutes
    BENCH_SCALE=0.05 python benchmarks/shop.py         # quick look (50 orders per run)
    BENCH_ENGINES=sqlite python benchmarks/shop.py     # skip PostgreSQL + Redis

Each run starts the four service processes (orders, payments, inventory, shipping)
exactly as ``seawall demo`` does, places the orders from 8 concurrent clients, waits
until every order has settled and the shop is quiet, and checks the invariants. An
order's latency is from the client's first ``POST /orders`` until it sees the order
confirmed or compensated (saga of three HTTP participants, two local steps, faults
and retries included). Orders per second counts settled orders over the load phase.
Runs: SQLite (embedded) and PostgreSQL + Redis (scale-out), each with chaos ``none``
and ``mild``. There is no peer: the figures are for comparing seawall with itself
over time. PostgreSQL and Redis come from ``SEAWALL_TEST_POSTGRES_URL`` /
``SEAWALL_TEST_REDIS_URL`` (default: the local standard ports); unreachable ones are
skipped with a note.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from rich.table import Table

from _harness import Result, dump_json, ops_for
from seawall.shop._demo import DemoOptions, run_shop_async
from seawall.shop._report import ShopReport, percentile

ORDERS = ops_for(1_000)
CLIENTS = 8
POSTGRES_URL = os.environ.get(
    "SEAWALL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SEAWALL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable_postgres_and_redis() -> str | None:
    """Why PostgreSQL + Redis cannot be used (``None`` when both answer)."""
    try:
        import psycopg
        import redis

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def _run(engine: str, chaos: str) -> ShopReport:
    options = DemoOptions(
        orders=ORDERS,
        clients=CLIENTS,
        chaos=chaos,
        engine=engine,
        postgres_url=POSTGRES_URL if engine == "postgres" else None,
        redis_url=REDIS_URL if engine == "postgres" else None,
        client_rate=1_000.0,
    )
    quiet = Console(file=io.StringIO())
    return asyncio.run(run_shop_async(options, quiet))


def main() -> int:
    engines = os.environ.get("BENCH_ENGINES", "sqlite,postgres").split(",")
    runs: list[tuple[str, str]] = []
    notes: list[str] = []
    if "sqlite" in engines:
        runs += [("sqlite", "none"), ("sqlite", "mild")]
    if "postgres" in engines:
        problem = _reachable_postgres_and_redis()
        if problem is None:
            runs += [("postgres", "none"), ("postgres", "mild")]
        else:
            notes.append(f"PostgreSQL + Redis skipped: {problem}")
    results: list[Result] = []
    table = Table(title=f"seawall shop end to end: {ORDERS:,} orders, {CLIENTS} clients per run")
    for column in ("engine", "chaos", "orders/s", "p50", "p99", "confirmed", "compensated",
                   "retries", "kills", "invariants"):  # fmt: skip
        table.add_column(column, justify="left" if column in {"engine", "chaos"} else "right")
    failed = False
    for engine, chaos in runs:
        report = _run(engine, chaos)
        failed = failed or not report.ok
        p50 = percentile(report.latencies, 0.5) * 1000
        p99 = percentile(report.latencies, 0.99) * 1000
        table.add_row(
            report.engine,
            chaos,
            f"{report.orders_per_second:,.1f}",
            f"{p50:,.0f} ms",
            f"{p99:,.0f} ms",
            f"{report.confirmed:,}",
            f"{report.compensated:,}",
            f"{report.counters.get('retries', 0):,}",
            f"{report.kills}",
            "hold" if report.ok else f"FAILED ({len(report.problems)})",
        )
        per_order = 1e9 / report.orders_per_second if report.orders_per_second else 0.0
        results.append(
            Result(
                bench="shop: order end to end",
                lib="seawall",
                ns_per_op=per_order,
                ops=ORDERS,
                reps=1,
                min_ns_per_op=per_order,
                max_ns_per_op=per_order,
                config=f"{report.engine}, chaos {chaos}, {CLIENTS} clients",
                extra={
                    "orders_per_second": round(report.orders_per_second, 2),
                    "p50_ms": round(p50, 1),
                    "p99_ms": round(p99, 1),
                    "confirmed": report.confirmed,
                    "compensated": report.compensated,
                    "invariants_hold": report.ok,
                },
            )
        )
    Console(width=160).print(table)
    for note in notes:
        print(note)
    dump_json(results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
