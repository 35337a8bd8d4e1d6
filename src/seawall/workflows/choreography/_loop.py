"""The consume loop participants and trackers share: receive from a group, handle, settle.

A :class:`ConsumerLoop` receives a batch from its consumer group, hands each message to
its ``handle`` function and acknowledges it (unless ``handle`` settled it itself, inside
its own transaction); when ``handle`` raises, the message is given back with a delay
that grows with its delivery count, and the group's ``max_deliveries`` eventually moves
it to the group's dead letters. ``run_once`` is one pass (what tests drive);
``run``/``start`` loop until :meth:`stop`; ``arun`` is the asyncio runner.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError

__all__ = ["ConsumerLoop", "GroupLike"]

_logger = logging.getLogger("seawall.workflows.choreography")

MAX_RETRY_DELAY: Final = 60.0


class GroupLike(Protocol):
    """What the loop needs from a :class:`~seawall.messaging.topic.ConsumerGroup`."""

    def receive(self, max_messages: int = 10, *, wait: float = 0.0) -> list[Any]: ...

    def ack(self, message: Any) -> Any: ...

    def nack(
        self, message: Any, delay: float = 0.0, *, error: str | BaseException | None = None
    ) -> Any: ...


Handle = Callable[[Any], bool]
"""Handles one message; returns True when it settled (acknowledged) the message itself."""


def _check_seconds(value: object, what: str, *, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != value
        or value < 0
        or (positive and value == 0)
        or value > 1e9
    ):
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(f"{what}={value!r} is invalid: pass seconds {bound}")
    return float(value)


class ConsumerLoop:
    """Receive, handle and settle the messages of one consumer group until stopped."""

    def __init__(
        self,
        group: GroupLike,
        handle: Handle,
        *,
        name: str,
        batch: int = 16,
        poll: float = 0.5,
        retry_delay: float = 1.0,
        clock: Clock | None = None,
        tick: Callable[[], object] | None = None,
    ) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 < batch <= 1000:
            raise ConfigurationError(f"batch={batch!r} is invalid: pass an int from 1 to 1000")
        self.group = group
        self.name = name
        self.batch = batch
        self.poll = _check_seconds(poll, "poll")
        self.retry_delay = _check_seconds(retry_delay, "retry_delay")
        self._handle = handle
        self._tick = tick
        self._clock = SYSTEM_CLOCK if clock is None else clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.handled = 0
        self.failed = 0

    def _retry_in(self, delivery_count: int) -> float:
        exponent = max(0, int(delivery_count) - 1)
        return float(min(MAX_RETRY_DELAY, self.retry_delay * 2.0**exponent))

    def _one(self, message: Any) -> bool:
        """Handle and settle one message; True when it was handled."""
        try:
            settled = self._handle(message)
        except Exception as exc:
            self.failed += 1
            _logger.debug("%s: handling offset %s failed", self.name, message.offset, exc_info=True)
            try:
                self.group.nack(message, self._retry_in(message.delivery_count), error=exc)
            except Exception:
                _logger.exception("%s: nack of offset %s failed", self.name, message.offset)
            return False
        if not settled:
            self.group.ack(message)
        self.handled += 1
        return True

    def run_once(self, max_messages: int | None = None, *, wait: float = 0.0) -> int:
        """Receive one batch (waiting up to ``wait`` s for it) and handle it; how many were handled."""
        messages = self.group.receive(max_messages or self.batch, wait=wait)
        handled = 0
        for message in messages:
            handled += self._one(message)
        if self._tick is not None:
            self._tick()
        return handled

    def drain(self, *, limit: int = 100_000) -> int:
        """Handle messages until a receive returns none (tests, tools); how many were handled."""
        total = 0
        while total < limit:
            messages = self.group.receive(self.batch, wait=0.0)
            if not messages:
                break
            for message in messages:
                total += self._one(message)
        if self._tick is not None:
            self._tick()
        return total

    def run(self, *, stop_when_idle: bool = False) -> None:
        """Loop until :meth:`stop` (or, with ``stop_when_idle``, until a receive finds nothing)."""
        self._stop.clear()
        while not self._stop.is_set():
            try:
                received = self.run_once(wait=self.poll)
            except Exception:
                _logger.exception("%s: receive failed; retrying in %.1f s", self.name, self.poll)
                self._clock.sleep(self.poll)
                continue
            if stop_when_idle and not received:
                break

    def start(self) -> threading.Thread:
        """Run the loop in a daemon thread; :meth:`stop` ends it."""
        if self._thread is not None and self._thread.is_alive():
            raise ConfigurationError(f"{self.name} is already running; stop() it first")
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, *, timeout: float | None = 10.0) -> None:
        """Ask the loop to stop after its current batch and wait for the thread (if any)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            self._thread = None

    async def arun(self, *, stop_when_idle: bool = False) -> None:
        """The asyncio runner: each pass runs in a worker thread, so the loop stays responsive."""
        self._stop.clear()
        while not self._stop.is_set():
            received = await asyncio.to_thread(self.run_once, wait=self.poll)
            if stop_when_idle and not received:
                break
