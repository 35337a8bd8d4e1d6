"""The responder side: answer requests from a queue worker (or a NATS subscription).

::

    def quote(request: dict) -> dict:
        return {"price": price_of(request["sku"]) * request["quantity"]}

    Responder(engine, "pricing", quote).run()                    # a Worker that replies
    Worker(engine.queue("pricing"), responder(quote)).run()       # the same, by hand
    reply(message, {"price": 12})                                 # from any consumer

A request carries ``reply-to`` and ``correlation-id`` headers; the reply goes to
the named reply queue with the same correlation id. A handler's return value is the
reply; an exception listed in ``errors`` becomes an error reply (the requester gets
:class:`RemoteError`), any other exception is retried by the worker like any failure.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.messaging.queue import (
    Message,
    Queue,
    UnknownQueueError,
    Worker,
    WorkerStats,
    current_message,
    open_queue,
)
from seawall.messaging.request_reply._errors import NotARequestError
from seawall.messaging.request_reply._events import ReplyUndeliverable
from seawall.messaging.request_reply._model import (
    CORRELATION_ID_HEADER,
    REPLY_STATUS_HEADER,
    REPLY_TO_HEADER,
)

if TYPE_CHECKING:
    from seawall.codec import Codec
    from seawall.messaging.claim_check import ClaimCheck

__all__ = ["Responder", "areply", "areply_error", "reply", "reply_error", "responder"]

_logger = logging.getLogger("seawall.messaging.request_reply")
_MAX_ERROR = 4000
_CACHED_REPLY_QUEUES = 256

_reply_queues: weakref.WeakKeyDictionary[Queue, dict[str, Queue]] = weakref.WeakKeyDictionary()
_reply_queues_lock = threading.Lock()
_events = EventHub(parent=hub)


def _reply_queue(request_queue: Queue, name: str) -> Queue:
    """The reply queue ``name`` on the request queue's engine, opened once and cached."""
    with _reply_queues_lock:
        opened = _reply_queues.setdefault(request_queue, {})
        queue = opened.get(name)
    if queue is not None:
        return queue
    if request_queue.engine is None:
        raise ConfigurationError(
            f"queue {request_queue.name!r} was built without an engine, so replies cannot be "
            "sent; open it with open_queue(engine, name) or engine.queue(name)"
        )
    options: dict[str, Any] = {"codec": request_queue.codec, "create": False}
    if request_queue.claim_check is not None:
        options["claim_check"] = request_queue.claim_check
    queue = open_queue(request_queue.engine, name, **options)
    with _reply_queues_lock:
        if len(opened) >= _CACHED_REPLY_QUEUES:
            opened.pop(next(iter(opened))).close()
        opened[name] = queue
    return queue


def _target(message: Message) -> tuple[Queue, dict[str, str]]:
    headers = message.headers
    reply_to = headers.get(REPLY_TO_HEADER)
    correlation_id = headers.get(CORRELATION_ID_HEADER)
    if not reply_to:
        raise NotARequestError(message.queue.name, message.id, REPLY_TO_HEADER)
    if not correlation_id:
        raise NotARequestError(message.queue.name, message.id, CORRELATION_ID_HEADER)
    return _reply_queue(message.queue, reply_to), {CORRELATION_ID_HEADER: correlation_id}


def _reply_headers(
    base: dict[str, str], status: str, headers: Mapping[str, str] | None
) -> dict[str, str]:
    merged = dict(headers) if headers else {}
    merged.update(base)
    merged[REPLY_STATUS_HEADER] = status
    return merged


def _error_text(error: str | BaseException) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text[:_MAX_ERROR]


def reply(message: Message, body: Any, *, headers: Mapping[str, str] | None = None) -> str:
    """Send ``body`` as the reply to the request ``message``; return the reply's message id.

    Raises :class:`NotARequestError` when the message has no ``reply-to`` header, and
    :class:`~seawall.messaging.queue.UnknownQueueError` when the reply queue is gone.
    """
    queue, base = _target(message)
    return queue.send(body, headers=_reply_headers(base, "ok", headers))


async def areply(message: Message, body: Any, *, headers: Mapping[str, str] | None = None) -> str:
    """Asyncio twin of :func:`reply`."""
    queue, base = _target(message)
    return await queue.asend(body, headers=_reply_headers(base, "ok", headers))


def reply_error(message: Message, error: str | BaseException) -> str:
    """Answer the request ``message`` with an error; the requester raises RemoteError."""
    queue, base = _target(message)
    return queue.send(_error_text(error), headers=_reply_headers(base, "error", None))


async def areply_error(message: Message, error: str | BaseException) -> str:
    """Asyncio twin of :func:`reply_error`."""
    queue, base = _target(message)
    return await queue.asend(_error_text(error), headers=_reply_headers(base, "error", None))


def _undeliverable(message: Message, error: Exception) -> None:
    reply_to = message.headers.get(REPLY_TO_HEADER, "")
    correlation_id = message.headers.get(CORRELATION_ID_HEADER, "")
    _logger.warning("reply to %r (correlation id %s) dropped: %s", reply_to, correlation_id, error)
    if _events.active:
        _events.emit(ReplyUndeliverable(message.queue.name, reply_to, correlation_id, str(error)))


def _the_message(handler: Callable[..., Any]) -> Message:
    message = current_message()
    if message is None:
        raise ConfigurationError(
            f"responder({handler!r}) must run inside a seawall Worker (it reads the current "
            "message's reply-to header); call reply(message, body) from other consumers"
        )
    return message


def responder(
    handler: Callable[[Any], Any],
    *,
    errors: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> Callable[[Any], Any]:
    """Wrap a worker handler so its return value is sent as the reply to each request.

    Exceptions of the ``errors`` types are answered as error replies (and the
    request is acknowledged); others propagate, so the worker retries the request.
    A message without ``reply-to`` is handled and not answered. A reply whose reply
    queue is gone (the requester left) is dropped with a warning.
    """
    if not callable(handler):
        raise ConfigurationError(f"handler={handler!r} must be callable")
    replied_errors = _error_types(errors)

    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        async_handler: Callable[[Any], Awaitable[Any]] = handler

        @functools.wraps(handler)
        async def answer_async(argument: Any) -> None:
            message = _the_message(handler)
            try:
                result = await async_handler(argument)
            except replied_errors as exc:
                if REPLY_TO_HEADER in message.headers:
                    await _asend_reply(message, exc, error=True)
                return
            if REPLY_TO_HEADER in message.headers:
                await _asend_reply(message, result, error=False)

        return answer_async

    @functools.wraps(handler)
    def answer(argument: Any) -> None:
        message = _the_message(handler)
        try:
            result = handler(argument)
        except replied_errors as exc:
            if REPLY_TO_HEADER in message.headers:
                _send_reply(message, exc, error=True)
            return
        if REPLY_TO_HEADER in message.headers:
            _send_reply(message, result, error=False)

    return answer


def _send_reply(message: Message, value: Any, *, error: bool) -> None:
    try:
        if error:
            reply_error(message, value)
        else:
            reply(message, value)
    except (UnknownQueueError, NotARequestError) as exc:
        _undeliverable(message, exc)


async def _asend_reply(message: Message, value: Any, *, error: bool) -> None:
    try:
        if error:
            await areply_error(message, value)
        else:
            await areply(message, value)
    except (UnknownQueueError, NotARequestError) as exc:
        _undeliverable(message, exc)


def _error_types(
    errors: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[type[BaseException], ...]:
    if isinstance(errors, type):
        errors = (errors,)
    if not isinstance(errors, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in errors
    ):
        raise ConfigurationError(f"errors={errors!r} must be an exception type or a tuple of them")
    return errors


class Responder:
    """Answers the requests sent to ``destination`` with ``handler``'s return values.

    On queue engines it is a :class:`~seawall.messaging.queue.Worker` (``worker``)
    running :func:`responder`; ``worker_options`` go to it (``concurrency``,
    ``retry_wait``, ``transaction``, ...). On ``nats://`` it subscribes to the
    subject in the queue group ``group`` (responders share the load).
    """

    def __init__(
        self,
        engine: Engine | str,
        destination: str,
        handler: Callable[[Any], Any],
        *,
        errors: type[BaseException] | tuple[type[BaseException], ...] = (),
        codec: Codec | str | None = None,
        claim_check: ClaimCheck | None = None,
        group: str = "seawall-responders",
        **worker_options: Any,
    ) -> None:
        self.engine = connect(engine)
        self.destination = destination
        self.handler = handler
        self.worker: Worker | None = None
        self._nats: Any = None
        if self.engine.kind == "nats":
            if claim_check is not None or worker_options:
                unknown = ", ".join(sorted(worker_options)) or "claim_check"
                raise ConfigurationError(
                    f"option(s) {unknown} apply to queue engines; a NATS responder takes "
                    "errors, codec and group"
                )
            from seawall.messaging.request_reply._nats import NatsResponder

            self._nats = NatsResponder(
                self.engine, destination, handler, _error_types(errors), codec=codec, group=group
            )
            return
        options: dict[str, Any] = {"codec": codec}
        if claim_check is not None:
            options["claim_check"] = claim_check
        queue = open_queue(self.engine, destination, **options)
        self.worker = Worker(queue, responder(handler, errors=errors), **worker_options)

    def run(self, *, stop_when_empty: bool = False, handle_signals: bool = True) -> Any:
        """Answer requests until :meth:`stop` (or SIGTERM/SIGINT); blocks."""
        if self.worker is not None:
            return self.worker.run(stop_when_empty=stop_when_empty, handle_signals=handle_signals)
        return self._nats.run()

    async def arun(self, *, stop_when_empty: bool = False, handle_signals: bool = True) -> Any:
        """Asyncio twin of :meth:`run`."""
        if self.worker is not None:
            return await self.worker.arun(
                stop_when_empty=stop_when_empty, handle_signals=handle_signals
            )
        return await self._nats.arun()

    def stop(self, *, grace: float | None = None) -> None:
        """Stop answering (in-flight requests get ``grace`` seconds on queue engines)."""
        if self.worker is not None:
            self.worker.stop(grace=grace)
        else:
            self._nats.stop()

    def stats(self) -> WorkerStats | Any:
        """The worker's stats (queue engines) or the NATS responder's counters."""
        return self.worker.stats() if self.worker is not None else self._nats.stats()

    def __repr__(self) -> str:
        return f"Responder({self.destination!r}, engine={self.engine!r})"
