"""Asyncio plumbing the broker engines share: a private loop thread and per-loop clients."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from seawall.errors import ConfigurationError, TimeoutExceededError

__all__ = ["BackgroundLoop", "PerLoop"]

T = TypeVar("T")
C = TypeVar("C")


class BackgroundLoop:
    """An event loop on a daemon thread, started on first use, for sync callers of async drivers."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private loop, started on first use."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=serve, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def in_loop_thread(self) -> bool:
        """True when called from the private loop's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the private loop and wait for its result (at most ``timeout`` s)."""
        if self.in_loop_thread():
            coroutine.close()
            raise ConfigurationError(
                "engine.run() was called from the engine's own loop thread; await the "
                "coroutine there instead"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine itself raised a TimeoutError
                raise
            future.cancel()
            raise TimeoutExceededError(timeout or 0.0, what="engine.run()") from None

    def stop(self, last: Callable[[], Awaitable[object]] | None = None) -> None:
        """Run ``last`` on the loop (bounded), then stop the loop and join its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or loop.is_closed():
            return
        if threading.current_thread() is thread:  # pragma: no cover - misuse guard
            loop.call_soon(loop.stop)
            return
        if last is not None:

            async def finish() -> None:
                await last()

            with contextlib.suppress(Exception):  # best effort while closing
                asyncio.run_coroutine_threadsafe(finish(), loop).result(5.0)

        async def cancel_rest() -> None:
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # best effort while closing
            asyncio.run_coroutine_threadsafe(cancel_rest(), loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()


class PerLoop(Generic[C]):
    """One client per running event loop, created lazily by ``factory`` under a per-loop lock."""

    def __init__(
        self,
        factory: Callable[[], Awaitable[C]],
        is_usable: Callable[[C], bool],
        closer: Callable[[C], Awaitable[object]],
    ) -> None:
        self._factory = factory
        self._is_usable = is_usable
        self._closer = closer
        self._clients: dict[asyncio.AbstractEventLoop, C] = {}
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    async def get(self) -> C:
        """The running loop's client, created (or recreated once closed) on demand."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is not None and self._is_usable(client):
            return client
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            client = self._clients.get(loop)
            if client is not None and self._is_usable(client):
                return client
            if client is not None:
                await self._close_quietly(client)
            self._forget_closed_loops()
            client = await self._factory()
            self._clients[loop] = client
            return client

    async def close_current(self) -> None:
        """Close the running loop's client, if any."""
        loop = asyncio.get_running_loop()
        self._locks.pop(loop, None)
        client = self._clients.pop(loop, None)
        if client is not None:
            await self._close_quietly(client)

    def close_others(self, keep: asyncio.AbstractEventLoop | None = None) -> None:
        """Close the clients of other loops: scheduled on their loop when it still runs."""
        for loop, client in list(self._clients.items()):
            if loop is keep:
                continue
            del self._clients[loop]
            self._locks.pop(loop, None)
            if loop.is_closed() or not loop.is_running():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(self._close_quietly(client))
            else:
                asyncio.run_coroutine_threadsafe(self._close_quietly(client), loop)

    def _forget_closed_loops(self) -> None:
        for loop in [loop for loop in self._clients if loop.is_closed()]:
            del self._clients[loop]
            self._locks.pop(loop, None)

    async def _close_quietly(self, client: C) -> None:
        with contextlib.suppress(Exception):  # the client may already be broken
            await self._closer(client)
