"""Handlers the CLI tests run in a ``seawall worker`` subprocess (``--handler _worker_handlers:...``).

Each appends one JSON line per event to the file named by ``SEAWALL_TEST_EFFECTS``
(opened with O_APPEND, so lines from several threads never interleave).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from seawall.messaging.queue import current_message


def _append(record: dict[str, Any]) -> None:
    line = (json.dumps(record) + "\n").encode()
    descriptor = os.open(
        os.environ["SEAWALL_TEST_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def record(body: Any) -> None:
    """Record the body and the delivery it came with."""
    message = current_message()
    assert message is not None
    _append({"event": "handled", "id": message.id, "body": body, "pid": os.getpid()})


def slow(body: dict[str, Any]) -> None:
    """Record a start, work ``body["seconds"]``, record the finish."""
    _append({"event": "started", "body": body})
    time.sleep(float(body["seconds"]))
    _append({"event": "finished", "body": body})


async def arecord(body: Any) -> None:
    """The coroutine flavour of :func:`record` (the CLI runs it with ``arun``)."""
    await asyncio.sleep(0)
    _append({"event": "handled", "body": body, "pid": os.getpid()})


def fail(body: Any) -> None:
    """Always fails: the message goes to the dead letters after its deliveries."""
    raise ValueError(f"cannot handle {body!r}")
