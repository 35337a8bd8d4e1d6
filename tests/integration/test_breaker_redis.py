"""Shared circuit breakers on a real Redis: counting, propagation, permits, outages.

Two :class:`RedisBreakerStore` objects have their own connections and threads, so two
breakers on two stores behave like two processes; one test also runs real ones.
Waiting for background threads uses short polls bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from seawall.engines import connect
from seawall.resilience.breaker import (
    CallNotPermittedError,
    CircuitBreaker,
    CircuitState,
    CircuitStoreUnavailableError,
    CountWindow,
    RedisBreakerStore,
    TimeWindow,
)

pytestmark = pytest.mark.engine("redis")

OPEN, CLOSED, HALF_OPEN = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


class BoomError(Exception):
    pass


def boom() -> None:
    raise BoomError


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(BoomError):
            breaker.call(boom)


@pytest.fixture
def name(redis_url: str) -> Iterator[str]:
    """A unique breaker name; its keys are deleted afterwards."""
    breaker_name = f"test-{uuid.uuid4().hex[:12]}"
    yield breaker_name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"seawall:breaker:{{{breaker_name}}}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def stores(redis_url: str) -> Iterator[Callable[..., RedisBreakerStore]]:
    """Make stores (each like one process); all are closed afterwards."""
    made: list[RedisBreakerStore] = []

    def make(url: str | None = None, **options: Any) -> RedisBreakerStore:
        store = RedisBreakerStore(url or redis_url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def shared(name: str, store: RedisBreakerStore, **options: Any) -> CircuitBreaker:
    values: dict[str, Any] = {
        "window": CountWindow(20),
        "minimum_calls": 4,
        "failure_rate": 0.5,
        "open_for": 30.0,
        "half_open_calls": 2,
    }
    values.update(options)
    return CircuitBreaker(name, store=store, **values)


def test_outcomes_of_two_instances_are_counted_together(
    name: str, stores: Callable[..., RedisBreakerStore]
) -> None:
    first = shared(name, stores())
    second = shared(name, stores())
    for _ in range(2):
        assert first.call(lambda: 1) == 1
    fail(second, 2)  # neither alone reaches minimum_calls=4; together: 2 of 4 failed
    assert wait_for(lambda: first.state is OPEN and second.state is OPEN)
    metrics = first.metrics()
    assert metrics.trips == 1
    # Below the threshold nothing trips: 2 failures of 6 calls in a fresh breaker.
    first.reset()
    assert wait_for(lambda: second.state is CLOSED)
    for _ in range(2):
        first.call(lambda: 1)
        second.call(lambda: 1)
    fail(first, 1)
    fail(second, 1)
    first._store.flush()  # type: ignore[union-attr]
    second._store.flush()  # type: ignore[union-attr]
    assert wait_for(lambda: first.metrics().calls == 6)
    assert first.metrics().failed == 2
    assert first.state is CLOSED


def test_a_trip_reaches_other_instances_quickly(
    name: str, stores: Callable[..., RedisBreakerStore]
) -> None:
    first = shared(name, stores())
    others = [shared(name, stores()) for _ in range(3)]
    started = time.perf_counter()
    fail(first, 4)
    assert wait_for(lambda: all(other.state is OPEN for other in others), timeout=2.0)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # typically a few milliseconds
    for other in others:
        with pytest.raises(CallNotPermittedError) as caught:
            other.call(lambda: 1)
        assert caught.value.retry_after is not None
        assert 25.0 < caught.value.retry_after <= 30.0


def test_half_open_permits_are_limited_fleet_wide(
    name: str, stores: Callable[..., RedisBreakerStore]
) -> None:
    breakers = [shared(name, stores(), open_for=0.2, half_open_calls=3) for _ in range(3)]
    fail(breakers[0], 4)
    assert wait_for(lambda: all(b.state is OPEN for b in breakers))
    time.sleep(0.25)  # let the (server-timed) open period end
    release = threading.Event()
    entered: list[int] = []
    rejected: list[int] = []
    lock = threading.Lock()

    def trial() -> str:
        with lock:
            entered.append(1)
        release.wait(timeout=5)
        return "ok"

    def worker(breaker: CircuitBreaker) -> None:
        try:
            breaker.call(trial)
        except CallNotPermittedError:
            with lock:
                rejected.append(1)

    threads = [threading.Thread(target=worker, args=(b,)) for b in breakers for _ in range(4)]
    for thread in threads:
        thread.start()
    assert wait_for(lambda: len(entered) + len(rejected) == 12, timeout=5)
    assert len(entered) == 3
    release.set()
    for thread in threads:
        thread.join(timeout=5)
    assert wait_for(lambda: all(b.state is CLOSED for b in breakers))


def test_failed_trials_reopen_with_a_longer_wait(
    name: str, stores: Callable[..., RedisBreakerStore]
) -> None:
    first = shared(name, stores(), open_for=0.2, open_backoff=3.0, half_open_calls=1)
    second = shared(name, stores(), open_for=0.2, open_backoff=3.0, half_open_calls=1)
    fail(first, 4)
    assert wait_for(lambda: second.state is OPEN)
    time.sleep(0.25)
    fail(second, 1)  # the single trial fails
    assert wait_for(lambda: first.state is OPEN and first.metrics().trips == 2)
    with pytest.raises(CallNotPermittedError) as caught:
        first.call(lambda: 1)
    assert caught.value.retry_after is not None
    assert 0.4 < caught.value.retry_after <= 0.6


def test_manual_controls_are_shared(name: str, stores: Callable[..., RedisBreakerStore]) -> None:
    first = shared(name, stores())
    second = shared(name, stores())
    first.force_open()
    assert wait_for(lambda: second.state is CircuitState.FORCED_OPEN)
    with pytest.raises(CallNotPermittedError):
        second.call(lambda: 1)
    second.disable()
    assert wait_for(lambda: first.state is CircuitState.DISABLED)
    fail(first, 10)
    assert first.state is CircuitState.DISABLED
    second.force_closed()
    assert wait_for(lambda: first.state is CLOSED)


def test_time_window_is_shared(name: str, stores: Callable[..., RedisBreakerStore]) -> None:
    first = shared(name, stores(), window=TimeWindow(60))
    second = shared(name, stores(), window=TimeWindow(60))
    first.call(lambda: 1)
    second.call(lambda: 1)
    fail(first, 1)
    assert first.state is CLOSED
    fail(second, 1)
    assert wait_for(lambda: first.state is OPEN and second.state is OPEN)


def test_count_window_keeps_the_most_recent_calls(
    name: str, stores: Callable[..., RedisBreakerStore]
) -> None:
    store = stores()
    breaker = shared(name, store, window=CountWindow(10), minimum_calls=10, failure_rate=0.5)
    fail(breaker, 4)
    store.flush()
    for _ in range(10):
        breaker.call(lambda: 1)
    store.flush()
    metrics = breaker.metrics()
    assert metrics.calls == 10
    assert metrics.failed == 0  # the 4 failures slid out of the window
    assert breaker.state is CLOSED


# -- the store goes away ------------------------------------------------------------------


class Proxy:
    """A TCP forwarder in front of Redis that can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 0.2)
                if not self.up or self.closed:
                    break
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except OSError:
            pass
        finally:
            a.close()
            b.close()

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.sockets.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[Proxy]:
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    forwarder = Proxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    yield forwarder
    forwarder.close()


def proxied_url(redis_url: str, proxy: Proxy) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    return f"redis://127.0.0.1:{proxy.port}{parts.path or '/0'}"


def test_unreachable_store_fails_open_at_once(
    name: str, stores: Callable[..., RedisBreakerStore]
) -> None:
    started = time.monotonic()
    store = stores("redis://127.0.0.1:1/0", timeout=0.5, probe_interval=0.05)
    breaker = shared(name, store, on_store_error="fail_open")
    assert breaker.call(lambda: 1) == 1
    fail(breaker, 3)  # 3 of 4 failed
    assert breaker.state is OPEN  # the local fallback protects
    assert time.monotonic() - started < 3.0


def test_unreachable_store_fails_closed_with_a_clear_error(
    name: str, stores: Callable[..., RedisBreakerStore]
) -> None:
    store = stores("redis://127.0.0.1:1/0", timeout=0.5)
    breaker = shared(name, store, on_store_error="fail_closed")
    started = time.monotonic()
    with pytest.raises(CircuitStoreUnavailableError) as caught:
        breaker.call(lambda: 1)
    assert time.monotonic() - started < 1.0
    assert "127.0.0.1:1" in str(caught.value)
    assert "fail_closed" in str(caught.value)


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_store_lost_mid_run_then_recovered(
    name: str,
    stores: Callable[..., RedisBreakerStore],
    redis_url: str,
    proxy: Proxy,
    mode: str,
) -> None:
    store = stores(proxied_url(redis_url, proxy), timeout=0.5, probe_interval=0.05)
    witness = shared(name, stores())  # talks to Redis directly
    breaker = shared(name, store, on_store_error=mode)
    assert breaker.call(lambda: 1) == 1
    proxy.cut()
    fail_started = time.monotonic()
    # The next failure wakes the flusher, whose report fails: the breaker degrades.
    with pytest.raises((BoomError, CircuitStoreUnavailableError)):
        breaker.call(boom)
    assert wait_for(lambda: breaker._core.degraded, timeout=3.0)  # type: ignore[union-attr]
    if mode == "fail_closed":
        with pytest.raises(CircuitStoreUnavailableError):
            breaker.call(lambda: 1)
    else:
        assert breaker.call(lambda: 1) == 1
    assert time.monotonic() - fail_started < 3.0  # no hang
    proxy.restore()
    assert wait_for(lambda: not breaker._core.degraded, timeout=3.0)  # type: ignore[union-attr]
    assert breaker.call(lambda: 2) == 2
    # Shared again: a trip elsewhere reaches it.
    fail(witness, 4)
    assert wait_for(lambda: breaker.state is OPEN, timeout=3.0)


# -- real processes ---------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from seawall.resilience.breaker import CircuitBreaker, CountWindow, RedisBreakerStore
    url, name = sys.argv[1], sys.argv[2]
    breaker = CircuitBreaker(name, store=RedisBreakerStore(url), window=CountWindow(20),
                             minimum_calls=4, open_for=30.0)
    assert breaker.call(lambda: 1) == 1
    print("ready", breaker.state.value, flush=True)
    deadline = time.monotonic() + 10
    while breaker.state.value != "open" and time.monotonic() < deadline:
        time.sleep(0.001)
    seen = time.monotonic()
    try:
        breaker.call(lambda: 1)
        print("not-rejected", flush=True)
    except Exception as exc:
        print("rejected", breaker.state.value, type(exc).__name__, flush=True)
    breaker.close()
    """
)


def test_failures_in_one_process_open_the_breaker_in_all(name: str, redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_url, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline().split()
            assert line == ["ready", "closed"], child.stderr.read() if child.stderr else line
        store = RedisBreakerStore(redis_url)
        try:
            parent = CircuitBreaker(
                name, store=store, window=CountWindow(20), minimum_calls=4, open_for=30.0
            )
            fail(parent, 4)
            assert wait_for(lambda: parent.state is OPEN)
            outputs = [child.communicate(timeout=15)[0].split() for child in children]
        finally:
            store.close()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=5)
    for output in outputs:
        assert output == ["rejected", "open", "CallNotPermittedError"]


def test_engine_object_is_accepted(name: str, redis_url: str) -> None:
    engine = connect(redis_url)
    try:
        breaker = CircuitBreaker(name, store=engine, minimum_calls=2)
        assert breaker.call(lambda: 5) == 5
        assert "Redis at" in repr(breaker)
        breaker.close()
    finally:
        engine.close()


def test_close_stops_the_background_threads(name: str, redis_url: str) -> None:
    def ours() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("seawall-breaker-")]

    before = set(ours())
    breaker = CircuitBreaker(name, store=redis_url, minimum_calls=2)
    started = [t for t in ours() if t not in before]
    assert len(started) == 2
    assert all(thread.daemon for thread in started)
    breaker.close()
    assert not any(thread.is_alive() for thread in started)
