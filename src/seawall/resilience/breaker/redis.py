"""Share circuit breakers between processes through Redis.

Every process keeps a mirror of the shared state and decides locally, so a closed
call costs no round trip. A background *flusher* thread sends the outcomes counted
since the last flush (every ``flush_interval`` seconds, at once after a failure)
with one Lua script call per breaker, all breakers of the store in one pipelined
round trip. The script merges them into the shared window, judges the thresholds,
transitions atomically and answers with the shared state; a transition is also
PUBLISHed, and a *listener* thread applies it to every other process's mirror at
once. Half-open permits come from the script only, so ``half_open_calls`` trial
calls run fleet-wide. Deadlines use the server's clock (``TIME``), never a client's.

Both threads are daemons, stop with the store's last breaker (``breaker.close()``)
or :meth:`RedisBreakerStore.close`, and are the same for sync and asyncio users:
nothing on the event loop waits for Redis except a half-open permit, which is asked
in a worker thread (``asyncio.to_thread``). Create shared breakers after forking.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seawall.engines import Engine, connect
from seawall.engines._base import redact
from seawall.engines.redis import RedisEngine, redis_errors
from seawall.errors import ConfigurationError, EngineError, UnsupportedEngineError
from seawall.resilience.breaker._config import BreakerConfig, CountWindow
from seawall.resilience.breaker._core import CircuitState
from seawall.resilience.breaker._shared import Report, SharedBreakerCore, SharedState

if TYPE_CHECKING:
    from seawall.clock import Clock

__all__ = ["RedisBreakerStore"]

_logger = logging.getLogger("seawall.resilience.breaker")

_SCRIPT = importlib.resources.files("seawall.resilience.breaker").joinpath("lua/breaker.lua")
_NO_CAP = 365 * 24 * 3600.0


@dataclass(eq=False)
class _Registration:
    name: str
    core: SharedBreakerCore
    clock: Clock
    on_store_change: Callable[[BaseException | None], None]
    keys: list[str]
    config_args: list[Any]
    next_probe: float = -math.inf
    resync: bool = field(default=False)


def _config_args(name: str, config: BreakerConfig, channel: str, ttl: float) -> list[Any]:
    window = config.window
    if isinstance(window, CountWindow):
        kind, size, bucket_ms = "count", window.size, 0.0
    else:
        kind, size, bucket_ms = "time", window.bucket_count, window.bucket_width * 1000.0
    slow_rate = config.slow_call.rate if config.slow_call is not None else 2.0
    max_open = config.max_open_for if config.max_open_for is not None else _NO_CAP
    return [
        kind,
        size,
        repr(bucket_ms),
        config.judged_minimum,
        repr(config.failure_rate),
        repr(slow_rate),
        repr(config.open_for * 1000.0),
        repr(config.open_backoff),
        repr(max_open * 1000.0),
        config.half_open_calls,
        name,
        channel,
        int(ttl * 1000),
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(reply: Any) -> SharedState:
    granted, state, epoch, remaining, calls, failed, slow, trips, reason = reply
    return SharedState(
        state=CircuitState(_text(state)),
        epoch=int(_text(epoch)),
        remaining=int(_text(remaining)) / 1000.0,
        calls=float(_text(calls)),
        failed=float(_text(failed)),
        slow=float(_text(slow)),
        trips=int(trips),
        granted=bool(int(granted)),
        reason=_text(reason),
    )


class RedisBreakerStore:
    """Keeps shared circuit breakers in Redis; pass it as ``CircuitBreaker(store=...)``.

    ``engine`` is a :class:`~seawall.engines.redis.RedisEngine` or a ``redis://`` URL
    (then connect and socket timeouts are ``timeout`` seconds, so a vanished server
    fails fast instead of hanging). ``flush_interval`` bounds how stale the shared
    window is; failures are sent at once. ``probe_interval`` is how often a failing
    store is retried. Keys live under ``prefix`` and expire ``ttl`` seconds after
    their breaker was last used.
    """

    def __init__(
        self,
        engine: RedisEngine | Engine | str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "seawall:breaker",
        flush_interval: float = 0.02,
        probe_interval: float = 0.5,
        timeout: float = 1.0,
        ttl: float = 24 * 3600.0,
    ) -> None:
        for field_name, value in (
            ("flush_interval", flush_interval),
            ("probe_interval", probe_interval),
            ("timeout", timeout),
            ("ttl", ttl),
        ):
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigurationError(
                    f"RedisBreakerStore {field_name}={value!r} is invalid: "
                    "it must be a finite number of seconds > 0"
                )
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"RedisBreakerStore prefix={prefix!r} is invalid: it must be a non-empty string"
            )
        self._owns_engine = isinstance(engine, str)
        if isinstance(engine, str):
            if engine.split("://", 1)[0].lower() not in ("redis", "rediss"):
                raise UnsupportedEngineError(
                    f"RedisBreakerStore needs a 'redis://' or 'rediss://' URL, not {redact(engine)!r}"
                )
            engine = connect(engine, socket_timeout=timeout, socket_connect_timeout=timeout)
        if not isinstance(engine, RedisEngine):
            raise UnsupportedEngineError(
                f"RedisBreakerStore needs a Redis engine, not {engine!r}; "
                "pass a 'redis://' URL or seawall.connect('redis://...')"
            )
        self.engine = engine
        self.prefix = prefix
        self.flush_interval = float(flush_interval)
        self.probe_interval = float(probe_interval)
        self.ttl = float(ttl)
        self._channel = f"{prefix}:changes"
        self._script = engine.client.register_script(_SCRIPT.read_text(encoding="utf-8"))
        self._registrations: dict[int, _Registration] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- the BreakerStore protocol ------------------------------------------------

    def attach(
        self,
        name: str,
        core: SharedBreakerCore,
        clock: Clock,
        on_store_change: Callable[[BaseException | None], None],
    ) -> None:
        """Follow the shared breaker ``name``: sync once now, then in the background."""
        key = f"{self.prefix}:{{{name}}}"
        registration = _Registration(
            name=name,
            core=core,
            clock=clock,
            on_store_change=on_store_change,
            keys=[key, f"{key}:window"],
            config_args=_config_args(name, core.config, self._channel, self.ttl),
        )
        core.on_pending = self._wake.set
        with self._lock:
            self._registrations[id(core)] = registration
            self._start_threads()
        report = Report(core.epoch, 0, 0, 0, 0)
        try:
            reply = self._run(registration, "report", report)
        except EngineError as exc:
            if core.store_failed(clock.now(), exc):
                on_store_change(exc)
            return
        core.apply_reply(clock.now(), reply)

    def detach(self, core: SharedBreakerCore) -> None:
        """Send what is pending, stop following; threads stop with the last breaker."""
        with self._lock:
            registration = self._registrations.pop(id(core), None)
            last = not self._registrations
        if registration is not None and not core.degraded:
            report = core.take_report(registration.clock.now())
            if report is not None and (report.calls or report.released):
                try:
                    self._run(registration, "report", report)
                except EngineError:
                    _logger.debug("final flush of breaker %r failed", registration.name)
        core.on_pending = None
        if last:
            self._stop_threads()

    def acquire(self, core: SharedBreakerCore) -> SharedState:
        """Ask the script for a half-open permit (one round trip on the caller's thread)."""
        registration = self._registration(core)
        return self._run(registration, "acquire", Report(core.epoch, 0, 0, 0, 0))

    def command(self, core: SharedBreakerCore, operation: str) -> SharedState:
        """Apply force_open, force_closed, disable or reset to the shared state."""
        if operation not in ("force_open", "force_closed", "disable", "reset"):
            raise ConfigurationError(f"unknown breaker operation {operation!r}")
        registration = self._registration(core)
        return self._run(registration, operation, Report(core.epoch, 0, 0, 0, 0))

    def describe(self) -> str:
        """``Redis at <url>`` without the password."""
        return f"Redis at {redact(self.engine.url)}"

    # -- lifetime -----------------------------------------------------------------

    def close(self) -> None:
        """Detach every breaker, stop the threads, close the engine if this store opened it."""
        with self._lock:
            cores = [registration.core for registration in self._registrations.values()]
        for core in cores:
            self.detach(core)
        self._stop_threads()
        if self._owns_engine:
            self.engine.close()

    def __enter__(self) -> RedisBreakerStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisBreakerStore({redact(self.engine.url)!r}, prefix={self.prefix!r})"

    # -- internals ----------------------------------------------------------------

    def _registration(self, core: SharedBreakerCore) -> _Registration:
        try:
            return self._registrations[id(core)]
        except KeyError:
            raise ConfigurationError(
                "this breaker is closed or not attached to the store; build a new one"
            ) from None

    def _run(self, registration: _Registration, operation: str, report: Report) -> SharedState:
        args = [operation, *self._report_args(report), *registration.config_args]
        with redis_errors(self.engine.url):
            reply = self._script(keys=registration.keys, args=args)
        return _parse(reply)

    @staticmethod
    def _report_args(report: Report) -> list[int]:
        return [report.epoch, report.calls, report.failed, report.slow, report.released]

    def _start_threads(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for target, role in ((self._flush_loop, "flusher"), (self._listen_loop, "listener")):
            thread = threading.Thread(target=target, name=f"seawall-breaker-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _stop_threads(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
            self._stop.set()
            self._wake.set()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)

    def _flush_loop(self) -> None:
        stop, wake = self._stop, self._wake
        while not stop.is_set():
            wake.wait(self.flush_interval)
            wake.clear()
            if stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # a bug must not kill the thread silently
                _logger.exception("shared breaker flush failed")
                stop.wait(self.probe_interval)

    def flush(self) -> None:
        """Send every breaker's pending outcomes now (one pipelined round trip)."""
        with self._lock:
            registrations = list(self._registrations.values())
        batch: list[tuple[_Registration, Report, bool]] = []
        for registration in registrations:
            core = registration.core
            now = registration.clock.now()
            if core.degraded:
                if now < registration.next_probe:
                    continue
                registration.next_probe = now + self.probe_interval
                report = core.take_report(now, force=True)
            else:
                report = core.take_report(now, force=registration.resync)
            registration.resync = False
            if report is not None:
                batch.append((registration, report, core.degraded))
        if not batch:
            return
        pipe = self.engine.client.pipeline(transaction=False)
        for registration, report, _ in batch:
            self._script(
                keys=registration.keys,
                args=["report", *self._report_args(report), *registration.config_args],
                client=pipe,
            )
        try:
            with redis_errors(self.engine.url):
                replies = pipe.execute()
        except EngineError as exc:
            for registration, _, _ in batch:
                if registration.core.store_failed(registration.clock.now(), exc):
                    registration.on_store_change(exc)
            return
        for (registration, _, was_degraded), reply in zip(batch, replies, strict=True):
            registration.core.apply_reply(registration.clock.now(), _parse(reply))
            if was_degraded:
                registration.on_store_change(None)

    def _listen_loop(self) -> None:
        stop = self._stop
        while not stop.is_set():
            pubsub = None
            try:
                with redis_errors(self.engine.url):
                    # redis-py's pubsub() factory is not annotated.
                    pubsub = self.engine.client.pubsub(  # type: ignore[no-untyped-call]
                        ignore_subscribe_messages=True
                    )
                    pubsub.subscribe(self._channel)
                    self._resync_all()  # changes published while unsubscribed
                    while not stop.is_set():
                        message = pubsub.get_message(timeout=0.1)
                        if message is not None:
                            self._dispatch(message.get("data"))
            except EngineError:
                stop.wait(self.probe_interval)
            except Exception:  # a bug must not kill the thread silently
                _logger.exception("shared breaker listener failed")
                stop.wait(self.probe_interval)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # the connection may already be gone
                        _logger.debug("closing the breaker listener failed", exc_info=True)

    def _resync_all(self) -> None:
        with self._lock:
            for registration in self._registrations.values():
                registration.resync = True
        self._wake.set()

    def _dispatch(self, data: Any) -> None:
        try:
            state, epoch, remaining, trips, reason, name = _text(data).split("\t", 5)
            change = (
                CircuitState(state),
                int(epoch),
                int(remaining) / 1000.0,
                int(trips),
                reason,
            )
        except ValueError:
            _logger.warning("ignoring a malformed breaker change message: %r", data)
            return
        with self._lock:
            targets = [r for r in self._registrations.values() if r.name == name]
        for registration in targets:
            registration.core.apply_change(registration.clock.now(), *change)
