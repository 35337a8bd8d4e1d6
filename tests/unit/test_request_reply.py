"""Request-reply over durable queues (memory and SQLite engines).

The queues run in real time (their long-polls wake at once on a send in this
process); request timeouts are measured on a ManualClock that the test moves, so
nothing here sleeps to let time pass. Waits for other threads are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import seawall
import seawall.messaging.request_reply as request_reply_module
from seawall.clock import ManualClock
from seawall.engines import Engine
from seawall.errors import ConfigurationError, TimeoutExceededError
from seawall.events import Event
from seawall.messaging.channel import BlockingInEventLoopError
from seawall.messaging.claim_check import ClaimCheck, FileBlobStore
from seawall.messaging.queue import Message, Worker, open_queue
from seawall.messaging.request_reply import (
    CORRELATION_ID_HEADER,
    REPLY_TO_HEADER,
    LateReplyDropped,
    NotARequestError,
    RemoteError,
    ReplyUndeliverable,
    Requester,
    RequesterStats,
    RequestReplyError,
    RequestTimedOut,
    RequestTimeoutError,
    Responder,
    areply,
    reply,
    reply_error,
    responder,
)

BOUND = 10.0  # real seconds a test waits for another thread, at most


def quote(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("sku") == "bad":
        raise ValueError("unknown sku 'bad'")
    return {"sku": request["sku"], "price": 12 * request.get("quantity", 1)}


@pytest.fixture
def engine() -> Iterator[Engine]:
    opened = seawall.connect("memory://")
    yield opened
    opened.close()


class Running:
    """A responder served on a thread for the length of a test."""

    def __init__(self, serve: Responder) -> None:
        self.responder = serve
        self.thread = threading.Thread(target=serve.run, kwargs={"handle_signals": False})
        self.thread.start()

    def stop(self) -> None:
        self.responder.stop(grace=BOUND)
        self.thread.join(BOUND)
        assert not self.thread.is_alive()


@pytest.fixture
def serve(engine: Engine) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(handler: Callable[[Any], Any] = quote, **options: Any) -> Running:
        options.setdefault("poll_wait", 0.05)
        running = Running(Responder(engine, "pricing", handler, **options))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def wait_for(condition: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(int(BOUND / 0.001)):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("condition not met in time")


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(request_reply_module.__all__) == request_reply_module.__all__
    for name in request_reply_module.__all__:
        assert getattr(request_reply_module, name) is not None


def test_a_request_gets_its_reply(engine: Engine, serve: Callable[..., Running]) -> None:
    serve()
    with Requester(engine, "pricing", timeout=BOUND) as pricing:
        assert pricing.request({"sku": "A-1", "quantity": 3}) == {"sku": "A-1", "price": 36}
        assert pricing.stats() == RequesterStats(1, 1, 0, 0, 0, 0)
        assert pricing.reply_to.startswith("pricing.reply.")


def test_many_concurrent_requests_share_one_reply_queue(
    engine: Engine, serve: Callable[..., Running]
) -> None:
    serve(concurrency=8)
    results: dict[int, Any] = {}
    with Requester(engine, "pricing", timeout=BOUND) as pricing:

        def ask(number: int) -> None:
            results[number] = pricing.request({"sku": f"S{number}", "quantity": number})

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(1, 21)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BOUND)
        assert results == {n: {"sku": f"S{n}", "price": 12 * n} for n in range(1, 21)}
        assert pricing.stats().replied == 20
        assert seawall.messaging.queue.list_queues(engine).count(pricing.reply_to) == 1


def test_no_reply_in_time_raises_a_timeout_naming_the_queue(engine: Engine) -> None:
    clock = ManualClock()
    seen: list[Event] = []
    with Requester(engine, "pricing", timeout=2.5, clock=clock) as pricing:
        pricing.events.subscribe(seen.append)
        mover = threading.Thread(
            target=lambda: (wait_for(lambda: pricing.stats().sent == 1), clock.advance(2.5))
        )
        mover.start()
        with pytest.raises(RequestTimeoutError, match=r"'pricing' within 2\.500s") as caught:
            pricing.request({"sku": "A-1"})
        mover.join(BOUND)
    error = caught.value
    assert isinstance(error, TimeoutExceededError)
    assert isinstance(error, TimeoutError)
    assert error.destination == "pricing"
    assert error.timeout == 2.5
    assert pricing.stats().timed_out == 1
    assert pricing.stats().pending == 0
    assert [type(event) for event in seen] == [RequestTimedOut]


def test_a_late_reply_is_dropped_and_counted(engine: Engine, serve: Callable[..., Running]) -> None:
    clock = ManualClock()
    late = threading.Event()
    with Requester(engine, "pricing", timeout=1.0, clock=clock) as pricing:
        pricing.events.subscribe(lambda event: late.set(), types=(LateReplyDropped,))
        mover = threading.Thread(
            target=lambda: (wait_for(lambda: pricing.stats().sent == 1), clock.advance(1.0))
        )
        mover.start()
        with pytest.raises(RequestTimeoutError):
            pricing.request({"sku": "A-1"})
        mover.join(BOUND)
        serve()  # the responder comes up late and answers the old request
        assert late.wait(BOUND)
        assert pricing.stats().late_replies == 1
        assert pricing.request({"sku": "B-2"}, timeout=BOUND) == {"sku": "B-2", "price": 12}


def test_listed_errors_become_error_replies(engine: Engine, serve: Callable[..., Running]) -> None:
    serve(errors=ValueError)
    with Requester(engine, "pricing", timeout=BOUND) as pricing:
        with pytest.raises(RemoteError, match="ValueError: unknown sku 'bad'") as caught:
            pricing.request({"sku": "bad"})
        assert caught.value.destination == "pricing"
        assert pricing.stats().failed == 1


async def test_arequest_many_at_once(engine: Engine) -> None:
    async def aquote(request: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return quote(request)

    worker_queue = open_queue(engine, "pricing")
    worker = Worker(worker_queue, responder(aquote), concurrency=16, poll_wait=0.05)
    serving = asyncio.ensure_future(worker.arun(handle_signals=False))
    async with Requester(engine, "pricing", timeout=BOUND) as pricing:
        replies = await asyncio.gather(
            *(pricing.arequest({"sku": f"S{n}", "quantity": n}) for n in range(1, 51))
        )
        assert [item["price"] for item in replies] == [12 * n for n in range(1, 51)]
        assert pricing.stats().replied == 50
    await worker.astop(grace=BOUND)
    await serving


async def until_waiting(clock: ManualClock) -> None:
    """Yield to the loop until a task waits on the manual clock (bounded)."""
    for _ in range(10_000):
        if clock.pending_sleepers:
            return
        await asyncio.sleep(0)
    raise AssertionError("nobody waits on the clock")


async def test_arequest_times_out_on_the_manual_clock(engine: Engine) -> None:
    clock = ManualClock(autojump=False)
    async with Requester(engine, "pricing", timeout=5.0, clock=clock) as pricing:
        task = asyncio.ensure_future(pricing.arequest("hello"))
        await until_waiting(clock)
        clock.advance(5.0)
        with pytest.raises(RequestTimeoutError):
            await task
        assert pricing.stats().timed_out == 1


async def test_a_cancelled_arequest_forgets_its_correlation_id(engine: Engine) -> None:
    clock = ManualClock(autojump=False)
    async with Requester(engine, "pricing", clock=clock) as pricing:
        task = asyncio.ensure_future(pricing.arequest("hello"))
        await until_waiting(clock)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pricing.stats().pending == 0


async def test_a_blocking_request_inside_an_event_loop_is_refused(engine: Engine) -> None:
    async with Requester(engine, "pricing") as pricing:
        with pytest.raises(BlockingInEventLoopError, match="arequest"):
            pricing.request("hello")


def test_reply_by_hand_from_any_consumer(engine: Engine) -> None:
    requests = open_queue(engine, "pricing")
    with Requester(engine, "pricing", timeout=BOUND) as pricing:
        answered = threading.Thread(target=lambda: answer_one(requests))
        answered.start()
        assert pricing.request({"sku": "A-1"}) == {"by": "hand", "sku": "A-1"}
        answered.join(BOUND)


def answer_one(queue: seawall.messaging.queue.Queue) -> None:
    (message,) = queue.receive(wait=BOUND)
    assert message.headers[REPLY_TO_HEADER].startswith("pricing.reply.")
    assert len(message.headers[CORRELATION_ID_HEADER]) == 32
    reply(message, {"by": "hand", "sku": message.body["sku"]})
    message.ack()


def test_reply_error_by_hand(engine: Engine) -> None:
    requests = open_queue(engine, "pricing")

    def fail_one() -> None:
        (message,) = requests.receive(wait=BOUND)
        reply_error(message, KeyError("sku"))
        message.ack()

    with Requester(engine, "pricing", timeout=BOUND) as pricing:
        thread = threading.Thread(target=fail_one)
        thread.start()
        with pytest.raises(RemoteError, match="KeyError: 'sku'"):
            pricing.request({"sku": "A-1"})
        thread.join(BOUND)


async def test_areply_and_a_message_that_is_no_request(engine: Engine) -> None:
    queue = open_queue(engine, "plain")
    await queue.asend("not a request")
    (message,) = await queue.areceive()
    with pytest.raises(NotARequestError, match="no 'reply-to' header"):
        await areply(message, "x")
    with pytest.raises(NotARequestError):
        reply(message, "x")


def test_a_reply_to_a_vanished_queue_is_dropped_not_retried(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    requests = open_queue(engine, "pricing")
    requests.send({"sku": "A-1"}, headers={REPLY_TO_HEADER: "gone", CORRELATION_ID_HEADER: "c1"})
    requests.send({"sku": "A-2"})  # no reply-to: handled, not answered
    seen: list[Any] = []
    undeliverable: list[Event] = []
    unsubscribe = seawall.events.hub.subscribe(undeliverable.append, types=(ReplyUndeliverable,))
    try:
        with caplog.at_level(logging.WARNING):
            stats = Worker(requests, responder(lambda body: seen.append(body))).run(
                stop_when_empty=True, handle_signals=False
            )
    finally:
        unsubscribe()
    assert stats.handled == 2
    assert stats.failed == 0
    assert len(seen) == 2
    assert "dropped" in caplog.text
    assert [event.reply_to for event in undeliverable] == ["gone"]  # type: ignore[attr-defined]


def test_responder_outside_a_worker_says_so() -> None:
    with pytest.raises(ConfigurationError, match="inside a seawall Worker"):
        responder(quote)({"sku": "A-1"})
    with pytest.raises(ConfigurationError, match="errors="):
        responder(quote, errors=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="callable"):
        responder(42)  # type: ignore[arg-type]


def test_bad_arguments_are_refused(engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        Requester(engine, "pricing", timeout=0)
    with Requester(engine, "pricing") as pricing:
        with pytest.raises(ConfigurationError, match="priority"):
            pricing.request("x", priority=10)
        with pytest.raises(ConfigurationError, match="timeout"):
            pricing.request("x", timeout=-1)


def test_close_purges_the_private_reply_queue_and_fails_waiting_requests(
    engine: Engine,
) -> None:
    pricing = Requester(engine, "pricing", timeout=BOUND)
    failed: list[BaseException] = []

    def ask() -> None:
        try:
            pricing.request("x")
        except RequestReplyError as exc:
            failed.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    wait_for(lambda: pricing.stats().sent == 1)
    replies = open_queue(engine, pricing.reply_to)
    replies.send("stray")
    pricing.close()
    asker.join(BOUND)
    assert failed
    assert "was closed" in str(failed[0])
    assert replies.stats().total == 0
    with pytest.raises(RequestReplyError, match="is closed"):
        pricing.request("x")
    pricing.close()  # twice is fine


def test_a_named_reply_queue_is_kept(engine: Engine, serve: Callable[..., Running]) -> None:
    serve()
    with Requester(engine, "pricing", reply_queue="pricing-replies", timeout=BOUND) as pricing:
        assert pricing.request({"sku": "A"}) == {"sku": "A", "price": 12}
    assert "pricing-replies" in seawall.messaging.queue.list_queues(engine)


def test_over_sqlite_with_a_claim_check_for_big_requests_and_replies(tmp_path: Path) -> None:
    engine = seawall.connect(f"sqlite:///{tmp_path / 'rr.db'}")
    blobs = FileBlobStore(tmp_path / "blobs", fsync=False)
    claim_check = ClaimCheck(blobs, threshold=1000)
    big = "z" * 5000
    server = Responder(
        engine, "echo", lambda body: body + "!", claim_check=claim_check, poll_wait=0.05
    )
    running = Running(server)
    try:
        with Requester(engine, "echo", timeout=BOUND, claim_check=claim_check) as echo:
            assert echo.request(big) == big + "!"
            assert echo.request("small") == "small!"
    finally:
        running.stop()
        engine.close()
    assert blobs.keys() == []


def test_request_reply_by_url_owns_its_engine(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'owned.db'}"
    with Requester(url, "pricing", timeout=1.0) as pricing:
        assert pricing.engine.kind == "sqlite"
        assert "Requester('pricing'" in repr(pricing)


def test_message_is_a_request_when_it_has_both_headers(engine: Engine) -> None:
    queue = open_queue(engine, "half")
    queue.send("x", headers={REPLY_TO_HEADER: "somewhere"})
    (message,) = queue.receive()
    assert isinstance(message, Message)
    with pytest.raises(NotARequestError, match="correlation-id"):
        reply(message, "y")
