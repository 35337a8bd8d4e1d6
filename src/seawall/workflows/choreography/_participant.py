"""The participant runner: one consumer group of a topic running some of a flow's reactions.

::

    inventory = Participant(order, topic, "inventory", reactions=["reserve", "release"])
    inventory.start()                    # or run_once() / drain() in tests, await arun()

For each event of its flow the participant runs the handlers of the reactions it owns
that react to it, then publishes what they emitted, keyed by the correlation id (so
every group sees a business transaction's events in order) and with the correlation
id, causation id, event id and step in headers. An emitted event's id is derived from
the cause's id, the reaction and its position, so handling an event again emits the
same ids, which inboxes and the tracker drop.

**Exactly once in effect.** With an inbox on SQLite or PostgreSQL, each event is handled
in one transaction of the inbox's engine: the inbox mark, the handler's own writes
(``event.transaction``), the emitted events (when the topic lives in the same
database, or through an :class:`~seawall.messaging.outbox.Outbox`) and the ack commit
together. Otherwise delivery is at least once and the inbox (or the derived ids
downstream) drops repeats.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Literal

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.engines import Engine
from seawall.errors import ConfigurationError
from seawall.events import EventHub, hub
from seawall.messaging.inbox import Inbox
from seawall.workflows.choreography._definition import Choreography, Emit, ReactionInfo
from seawall.workflows.choreography._events import (
    ReactionDuplicateSkipped,
    ReactionFailed,
    ReactionHandled,
)
from seawall.workflows.choreography._loop import ConsumerLoop
from seawall.workflows.choreography._model import (
    ChoreographyEvent,
    derived_event_id,
    event_from_message,
)

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.messaging.outbox import Outbox
    from seawall.messaging.topic import Topic, TopicMessage

__all__ = ["Participant", "publish_events"]

_INBOX_KINDS = ("memory", "sqlite", "postgres")


_LOCAL_INBOX = "memory://seawall-choreography-inboxes"
"""Where participants keep their inbox when neither they nor their topic name a database."""


def _topic_engine(topic: Topic) -> Engine | None:
    """The engine the topic lives in, when the topic says so."""
    for holder in (topic, getattr(topic, "store", None)):
        engine = getattr(holder, "engine", None)
        if isinstance(engine, Engine):
            return engine
    return None


def _same_database(first: Engine | None, second: Engine | None) -> bool:
    if first is None or second is None:
        return False
    return first is second or (first.kind == second.kind and first.url == second.url)


def publish_events(
    topic: Topic,
    events: Iterable[ChoreographyEvent],
    *,
    transaction: Transaction | None = None,
    outbox: Outbox | None = None,
) -> None:
    """Publish choreography events to ``topic`` (keyed by correlation id), or add them to ``outbox``."""
    from seawall.messaging.topic import TopicRecord

    batch = list(events)
    if not batch:
        return
    if outbox is not None:
        for event in batch:
            outbox.add(
                topic.name,
                event.data,
                key=event.correlation_id,
                headers=event.event_headers(),
                transaction=transaction,
            )
        return
    topic.publish_many(
        [
            TopicRecord(event.data, key=event.correlation_id, headers=event.event_headers())
            for event in batch
        ],
        transaction=transaction,
    )


class Participant:
    """Runs the handlers of some of a flow's reactions as one consumer group of ``topic``.

    ``reactions`` names the reactions and compensations this participant owns (default:
    every one with a handler); each needs a handler (``@flow.on(...)``). ``inbox`` drops
    redelivered events: an :class:`~seawall.messaging.inbox.Inbox`, an engine or URL to
    keep one in (pass the topic's SQLite or PostgreSQL engine to handle each event in one
    transaction), ``None`` for one on the topic's engine when the topic exposes it, else
    in this process's memory, or ``False`` for none. ``outbox`` sends emitted events through a transactional outbox
    (a relay then publishes them to the topic). ``join_topic`` makes the emitted events
    and the ack part of the inbox's transaction (the topic must live in that database;
    default: when the topic says it does). Group options (``start``,
    ``visibility_timeout``, ``max_deliveries``) go to ``topic.group``.
    """

    def __init__(
        self,
        flow: Choreography,
        topic: Topic,
        group: str,
        *,
        reactions: Iterable[str] | None = None,
        inbox: Inbox | Engine | str | Literal[False] | None = None,
        outbox: Outbox | None = None,
        join_topic: bool | None = None,
        start: Literal["earliest", "latest"] | int = "earliest",
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        batch: int = 16,
        poll: float = 0.5,
        retry_delay: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(flow, Choreography):
            raise ConfigurationError(f"Participant needs a Choreography, got {flow!r}")
        self.flow = flow
        self.topic = topic
        self.name = group
        names = list(flow.handlers) if reactions is None else list(reactions)
        if not names:
            raise ConfigurationError(
                f"Participant {group!r} runs no reaction: attach handlers with @flow.on(...) "
                "or pass reactions=[...]"
            )
        for name in names:
            if name not in flow.infos:
                raise ConfigurationError(
                    f"Participant {group!r}: flow {flow.name!r} has no reaction or compensation "
                    f"{name!r}; known: {sorted(flow.infos)}"
                )
            if name not in flow.handlers:
                raise ConfigurationError(
                    f"Participant {group!r}: reaction {name!r} has no handler; decorate one with "
                    f"@flow.on({flow.infos[name].on[0]!r}, reaction={name!r})"
                )
        self.reactions: tuple[str, ...] = tuple(names)
        self.inbox = self._open_inbox(inbox)
        self.outbox = outbox
        self._transactional = bool(
            self.inbox is not None and self.inbox.store.supports_transactions
        )
        inbox_engine = None if self.inbox is None else self.inbox.store.engine
        if join_topic is None:
            join_topic = _same_database(inbox_engine, _topic_engine(topic))
        elif join_topic and not self._transactional:
            raise ConfigurationError(
                f"Participant {group!r}: join_topic=True needs an inbox on SQLite or PostgreSQL "
                "(inbox=engine), whose transaction the topic's publish and ack then join"
            )
        self._joins_topic = self._transactional and bool(join_topic)
        if outbox is not None and self._transactional:
            outbox_engine = getattr(outbox.store, "engine", None)
            if not _same_database(inbox_engine, outbox_engine):
                raise ConfigurationError(
                    f"Participant {group!r}: the outbox and the inbox must live in the same "
                    "database, so an event's handling and its emitted events commit together"
                )
        self.clock = SYSTEM_CLOCK if clock is None else clock
        self.events = EventHub(parent=hub)
        self.group = topic.group(
            group,
            start=start,
            visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries,
        )
        self.loop = ConsumerLoop(
            self.group,
            self.handle,
            name=f"participant:{group}",
            batch=batch,
            poll=poll,
            retry_delay=retry_delay,
            clock=clock,
        )

    def _open_inbox(self, inbox: Inbox | Engine | str | Literal[False] | None) -> Inbox | None:
        consumer = f"choreography:{self.flow.name}:{self.name}"
        if inbox is False:
            return None
        if isinstance(inbox, Inbox):
            return inbox
        if inbox is None:
            engine = _topic_engine(self.topic)
            if engine is None or engine.kind not in _INBOX_KINDS:
                return Inbox(_LOCAL_INBOX, consumer)
            return Inbox(engine, consumer)
        return Inbox(inbox, consumer)

    # ------------------------------------------------------------------ handling

    def handle(self, message: TopicMessage) -> bool:
        """Run this participant's reactions on one message; True when it acknowledged it itself.

        Raises what a handler raised (the loop then gives the message back).
        """
        event = event_from_message(message)
        if event is None or event.flow != self.flow.name:
            return False
        infos = self.flow.reactions_to(event.type, self.reactions)
        if not infos:
            return False
        with self._transaction() as transaction:
            for info in infos:
                self._react(info, event, transaction)
            if transaction is not None and self._joins_topic:
                self.group.ack(message, transaction=transaction)
                return True
        return False

    def _transaction(self) -> AbstractContextManager[Transaction | None]:
        if not self._transactional or self.inbox is None:
            return nullcontext()
        return self._engine_transaction(self.inbox.store.engine)

    @staticmethod
    @contextmanager
    def _engine_transaction(engine: Engine) -> Iterator[Transaction | None]:
        with engine.transaction() as transaction:
            yield transaction

    def _react(
        self, info: ReactionInfo, event: ChoreographyEvent, transaction: Transaction | None
    ) -> None:
        handler = self.flow.handlers[info.name]
        started = self.clock.now()
        emitted: list[ChoreographyEvent] = []

        def run(joined: Transaction | None) -> None:
            emit = Emit(info.name, info.allowed)
            handler(dataclasses.replace(event, transaction=joined), emit)
            for index, (event_type, data) in enumerate(emit.emitted):
                emitted.append(
                    ChoreographyEvent(
                        type=event_type,
                        data=data,
                        flow=self.flow.name,
                        correlation_id=event.correlation_id,
                        event_id=derived_event_id(event.event_id, info.name, index),
                        causation_id=event.event_id,
                        step=info.name,
                    )
                )
            publish_events(
                self.topic,
                emitted,
                transaction=joined if (self._joins_topic or self.outbox is not None) else None,
                outbox=self.outbox,
            )

        try:
            if self.inbox is None:
                run(transaction)
                ran = True
            else:
                ran = self.inbox.process(
                    f"{event.event_id}:{info.name}", run, transaction=transaction
                )
        except Exception as exc:
            if self.events.active:
                self.events.emit(
                    ReactionFailed(
                        self.name,
                        info.name,
                        event.type,
                        event.correlation_id,
                        f"{type(exc).__name__}: {exc}",
                        0,
                    )
                )
            raise
        if not self.events.active:
            return
        if not ran:
            self.events.emit(
                ReactionDuplicateSkipped(
                    self.name, event.type, event.correlation_id, event.event_id
                )
            )
            return
        self.events.emit(
            ReactionHandled(
                self.name,
                info.name,
                event.type,
                event.correlation_id,
                tuple(item.type for item in emitted),
                self.clock.now() - started,
            )
        )

    # ------------------------------------------------------------------ running

    def run_once(self, max_messages: int | None = None, *, wait: float = 0.0) -> int:
        """Receive and handle one batch; how many messages were handled."""
        return self.loop.run_once(max_messages, wait=wait)

    def drain(self, *, limit: int = 100_000) -> int:
        """Handle messages until none is ready; how many were handled."""
        return self.loop.drain(limit=limit)

    def run(self, *, stop_when_idle: bool = False) -> None:
        """Consume until :meth:`stop` (or until idle)."""
        self.loop.run(stop_when_idle=stop_when_idle)

    def start(self) -> threading.Thread:
        """Consume in a daemon thread until :meth:`stop`."""
        return self.loop.start()

    def stop(self, *, timeout: float | None = 10.0) -> None:
        """Stop consuming after the current batch."""
        self.loop.stop(timeout=timeout)

    async def arun(self, *, stop_when_idle: bool = False) -> None:
        """The asyncio runner (each batch in a worker thread)."""
        await self.loop.arun(stop_when_idle=stop_when_idle)

    def close(self) -> None:
        """Stop and release the inbox's store (not the topic or the engines)."""
        self.stop()
        if self.inbox is not None:
            self.inbox.close()

    def __repr__(self) -> str:
        return f"Participant({self.flow.name!r}, group={self.name!r}, reactions={self.reactions})"
