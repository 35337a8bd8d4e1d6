"""Pumps that move items between channels: ``fan_in``, ``fan_out`` and the machinery under
``Stages``.

A pump runs as a daemon thread when started from plain code, or as a task on the
running loop when started from async code; it never swallows an error: a failing
source closes the channels it feeds with that error, so their receivers get
:class:`ChannelFailedError` after the last good item.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any, Final, Literal, TypeAlias, TypeVar

from seawall.errors import ConfigurationError
from seawall.messaging.channel._channel import Channel
from seawall.messaging.channel._config import check_capacity, check_choice, default_name
from seawall.messaging.channel._core import BufferCore
from seawall.messaging.channel._errors import BlockingInEventLoopError, ChannelClosedError

__all__ = ["FAN_OUT_MODES", "FanOutMode", "Pumps", "Source", "fan_in", "fan_out", "in_event_loop"]

T = TypeVar("T")

Source: TypeAlias = "BufferCore[T] | Iterable[T] | AsyncIterable[T]"
"""Where items come from: a channel or subscription, or any (async) iterable."""

FanOutMode = Literal["copy", "round_robin"]
"""``copy``: every target gets every item; ``round_robin``: each item goes to one target."""

FAN_OUT_MODES: Final = ("copy", "round_robin")

_get_running_loop = asyncio.events._get_running_loop
_RUNNING_TASKS: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references to tasks


def in_event_loop() -> bool:
    """True when called from a thread that is running an event loop (pumps become tasks)."""
    return _get_running_loop() is not None


class Pumps:
    """The background threads or tasks moving items for :func:`fan_out` and friends.

    Errors never surface here: they travel through the channels. Use :meth:`join`
    (threads) or ``await`` :meth:`wait` (either) to know when the pumps are done.
    """

    __slots__ = ("_tasks", "_threads", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        """Names the threads and tasks (``<name>:<part>``)."""
        self._threads: list[threading.Thread] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _spawn_thread(self, target: Callable[[], None], part: str) -> None:
        """Run ``target`` in a new daemon thread."""
        thread = threading.Thread(target=target, name=f"{self.name}:{part}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _spawn_task(self, work: Coroutine[Any, Any, None], part: str) -> None:
        """Run ``work`` as a task on the running loop."""
        task = asyncio.get_running_loop().create_task(work, name=f"{self.name}:{part}")
        self._tasks.append(task)
        _RUNNING_TASKS.add(task)
        task.add_done_callback(_RUNNING_TASKS.discard)

    @property
    def done(self) -> bool:
        """True when every pump has finished."""
        return all(not t.is_alive() for t in self._threads) and all(t.done() for t in self._tasks)

    def join(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds until every pump finished; True when all did.

        Task pumps can be joined from another thread; on their own loop's thread use
        ``await pumps.wait()`` (joining there raises :class:`BlockingInEventLoopError`).
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if self._tasks and not self.done:
            if _get_running_loop() is not None:
                raise BlockingInEventLoopError(self.name, "join", "wait")
            loop = self._tasks[0].get_loop()
            finished = asyncio.run_coroutine_threadsafe(self._wait_tasks(), loop)
            with contextlib.suppress(concurrent.futures.TimeoutError):
                finished.result(remaining())
        for thread in self._threads:
            thread.join(remaining())
        return self.done

    async def _wait_tasks(self) -> None:
        await asyncio.wait(self._tasks)

    async def wait(self) -> None:
        """Await every pump task (or, for threads, wait for them off the loop)."""
        if self._tasks:
            await self._wait_tasks()
        if self._threads:
            await asyncio.to_thread(self.join)

    def cancel(self) -> None:
        """Cancel the pump tasks (thread pumps stop when their channels close)."""
        for task in self._tasks:
            task.cancel()

    def __repr__(self) -> str:
        kind = "tasks" if self._tasks else "threads"
        return f"Pumps(name={self.name!r}, {kind}={len(self._tasks or self._threads)}, done={self.done})"


def sync_items(source: Source[T], where: str) -> Iterator[T]:
    """An iterator over ``source`` for a thread; refuses an async-only source at once."""
    if isinstance(source, BufferCore | Iterable):
        return iter(source)
    raise ConfigurationError(
        f"{where}: the source {source!r} is only async-iterable; call it from async code "
        "so its pumps run as tasks, or pass a Channel or a plain iterable"
    )


def async_items(source: Source[T]) -> AsyncIterator[T]:
    """Iterate ``source`` from a task: channels and async iterables are awaited."""
    if isinstance(source, BufferCore | AsyncIterable):
        return aiter(source)
    return _iterate_plain(source)


async def _iterate_plain(source: Iterable[T]) -> AsyncIterator[T]:
    iterator = iter(source)
    try:
        for item in iterator:
            yield item
    finally:
        close_quietly(iterator)


def close_quietly(iterator: object) -> None:
    """Close a generator the pump stops reading (never a caller's channel)."""
    close = getattr(iterator, "close", None)
    if callable(close) and not isinstance(iterator, BufferCore):
        close()


async def aclose_quietly(iterator: object) -> None:
    """Close an async generator the pump stops reading (never a caller's channel)."""
    aclose = getattr(iterator, "aclose", None)
    if callable(aclose) and not isinstance(iterator, BufferCore):
        await aclose()


# -- fan in ---------------------------------------------------------------------------------


def fan_in(*sources: Source[T], capacity: int = 100, name: str | None = None) -> Channel[T]:
    """Merge ``sources`` into one new channel, which closes when every source has ended.

    Items keep their order per source; sources interleave. A failing source closes
    the output with its error (receivers get :class:`ChannelFailedError`). Closing the
    output stops the pumps. Pumps are tasks when called from async code, else threads.
    """
    if not sources:
        raise ConfigurationError("fan_in() needs at least one source to merge")
    capacity = check_capacity("fan_in", "capacity", capacity)
    output: Channel[T] = Channel(capacity, name=name or default_name("fan_in"))
    pumps = Pumps(output.name)
    remaining = [len(sources)]
    lock = threading.Lock()

    def finished(error: BaseException | None) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if error is not None:
            output.close(error)
        elif last:
            output.close()

    if in_event_loop():
        for index, source in enumerate(sources):
            pumps._spawn_task(_copy_async(source, output, finished), f"source-{index}")
    else:
        iterators = [sync_items(source, "fan_in()") for source in sources]
        for index, iterator in enumerate(iterators):
            pumps._spawn_thread(
                functools.partial(_copy_sync, iterator, output, finished), f"source-{index}"
            )
    return output


def _copy_sync(
    iterator: Iterator[T], output: Channel[T], finished: Callable[[BaseException | None], None]
) -> None:
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            break
        except BaseException as error:  # the source failed: its consumers must hear of it
            finished(error)
            return
        try:
            output.send(item)
        except ChannelClosedError:  # the output was closed by its consumer: stop
            close_quietly(iterator)
            break
    finished(None)


async def _copy_async(
    source: Source[T], output: Channel[T], finished: Callable[[BaseException | None], None]
) -> None:
    iterator = async_items(source)
    while True:
        try:
            item = await anext(iterator)
        except StopAsyncIteration:
            break
        except BaseException as error:
            finished(error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        try:
            await output.asend(item)
        except ChannelClosedError:
            await aclose_quietly(iterator)
            break
        except asyncio.CancelledError as error:
            finished(error)
            raise
    finished(None)


# -- fan out --------------------------------------------------------------------------------


def fan_out(
    source: Source[T],
    *targets: Channel[T],
    mode: FanOutMode = "copy",
    close_targets: bool = True,
    name: str | None = None,
) -> Pumps:
    """Feed every item of ``source`` to ``targets``: to all (``copy``) or one each in turn.

    A target closed by its consumer is skipped from then on; when all are closed the
    pump stops. When the source ends the targets are closed (``close_targets``), with
    the source's error if it failed. Under ``copy`` a full target holds back the others
    (use a :class:`Broadcast` for per-subscriber policies). Returns the running pump.
    """
    if not targets:
        raise ConfigurationError("fan_out() needs at least one target channel")
    check_choice("fan_out", "mode", mode, FAN_OUT_MODES)
    for target in targets:
        if not isinstance(target, Channel):
            raise ConfigurationError(f"fan_out(): target {target!r} is not a Channel")
    pumps = Pumps(name or default_name("fan_out"))
    if in_event_loop():
        pumps._spawn_task(_spread_async(source, targets, mode, close_targets), "pump")
    else:
        iterator = sync_items(source, "fan_out()")
        pumps._spawn_thread(
            functools.partial(_spread_sync, iterator, targets, mode, close_targets), "pump"
        )
    return pumps


def _finish_targets(
    targets: tuple[Channel[T], ...], close_targets: bool, error: BaseException | None
) -> None:
    if close_targets or error is not None:
        for target in targets:
            target.close(error)


def _spread_sync(
    iterator: Iterator[T], targets: tuple[Channel[T], ...], mode: str, close_targets: bool
) -> None:
    live = list(targets)
    turn = 0
    error: BaseException | None = None
    while live:
        try:
            item = next(iterator)
        except StopIteration:
            break
        except BaseException as failure:
            error = failure
            break
        if mode == "copy":
            for target in tuple(live):
                try:
                    target.send(item)
                except ChannelClosedError:
                    live.remove(target)
        else:
            while live:
                target = live[turn % len(live)]
                try:
                    target.send(item)
                except ChannelClosedError:
                    live.remove(target)
                    continue
                turn += 1
                break
    if not live:
        close_quietly(iterator)
    _finish_targets(targets, close_targets, error)


async def _spread_async(
    source: Source[T], targets: tuple[Channel[T], ...], mode: str, close_targets: bool
) -> None:
    iterator = async_items(source)
    live = list(targets)
    turn = 0
    error: BaseException | None = None
    try:
        while live:
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                break
            except Exception as failure:
                error = failure
                break
            if mode == "copy":
                for target in tuple(live):
                    try:
                        await target.asend(item)
                    except ChannelClosedError:
                        live.remove(target)
            else:
                while live:
                    target = live[turn % len(live)]
                    try:
                        await target.asend(item)
                    except ChannelClosedError:
                        live.remove(target)
                        continue
                    turn += 1
                    break
        if not live:
            await aclose_quietly(iterator)
    except asyncio.CancelledError as cancelled:
        _finish_targets(targets, close_targets, cancelled)
        raise
    _finish_targets(targets, close_targets, error)
