"""The queue worker's threaded runner (``run``) and its sans-I/O core, on the memory engine.

Time is a ManualClock: the worker's waits look at it every few milliseconds, so a
test moves time with ``clock.advance`` and then waits (bounded) for the worker's
events; nothing here sleeps to let time pass.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

import seawall
from seawall.clock import ManualClock
from seawall.codec import JsonCodec
from seawall.errors import ConfigurationError, EngineError
from seawall.events import Event
from seawall.messaging.queue import (
    HandlerFailed,
    HeartbeatSent,
    Message,
    MessageHandled,
    MessageReleased,
    Queue,
    QueueStats,
    StoreCallFailed,
    Worker,
    WorkerStarted,
    WorkerStats,
    WorkerStopped,
    current_message,
    current_transaction,
)
from seawall.messaging.queue._model import OutgoingMessage, ReceiptLike, StoredMessage
from seawall.messaging.queue._store import QueueStore
from seawall.messaging.queue._worker import WorkerCore
from seawall.resilience import constant, decorrelated, exponential

E = TypeVar("E", bound=Event)

JOIN_TIMEOUT = 10.0
"""Upper bound on any wait for a worker thread (never reached when the code is right)."""


class Recorder:
    """Collects a worker's events; tests wait on it for what the worker's threads did."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._condition = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._condition:
            self.events.append(event)
            self._condition.notify_all()

    def of(self, kind: type[E]) -> list[E]:
        with self._condition:
            return [event for event in self.events if isinstance(event, kind)]

    def wait_for(self, kind: type[E], count: int = 1) -> list[E]:
        """Block until ``count`` events of ``kind`` arrived (bounded); returns them."""
        with self._condition:
            arrived = self._condition.wait_for(
                lambda: sum(isinstance(event, kind) for event in self.events) >= count,
                JOIN_TIMEOUT,
            )
        assert arrived, f"no {count} x {kind.__name__} within {JOIN_TIMEOUT} s: {self.events}"
        return self.of(kind)


@pytest.fixture
def queue(clock: ManualClock) -> Iterator[Queue]:
    opened = seawall.connect("memory://").queue("jobs", clock=clock)
    yield opened
    opened.close()


def _recorded(worker: Worker) -> Recorder:
    recorder = Recorder()
    worker.events.subscribe(recorder)
    return recorder


@contextmanager
def running(worker: Worker, **options: Any) -> Iterator[dict[str, WorkerStats]]:
    """Run ``worker`` in a thread; on exit stop it and join the thread (bounded)."""
    result: dict[str, WorkerStats] = {}
    started = threading.Event()
    unsubscribe = worker.events.subscribe(lambda event: started.set(), types=(WorkerStarted,))

    def target() -> None:
        result["stats"] = worker.run(handle_signals=False, **options)

    thread = threading.Thread(target=target, name="test-worker", daemon=True)
    thread.start()
    try:
        assert started.wait(JOIN_TIMEOUT)
        yield result
    finally:
        unsubscribe()
        worker.stop()
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive(), "the worker did not stop"


# -- acknowledging ------------------------------------------------------------------------------


def test_acks_each_message_after_the_handler_returns(queue: Queue, clock: ManualClock) -> None:
    queue.send_many(["a", "b", "c"])
    seen: list[str] = []
    worker = Worker(queue, seen.append, clock=clock)
    recorder = _recorded(worker)

    stats = worker.run(stop_when_empty=True, handle_signals=False)

    assert sorted(seen) == ["a", "b", "c"]
    assert stats == WorkerStats(handled=3, failed=0, released=0, stale=0, in_flight=0)
    assert queue.stats() == QueueStats(ready=0, in_flight=0, delayed=0, dead=0)
    handled = recorder.of(MessageHandled)
    assert sorted(event.delivery_count for event in handled) == [1, 1, 1]
    assert isinstance(recorder.events[0], WorkerStarted)
    stopped = recorder.of(WorkerStopped)
    assert stopped == [WorkerStopped(worker.name, "jobs", 3, 0, 0)]


def test_the_handler_gets_the_body_and_current_message_the_message(
    queue: Queue, clock: ManualClock
) -> None:
    message_id = queue.send({"to": "a@example.com"}, headers={"trace": "t1"})
    calls: list[tuple[Any, Message | None]] = []
    worker = Worker(queue, lambda body: calls.append((body, current_message())), clock=clock)

    worker.run(stop_when_empty=True, handle_signals=False)

    [(body, message)] = calls
    assert body == {"to": "a@example.com"}
    assert message is not None
    assert (message.id, message.headers["trace"], message.delivery_count) == (message_id, "t1", 1)
    assert current_message() is None
    assert current_transaction() is None


def test_pass_message_hands_the_handler_the_message(queue: Queue, clock: ManualClock) -> None:
    message_id = queue.send("hello")
    received: list[Message] = []
    worker = Worker(queue, received.append, pass_message=True, clock=clock)

    worker.run(stop_when_empty=True, handle_signals=False)

    [message] = received
    assert isinstance(message, Message)
    assert (message.id, message.body) == (message_id, "hello")


# -- failures and the retry schedule ------------------------------------------------------------


def test_a_failing_message_comes_back_after_the_schedule_s_delays_then_dies(
    clock: ManualClock,
) -> None:
    queue = seawall.connect("memory://").queue("jobs", clock=clock, max_deliveries=4)
    queue.send("x")

    def fails(body: str) -> None:
        message = current_message()
        assert message is not None
        raise ValueError(f"boom {message.delivery_count}")

    worker = Worker(queue, fails, retry_wait=exponential(1.0, jitter="none"), clock=clock)
    recorder = _recorded(worker)

    for delivery, delay in enumerate([1.0, 2.0, 4.0], start=1):
        stats = worker.run(stop_when_empty=True, handle_signals=False)
        assert (stats.failed, stats.handled) == (1, 0)
        failure = recorder.of(HandlerFailed)[-1]
        assert (failure.delivery_count, failure.retry_in, failure.dead_lettered) == (
            delivery,
            delay,
            False,
        )
        assert failure.error == f"ValueError: boom {delivery}"
        assert queue.stats().delayed == 1
        clock.advance(delay - 0.001)
        assert queue.receive() == [], "delivered again before the schedule's delay"
        clock.advance(0.001)

    worker.run(stop_when_empty=True, handle_signals=False)  # the 4th delivery is the last

    last = recorder.of(HandlerFailed)[-1]
    assert (last.delivery_count, last.retry_in, last.dead_lettered) == (4, None, True)
    [letter] = queue.dead_letters.list()
    assert letter.last_error == "ValueError: boom 4"
    assert "last allowed delivery" in letter.reason
    assert queue.stats().total == 0


def test_dead_letter_on_sends_the_message_to_the_dead_letters_at_once(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send({"sku": None})

    def validate(body: dict[str, Any]) -> None:
        raise KeyError("sku")

    worker = Worker(queue, validate, dead_letter_on=KeyError, clock=clock)
    recorder = _recorded(worker)

    worker.run(stop_when_empty=True, handle_signals=False)

    [failure] = recorder.of(HandlerFailed)
    assert (failure.delivery_count, failure.dead_lettered, failure.retry_in) == (1, True, None)
    [letter] = queue.dead_letters.list()
    assert letter.delivery_count == 1
    assert "KeyError: 'sku'" in letter.reason
    assert "dead_letter_on" in letter.reason


def test_a_handler_raising_base_exceptions_does_not_kill_its_thread(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send_many(["exit", "ok"])

    def handler(body: str) -> None:
        message = current_message()
        assert message is not None
        if body == "exit" and message.delivery_count == 1:
            raise SystemExit(3)

    worker = Worker(queue, handler, concurrency=1, retry_wait=0.0, clock=clock)
    recorder = _recorded(worker)

    stats = worker.run(stop_when_empty=True, handle_signals=False)

    assert (stats.handled, stats.failed) == (2, 1)
    assert recorder.of(HandlerFailed)[0].error == "SystemExit: 3"
    assert queue.stats().total == 0


def test_an_undecodable_message_goes_to_the_dead_letters_and_the_rest_are_handled(
    queue: Queue, clock: ManualClock
) -> None:
    queue.send("good-1")
    queue.store.send(b"\xff not json", None, 0, 0.0, None, None)
    queue.send("good-2")
    seen: list[str] = []
    worker = Worker(queue, seen.append, concurrency=1, clock=clock)

    stats = worker.run(stop_when_empty=True, handle_signals=False)

    assert sorted(seen) == ["good-1", "good-2"]
    assert stats.handled == 2
    [letter] = queue.dead_letters.list()
    assert letter.reason.startswith("body cannot be decoded")
    assert letter.body == b"\xff not json"


def test_a_handler_returning_a_coroutine_fails_with_a_hint(
    queue: Queue, clock: ManualClock
) -> None:
    async def work(body: str) -> None:
        """Never awaited: the worker closes it."""

    queue.send("x")
    worker = Worker(queue, lambda body: work(body), retry_wait=100.0, clock=clock)
    recorder = _recorded(worker)

    worker.run(stop_when_empty=True, handle_signals=False)

    [failure] = recorder.of(HandlerFailed)
    assert "arun" in failure.error


# -- heartbeats ---------------------------------------------------------------------------------


def test_heartbeats_keep_a_long_handler_s_message_hidden(queue: Queue, clock: ManualClock) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(body: str) -> None:
        started.set()
        assert release.wait(JOIN_TIMEOUT)

    worker = Worker(queue, slow, concurrency=1, visibility_timeout=3.0, poll_wait=0.0, clock=clock)
    assert worker.heartbeat == 1.0  # a third of the visibility timeout
    recorder = _recorded(worker)
    queue.send("long")

    with running(worker):
        assert started.wait(JOIN_TIMEOUT)
        for beat in range(1, 10):  # 9 s in all, three times the visibility timeout
            clock.advance(1.0)
            recorder.wait_for(HeartbeatSent, beat)
            assert queue.receive() == [], "the message became visible while its handler ran"
        release.set()
        [handled] = recorder.wait_for(MessageHandled)

    assert handled.delivery_count == 1
    assert all(event.visibility_timeout == 3.0 for event in recorder.of(HeartbeatSent))
    assert queue.stats().total == 0


# -- concurrency --------------------------------------------------------------------------------


def test_never_runs_or_claims_more_than_its_concurrency(queue: Queue, clock: ManualClock) -> None:
    queue.send_many(range(10))
    gate = threading.Event()
    condition = threading.Condition()
    active = peak = 0

    def handler(body: int) -> None:
        nonlocal active, peak
        with condition:
            active += 1
            peak = max(peak, active)
            condition.notify_all()
        assert gate.wait(JOIN_TIMEOUT)
        with condition:
            active -= 1

    worker = Worker(queue, handler, concurrency=3, poll_wait=0.0, clock=clock)
    recorder = _recorded(worker)
    with running(worker):
        with condition:
            assert condition.wait_for(lambda: active == 3, JOIN_TIMEOUT)
        assert queue.stats() == QueueStats(ready=7, in_flight=3, delayed=0, dead=0)
        assert worker.stats().in_flight == 3
        gate.set()
        recorder.wait_for(MessageHandled, 10)

    assert peak == 3
    assert queue.stats().total == 0


# -- stopping -----------------------------------------------------------------------------------


def test_stop_lets_running_handlers_finish_and_receives_nothing_more(
    queue: Queue, clock: ManualClock
) -> None:
    started, gate = threading.Event(), threading.Event()

    def handler(body: str) -> None:
        started.set()
        assert gate.wait(JOIN_TIMEOUT)

    queue.send("first")
    worker = Worker(queue, handler, concurrency=1, poll_wait=0.0, clock=clock)
    with running(worker) as result:
        assert started.wait(JOIN_TIMEOUT)
        worker.stop()
        queue.send("second")
        gate.set()

    assert result["stats"] == WorkerStats(handled=1, failed=0, released=0, stale=0, in_flight=0)
    assert [message.body for message in queue.peek()] == ["second"]
    assert not worker.running


class _LateFinish(logging.Handler):
    """Notices the worker's log line for a handler that returned after its message was released."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "after it was released" in record.getMessage():
            self.seen.set()


def test_after_the_grace_period_running_messages_are_released(
    queue: Queue, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seawall.messaging.worker")
    started, gate, returned = threading.Event(), threading.Event(), threading.Event()

    def handler(body: str) -> None:
        started.set()
        try:
            assert gate.wait(JOIN_TIMEOUT)
        finally:
            returned.set()

    message_id = queue.send("stuck")
    worker = Worker(queue, handler, concurrency=1, grace=5.0, poll_wait=0.0, clock=clock)
    recorder = _recorded(worker)
    late = _LateFinish()
    logging.getLogger("seawall.messaging.worker").addHandler(late)
    try:
        with running(worker) as result:
            assert started.wait(JOIN_TIMEOUT)
            worker.stop()
            clock.advance(4.9)
            assert recorder.of(MessageReleased) == []
            clock.advance(0.1)
            [released] = recorder.wait_for(MessageReleased)
        assert released.message_id == message_id
        assert result["stats"].released == 1
        [peeked] = queue.peek()
        assert (peeked.id, peeked.delivery_count) == (message_id, 1)
        assert "grace 5 s" in str(peeked.last_error)

        gate.set()  # the handler returns after its message was given back: no ack
        assert returned.wait(JOIN_TIMEOUT)
        assert late.seen.wait(JOIN_TIMEOUT)
        assert [message.id for message in queue.peek()] == [message_id]
    finally:
        logging.getLogger("seawall.messaging.worker").removeHandler(late)


def test_a_second_stop_with_no_grace_releases_at_once(queue: Queue, clock: ManualClock) -> None:
    started, gate = threading.Event(), threading.Event()

    def handler(body: str) -> None:
        started.set()
        gate.wait(JOIN_TIMEOUT)

    queue.send("stuck")
    worker = Worker(queue, handler, concurrency=1, poll_wait=0.0, clock=clock)
    recorder = _recorded(worker)
    try:
        with running(worker) as result:
            assert started.wait(JOIN_TIMEOUT)
            worker.stop()
            worker.stop(grace=0)
            recorder.wait_for(MessageReleased)
        assert result["stats"].released == 1
        assert queue.stats().ready == 1
    finally:
        gate.set()


def test_stop_has_no_effect_when_not_running(queue: Queue, clock: ManualClock) -> None:
    queue.send("x")
    worker = Worker(queue, lambda body: None, clock=clock)
    worker.stop()
    assert worker.run(stop_when_empty=True, handle_signals=False).handled == 1


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_sigterm_stops_the_worker_gracefully_and_restores_the_handler(
    queue: Queue, clock: ManualClock
) -> None:
    assert threading.current_thread() is threading.main_thread()
    started, gate = threading.Event(), threading.Event()

    def handler(body: str) -> None:
        started.set()
        assert gate.wait(JOIN_TIMEOUT)

    def terminate() -> None:
        assert started.wait(JOIN_TIMEOUT)
        os.kill(os.getpid(), signal.SIGTERM)
        gate.set()

    queue.send("x")
    before = signal.getsignal(signal.SIGTERM)
    worker = Worker(queue, handler, concurrency=1, poll_wait=0.0, clock=clock)
    helper = threading.Thread(target=terminate, daemon=True)
    helper.start()

    stats = worker.run()  # blocks the main thread until the signal stops it

    helper.join(JOIN_TIMEOUT)
    assert stats.handled == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_running_twice_at_once_is_refused(queue: Queue, clock: ManualClock) -> None:
    worker = Worker(queue, lambda body: None, poll_wait=0.0, clock=clock)
    with running(worker), pytest.raises(RuntimeError, match="already running"):
        worker.run(handle_signals=False)


# -- store failures -----------------------------------------------------------------------------


class FlakyStore:
    """A store that fails the next ``failures[operation]`` calls of each operation."""

    def __init__(self, store: QueueStore, *, stale_acks: bool = False) -> None:
        self.inner = store
        self.failures: dict[str, int] = {}
        self.stale_acks = stale_acks
        self.name = store.name
        self.max_deliveries = store.max_deliveries
        self.events = store.events

    def _maybe_fail(self, operation: str) -> None:
        left = self.failures.get(operation, 0)
        if left:
            self.failures[operation] = left - 1
            raise EngineError(f"{operation} failed: connection refused")

    def receive(
        self, max_messages: int, visibility_timeout: float, wait: float
    ) -> list[StoredMessage]:
        self._maybe_fail("receive")
        return self.inner.receive(max_messages, visibility_timeout, wait)

    def ack(self, message_id: str, token: str, transaction: Any) -> bool:
        self._maybe_fail("ack")
        if self.stale_acks:
            return False
        return self.inner.ack(message_id, token, transaction)

    def nack(self, message_id: str, token: str, delay: float, error: str | None) -> Any:
        self._maybe_fail("nack")
        return self.inner.nack(message_id, token, delay, error)

    def send(self, body: bytes, headers: Mapping[str, str] | None, *rest: Any) -> str:
        return self.inner.send(body, headers, *rest)

    def send_many(self, messages: Sequence[OutgoingMessage], transaction: Any) -> list[str]:
        return self.inner.send_many(messages, transaction)

    def ack_many(self, receipts: Sequence[ReceiptLike], transaction: Any) -> list[ReceiptLike]:
        return self.inner.ack_many(receipts, transaction)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _queue_over(store: Any, clock: ManualClock | None = None) -> Queue:
    return Queue(
        store,
        codec=JsonCodec(),
        visibility_timeout=30.0,
        max_message_size=1 << 20,
        clock=clock,
    )


def test_a_store_outage_on_receive_backs_off_and_recovers(queue: Queue, clock: ManualClock) -> None:
    flaky = FlakyStore(queue.store)
    flaky.failures["receive"] = 3
    queue.send("after the outage")
    seen: list[str] = []
    worker = Worker(
        _queue_over(flaky, clock),
        seen.append,
        reconnect_wait=exponential(1.0, jitter="none"),
        poll_wait=0.0,
        clock=clock,
    )
    recorder = _recorded(worker)

    with running(worker):
        for failures, delay in enumerate([1.0, 2.0, 4.0], start=1):
            failed = recorder.wait_for(StoreCallFailed, failures)[-1]
            assert (failed.operation, failed.retry_in, failed.stale) == ("receive", delay, False)
            assert "connection refused" in failed.error
            assert seen == []
            clock.advance(delay)
        recorder.wait_for(MessageHandled)

    assert seen == ["after the outage"]


def test_a_failed_ack_leaves_the_message_for_redelivery(queue: Queue, clock: ManualClock) -> None:
    flaky = FlakyStore(queue.store)
    flaky.failures["ack"] = 1
    flaky_queue = _queue_over(flaky, clock)
    flaky_queue.send("once")
    seen: list[int] = []

    def handler(body: str) -> None:
        message = current_message()
        assert message is not None
        seen.append(message.delivery_count)

    worker = Worker(flaky_queue, handler, poll_wait=0.0, clock=clock)
    recorder = _recorded(worker)
    with running(worker):
        [failed] = recorder.wait_for(StoreCallFailed)
        assert (failed.operation, failed.stale, failed.retry_in) == ("ack", False, None)
        clock.advance(30.0)  # the visibility timeout: delivered again
        [handled] = recorder.wait_for(MessageHandled)

    assert handled.delivery_count == 2
    assert seen == [1, 2]
    assert queue.stats().total == 0


def test_a_failed_nack_is_reported_and_the_worker_goes_on(queue: Queue, clock: ManualClock) -> None:
    flaky = FlakyStore(queue.store)
    flaky.failures["nack"] = 1
    flaky_queue = _queue_over(flaky, clock)
    flaky_queue.send_many(["bad", "good"])

    def handler(body: str) -> None:
        if body == "bad":
            raise ValueError("bad")

    worker = Worker(flaky_queue, handler, concurrency=1, clock=clock)
    recorder = _recorded(worker)
    stats = worker.run(stop_when_empty=True, handle_signals=False)

    assert (stats.handled, stats.failed) == (1, 1)
    [failed] = recorder.of(StoreCallFailed)
    assert failed.operation == "nack"
    [failure] = recorder.of(HandlerFailed)
    assert failure.dead_lettered is False
    assert queue.stats().in_flight == 1  # comes back after its visibility timeout


# -- transactions (SQLite) ----------------------------------------------------------------------


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Any]:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'shop.db'}")
    engine.connection.execute("CREATE TABLE effects (message_id TEXT, body TEXT)")  # type: ignore[attr-defined]
    yield engine
    engine.close()


def _effects(engine: Any) -> list[str]:
    connection: sqlite3.Connection = engine.connection
    return [row[0] for row in connection.execute("SELECT body FROM effects ORDER BY body")]


def _record_effect(body: str) -> None:
    transaction, message = current_transaction(), current_message()
    assert transaction is not None
    assert message is not None
    transaction.execute("INSERT INTO effects VALUES (?, ?)", [message.id, body])
    if body == "fail":
        raise RuntimeError("refused")


def test_a_transactional_handler_s_writes_commit_with_its_ack(shop: Any) -> None:
    queue = shop.queue("orders")
    queue.send_many(["a", "b", "fail"])
    worker = Worker(queue, _record_effect, transaction=shop.transaction, retry_wait=100.0)

    stats = worker.run(stop_when_empty=True, handle_signals=False)

    assert (stats.handled, stats.failed) == (2, 1)
    assert _effects(shop) == ["a", "b"]  # the failed handler's write rolled back
    assert queue.stats() == QueueStats(ready=0, in_flight=0, delayed=1, dead=0)


def test_a_stale_ack_rolls_the_handler_s_writes_back(shop: Any) -> None:
    queue = shop.queue("orders")
    queue.send("a")
    stale_queue = _queue_over(FlakyStore(queue.store, stale_acks=True))
    worker = Worker(stale_queue, _record_effect, transaction=shop.transaction)
    recorder = _recorded(worker)

    stats = worker.run(stop_when_empty=True, handle_signals=False)

    assert (stats.handled, stats.stale) == (0, 1)
    assert _effects(shop) == []
    [failed] = recorder.of(StoreCallFailed)
    assert (failed.operation, failed.stale) == ("ack", True)


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 2.5}, "concurrency"),
        ({"visibility_timeout": 0}, "visibility_timeout"),
        ({"heartbeat": -1}, "heartbeat"),
        ({"visibility_timeout": 10, "heartbeat": 10}, "heartbeat"),
        ({"batch": 0}, "batch"),
        ({"poll_wait": -1}, "poll_wait"),
        ({"grace": float("nan")}, "grace"),
        ({"retry_wait": "soon"}, "retry_wait"),
        ({"reconnect_wait": -1.0}, "reconnect_wait"),
        ({"dead_letter_on": ValueError("x")}, "dead_letter_on"),
        ({"pass_message": 1}, "pass_message"),
        ({"transaction": 5}, "transaction"),
        ({"clock": object()}, "clock"),
    ],
)
def test_invalid_options_are_refused_naming_the_field(
    queue: Queue, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigurationError, match=field):
        Worker(queue, print, **options)


def test_a_queue_and_a_callable_handler_are_required(queue: Queue) -> None:
    with pytest.raises(ConfigurationError, match="Queue"):
        Worker("jobs", print)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="callable"):
        Worker(queue, "print")  # type: ignore[arg-type]


def test_coroutine_handlers_need_arun_and_no_transaction(queue: Queue) -> None:
    async def handler(body: Any) -> None:
        """An async handler."""

    worker = Worker(queue, handler)
    assert worker.handler_is_async
    with pytest.raises(ConfigurationError, match="arun"):
        worker.run()
    with pytest.raises(ConfigurationError, match="synchronous handler"):
        Worker(queue, handler, transaction=lambda: None)  # type: ignore[arg-type,return-value]


def test_defaults(queue: Queue) -> None:
    worker = Worker(queue, print)
    assert (worker.concurrency, worker.visibility_timeout, worker.heartbeat) == (4, 30.0, 10.0)
    assert (worker.batch, worker.poll_wait, worker.grace) == (4, 1.0, 25.0)
    assert repr(worker.retry_wait) == "exponential(1.0, factor=2.0, cap=300.0, jitter='full')"
    assert repr(worker.reconnect_wait) == "exponential(0.5, factor=2.0, cap=30.0, jitter='full')"
    assert worker.name == "worker:jobs"
    assert repr(worker) == "Worker('worker:jobs', queue='jobs', concurrency=4, running=False)"


# -- the core -----------------------------------------------------------------------------------


def _core(**options: Any) -> WorkerCore:
    settings: dict[str, Any] = {
        "concurrency": 2,
        "heartbeat": 10.0,
        "retry_wait": exponential(1.0, jitter="none"),
        "max_deliveries": 5,
    }
    settings.update(options)
    return WorkerCore(**settings)


def _message(queue: Queue, message_id: str, token: str, delivery_count: int = 1) -> Message:
    return Message(queue, message_id, None, {}, 0, delivery_count, 0.0, token)


def test_the_core_schedules_heartbeats_per_delivery(queue: Queue) -> None:
    core = _core()
    first, second = _message(queue, "1", "a"), _message(queue, "2", "b")
    core.admit(first, 100.0)
    core.admit(second, 104.0)
    assert (core.free, core.in_flight, core.next_beat_at()) == (0, 2, 110.0)
    with pytest.raises(RuntimeError, match="concurrency"):
        core.admit(_message(queue, "3", "c"), 105.0)
    assert core.due(109.9) == []
    assert core.due(110.0) == [first]
    assert core.next_beat_at() == 114.0
    assert core.due(125.0) == [first, second]  # both late: each is rescheduled from now
    assert core.next_beat_at() == 135.0
    core.stop_beating(first)
    assert core.due(200.0) == [second]
    core.finish(second)
    assert core.next_beat_at() is None
    assert core.release_all() == [first]
    assert core.was_released(first)
    assert (core.in_flight, core.released) == (0, 1)
    core.finish(first)
    assert not core.was_released(first)


def test_the_core_plans_failures_from_the_schedule_and_the_delivery_count() -> None:
    core = _core(max_deliveries=4, dead_letter_on=(KeyError,))
    assert [core.plan_failure(n, ValueError()).delay for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    last = core.plan_failure(4, ValueError())
    assert (last.final, last.dead_letter_reason) == (True, None)
    poison = core.plan_failure(1, KeyError("sku"))
    assert poison.final
    assert "KeyError" in str(poison.dead_letter_reason)


def test_the_core_caps_and_replays_growing_schedules() -> None:
    capped = _core(retry_wait=exponential(1.0, cap=5.0, jitter="none"))
    assert capped.retry_delay(10) == 5.0
    assert capped.retry_delay(10_000) == 5.0
    growing = _core(retry_wait=decorrelated(1.0, cap=1000.0, random=random.Random(7)))
    delays = [growing.retry_delay(n) for n in range(1, 8)]
    assert all(1.0 <= delay <= 1000.0 for delay in delays)
    assert max(delays[4:]) > 3.0  # replayed from the first retry, the draws grow
    assert _core(retry_wait=constant(0.0)).retry_delay(3) == 0.0
