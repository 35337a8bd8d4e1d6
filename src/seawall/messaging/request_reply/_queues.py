"""Request-reply over durable queues: requests to a queue, replies to a private reply queue.

One reply queue per requester, read by one receive loop per flavour (a daemon thread
for blocking callers, a task per event loop for asyncio callers); every reply is
acknowledged and handed to the requester's correlator, which matches it by
correlation id or counts it late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from seawall.engines import Engine
from seawall.messaging.queue import Message, Queue, StaleReceiptError, open_queue
from seawall.messaging.request_reply._model import (
    CORRELATION_ID_HEADER,
    REPLY_STATUS_HEADER,
    REPLY_TO_HEADER,
)
from seawall.messaging.request_reply._transport import OnReply

__all__ = ["QueueTransport"]

_logger = logging.getLogger("seawall.messaging.request_reply")

_WAKE_HEADER = "seawall-wake"
_BATCH = 100
_RETRY_PAUSE = 0.5


class QueueTransport:
    """Requests to ``request_queue``; replies from ``reply_queue`` (private when None)."""

    def __init__(
        self,
        engine: Engine,
        request_queue: str,
        reply_queue: str | None,
        on_reply: OnReply,
        *,
        poll_wait: float,
        queue_options: Mapping[str, Any],
    ) -> None:
        self.destination = request_queue
        self._private = reply_queue is None
        self.reply_to = (
            f"{request_queue[:150]}.reply.{uuid.uuid4().hex[:16]}"
            if reply_queue is None
            else reply_queue
        )
        self._on_reply = on_reply
        self._poll_wait = poll_wait
        self.requests: Queue = open_queue(engine, request_queue, **queue_options)
        self.replies: Queue = open_queue(engine, self.reply_to, **queue_options)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
        self._closing = threading.Event()
        self._wake_token = uuid.uuid4().hex

    # -- sending ---------------------------------------------------------------------------

    def _headers(self, correlation_id: str, headers: Mapping[str, str] | None) -> dict[str, str]:
        merged = dict(headers) if headers else {}
        merged[REPLY_TO_HEADER] = self.reply_to
        merged[CORRELATION_ID_HEADER] = correlation_id
        return merged

    def send(
        self, body: Any, correlation_id: str, headers: Mapping[str, str] | None, priority: int
    ) -> None:
        """Send the request with its ``reply-to`` and ``correlation-id`` headers."""
        self.requests.send(body, headers=self._headers(correlation_id, headers), priority=priority)

    async def asend(
        self, body: Any, correlation_id: str, headers: Mapping[str, str] | None, priority: int
    ) -> None:
        """Asyncio twin of :meth:`send`."""
        await self.requests.asend(
            body, headers=self._headers(correlation_id, headers), priority=priority
        )

    # -- receiving replies -----------------------------------------------------------------

    def _dispatch(self, messages: list[Message]) -> None:
        on_reply = self._on_reply
        for message in messages:
            headers = message.headers
            if headers.get(_WAKE_HEADER) is not None:
                continue
            on_reply(
                headers.get(CORRELATION_ID_HEADER),
                headers.get(REPLY_STATUS_HEADER, "ok"),
                message.body,
            )

    def listen(self) -> None:
        """Start the reply thread once."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._closing.is_set():
                thread = threading.Thread(
                    target=self._loop, name=f"seawall-replies:{self.reply_to}", daemon=True
                )
                thread.start()
                self._thread = thread

    def _loop(self) -> None:
        replies, closing = self.replies, self._closing
        while not closing.is_set():
            try:
                messages = replies.receive(max_messages=_BATCH, wait=self._poll_wait)
                if not messages:
                    continue
                self._dispatch(messages)
                with contextlib.suppress(StaleReceiptError):
                    replies.ack_many(messages)
            except Exception:
                if closing.is_set():
                    return
                _logger.warning("receiving replies from %r failed", self.reply_to, exc_info=True)
                closing.wait(_RETRY_PAUSE)

    async def alisten(self) -> None:
        """Start the reply task of the running event loop once."""
        loop = asyncio.get_running_loop()
        task = self._tasks.get(loop)
        if task is not None and not task.done():
            return
        for other, old in list(self._tasks.items()):
            if old.done() or other.is_closed():
                del self._tasks[other]
        self._tasks[loop] = loop.create_task(self._aloop(), name=f"replies:{self.reply_to}")

    async def _aloop(self) -> None:
        replies = self.replies
        while not self._closing.is_set():
            try:
                messages = await replies.areceive(max_messages=_BATCH, wait=self._poll_wait)
                if not messages:
                    continue
                self._dispatch(messages)
                with contextlib.suppress(StaleReceiptError):
                    await replies.aack_many(messages)
            except Exception:
                _logger.warning("receiving replies from %r failed", self.reply_to, exc_info=True)
                await asyncio.sleep(_RETRY_PAUSE)

    # -- closing ---------------------------------------------------------------------------

    def _stop_listening(self) -> threading.Thread | None:
        self._closing.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            # Wake the long-poll at once (in-process doorbell) instead of waiting it out.
            with contextlib.suppress(Exception):
                self.replies.send(None, headers={_WAKE_HEADER: self._wake_token})
        for loop, task in list(self._tasks.items()):
            if not task.done():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(task.cancel)
        return thread

    def _forget_reply_queue(self) -> None:
        if self._private:
            with contextlib.suppress(Exception):
                self.replies.purge()
                self.replies.dead_letters.purge()
        self.requests.close()
        self.replies.close()

    def close(self) -> None:
        """Stop the reply loops, purge a private reply queue, close both queues."""
        thread = self._stop_listening()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._poll_wait + 5.0)
        self._forget_reply_queue()

    async def aclose(self) -> None:
        """Asyncio twin of :meth:`close`."""
        loop = asyncio.get_running_loop()
        task = self._tasks.get(loop)
        thread = self._stop_listening()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if thread is not None:
            await asyncio.to_thread(thread.join, self._poll_wait + 5.0)
        await asyncio.to_thread(self._forget_reply_queue)
