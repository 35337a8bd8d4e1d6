"""The relay: claims committed outbox messages, publishes them, marks them sent.

The decisions live in :mod:`._core`; :meth:`OutboxRelay.run` (threads) and
:meth:`OutboxRelay.arun` (asyncio) are thin loops over them. A crash anywhere
loses nothing: a claimed message whose relay dies is claimed again once its lease
expires, so every message is published at least once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from seawall.clock import SYSTEM_CLOCK, Clock, MonotonicClock
from seawall.errors import ConfigurationError
from seawall.events import EventHub
from seawall.messaging.outbox._core import BatchPlan, IdleSchedule
from seawall.messaging.outbox._errors import RelayAlreadyRunningError
from seawall.messaging.outbox._events import (
    OutboxBatchRelayed,
    OutboxMessageDead,
    OutboxMessagePublished,
    OutboxPublishFailed,
    OutboxPurged,
)
from seawall.messaging.outbox._model import OutboxMessage, StoredMessage, decode_headers
from seawall.resilience._backoff import Wait, exponential
from seawall.resilience._retry import Retry

if TYPE_CHECKING:
    from seawall.messaging.outbox._outbox import Outbox
    from seawall.messaging.outbox._publishers import Publisher
    from seawall.messaging.outbox._store import Listening

__all__ = ["OutboxRelay"]

_logger = logging.getLogger("seawall.messaging.outbox")


class _Default:
    """Marker for "use the relay's default retry policy"."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = _Default()
FIRST_PAUSE = 0.005
"""Seconds before the second look at an empty outbox (then doubling up to ``poll_interval``)."""
PURGE_BATCH = 1000
_ERROR_PAUSE = exponential(0.1, cap=10.0, jitter="full")


def _positive(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"OutboxRelay({field}={value!r}) must be seconds > 0")
    return float(value)


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:2000]


class OutboxRelay:
    """Publishes an outbox's committed messages, in order per key, at least once.

    Each cycle claims up to ``batch_size`` ready messages under a ``lease`` (seconds),
    publishes them through ``retry`` (default: 3 attempts, short exponential waits;
    ``None`` for one), marks them sent, and gives a failed one back for a later try
    after ``backoff.next_wait(attempts)`` seconds: later messages with the same key
    wait behind it, other keys go on. After ``max_attempts`` claims a failing
    message is set aside (``outbox.dead()``; ``None``: retry forever). Sent messages
    are kept ``retention`` seconds (0: deleted at once) and purged every
    ``cleanup_interval``. An idle relay sleeps until a commit in this process (or a
    PostgreSQL NOTIFY) wakes it, and looks again at least every ``poll_interval``.
    Several relays, in one process or many, share the work without publishing a
    message twice while their leases hold.
    """

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        *,
        batch_size: int = 100,
        lease: float = 30.0,
        poll_interval: float = 1.0,
        retry: Retry | _Default | None = DEFAULT,
        backoff: Wait | None = None,
        max_attempts: int | None = None,
        retention: float = 3600.0,
        cleanup_interval: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "outbox-relay",
    ) -> None:
        if not callable(publisher):
            raise ConfigurationError(
                f"OutboxRelay(publisher={publisher!r}) must be callable: publish(message)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"OutboxRelay(batch_size={batch_size!r}) must be an int >= 1")
        if max_attempts is not None and (
            isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
        ):
            raise ConfigurationError(
                f"OutboxRelay(max_attempts={max_attempts!r}) must be None or an int >= 1"
            )
        if (
            isinstance(retention, bool)
            or not isinstance(retention, int | float)
            or not retention >= 0
        ):
            raise ConfigurationError(
                f"OutboxRelay(retention={retention!r}) must be seconds >= 0 (0: delete when sent)"
            )
        if backoff is not None and not isinstance(backoff, Wait):
            raise ConfigurationError(
                f"OutboxRelay(backoff={backoff!r}) must be a Wait such as exponential(1.0, cap=60)"
            )
        if retry is not None and not isinstance(retry, Retry | _Default):
            raise ConfigurationError(f"OutboxRelay(retry={retry!r}) must be a Retry or None")
        if not isinstance(clock, Clock):
            raise ConfigurationError(f"OutboxRelay(clock={clock!r}) must be a seawall Clock")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"OutboxRelay(name={name!r}) must be a non-empty string")
        self.outbox = outbox
        self.store = outbox.store
        self.publisher = publisher
        self.batch_size = batch_size
        self.lease = _positive("lease", lease)
        self.poll_interval = _positive("poll_interval", poll_interval)
        self.cleanup_interval = _positive("cleanup_interval", cleanup_interval)
        self.retention = float(retention)
        self.max_attempts = max_attempts
        self.backoff: Wait = (
            backoff if backoff is not None else exponential(1.0, cap=60.0, jitter="full")
        )
        self.retry: Retry | None = (
            Retry(
                3,
                wait=exponential(0.05, cap=1.0, jitter="full"),
                clock=clock,
                name=f"{name}.publish",
            )
            if isinstance(retry, _Default)
            else retry
        )
        self.clock = clock
        self.name = name
        self.owner = f"{name}:{os.getpid()}:{os.urandom(6).hex()}"
        """The id this relay's leases carry."""
        self.events = EventHub(parent=outbox.events)
        self._real_time = isinstance(clock, MonotonicClock)
        self._idle = IdleSchedule(FIRST_PAUSE, self.poll_interval)
        self._next_cleanup = clock.now() + self.cleanup_interval
        self._stopping = False
        self._running = False
        self._thread: threading.Thread | None = None
        self._batch_publish = callable(getattr(publisher, "publish_many", None))
        self._async_publish: Callable[[OutboxMessage], Awaitable[object]] | None = getattr(
            publisher, "apublish", None
        )
        if self._async_publish is None and inspect.iscoroutinefunction(publisher):
            self._async_publish = cast("Callable[[OutboxMessage], Awaitable[object]]", publisher)
        self._async_batch: Callable[[Sequence[OutboxMessage]], Awaitable[object]] | None = getattr(
            publisher, "apublish_many", None
        )

    # -- shared steps -----------------------------------------------------------------------

    def _decode(self, stored: list[StoredMessage]) -> tuple[list[OutboxMessage], list[Any]]:
        decode = self.outbox.codec.decode
        messages: list[OutboxMessage] = []
        broken: list[tuple[StoredMessage, str]] = []
        for row in stored:
            try:
                body = decode(row.body)
                headers = decode_headers(row.headers)
            except Exception as exc:  # corrupt row: set aside, never block the relay
                broken.append((row, f"cannot decode the stored message: {_error_text(exc)}"))
                continue
            messages.append(
                OutboxMessage(
                    row.id,
                    row.topic,
                    row.key,
                    body,
                    headers,
                    row.position,
                    row.created_at,
                    row.attempts,
                )
            )
        return messages, broken

    def _plan(self, messages: list[OutboxMessage]) -> BatchPlan:
        return BatchPlan(
            messages,
            now=self.clock.now(),
            lease=self.lease,
            backoff=self.backoff,
            max_attempts=self.max_attempts,
        )

    def _failed(self, plan: BatchPlan, message: OutboxMessage, error: BaseException) -> None:
        failure = plan.failed(message)
        text = _error_text(error)
        self.store.fail(self.owner, message.position, failure.delay, text, failure.dead)
        self._report_failure(message, failure.dead, failure.delay, text)

    def _report_failure(self, message: OutboxMessage, dead: bool, delay: float, text: str) -> None:
        if dead:
            _logger.warning(
                "outbox message %s (topic %r, key %r) set aside after %d attempts: %s",
                message.id,
                message.topic,
                message.key,
                message.attempts,
                text,
            )
        if self.events.active:
            if dead:
                self.events.emit(
                    OutboxMessageDead(
                        self.name, message.id, message.topic, message.key, message.attempts, text
                    )
                )
            else:
                self.events.emit(
                    OutboxPublishFailed(
                        self.name,
                        message.id,
                        message.topic,
                        message.key,
                        message.attempts,
                        text,
                        delay,
                    )
                )

    def _bury(self, broken: list[tuple[StoredMessage, str]]) -> None:
        for row, reason in broken:
            self.store.fail(self.owner, row.position, 0.0, reason, True)
            _logger.warning("outbox message %s set aside: %s", row.id, reason)
            if self.events.active:
                self.events.emit(
                    OutboxMessageDead(self.name, row.id, row.topic, row.key, row.attempts, reason)
                )

    def _finish(self, plan: BatchPlan, claimed: int, started: float) -> int:
        if plan.sent:
            self.store.mark_sent([m.position for m in plan.sent], self.retention > 0)
        if plan.held_back:
            self.store.unclaim(self.owner, [m.position for m in plan.held_back])
        if self.events.active:
            for message in plan.sent:
                self.events.emit(
                    OutboxMessagePublished(
                        self.name, message.id, message.topic, message.key, message.attempts
                    )
                )
            failed = claimed - len(plan.sent) - len(plan.held_back)
            self.events.emit(
                OutboxBatchRelayed(
                    self.name, claimed, len(plan.sent), failed, self.clock.now() - started
                )
            )
        return len(plan.sent)

    def _cleanup_due(self) -> bool:
        now = self.clock.now()
        if now < self._next_cleanup:
            return False
        self._next_cleanup = now + self.cleanup_interval
        return self.retention > 0

    def _purged(self, deleted: int) -> None:
        if deleted and self.events.active:
            self.events.emit(OutboxPurged(self.name, deleted))

    # -- synchronous ------------------------------------------------------------------------

    def _publish_one(self, message: OutboxMessage) -> None:
        publisher = self.publisher
        result = (
            self.retry.call(publisher, message) if self.retry is not None else publisher(message)
        )
        if result is not None and inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise ConfigurationError(
                "the publisher returned an awaitable: run an async publisher with "
                "`await relay.arun()` (or `arun_once`), not run()"
            )

    def run_once(self) -> int:
        """Claim one batch, publish it, settle it; returns how many were published."""
        if self._async_publish is not None and inspect.iscoroutinefunction(self.publisher):
            raise ConfigurationError(
                f"the publisher {self.publisher!r} is a coroutine function: run the relay with "
                "`await relay.arun()` (or `arun_once`), not run()"
            )
        if self._cleanup_due():
            self.purge()
        started = self.clock.now()
        stored = self.store.claim(self.owner, self.batch_size, self.lease)
        if not stored:
            return 0
        messages, broken = self._decode(stored)
        if broken:
            self._bury(broken)
        plan = self._plan(messages)
        if self._batch_publish and len(messages) > 1:
            try:
                self.publisher.publish_many(messages)  # type: ignore[union-attr]
            except Exception as exc:
                _logger.info(
                    "outbox batch publish failed (%s); publishing one at a time", _error_text(exc)
                )
            else:
                for message in messages:
                    plan.published(message)
                return self._finish(plan, len(stored), started)
        for message in plan:
            if plan.renewal_due(self.clock.now()):
                self.store.extend(self.owner, plan.unsettled(), self.lease)
                plan.renewed(self.clock.now())
            try:
                self._publish_one(message)
            except ConfigurationError:
                self.store.unclaim(self.owner, plan.unsettled())
                raise
            except Exception as exc:
                self._failed(plan, message, exc)
            else:
                plan.published(message)
        return self._finish(plan, len(stored), started)

    def drain(self, *, max_batches: int | None = None) -> int:
        """Publish until no message is ready (or ``max_batches`` cycles); how many published."""
        total = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            published = self.run_once()
            batches += 1
            if not published:
                break
            total += published
        return total

    def purge(self) -> int:
        """Delete messages sent longer than ``retention`` ago; how many were deleted."""
        deleted = 0
        while True:
            count = self.store.purge_sent(self.retention, PURGE_BATCH)
            deleted += count
            if count < PURGE_BATCH:
                break
        self._purged(deleted)
        return deleted

    def _begin(self) -> None:
        if self._running:
            raise RelayAlreadyRunningError(self.name)
        self._running = True

    def _wait(self, seen: int, pause: float) -> bool:
        if self._real_time:
            return self.outbox.doorbell.wait(seen, pause)
        self.clock.sleep(pause)
        return self.outbox.doorbell.generation != seen

    def run(self) -> None:
        """Relay until :meth:`stop` is called (blocks the calling thread).

        Engine errors are logged and retried with capped backoff; they never end the loop.
        """
        self._stopping = False
        self._loop()

    def _loop(self) -> None:
        self._begin()
        listening: Listening | None = None
        try:
            listening = self.store.listen(self.outbox.doorbell.ring)
            failures = 0
            while not self._stopping:
                seen = self.outbox.doorbell.generation
                try:
                    published = self.run_once()
                except ConfigurationError:
                    raise
                except Exception as exc:
                    failures += 1
                    _logger.warning("outbox relay %r failed a cycle: %s", self.name, exc)
                    self._wait(seen, _ERROR_PAUSE.next_wait(failures, 0.0))
                    continue
                failures = 0
                if published:
                    self._idle.reset()
                    continue
                if self._stopping:
                    break
                if self._wait(seen, self._idle.pause()):
                    self._idle.reset()
        finally:
            if listening is not None:
                listening.close()
            self._running = False

    def start(self) -> OutboxRelay:
        """Run the relay in a background daemon thread; returns the relay."""
        if self._thread is not None and self._thread.is_alive():
            raise RelayAlreadyRunningError(self.name)
        self._stopping = False  # here, not in the thread: a stop() right after start() holds
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Ask the loop to end after the current batch; waits for a :meth:`start` thread."""
        self._stopping = True
        self.outbox.doorbell.ring()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            self._thread = None

    def __enter__(self) -> OutboxRelay:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- asyncio ----------------------------------------------------------------------------

    async def _store_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.store.kind == "memory":
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def _apublish_one(self, message: OutboxMessage) -> None:
        publish = self._async_publish
        if publish is None:  # a plain function: called inline
            publisher = self.publisher
            if self.retry is not None:
                self.retry.call(publisher, message)
            else:
                publisher(message)
            return
        if self.retry is not None:
            await self.retry.acall(publish, message)
        else:
            await publish(message)

    async def arun_once(self) -> int:
        """Asyncio twin of :meth:`run_once` (store calls run in a worker thread)."""
        if self._cleanup_due():
            await self.apurge()
        started = self.clock.now()
        stored = await self._store_call(self.store.claim, self.owner, self.batch_size, self.lease)
        if not stored:
            return 0
        messages, broken = self._decode(stored)
        if broken:
            await self._store_call(self._bury, broken)
        plan = self._plan(messages)
        batch = self._async_batch
        if len(messages) > 1 and (batch is not None or self._batch_publish):
            try:
                if batch is not None:
                    await batch(messages)
                else:
                    self.publisher.publish_many(messages)  # type: ignore[union-attr]
            except Exception as exc:
                _logger.info(
                    "outbox batch publish failed (%s); publishing one at a time", _error_text(exc)
                )
            else:
                for message in messages:
                    plan.published(message)
                return cast(int, await self._store_call(self._finish, plan, len(stored), started))
        for message in plan:
            if plan.renewal_due(self.clock.now()):
                await self._store_call(self.store.extend, self.owner, plan.unsettled(), self.lease)
                plan.renewed(self.clock.now())
            try:
                await self._apublish_one(message)
            except Exception as exc:
                await self._store_call(self._failed, plan, message, exc)
            else:
                plan.published(message)
        return cast(int, await self._store_call(self._finish, plan, len(stored), started))

    async def adrain(self, *, max_batches: int | None = None) -> int:
        """Asyncio twin of :meth:`drain`."""
        total = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            published = await self.arun_once()
            batches += 1
            if not published:
                break
            total += published
        return total

    async def apurge(self) -> int:
        """Asyncio twin of :meth:`purge`."""
        return cast(int, await self._store_call(self.purge))

    async def _await_wake(self, seen: int, pause: float) -> bool:
        if self._real_time:
            return await self.outbox.doorbell.await_ring(seen, pause)
        await self.clock.asleep(pause)
        return self.outbox.doorbell.generation != seen

    async def arun(self) -> None:
        """Relay until :meth:`stop` is called or the task is cancelled."""
        self._stopping = False
        self._begin()
        listening: Listening | None = None
        try:
            listening = await self._store_call(self.store.listen, self.outbox.doorbell.ring)
            failures = 0
            while not self._stopping:
                seen = self.outbox.doorbell.generation
                try:
                    published = await self.arun_once()
                except Exception as exc:
                    failures += 1
                    _logger.warning("outbox relay %r failed a cycle: %s", self.name, exc)
                    await self._await_wake(seen, _ERROR_PAUSE.next_wait(failures, 0.0))
                    continue
                failures = 0
                if published:
                    self._idle.reset()
                    continue
                if self._stopping:
                    break
                if await self._await_wake(seen, self._idle.pause()):
                    self._idle.reset()
        finally:
            if listening is not None:
                await asyncio.to_thread(listening.close)
            self._running = False

    def __repr__(self) -> str:
        return f"OutboxRelay({self.name!r}, {self.outbox!r}, owner={self.owner!r})"
