"""``Stages``: pipes and filters, each stage reading one bounded channel and writing the next.

The builder is immutable and lazy: nothing runs until it is iterated (``for`` runs
every stage in daemon threads, ``async for`` runs them as tasks) or started with
:meth:`Stages.start` / :meth:`Stages.astart`. A stage that raises closes its output
with the error (the exception gets a note naming the stage and the item), the
stages after it pass the error on once they have handled every earlier item, and
the stages before it stop; so the consumer sees :class:`ChannelFailedError`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import reprlib
import threading
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError, TimeoutExceededError
from seawall.messaging.channel._channel import Channel
from seawall.messaging.channel._config import check_capacity, check_seconds, default_name
from seawall.messaging.channel._core import BufferCore
from seawall.messaging.channel._errors import ChannelClosedError
from seawall.messaging.channel._flow import (
    Pumps,
    aclose_quietly,
    async_items,
    close_quietly,
    sync_items,
)

__all__ = ["Stages"]

T = TypeVar("T")
U = TypeVar("U")

_MAP, _FILTER, _FLAT_MAP, _BATCH = "map", "filter", "flat_map", "batch"


@dataclass(frozen=True, slots=True)
class _Stage:
    kind: str
    label: str
    fn: Callable[[Any], Any]
    is_async: bool
    workers: int
    capacity: int | None
    size: int = 0
    max_wait: float | None = None


def _unused(item: object) -> object:
    """The function slot of a stage that has none (batch)."""
    return item


class Stages(Generic[T]):
    """A chain of processing stages with a bounded channel between each two.

    ::

        for row in Stages(lines).map(parse, workers=4).filter(valid).batch(100):
            store(row)

        async for row in Stages(lines).map(fetch, workers=8).batch(50, max_wait=1.0):
            await store(row)

    ``capacity`` bounds every channel between stages (each stage may override it), so
    a slow stage holds back the ones before it instead of buffering without end.
    With ``workers > 1`` a stage processes items concurrently and may reorder them.
    """

    __slots__ = ("_capacity", "_clock", "_source", "_stages", "name")

    def __init__(
        self,
        source: BufferCore[T] | Iterable[T] | AsyncIterable[T],
        *,
        capacity: int = 100,
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._source: BufferCore[Any] | Iterable[Any] | AsyncIterable[Any] = source
        self._capacity = check_capacity("Stages", "capacity", capacity)
        self._clock = clock
        self._stages: tuple[_Stage, ...] = ()
        self.name = name or default_name("stages")
        """Names the stages' channels (``<name>.<n>:<stage>``) and threads."""

    def _then(self, stage: _Stage) -> Stages[Any]:
        following: Stages[Any] = Stages.__new__(Stages)
        following._source = self._source
        following._capacity = self._capacity
        following._clock = self._clock
        following.name = self.name
        following._stages = (*self._stages, stage)
        return following

    def _stage(
        self,
        kind: str,
        fn: Callable[[Any], Any],
        workers: int,
        capacity: int | None,
        name: str | None,
    ) -> _Stage:
        if not callable(fn):
            raise ConfigurationError(f"Stages.{kind}({fn!r}) is invalid: it needs a callable")
        workers = check_capacity(f"Stages.{kind}", "workers", workers)
        if capacity is not None:
            capacity = check_capacity(f"Stages.{kind}", "capacity", capacity)
        label = name or f"{kind}({getattr(fn, '__name__', type(fn).__name__)})"
        return _Stage(kind, label, fn, inspect.iscoroutinefunction(fn), workers, capacity)

    @overload
    def map(
        self,
        fn: Callable[[T], Awaitable[U]],
        *,
        workers: int = 1,
        capacity: int | None = None,
        name: str | None = None,
    ) -> Stages[U]: ...

    @overload
    def map(
        self,
        fn: Callable[[T], U],
        *,
        workers: int = 1,
        capacity: int | None = None,
        name: str | None = None,
    ) -> Stages[U]: ...

    def map(
        self,
        fn: Callable[[T], Any],
        *,
        workers: int = 1,
        capacity: int | None = None,
        name: str | None = None,
    ) -> Stages[Any]:
        """Replace each item by ``fn(item)`` (awaited when ``fn`` is a coroutine function)."""
        return self._then(self._stage(_MAP, fn, workers, capacity, name))

    def filter(
        self,
        predicate: Callable[[T], bool] | Callable[[T], Awaitable[bool]],
        *,
        workers: int = 1,
        capacity: int | None = None,
        name: str | None = None,
    ) -> Stages[T]:
        """Keep the items for which ``predicate(item)`` is true."""
        return self._then(self._stage(_FILTER, predicate, workers, capacity, name))

    @overload
    def flat_map(
        self,
        fn: Callable[[T], Awaitable[Iterable[U]]],
        *,
        workers: int = 1,
        capacity: int | None = None,
        name: str | None = None,
    ) -> Stages[U]: ...

    @overload
    def flat_map(
        self,
        fn: Callable[[T], Iterable[U]],
        *,
        workers: int = 1,
        capacity: int | None = None,
        name: str | None = None,
    ) -> Stages[U]: ...

    def flat_map(
        self,
        fn: Callable[[T], Any],
        *,
        workers: int = 1,
        capacity: int | None = None,
        name: str | None = None,
    ) -> Stages[Any]:
        """Replace each item by every item of the iterable ``fn(item)`` returns."""
        return self._then(self._stage(_FLAT_MAP, fn, workers, capacity, name))

    def batch(
        self,
        size: int,
        *,
        max_wait: float | None = None,
        capacity: int | None = None,
        name: str | None = None,
    ) -> Stages[list[T]]:
        """Group items into lists of ``size``; a partial list goes out at the end of the
        stream, or ``max_wait`` seconds after its first item arrived."""
        size = check_capacity("Stages.batch", "size", size)
        max_wait = check_seconds("Stages.batch", "max_wait", max_wait)
        if capacity is not None:
            capacity = check_capacity("Stages.batch", "capacity", capacity)
        stage = _Stage(
            _BATCH, name or f"batch({size})", _unused, False, 1, capacity, size, max_wait
        )
        return self._then(stage)

    # -- running ------------------------------------------------------------------------

    def start(self) -> Channel[T]:
        """Run every stage in daemon threads; returns the last stage's output channel.

        Close that channel to stop the stages early.
        """
        return _Run(self, threaded=True).output

    def astart(self) -> Channel[T]:
        """Run every stage as a task on the running loop; returns the output channel."""
        asyncio.get_running_loop()  # fails clearly outside a loop
        return _Run(self, threaded=False).output

    def __iter__(self) -> Iterator[T]:
        run = _Run(self, threaded=True)
        try:
            yield from run.output
        finally:
            run.cancel()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._aiterate()

    async def _aiterate(self) -> AsyncIterator[T]:
        run = _Run(self, threaded=False)
        try:
            async for item in run.output:
                yield item
        finally:
            run.cancel()
            await run.pumps.wait()  # every task has seen the cancellation and let go

    def __repr__(self) -> str:
        chain = " | ".join(stage.label for stage in self._stages) or "(no stage)"
        return f"Stages(name={self.name!r}: {chain})"


class _StageRun:
    """One running stage: its channels, live worker count and stop flag."""

    __slots__ = (
        "error",
        "input",
        "lock",
        "output",
        "owns_input",
        "stage",
        "stopped",
        "workers_left",
    )

    def __init__(
        self, stage: _Stage, input: BufferCore[Any], owns_input: bool, output: Channel[Any]
    ) -> None:
        self.stage = stage
        self.input = input
        self.owns_input = owns_input
        self.output = output
        self.stopped = False
        self.error: BaseException | None = None
        self.workers_left = stage.workers
        self.lock = threading.Lock()

    def stop_upstream(self) -> None:
        """Nobody wants our output any more: stop, and make the stage before us stop."""
        self.stopped = True
        if self.owns_input:
            self.input.close()

    def worker_done(self, error: BaseException | None = None) -> None:
        """A worker ended (``error``: its input failed); the last one closes the output.

        The output is closed with the input's error only once every worker has sent
        what it was working on, so no result from before the failure is lost.
        """
        with self.lock:
            self.workers_left -= 1
            last = self.workers_left == 0
            if error is not None and self.error is None:
                self.error = error
        if last:
            self.output.close(self.error)

    def fail(self, error: BaseException, item: object) -> None:
        """The stage's own function raised on ``item``: fail fast, and say where."""
        error.add_note(f"raised by stage {self.output.name!r} on item {reprlib.repr(item)}")
        self.output.close(error)
        self.stop_upstream()
        self.worker_done()


class _Run:
    """Stages wired to channels and started, as threads or as tasks."""

    __slots__ = ("output", "pumps", "runs", "source_channel")

    def __init__(self, stages: Stages[Any], *, threaded: bool) -> None:
        self.pumps = Pumps(stages.name)
        self.runs: list[_StageRun] = []
        source = stages._source
        for stage in stages._stages:
            if threaded and stage.is_async:
                raise ConfigurationError(
                    f"stage {stage.label!r} of {stages.name!r} is a coroutine function: run "
                    "the stages from async code ('async for' or astart()), or pass a plain function"
                )
        self.source_channel: Channel[Any] | None = None
        current: BufferCore[Any]
        outputs: list[Channel[Any]] = []  # the source pump's channel, then each stage's
        if isinstance(source, BufferCore) and stages._stages:
            current = source  # the first stage reads the caller's channel directly
        else:
            feed: Channel[Any] = Channel(stages._capacity, name=f"{stages.name}.0:source")
            if threaded:
                iterator = sync_items(source, f"Stages {stages.name!r}")
                self.pumps._spawn_thread(functools.partial(_feed_sync, iterator, feed), "source")
            else:
                self.pumps._spawn_task(_feed_async(source, feed), "source")
            self.source_channel = current = feed
            outputs.append(feed)
        owns_input = self.source_channel is not None
        for index, stage in enumerate(stages._stages, start=1):
            capacity = stage.capacity or stages._capacity
            output: Channel[Any] = Channel(capacity, name=f"{stages.name}.{index}:{stage.label}")
            outputs.append(output)
            run = _StageRun(stage, current, owns_input, output)
            self.runs.append(run)
            for worker in range(stage.workers):
                part = f"{stage.label}#{worker}"
                if stage.kind == _BATCH:
                    if threaded:
                        self.pumps._spawn_thread(
                            functools.partial(_batch_sync, run, stages._clock), part
                        )
                    else:
                        self.pumps._spawn_task(_batch_async(run, stages._clock), part)
                elif threaded:
                    self.pumps._spawn_thread(functools.partial(_work_sync, run), part)
                else:
                    self.pumps._spawn_task(_work_async(run), part)
            current = output
            owns_input = True
        self.output = outputs[-1]

    def cancel(self) -> None:
        """Stop everything now: the consumer left before the end."""
        for run in self.runs:
            run.stopped = True
        if self.source_channel is not None:
            self.source_channel.close()
        for run in self.runs:
            run.output.close()
        self.pumps.cancel()


# -- the source pump ------------------------------------------------------------------------


def _feed_sync(iterator: Iterator[Any], channel: Channel[Any]) -> None:
    try:
        for item in iterator:
            channel.send(item)
    except ChannelClosedError:  # the first stage is gone (stopped or failed)
        close_quietly(iterator)
        return
    except BaseException as error:
        error.add_note(f"raised by the source of {channel.name!r}")
        channel.close(error)
        return
    channel.close()


async def _feed_async(source: Any, channel: Channel[Any]) -> None:
    iterator = async_items(source)
    try:
        async for item in iterator:
            await channel.asend(item)
    except ChannelClosedError:
        return
    except BaseException as error:
        if not isinstance(error, asyncio.CancelledError):
            error.add_note(f"raised by the source of {channel.name!r}")
        channel.close(error)
        if isinstance(error, asyncio.CancelledError):
            raise
        return
    finally:
        await aclose_quietly(iterator)
    channel.close()


# -- map / filter / flat_map workers --------------------------------------------------------


def _work_sync(run: _StageRun) -> None:
    stage = run.stage
    fn = stage.fn
    kind = stage.kind
    output = run.output
    try:
        for item in run.input:
            if run.stopped:
                break
            try:
                result = fn(item)
                if kind == _FLAT_MAP:
                    result = list(result)
            except BaseException as error:
                run.fail(error, item)
                return
            try:
                if kind == _MAP:
                    output.send(result)
                elif kind == _FILTER:
                    if result:
                        output.send(item)
                else:
                    for each in result:
                        output.send(each)
            except ChannelClosedError:
                run.stop_upstream()
                break
    except BaseException as error:  # the input failed: pass its error on
        run.worker_done(error)
        return
    run.worker_done()


async def _work_async(run: _StageRun) -> None:
    stage = run.stage
    fn = stage.fn
    kind = stage.kind
    is_async = stage.is_async
    output = run.output
    try:
        async for item in run.input:
            if run.stopped:
                break
            try:
                result = fn(item)
                if is_async:
                    result = await result
                if kind == _FLAT_MAP:
                    result = list(result)
            except asyncio.CancelledError:
                raise
            except BaseException as error:
                run.fail(error, item)
                return
            try:
                if kind == _MAP:
                    await output.asend(result)
                elif kind == _FILTER:
                    if result:
                        await output.asend(item)
                else:
                    for each in result:
                        await output.asend(each)
            except ChannelClosedError:
                run.stop_upstream()
                break
    except BaseException as error:
        run.worker_done(error)
        if isinstance(error, asyncio.CancelledError):
            raise
        return
    run.worker_done()


# -- batch ----------------------------------------------------------------------------------


def _batch_timeout(
    batch: list[Any], started: float, max_wait: float | None, clock: Clock
) -> float | None:
    if not batch or max_wait is None:
        return None
    return max(0.0, started + max_wait - clock.now())


def _batch_sync(run: _StageRun, clock: Clock) -> None:
    stage = run.stage
    batch: list[Any] = []
    started = 0.0
    error: BaseException | None = None
    try:
        while not run.stopped:
            try:
                timeout = _batch_timeout(batch, started, stage.max_wait, clock)
                item = run.input._receive_wait(timeout, clock)  # waits on the stages' clock
            except TimeoutExceededError:
                run.output.send(batch)
                batch = []
                continue
            except ChannelClosedError:  # the end of the stream
                break
            except BaseException as failure:  # the input failed: flush, then pass it on
                error = failure
                break
            if not batch:
                started = clock.now()
            batch.append(item)
            if len(batch) >= stage.size:
                run.output.send(batch)
                batch = []
        if batch and not run.stopped:
            run.output.send(batch)
    except ChannelClosedError:  # the output was closed: nobody wants more
        run.stop_upstream()
    run.worker_done(error)


async def _batch_async(run: _StageRun, clock: Clock) -> None:
    stage = run.stage
    batch: list[Any] = []
    started = 0.0
    error: BaseException | None = None
    try:
        while not run.stopped:
            try:
                timeout = _batch_timeout(batch, started, stage.max_wait, clock)
                item = await run.input._areceive_wait(timeout, clock)
            except TimeoutExceededError:
                await run.output.asend(batch)
                batch = []
                continue
            except ChannelClosedError:
                break
            except asyncio.CancelledError:
                raise
            except BaseException as failure:
                error = failure
                break
            if not batch:
                started = clock.now()
            batch.append(item)
            if len(batch) >= stage.size:
                await run.output.asend(batch)
                batch = []
        if batch and not run.stopped:
            await run.output.asend(batch)
    except ChannelClosedError:
        run.stop_upstream()
    except asyncio.CancelledError as cancelled:
        run.worker_done(cancelled)
        raise
    run.worker_done(error)
