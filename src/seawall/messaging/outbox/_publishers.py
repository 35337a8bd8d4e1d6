"""Where the relay sends messages: any callable, seawall durable queues or topics.

A publisher is a plain callable ``publish(message)`` (or a coroutine function, for
``relay.arun()``); raising means "not published, try again later". An object may
also offer ``publish_many(messages)`` / ``apublish_many(messages)`` to take a whole
batch at once; if that raises, the relay publishes the batch one message at a time
(some may then go out twice: delivery is at-least-once).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from seawall.errors import ConfigurationError
from seawall.messaging.outbox._model import OutboxMessage

if TYPE_CHECKING:
    from seawall.messaging.queue import Envelope, Queue
    from seawall.messaging.topic import Topic, TopicRecord

__all__ = [
    "KEY_HEADER",
    "MESSAGE_ID_HEADER",
    "TOPIC_HEADER",
    "BatchPublisher",
    "Publisher",
    "QueuePublisher",
    "TopicPublisher",
]

MESSAGE_ID_HEADER: Final = "seawall-message-id"
"""Header carrying the outbox message id (what an inbox deduplicates on)."""
TOPIC_HEADER: Final = "seawall-topic"
"""Header carrying the outbox topic."""
KEY_HEADER: Final = "seawall-key"
"""Header carrying the ordering key (absent when the message has none)."""

Publisher = Callable[[OutboxMessage], object] | Callable[[OutboxMessage], Awaitable[object]]
"""A callable that publishes one message (sync, or async for ``arun``); raise to retry later."""


@runtime_checkable
class BatchPublisher(Protocol):
    """A publisher that can also take a whole batch at once."""

    def __call__(self, message: OutboxMessage) -> object:
        """Publish one message."""
        ...

    def publish_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish every message in order; raise to make the relay go one at a time."""
        ...


class QueuePublisher:
    """Publishes outbox messages onto seawall durable queues.

    ``target`` is one :class:`~seawall.messaging.queue.Queue` (every topic goes
    there) or a function from topic to queue, e.g. ``engine.queue`` to send each
    topic to the queue of that name. Each message is sent with its outbox id as the
    queue's ``dedup_id`` (so a re-publish after a relay crash is dropped within the
    queue's deduplication window) and in headers (:data:`MESSAGE_ID_HEADER`,
    :data:`TOPIC_HEADER`, :data:`KEY_HEADER`) next to the message's own.
    """

    def __init__(self, target: Queue | Callable[[str], Queue], *, deduplicate: bool = True) -> None:
        from seawall.messaging.queue import Queue

        if isinstance(target, Queue):
            queue = target
            self._route: Callable[[str], Queue] = lambda _topic: queue
        elif callable(target):
            self._route = target
        else:
            raise ConfigurationError(
                f"QueuePublisher(target={target!r}) needs a Queue or a function from topic "
                "to Queue (such as engine.queue)"
            )
        self.deduplicate = deduplicate
        self._queues: dict[str, Queue] = {}

    def queue_for(self, topic: str) -> Queue:
        """The queue a topic goes to (opened once, then reused)."""
        queue = self._queues.get(topic)
        if queue is None:
            queue = self._queues[topic] = self._route(topic)
        return queue

    @staticmethod
    def headers(message: OutboxMessage) -> dict[str, str]:
        """The message's headers plus the outbox id, topic and key."""
        headers = dict(message.headers)
        headers[MESSAGE_ID_HEADER] = message.id
        headers[TOPIC_HEADER] = message.topic
        if message.key is not None:
            headers[KEY_HEADER] = message.key
        return headers

    def __call__(self, message: OutboxMessage) -> None:
        """Send one message to its topic's queue."""
        self.queue_for(message.topic).send(
            message.body,
            headers=self.headers(message),
            dedup_id=message.id if self.deduplicate else None,
        )

    async def apublish(self, message: OutboxMessage) -> None:
        """Asyncio twin of calling the publisher."""
        await self.queue_for(message.topic).asend(
            message.body,
            headers=self.headers(message),
            dedup_id=message.id if self.deduplicate else None,
        )

    def _groups(self, messages: Sequence[OutboxMessage]) -> list[tuple[Queue, list[Envelope]]]:
        from seawall.messaging.queue import Envelope

        groups: dict[str, tuple[Queue, list[Envelope]]] = {}
        for message in messages:
            group = groups.get(message.topic)
            if group is None:
                group = groups[message.topic] = (self.queue_for(message.topic), [])
            group[1].append(
                Envelope(
                    message.body,
                    self.headers(message),
                    dedup_id=message.id if self.deduplicate else None,
                )
            )
        return list(groups.values())

    def publish_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Send a batch: one atomic ``send_many`` per destination queue, in order."""
        for queue, envelopes in self._groups(messages):
            queue.send_many(envelopes)

    async def apublish_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Asyncio twin of :meth:`publish_many`."""
        for queue, envelopes in self._groups(messages):
            await queue.asend_many(envelopes)

    def __repr__(self) -> str:
        return f"QueuePublisher(queues={sorted(self._queues)!r})"


class TopicPublisher:
    """Publishes outbox messages onto seawall topics, with the outbox key as the topic key.

    ``target`` is one :class:`~seawall.messaging.topic.Topic` (every outbox topic goes
    there) or a function from outbox topic to Topic, e.g.
    ``lambda name: open_topic(engine, name)``. The key keeps per-key order in every
    consumer group; the outbox id travels in :data:`MESSAGE_ID_HEADER`, so an inbox
    drops the copy a relay crash can publish twice (topics keep no dedup window).
    """

    def __init__(self, target: Topic | Callable[[str], Topic]) -> None:
        from seawall.messaging.topic import Topic

        if isinstance(target, Topic):
            topic = target
            self._route: Callable[[str], Topic] = lambda _name: topic
        elif callable(target):
            self._route = target
        else:
            raise ConfigurationError(
                f"TopicPublisher(target={target!r}) needs a Topic or a function from outbox "
                "topic to Topic (such as lambda name: open_topic(engine, name))"
            )
        self._topics: dict[str, Topic] = {}

    def topic_for(self, name: str) -> Topic:
        """The topic an outbox topic goes to (opened once, then reused)."""
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = self._route(name)
        return topic

    def __call__(self, message: OutboxMessage) -> None:
        """Publish one message to its topic."""
        self.topic_for(message.topic).publish(
            message.body, key=message.key, headers=QueuePublisher.headers(message)
        )

    async def apublish(self, message: OutboxMessage) -> None:
        """Asyncio twin of calling the publisher."""
        await self.topic_for(message.topic).apublish(
            message.body, key=message.key, headers=QueuePublisher.headers(message)
        )

    def _groups(self, messages: Sequence[OutboxMessage]) -> list[tuple[Topic, list[TopicRecord]]]:
        from seawall.messaging.topic import TopicRecord

        groups: dict[str, tuple[Topic, list[TopicRecord]]] = {}
        for message in messages:
            group = groups.get(message.topic)
            if group is None:
                group = groups[message.topic] = (self.topic_for(message.topic), [])
            group[1].append(
                TopicRecord(message.body, key=message.key, headers=QueuePublisher.headers(message))
            )
        return list(groups.values())

    def publish_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish a batch: one atomic ``publish_many`` per destination topic, in order."""
        for topic, records in self._groups(messages):
            topic.publish_many(records)

    async def apublish_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Asyncio twin of :meth:`publish_many`."""
        for topic, records in self._groups(messages):
            await topic.apublish_many(records)

    def __repr__(self) -> str:
        return f"TopicPublisher(topics={sorted(self._topics)!r})"


def is_batch_publisher(publisher: Any) -> bool:
    """True when the publisher offers ``publish_many``."""
    return callable(getattr(publisher, "publish_many", None))
