"""The resilience layer beside its peers, in one process run.

    python3 scripts/dev.py bench                       # everything, a few minutes
    BENCH_ONLY=retry,breaker python benchmarks/resilience.py
    BENCH_SCALE=0.01 BENCH_REPS=1 python benchmarks/resilience.py   # smoke size

Areas: retry (tenacity, stamina, backoff), breaker (pybreaker, purgatory,
aiobreaker, circuitbreaker; shared through Redis beside pybreaker's Redis storage),
rate limiting (limits, pyrate-limiter, aiolimiter; on Redis beside redis-py PING and
redis-benchmark), and the other policies beside a plain call. Each area's cases are
interleaved inside every repetition; the table gives medians and each peer's cost
as a multiple of ours. Nothing here is asserted: speed is shown, not tested.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Result, dump_json, print_table, print_targets, run_chosen_areas

AREAS = {
    "retry": "resilience_retry",
    "breaker": "resilience_breaker",
    "ratelimit": "resilience_ratelimit",
    "misc": "resilience_misc",
}

TARGETS = [
    # (bench, ours, peers, required peer ÷ ours, what it means)
    (
        "retry_success_sync",
        "seawall",
        ("tenacity",),
        20.0,
        "retry success path <= 1/20 of tenacity",
    ),
    ("retry_success_sync", "seawall", ("backoff",), 1.0, "retry success path below backoff"),
    ("retry_success_async", "seawall", ("tenacity",), 20.0, "async retry <= 1/20 of tenacity"),
    ("retry_success_async", "seawall", ("backoff",), 1.0, "async retry below backoff"),
    (
        "breaker_closed_sync",
        "seawall",
        ("pybreaker", "purgatory", "aiobreaker", "circuitbreaker"),
        2.0,
        "closed call <= 1/2 of the fastest peer",
    ),
    (
        "breaker_open_reject_sync",
        "seawall",
        ("pybreaker", "purgatory", "aiobreaker", "circuitbreaker"),
        2.0,
        "open rejection <= 1/2 of the fastest peer",
    ),
    (
        "rate_acquire_memory",
        "seawall",
        ("limits (fixed window)",),
        4.0,
        "memory acquire <= 1/4 of limits fixed window",
    ),
    (
        "rate_acquire_memory_async",
        "seawall",
        ("aiolimiter",),
        2.0,
        "async acquire <= 1/2 of aiolimiter",
    ),
    (
        "rate_acquire_redis",
        "seawall",
        ("redis-py PING",),
        0.85,
        "Redis acquire >= 85% of PING rate",
    ),
    (
        "shared_breaker_closed_sync",
        "seawall",
        ("pybreaker",),
        50.0,
        "shared breaker >= 50x pybreaker on Redis",
    ),
]


def check_targets(results: list[Result]) -> list[tuple[str, str, str]]:
    """Each target with the measured ratio and whether it was met (printed, not asserted)."""
    by_key = {(result.bench, result.lib): result for result in results}
    rows = []
    for bench, ours_name, peers, required, meaning in TARGETS:
        ours = by_key.get((bench, ours_name))
        measured = [by_key[(bench, peer)] for peer in peers if (bench, peer) in by_key]
        if ours is None or not measured:
            rows.append((meaning, "not measured", ""))
            continue
        fastest = min(measured, key=lambda result: result.ns_per_op)
        ratio = fastest.ns_per_op / ours.ns_per_op
        rows.append(
            (meaning, f"{ratio:,.2f}x vs {fastest.lib}", "met" if ratio >= required else "MISSED")
        )
    return rows


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--area":
        area = sys.argv[2]
        area_results = importlib.import_module(AREAS[area]).run()
        print_table(f"seawall resilience: {area}", area_results)
        dump_json(area_results)
        return 0
    results = run_chosen_areas(__file__, AREAS)
    if results is None:
        return 2
    print_targets("targets (issue 2)", check_targets(results), "measured (fastest peer ÷ seawall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
