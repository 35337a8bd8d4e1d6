"""The transactional outbox: publish messages exactly when your transaction commits.

::

    db = seawall.connect("sqlite:///shop.db")
    outbox = Outbox(db)
    with db.transaction() as tx:
        tx.execute("INSERT INTO orders (id, total) VALUES (?, ?)", [order_id, total])
        outbox.add("orders", {"order_id": order_id, "total": total}, key=order_id, transaction=tx)

    relay = outbox.relay(QueuePublisher(db.queue))   # or any callable publish(message)
    relay.start()                                     # or relay.run() / await relay.arun()

The message is written in the same commit as the order row; the relay publishes it
afterwards, in order per key, at least once (consumers deduplicate with
:class:`seawall.messaging.inbox.Inbox`). Engines: SQLite and PostgreSQL (memory for
tests). See ``docs/messaging/outbox-inbox.md``.
"""

from __future__ import annotations

from seawall.messaging.outbox._core import BatchPlan, Failure, IdleSchedule
from seawall.messaging.outbox._errors import OutboxError, RelayAlreadyRunningError
from seawall.messaging.outbox._events import (
    OutboxBatchRelayed,
    OutboxMessageDead,
    OutboxMessagePublished,
    OutboxPublishFailed,
    OutboxPurged,
)
from seawall.messaging.outbox._model import (
    DeadMessage,
    NewMessage,
    OutboxMessage,
    OutboxStats,
    StoredDead,
    StoredMessage,
)
from seawall.messaging.outbox._outbox import Outbox, open_outbox_store
from seawall.messaging.outbox._publishers import (
    KEY_HEADER,
    MESSAGE_ID_HEADER,
    TOPIC_HEADER,
    BatchPublisher,
    Publisher,
    QueuePublisher,
    TopicPublisher,
)
from seawall.messaging.outbox._relay import OutboxRelay
from seawall.messaging.outbox._store import Listening, OutboxStore

__all__ = [
    "KEY_HEADER",
    "MESSAGE_ID_HEADER",
    "TOPIC_HEADER",
    "BatchPlan",
    "BatchPublisher",
    "DeadMessage",
    "Failure",
    "IdleSchedule",
    "Listening",
    "NewMessage",
    "Outbox",
    "OutboxBatchRelayed",
    "OutboxError",
    "OutboxMessage",
    "OutboxMessageDead",
    "OutboxMessagePublished",
    "OutboxPublishFailed",
    "OutboxPurged",
    "OutboxRelay",
    "OutboxStats",
    "OutboxStore",
    "Publisher",
    "QueuePublisher",
    "RelayAlreadyRunningError",
    "StoredDead",
    "StoredMessage",
    "TopicPublisher",
    "open_outbox_store",
]
