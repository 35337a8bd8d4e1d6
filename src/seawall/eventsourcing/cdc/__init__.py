"""Change data capture: row changes of chosen tables as Debezium-format events.

::

    cdc = capture("sqlite:///shop.db", tables=["orders"], slot="search-index")
    cdc.run(handler)                       # snapshot first (op "r"), then every change

    events = cdc.poll(100)                 # or by hand: poll, handle, confirm
    cdc.confirm(events[-1].position)

PostgreSQL reads a logical replication slot (``pgoutput`` or ``test_decoding``) with an
exact initial snapshot; SQLite records changes with triggers. Delivery is
at-least-once and resumes from the last confirmed position. See
``docs/eventsourcing/cdc.md``.
"""

from __future__ import annotations

from seawall.eventsourcing.cdc._capture import AsyncChangeCapture, ChangeCapture
from seawall.eventsourcing.cdc._consumers import (
    AsyncChangeHandler,
    BatchChangeHandler,
    CacheInvalidator,
    ChangeHandler,
    EventStoreFeed,
    QueueSink,
    TopicSink,
    cache_key,
    change_headers,
)
from seawall.eventsourcing.cdc._decoding import (
    DecodedTransaction,
    PgOutputDecoder,
    TestDecodingDecoder,
)
from seawall.eventsourcing.cdc._errors import (
    ChangeCaptureError,
    ChangeDecodingError,
    LogicalDecodingUnavailableError,
    SlotInUseError,
    SlotMismatchError,
    UncapturableTableError,
    UnknownTableError,
)
from seawall.eventsourcing.cdc._events import CaptureOpened, ChangesHandled, SnapshotCompleted
from seawall.eventsourcing.cdc._model import (
    UNAVAILABLE,
    ChangeEvent,
    ChangeOp,
    ChangePosition,
    ChangeSource,
)
from seawall.eventsourcing.cdc._open import PLUGINS, acapture, capture

__all__ = [
    "AsyncChangeCapture",
    "AsyncChangeHandler",
    "BatchChangeHandler",
    "CacheInvalidator",
    "CaptureOpened",
    "ChangeCapture",
    "ChangeCaptureError",
    "ChangeDecodingError",
    "ChangeEvent",
    "ChangeHandler",
    "ChangeOp",
    "ChangePosition",
    "ChangeSource",
    "ChangesHandled",
    "DecodedTransaction",
    "EventStoreFeed",
    "LogicalDecodingUnavailableError",
    "PLUGINS",
    "PgOutputDecoder",
    "QueueSink",
    "SlotInUseError",
    "SlotMismatchError",
    "SnapshotCompleted",
    "TestDecodingDecoder",
    "TopicSink",
    "UNAVAILABLE",
    "UncapturableTableError",
    "UnknownTableError",
    "acapture",
    "cache_key",
    "capture",
    "change_headers",
]
