"""The PostgreSQL queue store's call combining, without a server: fake one/many calls."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("psycopg")

from seawall.messaging.queue._model import Receipt, StoredMessage
from seawall.messaging.queue.postgres import (
    _ack_results,
    _AsyncCombiner,
    _ClaimRequest,
    _Combiner,
    _split_claims,
)


def _stored(number: int) -> StoredMessage:
    return StoredMessage(str(number), b"", {}, 0, 1, 0.0, "t")


def test_a_lone_call_runs_alone_and_later_ones_run_together() -> None:
    release = threading.Event()
    entered = threading.Event()
    batches: list[list[int]] = []

    def one(request: int) -> int:
        entered.set()
        release.wait(5)
        return request * 10

    def many(requests: list[int]) -> list[int]:
        batches.append(list(requests))
        return [request * 100 for request in requests]

    combiner = _Combiner(one, many)
    results: dict[int, int] = {}

    def call(request: int) -> None:
        results[request] = combiner(request)

    first = threading.Thread(target=call, args=(1,))
    first.start()
    assert entered.wait(5)
    others = [threading.Thread(target=call, args=(n,)) for n in (2, 3, 4)]
    for thread in others:
        thread.start()
    while len(combiner._waiting) < 3:
        threading.Event().wait(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join(5)
    assert results == {1: 10, 2: 200, 3: 300, 4: 400}
    assert [sorted(batch) for batch in batches] == [[2, 3, 4]]
    assert combiner(5) == 50  # idle again: a lone call runs alone


def test_an_error_of_a_combined_call_reaches_every_member() -> None:
    def many(requests: list[int]) -> list[int]:
        raise RuntimeError("server gone")

    combiner = _Combiner(lambda request: request, many)
    combiner._busy = True  # pretend a call is running, so the next ones queue up
    errors: list[BaseException] = []

    def call() -> None:
        try:
            combiner(1)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    while len(combiner._waiting) < 3:
        threading.Event().wait(0.001)
    combiner._hand_off()
    for thread in threads:
        thread.join(5)
    assert len(errors) == 3
    assert not combiner._busy


async def test_the_asyncio_combiner_batches_calls_that_arrive_meanwhile() -> None:
    gate = asyncio.Event()
    batches: list[list[int]] = []

    async def one(request: int) -> int:
        await gate.wait()
        return request

    async def many(requests: list[int]) -> list[int]:
        batches.append(list(requests))
        return [-request for request in requests]

    combiner = _AsyncCombiner(one, many)
    tasks = [asyncio.ensure_future(combiner(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [1, -2, -3]
    assert batches == [[2, 3]]
    assert await combiner(4) == 4


def test_combined_claims_are_split_in_arrival_order_per_visibility() -> None:
    calls: list[tuple[int, float]] = []

    def claim(count: int, visibility: float) -> list[StoredMessage]:
        calls.append((count, visibility))
        return [_stored(n) for n in range(3)]  # fewer than asked for

    requests = [_ClaimRequest(2, 30.0), _ClaimRequest(1, 5.0), _ClaimRequest(2, 30.0)]
    results = _split_claims(requests, claim)
    assert calls == [(4, 30.0), (1, 5.0)]
    assert [[m.id for m in found] for found in results] == [["0", "1"], ["0"], ["2"]]


def test_a_repeated_receipt_in_one_combined_ack_counts_once() -> None:
    first, second = Receipt("1", "7"), Receipt("2", "7")
    assert _ack_results([first, second, first], [second]) == [True, False, False]
