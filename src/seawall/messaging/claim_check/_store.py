"""The contract a blob store implements for a claim check (``BlobStore``)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["BlobStore"]


@runtime_checkable
class BlobStore(Protocol):
    """Keeps payloads by key: whole writes, reads, deletes, and age-based collection.

    ``put`` is atomic (a reader sees the whole blob or none); keys are letters,
    digits, ``-`` and ``_``. ``created`` times are on the store's clock (epoch
    seconds unless a ``clock`` was given).
    """

    def put(self, key: str, data: bytes, transaction: Transaction | None = None) -> None:
        """Store ``data`` under ``key``; with ``transaction``, only if the store can join it."""
        ...

    def get(self, key: str) -> bytes:
        """The blob's bytes; :class:`BlobNotFoundError` when there is none."""
        ...

    def delete(self, key: str) -> bool:
        """Remove the blob; False when it was not there."""
        ...

    def delete_many(self, keys: Iterable[str]) -> int:
        """Remove every listed blob that exists; return how many."""
        ...

    def collect(self, older_than: float, keep: Collection[str]) -> int:
        """Remove blobs created more than ``older_than`` seconds ago, except ``keep``."""
        ...

    def keys(self) -> list[str]:
        """Every stored key (for inspection and tests)."""
        ...
