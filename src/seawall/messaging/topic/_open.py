"""Opening a topic on an engine: the store is chosen by the engine's ``kind``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from seawall.clock import Clock
from seawall.codec import Codec, resolve_codec
from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.events import EventHub, hub
from seawall.messaging.queue._validate import check_positive, check_positive_int
from seawall.messaging.topic._store import TopicStore
from seawall.messaging.topic._topic import Topic
from seawall.messaging.topic._validate import check_name

__all__ = ["list_topics", "open_topic"]

_BACKENDS: dict[str, tuple[str, str]] = {
    "memory": (
        "seawall.messaging.topic.memory:MemoryTopicStore",
        "seawall.messaging.topic.memory:memory_topic_names",
    ),
    "sqlite": (
        "seawall.messaging.topic.sqlite:SqliteTopicStore",
        "seawall.messaging.topic.sqlite:sqlite_topic_names",
    ),
    "postgres": (
        "seawall.messaging.topic.postgres:PostgresTopicStore",
        "seawall.messaging.topic.postgres:postgres_topic_names",
    ),
    "redis": (
        "seawall.messaging.topic.redis:RedisTopicStore",
        "seawall.messaging.topic.redis:redis_topic_names",
    ),
    "nats": (
        "seawall.messaging.topic.nats:NatsTopicStore",
        "seawall.messaging.topic.nats:nats_topic_names",
    ),
}
_COMMON = frozenset({"retention_age", "retention_count", "clock", "events", "create"})


def _load(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _backend(engine: Engine) -> tuple[str, str]:
    backend = _BACKENDS.get(engine.kind)
    if backend is None:
        raise UnsupportedEngineError(
            f"topics do not run on the {engine.kind or type(engine).__name__!r} engine "
            f"({engine!r}); supported engines: {', '.join(sorted(_BACKENDS))}"
        )
    return backend


def open_topic(
    engine: Engine | str,
    name: str,
    *,
    codec: Codec | str | None = None,
    retention_age: float | None = None,
    retention_count: int | None = None,
    clock: Clock | None = None,
    create: bool = True,
    **engine_options: Any,
) -> Topic:
    """Open (and by default declare) the topic ``name`` on ``engine`` (or a URL).

    ``retention_age`` keeps messages that many seconds, ``retention_count`` keeps the
    newest that many (None: no limit). ``clock`` drives every timestamp and wait by
    hand (tests). ``create=False`` raises :class:`UnknownTopicError` for a topic never
    declared. ``engine_options`` go to the engine's store (SQLite: ``synchronous``).
    """
    engine = connect(engine)
    store_path, _ = _backend(engine)
    check_name("topic", name)
    resolved_codec = resolve_codec(codec)
    if retention_age is not None:
        retention_age = check_positive("retention_age", retention_age)
    if retention_count is not None:
        retention_count = check_positive_int("retention_count", retention_count)
    if clock is not None and not callable(getattr(clock, "now", None)):
        raise ConfigurationError(f"clock={clock!r} must be a seawall Clock (now/sleep/asleep)")
    store_class = _load(store_path)
    _check_engine_options(engine, store_class, engine_options)
    store: TopicStore = store_class(
        engine,
        name,
        retention_age=retention_age,
        retention_count=retention_count,
        clock=clock,
        events=EventHub(parent=hub),
        create=bool(create),
        **engine_options,
    )
    return Topic(store, codec=resolved_codec)


def _check_engine_options(engine: Engine, store_class: type, options: dict[str, Any]) -> None:
    if not options:
        return
    accepted = {
        parameter.name
        for parameter in inspect.signature(store_class).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    } - _COMMON
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigurationError(
            f"unknown topic option(s) {', '.join(unknown)} for the {engine.kind} engine; "
            "common options: codec, retention_age, retention_count, clock, create; "
            f"{engine.kind} options: {', '.join(sorted(accepted)) or 'none'}"
        )


def list_topics(engine: Engine | str) -> list[str]:
    """The names of the topics declared on ``engine``, sorted."""
    engine = connect(engine)
    names: Callable[[Engine], list[str]] = _load(_backend(engine)[1])
    return names(engine)
