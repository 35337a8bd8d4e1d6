"""Opening a queue on an engine: the store is chosen by the engine's ``kind``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seawall.clock import Clock
from seawall.codec import Codec, resolve_codec
from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.events import EventHub, hub
from seawall.messaging.queue._queue import Queue
from seawall.messaging.queue._store import AsyncQueueStore
from seawall.messaging.queue._validate import (
    check_name,
    check_positive,
    check_positive_int,
)

if TYPE_CHECKING:
    from seawall.messaging.claim_check import ClaimCheck

__all__ = [
    "DEFAULT_DEDUP_WINDOW",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "list_queues",
    "open_queue",
]

DEFAULT_VISIBILITY_TIMEOUT = 30.0
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024
DEFAULT_DEDUP_WINDOW = 300.0


@dataclass(frozen=True)
class _Backend:
    """How to build a queue store on one kind of engine."""

    store: str
    """``module:Class`` of the synchronous store."""
    names: str
    """``module:function`` listing the queues declared on an engine."""
    async_store: str | None = None
    """``module:Class`` of a native asyncio store; None: offload the sync store."""
    offload: bool = True
    """Whether the sync store blocks (run it in a thread from asyncio)."""


_BACKENDS: dict[str, _Backend] = {
    "memory": _Backend(
        "seawall.messaging.queue.memory:MemoryQueueStore",
        "seawall.messaging.queue.memory:memory_queue_names",
        offload=False,
    ),
    "sqlite": _Backend(
        "seawall.messaging.queue.sqlite:SqliteQueueStore",
        "seawall.messaging.queue.sqlite:sqlite_queue_names",
    ),
    "postgres": _Backend(
        "seawall.messaging.queue.postgres:PostgresQueueStore",
        "seawall.messaging.queue.postgres:postgres_queue_names",
        async_store="seawall.messaging.queue.postgres:AsyncPostgresQueueStore",
    ),
    "redis": _Backend(
        "seawall.messaging.queue.redis:RedisQueueStore",
        "seawall.messaging.queue.redis:redis_queue_names",
        async_store="seawall.messaging.queue.redis:AsyncRedisQueueStore",
    ),
    "nats": _Backend(
        "seawall.messaging.queue.nats:NatsQueueStore",
        "seawall.messaging.queue.nats:nats_queue_names",
        async_store="seawall.messaging.queue.nats:AsyncNatsQueueStore",
    ),
    "rabbitmq": _Backend(
        "seawall.messaging.queue.rabbitmq:RabbitQueueStore",
        "seawall.messaging.queue.rabbitmq:rabbitmq_queue_names",
        async_store="seawall.messaging.queue.rabbitmq:AsyncRabbitQueueStore",
    ),
}


def _load(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _backend(engine: Engine) -> _Backend:
    backend = _BACKENDS.get(engine.kind)
    if backend is None:
        supported = ", ".join(sorted(_BACKENDS))
        raise UnsupportedEngineError(
            f"durable queues do not run on the {engine.kind or type(engine).__name__!r} engine "
            f"yet ({engine!r}); supported engines: {supported}"
        )
    return backend


def open_queue(
    engine: Engine | str,
    name: str,
    *,
    codec: Codec | str | None = None,
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
    max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    dedup_window: float = DEFAULT_DEDUP_WINDOW,
    clock: Clock | None = None,
    create: bool = True,
    claim_check: ClaimCheck | None = None,
    **engine_options: Any,
) -> Queue:
    """Open (and by default declare) the durable queue ``name`` on ``engine`` (or a URL).

    ``engine_options`` go to the engine's store (SQLite: ``synchronous``,
    ``durable_acks``). ``clock`` drives every timestamp and wait by hand (tests).
    ``create=False`` raises :class:`UnknownQueueError` for a queue never declared.
    ``claim_check`` (a :class:`~seawall.messaging.claim_check.ClaimCheck`) stores bodies
    over its threshold as blobs and sends a reference instead.
    """
    engine = connect(engine)
    backend = _backend(engine)
    check_name(name)
    resolved_codec = resolve_codec(codec)
    visibility_timeout = check_positive("visibility_timeout", visibility_timeout)
    max_deliveries = check_positive_int("max_deliveries", max_deliveries)
    max_message_size = check_positive_int("max_message_size", max_message_size)
    dedup_window = check_positive("dedup_window", dedup_window)
    _check_claim_check(claim_check, max_message_size)
    if clock is not None and not callable(getattr(clock, "now", None)):
        raise ConfigurationError(f"clock={clock!r} must be a seawall Clock (now/sleep/asleep)")
    store_class = _load(backend.store)
    _check_engine_options(engine, store_class, engine_options)
    store = store_class(
        engine,
        name,
        max_deliveries=max_deliveries,
        dedup_window=dedup_window,
        clock=clock,
        events=EventHub(parent=hub),
        create=bool(create),
        **engine_options,
    )
    async_factory: Callable[[], AsyncQueueStore]
    if backend.async_store is not None:
        async_class = _load(backend.async_store)

        def async_factory() -> AsyncQueueStore:
            native: AsyncQueueStore = async_class(
                engine,
                name,
                max_deliveries=max_deliveries,
                dedup_window=dedup_window,
                clock=clock,
                events=store.events,
                create=False,
                **engine_options,
            )
            return native

    else:
        from seawall.messaging.queue._offload import OffloadedQueueStore

        def async_factory() -> AsyncQueueStore:
            return OffloadedQueueStore(store, offload=backend.offload)

    return Queue(
        store,
        codec=resolved_codec,
        visibility_timeout=visibility_timeout,
        max_message_size=max_message_size,
        clock=clock,
        async_store=async_factory,
        claim_check=claim_check,
        engine=engine,
    )


def _check_claim_check(claim_check: ClaimCheck | None, max_message_size: int) -> None:
    if claim_check is None:
        return
    from seawall.messaging.claim_check import ClaimCheck

    if not isinstance(claim_check, ClaimCheck):
        raise ConfigurationError(
            f"claim_check={claim_check!r} must be a ClaimCheck, e.g. "
            "ClaimCheck(FileBlobStore(directory), threshold=65536)"
        )
    if claim_check.threshold > max_message_size:
        raise ConfigurationError(
            f"claim check threshold={claim_check.threshold} is over max_message_size="
            f"{max_message_size}: bodies between the two could be sent by neither way; lower "
            "the threshold or raise max_message_size"
        )


def _check_engine_options(engine: Engine, store_class: type, options: dict[str, Any]) -> None:
    if not options:
        return
    accepted = {
        parameter.name
        for parameter in inspect.signature(store_class).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    } - {"max_deliveries", "dedup_window", "clock", "events", "create"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigurationError(
            f"unknown queue option(s) {', '.join(unknown)} for the {engine.kind} engine; "
            f"common options: codec, visibility_timeout, max_deliveries, max_message_size, "
            f"dedup_window, clock, create, claim_check; {engine.kind} options: "
            f"{', '.join(sorted(accepted)) or 'none'}"
        )


def list_queues(engine: Engine | str) -> list[str]:
    """The names of the queues declared on ``engine``, sorted."""
    engine = connect(engine)
    names: Callable[[Engine], list[str]] = _load(_backend(engine).names)
    return names(engine)
