"""The inbox: an idempotent consumer that records processed message ids with its state.

::

    inbox = Inbox(db, "billing")
    with db.transaction() as tx:
        if inbox.mark(message_id, transaction=tx):       # False: seen before, skip
            tx.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", [...])

The id and the state change commit together, so a redelivered message is ignored:
at-least-once delivery (queues, the outbox relay) takes effect exactly once.
Engines: SQLite and PostgreSQL (memory for tests). See
``docs/messaging/outbox-inbox.md``.
"""

from __future__ import annotations

from seawall.messaging.inbox._events import InboxDuplicateIgnored, InboxPurged
from seawall.messaging.inbox._inbox import Inbox, message_id_of, open_inbox_store
from seawall.messaging.inbox._store import InboxStore

__all__ = [
    "Inbox",
    "InboxDuplicateIgnored",
    "InboxPurged",
    "InboxStore",
    "message_id_of",
    "open_inbox_store",
]
