"""In-process channels beside the standard library's queues, in one process run.

Baselines that do the same work with the same bound: ``queue.Queue`` for threads and
``asyncio.Queue`` for tasks. The issue's target: a seawall channel costs at most 1.5x
the plain queue handoff (it also serves threads and tasks at once, counts, and
applies an overflow policy).

    python benchmarks/messaging_channels.py
    BENCH_SCALE=0.05 BENCH_REPS=3 python benchmarks/messaging_channels.py

Benchmarks:
    channel_handoff_sync     a producer thread sends N items, the main thread receives them
    channel_handoff_async    a producer task and a consumer task on one loop
    channel_wakeup_sync      the same with capacity 1: every item wakes a waiting party
    channel_wakeup_async     (the path of a consumer that keeps up with its producer)
    channel_pair_sync        send then receive in one thread (no waiting: the bare cost)
    channel_pair_async       asend then areceive in one task
    channel_thread_to_task   a thread produces, a task consumes (the cross-over case)
    broadcast_fanout_sync    one message to 4 subscribers, each receives it
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import OURS, Case, Result, dump_json, measure, ops_for, print_table, print_targets
from seawall.messaging.channel import Broadcast, Channel

CAPACITY = 128
HANDOFF_OPS = 200_000
WAKEUP_OPS = 40_000
PAIR_OPS = 300_000
SUBSCRIBERS = 4

TARGETS = [
    # (bench, peer, the slowest ours may be as a multiple of the peer, meaning)
    ("channel_handoff_sync", "queue.Queue", 1.5, "thread handoff within 1.5x of queue.Queue"),
    ("channel_handoff_async", "asyncio.Queue", 1.5, "task handoff within 1.5x of asyncio.Queue"),
    ("channel_wakeup_sync", "queue.Queue", 1.5, "capacity-1 thread handoff within 1.5x"),
    ("channel_wakeup_async", "asyncio.Queue", 1.5, "capacity-1 task handoff within 1.5x"),
    ("channel_pair_sync", "queue.Queue", 1.5, "send+receive within 1.5x of put+get"),
    ("channel_pair_async", "asyncio.Queue", 1.5, "asend+areceive within 1.5x of put+get"),
]


# -- threads ------------------------------------------------------------------------------


def _thread_handoff(
    put: Callable[[int], object], get: Callable[[], object]
) -> Callable[[int], float]:
    def timer(n: int) -> float:
        def produce() -> None:
            for item in range(n):
                put(item)

        started = time.perf_counter()
        producer = threading.Thread(target=produce)
        producer.start()
        for _ in range(n):
            get()
        producer.join()
        return time.perf_counter() - started

    return timer


def _same_thread_pair(
    put: Callable[[int], object], get: Callable[[], object]
) -> Callable[[int], float]:
    def timer(n: int) -> float:
        started = time.perf_counter()
        for item in range(n):
            put(item)
            get()
        return time.perf_counter() - started

    return timer


def _sync_cases() -> list[Case]:
    cases = []
    for bench, capacity, ops in (
        ("channel_handoff_sync", CAPACITY, ops_for(HANDOFF_OPS)),
        ("channel_wakeup_sync", 1, ops_for(WAKEUP_OPS)),
    ):
        ours: Channel[int] = Channel(capacity)
        peer: queue.Queue[int] = queue.Queue(capacity)
        config = f"capacity={capacity}"
        cases += [
            Case(bench, OURS, _thread_handoff(ours.send, ours.receive), ops, config),
            Case(bench, "queue.Queue", _thread_handoff(peer.put, peer.get), ops, config),
        ]
    pair_ops = ops_for(PAIR_OPS)
    ours_pair: Channel[int] = Channel(CAPACITY)
    peer_pair: queue.Queue[int] = queue.Queue(CAPACITY)
    config = f"capacity={CAPACITY}"
    return [
        *cases,
        Case(
            "channel_pair_sync",
            OURS,
            _same_thread_pair(ours_pair.send, ours_pair.receive),
            pair_ops,
            config,
        ),
        Case(
            "channel_pair_sync",
            "queue.Queue",
            _same_thread_pair(peer_pair.put, peer_pair.get),
            pair_ops,
            config,
        ),
    ]


# -- tasks --------------------------------------------------------------------------------


def _async_cases(loop: asyncio.AbstractEventLoop) -> list[Case]:
    handoff_ops, pair_ops = ops_for(HANDOFF_OPS), ops_for(PAIR_OPS)
    config = f"capacity={CAPACITY}"

    async def build() -> tuple[asyncio.Queue[int], ...]:
        return asyncio.Queue(CAPACITY), asyncio.Queue(1), asyncio.Queue(CAPACITY), asyncio.Queue()

    peer, peer_wakeup, peer_pair, unbounded = loop.run_until_complete(build())
    ours: Channel[int] = Channel(CAPACITY)
    ours_wakeup: Channel[int] = Channel(1)
    wakeup_ops = ops_for(WAKEUP_OPS)
    ours_pair: Channel[int] = Channel(CAPACITY)
    crossing: Channel[int] = Channel(CAPACITY)

    def task_handoff(
        put: Callable[[int], object], get: Callable[[], object]
    ) -> Callable[[int], float]:
        async def produce(n: int) -> None:
            for item in range(n):
                await put(item)  # type: ignore[misc]

        async def consume(n: int) -> None:
            for _ in range(n):
                await get()  # type: ignore[misc]

        async def both(n: int) -> None:
            await asyncio.gather(produce(n), consume(n))

        def timer(n: int) -> float:
            started = time.perf_counter()
            loop.run_until_complete(both(n))
            return time.perf_counter() - started

        return timer

    def task_pair(
        put: Callable[[int], object], get: Callable[[], object]
    ) -> Callable[[int], float]:
        async def body(n: int) -> None:
            for item in range(n):
                await put(item)  # type: ignore[misc]
                await get()  # type: ignore[misc]

        def timer(n: int) -> float:
            started = time.perf_counter()
            loop.run_until_complete(body(n))
            return time.perf_counter() - started

        return timer

    def ours_thread_to_task(n: int) -> float:
        async def consume() -> None:
            for _ in range(n):
                await crossing.areceive()

        def produce() -> None:
            for item in range(n):
                crossing.send(item)

        started = time.perf_counter()
        producer = threading.Thread(target=produce)
        producer.start()
        loop.run_until_complete(consume())
        producer.join()
        return time.perf_counter() - started

    def stdlib_thread_to_task(n: int) -> float:
        async def consume() -> None:
            for _ in range(n):
                await unbounded.get()

        def produce() -> None:
            for item in range(n):
                loop.call_soon_threadsafe(unbounded.put_nowait, item)

        started = time.perf_counter()
        producer = threading.Thread(target=produce)
        producer.start()
        loop.run_until_complete(consume())
        producer.join()
        return time.perf_counter() - started

    return [
        Case(
            "channel_handoff_async",
            OURS,
            task_handoff(ours.asend, ours.areceive),
            handoff_ops,
            config,
        ),
        Case(
            "channel_handoff_async",
            "asyncio.Queue",
            task_handoff(peer.put, peer.get),
            handoff_ops,
            config,
        ),
        Case(
            "channel_wakeup_async",
            OURS,
            task_handoff(ours_wakeup.asend, ours_wakeup.areceive),
            wakeup_ops,
            "capacity=1",
        ),
        Case(
            "channel_wakeup_async",
            "asyncio.Queue",
            task_handoff(peer_wakeup.put, peer_wakeup.get),
            wakeup_ops,
            "capacity=1",
        ),
        Case(
            "channel_pair_async",
            OURS,
            task_pair(ours_pair.asend, ours_pair.areceive),
            pair_ops,
            config,
        ),
        Case(
            "channel_pair_async",
            "asyncio.Queue",
            task_pair(peer_pair.put, peer_pair.get),
            pair_ops,
            config,
        ),
        Case("channel_thread_to_task", OURS, ours_thread_to_task, handoff_ops, config),
        Case(
            "channel_thread_to_task",
            "asyncio.Queue + call_soon_threadsafe",
            stdlib_thread_to_task,
            handoff_ops,
            "unbounded: no backpressure",
        ),
    ]


# -- broadcast ----------------------------------------------------------------------------


def _broadcast_cases() -> list[Case]:
    ops = ops_for(PAIR_OPS // SUBSCRIBERS)
    config = f"{SUBSCRIBERS} subscribers, capacity={CAPACITY}"
    news: Broadcast[int] = Broadcast(CAPACITY)
    subscriptions = [news.subscribe() for _ in range(SUBSCRIBERS)]
    queues: list[queue.Queue[int]] = [queue.Queue(CAPACITY) for _ in range(SUBSCRIBERS)]

    def ours(n: int) -> float:
        started = time.perf_counter()
        for item in range(n):
            news.publish(item)
            for subscription in subscriptions:
                subscription.receive()
        return time.perf_counter() - started

    def peer(n: int) -> float:
        started = time.perf_counter()
        for item in range(n):
            for each in queues:
                each.put(item)
            for each in queues:
                each.get()
        return time.perf_counter() - started

    return [
        Case("broadcast_fanout_sync", OURS, ours, ops, config),
        Case("broadcast_fanout_sync", "queue.Queue per subscriber", peer, ops, config),
    ]


def check_targets(results: list[Result]) -> list[tuple[str, str, str]]:
    """Each target with the measured ratio and whether it was met (printed, not asserted)."""
    by_key = {(result.bench, result.lib): result for result in results}
    rows = []
    for bench, peer, allowed, meaning in TARGETS:
        ours, theirs = by_key.get((bench, OURS)), by_key.get((bench, peer))
        if ours is None or theirs is None:
            rows.append((meaning, "not measured", ""))
            continue
        ratio = ours.ns_per_op / theirs.ns_per_op
        rows.append((meaning, f"{ratio:,.2f}x of {peer}", "met" if ratio <= allowed else "MISSED"))
    return rows


def run() -> list[Result]:
    """Measure every channel benchmark beside its standard-library baseline."""
    loop = asyncio.new_event_loop()
    try:
        results = measure(_sync_cases())
        results += measure(_async_cases(loop))
        results += measure(_broadcast_cases())
    finally:
        loop.close()
    return results


def main() -> int:
    results = run()
    print_table("seawall messaging: in-process channels", results)
    dump_json(results)

    print_targets(
        "targets (issue 3: channels)", check_targets(results), "measured (seawall ÷ baseline)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
