"""Request-reply over core NATS (a live server at 127.0.0.1:4222, or skipped).

Same Requester/Responder API as on queues, chosen by the ``nats://`` URL; each test
uses its own subject. Waits are real and bounded (NATS is a real server).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import seawall
from _engines import require_engine
from seawall.engines import Engine
from seawall.messaging.request_reply import (
    LateReplyDropped,
    NoRespondersError,
    RemoteError,
    Requester,
    RequestTimeoutError,
    Responder,
)

BOUND = 10.0


@pytest.fixture
def engine() -> Iterator[Engine]:
    url = require_engine("nats")
    if importlib.util.find_spec("seawall.engines.nats") is None:
        pytest.skip("the NATS engine (seawall.engines.nats) is not in this build yet")
    opened = seawall.connect(url)
    yield opened
    opened.close()


@pytest.fixture
def subject() -> str:
    return f"seawall.test.rr.{uuid.uuid4().hex[:12]}"


def handler(body: Any) -> Any:
    if body == "bad":
        raise ValueError("bad request")
    if isinstance(body, dict) and "sleep" in body:
        time.sleep(body["sleep"])  # a slow handler, to make a reply late
    return {"echo": body}


@pytest.fixture
def serve(engine: Engine, subject: str) -> Iterator[Callable[..., Responder]]:
    started: list[tuple[Responder, threading.Thread]] = []

    def start(**options: Any) -> Responder:
        responder = Responder(engine, subject, handler, **options)
        thread = threading.Thread(target=responder.run)
        thread.start()
        started.append((responder, thread))
        return responder

    yield start
    for responder, thread in started:
        responder.stop()
        thread.join(BOUND)


def ready(requester: Requester) -> None:
    """Wait (bounded) until a responder's subscription answers."""
    for _ in range(1000):
        try:
            requester.request("ping")
            return
        except NoRespondersError:
            threading.Event().wait(0.01)
    raise AssertionError("no responder came up")


async def aready(requester: Requester) -> None:
    """Asyncio twin of :func:`ready`."""
    for _ in range(1000):
        try:
            await requester.arequest("ping")
            return
        except NoRespondersError:
            await asyncio.sleep(0.01)
    raise AssertionError("no responder came up")


def test_a_request_gets_its_reply(engine: Engine, subject: str, serve: Any) -> None:
    serve()
    with Requester(engine, subject, timeout=BOUND) as requester:
        ready(requester)
        assert requester.request({"sku": "A"}) == {"echo": {"sku": "A"}}
        assert requester.stats().replied == 2


async def test_many_concurrent_arequests_share_one_inbox(engine: Engine, subject: str) -> None:
    responder = Responder(engine, subject, handler)
    serving = asyncio.ensure_future(responder.arun())
    async with Requester(engine, subject, timeout=BOUND) as requester:
        await aready(requester)
        replies = await asyncio.gather(*(requester.arequest(n) for n in range(100)))
        assert replies == [{"echo": n} for n in range(100)]
    responder.stop()
    await asyncio.wait_for(serving, BOUND)
    await engine.aclose()  # this loop's connection closes with the loop


def test_timeout_then_the_late_reply_is_dropped_and_counted(
    engine: Engine, subject: str, serve: Any
) -> None:
    serve()
    late = threading.Event()
    with Requester(engine, subject, timeout=BOUND) as requester:
        ready(requester)
        requester.events.subscribe(lambda event: late.set(), types=(LateReplyDropped,))
        with pytest.raises(RequestTimeoutError, match=subject):
            requester.request({"sleep": 0.3}, timeout=0.05)
        assert late.wait(BOUND)
        stats = requester.stats()
        assert stats.timed_out == 1
        assert stats.late_replies == 1


def test_listed_errors_are_error_replies(engine: Engine, subject: str, serve: Any) -> None:
    serve(errors=ValueError)
    with Requester(engine, subject, timeout=BOUND) as requester:
        ready(requester)
        with pytest.raises(RemoteError, match="ValueError: bad request"):
            requester.request("bad")


def test_nobody_listening_is_reported_at_once(engine: Engine, subject: str) -> None:
    with (
        Requester(engine, subject, timeout=BOUND) as requester,
        pytest.raises(NoRespondersError, match=subject),
    ):
        requester.request("anyone?")


async def test_an_async_responder(engine: Engine, subject: str) -> None:
    async def ahandler(body: Any) -> Any:
        await asyncio.sleep(0)
        return body * 2 if isinstance(body, int) else body

    responder = Responder(engine, subject, ahandler)
    serving = asyncio.ensure_future(responder.arun())
    async with Requester(engine, subject, timeout=BOUND) as requester:
        await aready(requester)
        assert await requester.arequest(21) == 42
    responder.stop()
    await asyncio.wait_for(serving, BOUND)
    await engine.aclose()
