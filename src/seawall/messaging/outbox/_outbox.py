"""The outbox users hold: validates and encodes messages, writes them, wakes relays."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seawall.clock import Clock
from seawall.codec import Codec, resolve_codec
from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.events import EventHub, hub
from seawall.messaging.outbox._model import (
    DeadMessage,
    NewMessage,
    OutboxStats,
    check_delay,
    check_headers,
    check_key,
    check_topic,
    decode_headers,
    encode_headers,
)
from seawall.messaging.outbox._store import OutboxStore
from seawall.messaging.outbox._wakeup import Doorbell

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.messaging.outbox._publishers import Publisher
    from seawall.messaging.outbox._relay import OutboxRelay

__all__ = ["Outbox", "open_outbox_store"]


def open_outbox_store(engine: Engine | str, **options: Any) -> OutboxStore:
    """The outbox store for ``engine`` (an :class:`Engine` or a URL), chosen by its kind.

    ``options`` go to the store (``table_prefix``, ``clock``, ``create``; PostgreSQL
    also ``schema`` and ``notify``).
    """
    engine = connect(engine)
    if engine.kind == "sqlite":
        from seawall.messaging.outbox.sqlite import SqliteOutboxStore

        return SqliteOutboxStore(engine, **options)
    if engine.kind == "postgres":
        from seawall.messaging.outbox.postgres import PostgresOutboxStore

        return PostgresOutboxStore(engine, **options)
    if engine.kind == "memory":
        from seawall.messaging.outbox.memory import MemoryOutboxStore

        return MemoryOutboxStore(engine, **options)
    raise UnsupportedEngineError(
        f"no outbox for the {engine.kind!r} engine ({engine!r}); the outbox lives next to "
        "your business tables: use sqlite:/// or postgresql:// (memory:// for tests)"
    )


def _message_id() -> str:
    return os.urandom(16).hex()


class Outbox:
    """The transactional outbox: messages written in your transaction, published after it commits.

    ``outbox.add(topic, body, key=..., transaction=tx)`` writes the message in the
    same commit as your business rows, so either both happen or neither does. An
    :class:`OutboxRelay` (``outbox.relay(publisher)``) then publishes it, in order per
    ``key``, at least once. ``engine`` is an engine, a URL or an :class:`OutboxStore`;
    ``codec`` encodes bodies (JSON by default); ``clock`` replaces the store's time
    source (tests). Other options go to the store (``table_prefix``, ``schema``, ...).
    """

    def __init__(
        self,
        engine: Engine | str | OutboxStore,
        *,
        codec: Codec | str | None = None,
        clock: Clock | None = None,
        name: str = "outbox",
        **store_options: Any,
    ) -> None:
        if isinstance(engine, OutboxStore):
            if store_options or clock is not None:
                raise ConfigurationError(
                    "store options and clock go to the store's constructor, not to Outbox, "
                    "when you pass a store"
                )
            self.store: OutboxStore = engine
        else:
            self.store = open_outbox_store(engine, clock=clock, **store_options)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"Outbox(name={name!r}) must be a non-empty string")
        self.name = name
        self.codec = resolve_codec(codec)
        self.events = EventHub(parent=hub)
        self.doorbell = Doorbell()
        """Rung after each commit that added messages: wakes relays in this process."""
        self._encode = self.codec.encode
        self._registered: Transaction | None = None

    # -- writing ----------------------------------------------------------------------------

    def _message(
        self,
        topic: str,
        body: Any,
        key: str | None,
        headers: str | None,
        delay: float,
    ) -> NewMessage:
        return NewMessage(_message_id(), topic, key, self._encode(body), headers, delay)

    def _options(
        self, topic: str, key: str | None, headers: Mapping[str, str] | None, delay: float
    ) -> tuple[str | None, float]:
        check_topic(topic)
        check_key(key)
        encoded = encode_headers(check_headers(headers)) if headers is not None else None
        return encoded, check_delay(delay) if delay else 0.0

    def _after(self, transaction: Transaction | None) -> None:
        if transaction is None:
            self._committed()
        elif transaction is not self._registered:
            self._registered = transaction
            transaction.on_commit(self._committed)

    def _committed(self) -> None:
        self.doorbell.ring()
        self.store.announce()

    def add(
        self,
        topic: str,
        body: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        transaction: Transaction | None = None,
    ) -> str:
        """Write one message; returns its id (what consumers deduplicate on).

        ``key`` orders messages: those with the same key are published in the order
        they were committed (``None``: no ordering). ``delay`` holds the message back
        that many seconds. ``transaction`` (from ``engine.transaction()``) makes the
        write part of your commit; without one the message is written at once.
        """
        encoded, delay = self._options(topic, key, headers, delay)
        message = self._message(topic, body, key, encoded, delay)
        self.store.add((message,), transaction)
        self._after(transaction)
        return message.id

    def add_many(
        self,
        topic: str,
        bodies: Iterable[Any],
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        transaction: Transaction | None = None,
    ) -> list[str]:
        """Write several messages with the same options, in order; returns their ids."""
        encoded, delay = self._options(topic, key, headers, delay)
        messages = [self._message(topic, body, key, encoded, delay) for body in bodies]
        if not messages:
            return []
        self.store.add(messages, transaction)
        self._after(transaction)
        return [message.id for message in messages]

    async def aadd(
        self,
        topic: str,
        body: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        transaction: Transaction | None = None,
    ) -> str:
        """Asyncio twin of :meth:`add` (for ``engine.atransaction()`` on PostgreSQL)."""
        encoded, delay = self._options(topic, key, headers, delay)
        message = self._message(topic, body, key, encoded, delay)
        await self.store.aadd((message,), transaction)
        self._after(transaction)
        return message.id

    async def aadd_many(
        self,
        topic: str,
        bodies: Iterable[Any],
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        transaction: Transaction | None = None,
    ) -> list[str]:
        """Asyncio twin of :meth:`add_many`."""
        encoded, delay = self._options(topic, key, headers, delay)
        messages = [self._message(topic, body, key, encoded, delay) for body in bodies]
        if not messages:
            return []
        await self.store.aadd(messages, transaction)
        self._after(transaction)
        return [message.id for message in messages]

    # -- relaying and inspecting ------------------------------------------------------------

    def relay(self, publisher: Publisher, **options: Any) -> OutboxRelay:
        """An :class:`OutboxRelay` publishing this outbox's messages to ``publisher``."""
        from seawall.messaging.outbox._relay import OutboxRelay

        return OutboxRelay(self, publisher, **options)

    def decode(self, data: bytes) -> Any:
        """A stored body decoded with this outbox's codec."""
        return self.codec.decode(data)

    def stats(self) -> OutboxStats:
        """How many messages are ready, in flight, delayed, sent and dead; the relay's lag."""
        return self.store.stats()

    def dead(self, limit: int = 100) -> list[DeadMessage]:
        """Messages the relay gave up on (``max_attempts`` failures, or undecodable)."""
        messages = []
        for row in self.store.dead(limit):
            try:
                body = self.codec.decode(row.body)
            except Exception:  # shown as stored: inspecting must work on undecodable rows
                body = row.body
            messages.append(
                DeadMessage(
                    row.id,
                    row.topic,
                    row.key,
                    body,
                    decode_headers(row.headers),
                    row.position,
                    row.created_at,
                    row.attempts,
                    row.dead_at,
                    row.last_error,
                )
            )
        return messages

    def redrive(self, message_ids: Sequence[str] | None = None) -> int:
        """Make dead messages (all, or those ids) ready for the relay again; how many."""
        count = self.store.redrive(None if message_ids is None else list(message_ids))
        if count:
            self._committed()
        return count

    def purge_sent(self, older_than: float = 0.0, *, limit: int = 10_000) -> int:
        """Delete up to ``limit`` messages sent more than ``older_than`` seconds ago."""
        return self.store.purge_sent(check_delay(older_than), limit)

    def close(self) -> None:
        """Release the store's resources (not the engine)."""
        self.store.close()

    def __repr__(self) -> str:
        return f"Outbox({self.store!r})"
