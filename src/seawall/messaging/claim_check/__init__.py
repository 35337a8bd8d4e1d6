"""Claim check: payloads over a size go to a blob store; messages carry a reference.

::

    claim_check = ClaimCheck(FileBlobStore("/var/lib/shop/blobs"), threshold=64 * 1024)
    images = seawall.connect("sqlite:///shop.db").queue("images", claim_check=claim_check)
    images.send(big_payload)                       # stored as a blob, a reference is queued
    for message in images.receive():
        render(message.body)                       # resolved transparently
        message.ack()                              # the blob is deleted after the ack

Stores: :class:`FileBlobStore` (a directory, the default) and :class:`SqlBlobStore`
(a table in SQLite or PostgreSQL, which can join the send's transaction).
"""

from __future__ import annotations

from seawall.messaging.claim_check._claim import (
    CLAIM_CHECK_HEADER,
    DEFAULT_THRESHOLD,
    ClaimCheck,
)
from seawall.messaging.claim_check._errors import BlobNotFoundError, ClaimCheckError
from seawall.messaging.claim_check._file import FileBlobStore
from seawall.messaging.claim_check._sql import SqlBlobStore
from seawall.messaging.claim_check._store import BlobStore

__all__ = [
    "BlobNotFoundError",
    "BlobStore",
    "CLAIM_CHECK_HEADER",
    "ClaimCheck",
    "ClaimCheckError",
    "DEFAULT_THRESHOLD",
    "FileBlobStore",
    "SqlBlobStore",
]
