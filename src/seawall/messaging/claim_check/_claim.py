"""The claim check: big payloads go to a blob store, the message carries a reference.

A queue opened with ``claim_check=ClaimCheck(...)`` stores every encoded body over
``threshold`` bytes as a blob, sends a small reference instead (the
:data:`CLAIM_CHECK_HEADER` header names the blob), resolves the reference on
receive, and deletes the blob once the message is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from seawall.engines import Engine
from seawall.errors import ConfigurationError
from seawall.messaging.claim_check._file import FileBlobStore
from seawall.messaging.claim_check._sql import SqlBlobStore
from seawall.messaging.claim_check._store import BlobStore

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.messaging.queue import Queue

__all__ = ["CLAIM_CHECK_HEADER", "DEFAULT_THRESHOLD", "ClaimCheck"]

CLAIM_CHECK_HEADER = "seawall-claim-check"
"""The header that marks a message whose body is in the blob store; its value is the key."""

DEFAULT_THRESHOLD = 64 * 1024
"""Encoded bodies larger than this many bytes (64 KiB) go to the blob store."""

_REFERENCE_PREFIX = b"seawall-claim-check:"
_MAX_BATCH = 10_000

_logger = logging.getLogger("seawall.messaging.claim_check")


class ClaimCheck:
    """Where a queue keeps payloads over ``threshold`` bytes: a :class:`BlobStore`.

    ``store`` is a blob store, a directory (a :class:`FileBlobStore` there), or a
    SQLite/PostgreSQL engine or URL (a :class:`SqlBlobStore` table). Give producers
    and consumers of a queue the same store.
    """

    def __init__(
        self,
        store: BlobStore | Engine | str | os.PathLike[str],
        *,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        self.store: BlobStore = _blob_store(store)
        if threshold.__class__ is not int or threshold < 0:
            raise ConfigurationError(
                f"threshold={threshold!r} must be a whole number of bytes >= 0 (bodies larger "
                "than it go to the blob store)"
            )
        self.threshold = threshold

    # -- what a queue calls ----------------------------------------------------------------

    @staticmethod
    def new_key() -> str:
        """A fresh, unguessable blob key."""
        return uuid.uuid4().hex

    @staticmethod
    def reference(key: str) -> bytes:
        """The small body sent in place of the payload (readable, not decodable by codecs)."""
        return _REFERENCE_PREFIX + key.encode()

    def check_in(self, data: bytes, transaction: Transaction | None = None) -> str:
        """Store ``data`` as a new blob and return its key."""
        key = self.new_key()
        self.store.put(key, data, transaction)
        return key

    async def acheck_in(self, data: bytes, transaction: Transaction | None = None) -> str:
        """Asyncio twin of :meth:`check_in` (a blocking write runs in a thread)."""
        key = self.new_key()
        aput = getattr(self.store, "aput", None)
        if aput is not None:  # a store that can join asyncio transactions
            await aput(key, data, transaction)
        else:
            await asyncio.to_thread(self.store.put, key, data, transaction)
        return key

    def check_out(self, key: str) -> bytes:
        """The payload stored under ``key`` (:class:`BlobNotFoundError` when missing)."""
        return self.store.get(key)

    async def acheck_out(self, key: str) -> bytes:
        """Asyncio twin of :meth:`check_out`."""
        return await asyncio.to_thread(self.store.get, key)

    def release(self, keys: Iterable[str]) -> None:
        """Delete the blobs of acknowledged messages; a failure is logged, never raised.

        A blob left behind this way is an orphan that :meth:`collect_garbage` removes.
        """
        for key in keys:
            try:
                self.store.delete(key)
            except Exception:
                _logger.warning("claim check blob %r could not be deleted", key, exc_info=True)

    async def arelease(self, keys: Iterable[str]) -> None:
        """Asyncio twin of :meth:`release`."""
        await asyncio.to_thread(self.release, list(keys))

    # -- maintenance -----------------------------------------------------------------------

    def collect_garbage(self, older_than: float, *, queues: Iterable[Queue] = ()) -> int:
        """Delete blobs older than ``older_than`` seconds that no listed queue still refers to.

        Choose ``older_than`` above the longest time a message can wait before it is
        acknowledged (delays and retries included). Blobs referred to by the dead
        letters or the ready messages of ``queues`` (up to 10,000 of each) are kept
        whatever their age. Returns how many blobs were deleted.
        """
        if isinstance(older_than, bool) or not isinstance(older_than, int | float):
            raise ConfigurationError(f"older_than={older_than!r} must be seconds (a number)")
        if older_than < 0:
            raise ConfigurationError(f"older_than={older_than!r} must be >= 0 seconds")
        keep: set[str] = set()
        for queue in queues:
            records: list[Any] = [*queue.store.dead_letters(_MAX_BATCH)]
            records.extend(queue.store.peek(_MAX_BATCH))
            for record in records:
                key = (record.headers or {}).get(CLAIM_CHECK_HEADER)
                if key is not None:
                    keep.add(key)
        return self.store.collect(float(older_than), keep)

    def __repr__(self) -> str:
        return f"ClaimCheck({self.store!r}, threshold={self.threshold})"


def _blob_store(store: BlobStore | Engine | str | os.PathLike[str]) -> BlobStore:
    if isinstance(store, Engine) or (isinstance(store, str) and "://" in store):
        return SqlBlobStore(store)
    if isinstance(store, str | os.PathLike):
        return FileBlobStore(store)
    if isinstance(store, BlobStore):
        return store
    raise ConfigurationError(
        f"store={store!r} is not a blob store; pass FileBlobStore(directory), a directory, "
        "or a SQLite/PostgreSQL engine or URL"
    )
