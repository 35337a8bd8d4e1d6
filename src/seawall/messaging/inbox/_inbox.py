"""The inbox users hold: one consumer's record of the message ids it has processed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from seawall.clock import Clock
from seawall.engines import Engine, connect
from seawall.errors import ConfigurationError, UnsupportedEngineError
from seawall.events import EventHub, hub
from seawall.messaging.inbox._events import InboxDuplicateIgnored, InboxPurged
from seawall.messaging.inbox._store import InboxStore

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.messaging.queue import Message

__all__ = ["Inbox", "message_id_of", "open_inbox_store"]

MAX_ID = 256


def open_inbox_store(engine: Engine | str, **options: Any) -> InboxStore:
    """The inbox store for ``engine`` (an :class:`Engine` or a URL), chosen by its kind.

    ``options`` go to the store (``table_prefix``, ``clock``, ``create``; PostgreSQL
    also ``schema``).
    """
    engine = connect(engine)
    if engine.kind == "sqlite":
        from seawall.messaging.inbox.sqlite import SqliteInboxStore

        return SqliteInboxStore(engine, **options)
    if engine.kind == "postgres":
        from seawall.messaging.inbox.postgres import PostgresInboxStore

        return PostgresInboxStore(engine, **options)
    if engine.kind == "memory":
        from seawall.messaging.inbox.memory import MemoryInboxStore

        return MemoryInboxStore(engine, **options)
    raise UnsupportedEngineError(
        f"no inbox for the {engine.kind!r} engine ({engine!r}); the inbox lives next to "
        "the consumer's state: use sqlite:/// or postgresql:// (memory:// for tests)"
    )


def message_id_of(message: Message) -> str:
    """The id to deduplicate a queue message on: the outbox id it carries, else its queue id."""
    from seawall.messaging.outbox._publishers import MESSAGE_ID_HEADER

    return message.headers.get(MESSAGE_ID_HEADER) or message.id


def _check_id(message_id: object) -> str:
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_ID:
        raise ConfigurationError(
            f"message_id={message_id!r} must be a non-empty string of at most {MAX_ID} "
            "characters (the id the producer gave the message)"
        )
    return message_id


class Inbox:
    """An idempotent consumer: processed message ids recorded with the state they changed.

    ``inbox.mark(message_id, transaction=tx)`` records the id in the same transaction
    as the consumer's writes and returns False for a redelivered message, which the
    consumer then skips: at-least-once delivery takes effect exactly once.
    ``consumer`` names the consumer (several share one table). Ids are kept
    ``retention`` seconds (default 7 days; :meth:`purge`): keep it longer than any
    redelivery can arrive. ``engine`` is an engine, a URL or an :class:`InboxStore`.
    """

    def __init__(
        self,
        engine: Engine | str | InboxStore,
        consumer: str = "default",
        *,
        retention: float = 7 * 86400.0,
        clock: Clock | None = None,
        **store_options: Any,
    ) -> None:
        if isinstance(engine, InboxStore):
            if store_options or clock is not None:
                raise ConfigurationError(
                    "store options and clock go to the store's constructor, not to Inbox, "
                    "when you pass a store"
                )
            self.store: InboxStore = engine
        else:
            self.store = open_inbox_store(engine, clock=clock, **store_options)
        if not isinstance(consumer, str) or not 0 < len(consumer) <= 200:
            raise ConfigurationError(
                f"Inbox(consumer={consumer!r}) must be a non-empty string of at most 200 characters"
            )
        if isinstance(retention, bool) or not isinstance(retention, int | float) or retention < 0:
            raise ConfigurationError(f"Inbox(retention={retention!r}) must be seconds >= 0")
        self.consumer = consumer
        self.retention = float(retention)
        self.events = EventHub(parent=hub)

    def _duplicate(self, message_id: str) -> None:
        if self.events.active:
            self.events.emit(InboxDuplicateIgnored(self.consumer, self.consumer, message_id))

    def mark(self, message_id: str, *, transaction: Transaction | None = None) -> bool:
        """Record ``message_id`` as processed; True the first time, False for a duplicate.

        Pass the ``transaction`` your state change runs in, so both commit together;
        without one the id is recorded at once.
        """
        first = self.store.mark(self.consumer, _check_id(message_id), transaction)
        if not first:
            self._duplicate(message_id)
        return first

    async def amark(self, message_id: str, *, transaction: Transaction | None = None) -> bool:
        """Asyncio twin of :meth:`mark` (for ``engine.atransaction()`` on PostgreSQL)."""
        first = await self.store.amark(self.consumer, _check_id(message_id), transaction)
        if not first:
            self._duplicate(message_id)
        return first

    def process(
        self,
        message_id: str,
        handler: Callable[[Transaction | None], object],
        *,
        transaction: Transaction | None = None,
    ) -> bool:
        """Run ``handler(tx)`` once per message id, recording the id in the same transaction.

        Opens ``engine.transaction()`` unless ``transaction`` is given; returns True if
        the handler ran, False for a duplicate. If the handler raises, nothing is
        recorded (the transaction rolls back) and the error propagates. On the memory
        engine the handler gets ``None`` and the mark is undone if it raises.
        """
        if transaction is not None:
            if not self.mark(message_id, transaction=transaction):
                return False
            handler(transaction)
            return True
        if not self.store.supports_transactions:
            if not self.mark(message_id):
                return False
            try:
                handler(None)
            except BaseException:
                self.store.forget(self.consumer, message_id)
                raise
            return True
        begin = getattr(self.store.engine, "transaction", None)
        if begin is None:  # pragma: no cover - every SQL engine has transactions
            raise ConfigurationError(f"{self.store.engine!r} cannot open a transaction")
        with begin() as own:
            if not self.mark(message_id, transaction=own):
                return False
            handler(own)
        return True

    def handler(self, fn: Callable[[Any, Transaction | None], object]) -> Callable[[Any], None]:
        """Wrap ``fn(body, transaction)`` as a queue :class:`~seawall.messaging.queue.Worker` handler.

        Each message runs ``fn`` at most once per id (:func:`message_id_of`), in the
        worker's transaction when it has one (``Worker(..., transaction=engine.transaction)``)
        or in one of the inbox's own.
        """
        from seawall.messaging.queue import current_message, current_transaction

        def handle(body: Any) -> None:
            message = current_message()
            if message is None:
                raise ConfigurationError(
                    "inbox.handler(...) runs inside a queue Worker; elsewhere call "
                    "inbox.process(message_id, handler)"
                )
            self.process(
                message_id_of(message),
                lambda transaction: fn(body, transaction),
                transaction=current_transaction(),
            )

        return handle

    def seen(self, message_id: str) -> bool:
        """True when ``message_id`` is recorded as processed."""
        return self.store.seen(self.consumer, _check_id(message_id))

    def forget(self, message_id: str) -> bool:
        """Remove the record so a redelivery would be processed again; True if it existed."""
        return self.store.forget(self.consumer, _check_id(message_id))

    def count(self) -> int:
        """How many ids this consumer has recorded."""
        return self.store.count(self.consumer)

    def purge(self, older_than: float | None = None, *, limit: int = 10_000) -> int:
        """Forget ids (of every consumer) older than ``older_than`` (default: ``retention``)."""
        age = self.retention if older_than is None else older_than
        if isinstance(age, bool) or not isinstance(age, int | float) or age < 0:
            raise ConfigurationError(f"older_than={older_than!r} must be seconds >= 0")
        deleted = self.store.purge(float(age), limit)
        if deleted and self.events.active:
            self.events.emit(InboxPurged(self.consumer, deleted))
        return deleted

    def close(self) -> None:
        """Release the store's resources (not the engine)."""
        self.store.close()

    def __repr__(self) -> str:
        return f"Inbox({self.store!r}, consumer={self.consumer!r})"
