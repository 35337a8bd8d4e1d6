"""The queue worker's asyncio runner (``arun``/``astop``) on the memory engine.

The clock is a ManualClock in ``autojump=False`` mode: the heartbeat task, pauses
and the grace period wait until the test moves time with ``clock.advance``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.codec import JsonCodec
from seawall.errors import EngineError
from seawall.events import Event
from seawall.messaging.channel import BlockingInEventLoopError
from seawall.messaging.queue import (
    HandlerFailed,
    HeartbeatSent,
    Message,
    MessageReleased,
    Queue,
    QueueStats,
    StoreCallFailed,
    Worker,
    WorkerStats,
    current_message,
    current_transaction,
)
from seawall.messaging.queue._model import StoredMessage
from seawall.messaging.queue._offload import OffloadedQueueStore, PollingQueueStore
from seawall.resilience import exponential

E = TypeVar("E", bound=Event)

WAIT = 10.0
"""Upper bound on a wait for a worker thread (never reached when the code is right)."""


@pytest.fixture
def stepped() -> ManualClock:
    """A manual clock whose ``asleep`` waits for ``advance`` (tasks interleave at exact times)."""
    return ManualClock(1000.0, autojump=False)


@pytest.fixture
def queue(stepped: ManualClock) -> Iterator[Queue]:
    opened = seawall.connect("memory://").queue("jobs", clock=stepped)
    yield opened
    opened.close()


class Recorder:
    """Collects a worker's events."""

    def __init__(self, worker: Worker) -> None:
        self.events: list[Event] = []
        worker.events.subscribe(self.events.append)

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]


async def until(predicate: Callable[[], bool], rounds: int = 2000) -> None:
    """Let the loop run until ``predicate`` holds (bounded by ``rounds`` turns, no real time)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def _start(worker: Worker, **options: Any) -> asyncio.Task[WorkerStats]:
    return asyncio.create_task(worker.arun(handle_signals=False, **options))


async def test_arun_acks_each_message_after_an_async_handler_returns(
    queue: Queue, stepped: ManualClock
) -> None:
    await queue.asend_many(["a", "b", "c"])
    seen: list[tuple[str, str | None]] = []

    async def handler(body: str) -> None:
        await asyncio.sleep(0)
        message = current_message()
        seen.append((body, None if message is None else message.id))

    worker = Worker(queue, handler, clock=stepped)

    stats = await worker.arun(stop_when_empty=True, handle_signals=False)

    assert sorted(body for body, _ in seen) == ["a", "b", "c"]
    assert all(message_id is not None for _, message_id in seen)
    assert stats == WorkerStats(handled=3, failed=0, released=0, stale=0, in_flight=0)
    assert await queue.astats() == QueueStats(0, 0, 0, 0)


async def test_a_failing_async_handler_is_retried_on_the_schedule_then_dead_lettered(
    stepped: ManualClock,
) -> None:
    queue = seawall.connect("memory://").queue("jobs", clock=stepped, max_deliveries=3)
    await queue.asend("x")

    async def fails(body: str) -> None:
        raise RuntimeError("down")

    worker = Worker(queue, fails, retry_wait=exponential(0.5, jitter="none"), clock=stepped)
    recorder = Recorder(worker)
    for delay in (0.5, 1.0):
        await worker.arun(stop_when_empty=True, handle_signals=False)
        assert recorder.of(HandlerFailed)[-1].retry_in == delay
        stepped.advance(delay - 0.001)
        assert await queue.areceive() == []
        stepped.advance(0.001)

    await worker.arun(stop_when_empty=True, handle_signals=False)

    failures = recorder.of(HandlerFailed)
    assert [(f.delivery_count, f.dead_lettered) for f in failures] == [
        (1, False),
        (2, False),
        (3, True),
    ]
    [letter] = await queue.dead_letters.alist()
    assert letter.last_error == "RuntimeError: down"


async def test_heartbeats_keep_a_long_async_handler_s_message_hidden(
    queue: Queue, stepped: ManualClock
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(body: str) -> None:
        started.set()
        await release.wait()

    await queue.asend("long")
    worker = Worker(queue, slow, concurrency=1, visibility_timeout=3.0, clock=stepped)
    recorder = Recorder(worker)
    running = _start(worker, stop_when_empty=True)
    await asyncio.wait_for(started.wait(), WAIT)

    for beat in range(1, 10):
        stepped.advance(1.0)
        await until(lambda: len(recorder.of(HeartbeatSent)) >= beat)  # noqa: B023
        assert await queue.areceive() == [], "the message became visible while its handler ran"
    release.set()
    stats = await asyncio.wait_for(running, WAIT)

    assert len(recorder.of(HeartbeatSent)) == 9
    assert stats.handled == 1
    assert (await queue.astats()).total == 0


async def test_a_message_taken_over_after_its_deadline_stops_beating_and_is_not_acked(
    queue: Queue, stepped: ManualClock
) -> None:
    release = asyncio.Event()

    async def slow(body: str) -> None:
        await release.wait()

    await queue.asend("slow")
    worker = Worker(queue, slow, concurrency=1, visibility_timeout=3.0, clock=stepped)
    recorder = Recorder(worker)
    running = _start(worker, stop_when_empty=True)
    await until(lambda: worker.stats().in_flight == 1)

    stepped.advance(3.5)  # the loop is stalled past the deadline: no heartbeat ran yet
    [stolen] = queue.receive()  # another consumer takes the message
    await until(lambda: len(recorder.of(StoreCallFailed)) == 1)
    release.set()
    stats = await asyncio.wait_for(running, WAIT)

    beat, ack = recorder.of(StoreCallFailed)
    assert (beat.operation, beat.stale, ack.operation, ack.stale) == (
        "extend_visibility",
        True,
        "ack",
        True,
    )
    assert (stats.handled, stats.stale) == (0, 1)
    assert stolen.delivery_count == 2
    stolen.ack()  # the new delivery's receipt still holds


async def test_arun_never_runs_more_than_its_concurrency(
    queue: Queue, stepped: ManualClock
) -> None:
    await queue.asend_many(range(10))
    gate = asyncio.Event()
    active = peak = 0

    async def handler(body: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await gate.wait()
        active -= 1

    worker = Worker(queue, handler, concurrency=3, clock=stepped)
    running = _start(worker, stop_when_empty=True)
    await until(lambda: active == 3)
    for _ in range(50):
        await asyncio.sleep(0)
    assert await queue.astats() == QueueStats(ready=7, in_flight=3, delayed=0, dead=0)
    assert worker.stats().in_flight == 3
    gate.set()
    stats = await asyncio.wait_for(running, WAIT)

    assert peak == 3
    assert stats.handled == 10


async def test_astop_lets_running_handlers_finish_and_receives_nothing_more(
    queue: Queue, stepped: ManualClock
) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def handler(body: str) -> None:
        started.set()
        await gate.wait()

    await queue.asend("first")
    worker = Worker(queue, handler, concurrency=1, poll_wait=0.0, clock=stepped)
    running = _start(worker)
    await asyncio.wait_for(started.wait(), WAIT)
    stopping = asyncio.create_task(worker.astop())
    await asyncio.sleep(0)
    await queue.asend("second")
    gate.set()
    await asyncio.wait_for(stopping, WAIT)

    stats = await running
    assert (stats.handled, stats.released) == (1, 0)
    assert [message.body for message in await queue.apeek()] == ["second"]
    assert not worker.running


async def test_after_the_grace_period_async_handlers_are_cancelled_and_released(
    queue: Queue, stepped: ManualClock
) -> None:
    cancelled = asyncio.Event()

    async def handler(body: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    message_id = await queue.asend("stuck")
    worker = Worker(queue, handler, concurrency=1, grace=5.0, poll_wait=0.0, clock=stepped)
    recorder = Recorder(worker)
    running = _start(worker)
    await until(lambda: worker.stats().in_flight == 1)
    worker.stop()
    for _ in range(20):
        await asyncio.sleep(0)
    stepped.advance(4.9)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not running.done()
    stepped.advance(0.1)
    stats = await asyncio.wait_for(running, WAIT)

    assert cancelled.is_set()
    assert stats.released == 1
    [released] = recorder.of(MessageReleased)
    assert released.message_id == message_id
    [peeked] = await queue.apeek()
    assert peeked.id == message_id
    assert "released by worker:jobs" in str(peeked.last_error)


async def test_a_synchronous_handler_runs_on_a_thread_without_blocking_the_loop(
    queue: Queue, stepped: ManualClock
) -> None:
    loop_ran = threading.Event()
    calls: list[tuple[bool, Message | None]] = []

    def handler(body: str) -> None:
        assert loop_ran.wait(WAIT), "the event loop was blocked by the handler"
        calls.append((threading.current_thread() is threading.main_thread(), current_message()))

    async def meanwhile() -> None:
        loop_ran.set()

    await queue.asend("x")
    worker = Worker(queue, handler, clock=stepped)
    running = _start(worker, stop_when_empty=True)
    await meanwhile()
    stats = await asyncio.wait_for(running, WAIT)

    [(on_main_thread, message)] = calls
    assert not on_main_thread
    assert message is not None
    assert message.body == "x"
    assert stats.handled == 1


async def test_an_undecodable_message_never_stops_arun(queue: Queue, stepped: ManualClock) -> None:
    await queue.asend("ok")
    queue.store.send(b"{broken", None, 0, 0.0, None, None)
    seen: list[str] = []

    async def handler(body: str) -> None:
        seen.append(body)

    worker = Worker(queue, handler, clock=stepped)
    stats = await worker.arun(stop_when_empty=True, handle_signals=False)

    assert (seen, stats.handled) == (["ok"], 1)
    [letter] = await queue.dead_letters.alist()
    assert letter.reason.startswith("body cannot be decoded")


class FailingReceives:
    """A memory store whose next ``failures`` receives raise an engine error."""

    def __init__(self, store: PollingQueueStore, failures: int) -> None:
        self.inner = store
        self.failures = failures

    def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        if self.failures:
            self.failures -= 1
            raise EngineError("receive failed: server closed the connection")
        return self.inner.receive(max_messages, visibility_timeout, wait)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_store_outage_on_areceive_backs_off_and_recovers(
    queue: Queue, stepped: ManualClock
) -> None:
    failing: Any = FailingReceives(queue.store, failures=2)  # type: ignore[arg-type]
    flaky = Queue(
        failing,
        codec=JsonCodec(),
        visibility_timeout=30.0,
        max_message_size=1 << 20,
        clock=stepped,
        async_store=lambda: OffloadedQueueStore(failing, offload=False),
    )
    await queue.asend("after the outage")
    seen: list[str] = []

    async def handler(body: str) -> None:
        seen.append(body)

    worker = Worker(flaky, handler, reconnect_wait=exponential(1.0, jitter="none"), clock=stepped)
    recorder = Recorder(worker)
    running = _start(worker, stop_when_empty=True)
    for count, delay in ((1, 1.0), (2, 2.0)):
        await until(lambda: len(recorder.of(StoreCallFailed)) == count)  # noqa: B023
        assert recorder.of(StoreCallFailed)[-1].retry_in == delay
        for _ in range(20):
            await asyncio.sleep(0)
        assert seen == []
        stepped.advance(delay)
    stats = await asyncio.wait_for(running, WAIT)

    assert seen == ["after the outage"]
    assert stats.handled == 1


async def test_a_transactional_sync_handler_under_arun_commits_with_the_ack(
    tmp_path: Path,
) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'shop.db'}")
    engine.connection.execute("CREATE TABLE effects (body TEXT)")  # type: ignore[attr-defined]
    queue = engine.queue("orders")
    await queue.asend_many(["a", "b"])

    def handler(body: str) -> None:
        transaction = current_transaction()
        assert transaction is not None
        transaction.execute("INSERT INTO effects VALUES (?)", [body])

    worker = Worker(queue, handler, transaction=engine.transaction)
    stats = await worker.arun(stop_when_empty=True, handle_signals=False)

    rows = engine.connection.execute("SELECT body FROM effects ORDER BY body").fetchall()  # type: ignore[attr-defined]
    assert [row[0] for row in rows] == ["a", "b"]
    assert stats.handled == 2
    assert (await queue.astats()).total == 0
    await queue.aclose()
    engine.close()


async def test_run_inside_an_event_loop_is_refused(queue: Queue) -> None:
    with pytest.raises(BlockingInEventLoopError, match=r"await worker\.arun"):
        Worker(queue, print).run()


async def test_astop_when_not_running_returns_at_once(queue: Queue) -> None:
    worker = Worker(queue, print)
    await asyncio.wait_for(worker.astop(), WAIT)
    assert not worker.running


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
async def test_sigterm_stops_arun_gracefully(queue: Queue, stepped: ManualClock) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    before = signal.getsignal(signal.SIGTERM)
    worker = Worker(queue, print, poll_wait=0.0, clock=stepped)
    running = asyncio.create_task(worker.arun())
    await until(lambda: worker.running)
    await asyncio.sleep(0)
    os.kill(os.getpid(), signal.SIGTERM)
    stats = await asyncio.wait_for(running, WAIT)

    assert stats.handled == 0
    assert signal.getsignal(signal.SIGTERM) is before
