"""How a queue applies its claim check: send, receive, ack and purge hooks.

The :class:`~seawall.messaging.queue.Queue` facade calls these only when it was
opened with ``claim_check=``; queues without one never reach this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from seawall.messaging.claim_check._claim import CLAIM_CHECK_HEADER, ClaimCheck
from seawall.messaging.claim_check._errors import BlobNotFoundError
from seawall.messaging.queue._model import Message, OutgoingMessage, ReceiptLike, StoredMessage

if TYPE_CHECKING:
    from seawall.engines._base import Transaction
    from seawall.messaging.queue._queue import Queue

__all__ = ["ClaimHooks"]

_REMEMBERED = 10_000
"""Blob keys of received messages remembered for acks by bare receipt (oldest dropped)."""
_MAX_BATCH = 10_000

Failed = list[tuple[StoredMessage, str]]


class ClaimHooks:
    """One queue's claim-check steps; ``queue`` calls them around its store calls."""

    def __init__(self, queue: Queue, claim_check: ClaimCheck) -> None:
        self._queue = queue
        self.claim_check = claim_check
        self._threshold = claim_check.threshold
        self._keys: dict[str, str] = {}  # message id -> blob key, for acks by Receipt

    # -- sending ---------------------------------------------------------------------------

    def _checked(self, message: OutgoingMessage, key: str) -> OutgoingMessage:
        headers = dict(message.headers) if message.headers else {}
        headers[CLAIM_CHECK_HEADER] = key
        return message._replace(body=ClaimCheck.reference(key), headers=headers)

    def send(self, message: OutgoingMessage, transaction: Transaction | None) -> str:
        """Store the body as a blob, then send the reference; no blob survives a failed send."""
        key = self.claim_check.check_in(message.body, transaction)
        reference = self._checked(message, key)
        try:
            return self._queue.store.send(
                reference.body,
                reference.headers,
                reference.priority,
                reference.delay,
                reference.dedup_id,
                transaction,
            )
        except BaseException:
            self.claim_check.release([key])
            raise

    async def asend(self, message: OutgoingMessage, transaction: Transaction | None) -> str:
        """Asyncio twin of :meth:`send`."""
        key = await self.claim_check.acheck_in(message.body, transaction)
        reference = self._checked(message, key)
        try:
            return await self._queue.async_store.send(
                reference.body,
                reference.headers,
                reference.priority,
                reference.delay,
                reference.dedup_id,
                transaction,
            )
        except BaseException:
            await self.claim_check.arelease([key])
            raise

    def _check_in_batch(
        self, batch: list[OutgoingMessage], transaction: Transaction | None, keys: list[str]
    ) -> list[OutgoingMessage]:
        out = []
        for message in batch:
            if len(message.body) > self._threshold:
                key = self.claim_check.check_in(message.body, transaction)
                keys.append(key)
                message = self._checked(message, key)
            out.append(message)
        return out

    def send_many(self, batch: list[OutgoingMessage], transaction: Transaction | None) -> list[str]:
        """Check in every big body of the batch, then send it all or none."""
        keys: list[str] = []
        try:
            checked = self._check_in_batch(batch, transaction, keys)
            return self._queue.store.send_many(checked, transaction)
        except BaseException:
            self.claim_check.release(keys)
            raise

    async def asend_many(
        self, batch: list[OutgoingMessage], transaction: Transaction | None
    ) -> list[str]:
        """Asyncio twin of :meth:`send_many` (the blob writes run in a thread)."""
        keys: list[str] = []
        try:
            if transaction is None and any(len(m.body) > self._threshold for m in batch):
                checked = await asyncio.to_thread(self._check_in_batch, batch, None, keys)
            else:
                checked = self._check_in_batch(batch, transaction, keys)
            return await self._queue.async_store.send_many(checked, transaction)
        except BaseException:
            await self.claim_check.arelease(keys)
            raise

    # -- receiving -------------------------------------------------------------------------

    def _remember(self, record: StoredMessage, key: str) -> None:
        keys = self._keys
        keys[record.id] = key
        if len(keys) > _REMEMBERED:
            del keys[next(iter(keys))]

    def resolve(self, records: list[StoredMessage]) -> tuple[list[StoredMessage], Failed]:
        """Swap each reference for its blob; those whose blob is missing come back apart."""
        resolved: list[StoredMessage] = []
        missing: Failed = []
        for record in records:
            key = record.headers.get(CLAIM_CHECK_HEADER) if record.headers else None
            if key is None:
                resolved.append(record)
                continue
            try:
                data = self.claim_check.check_out(key)
            except BlobNotFoundError as exc:
                missing.append((record, str(exc)))
                continue
            self._remember(record, key)
            resolved.append(record._replace(body=data))
        return resolved, missing

    async def aresolve(self, records: list[StoredMessage]) -> tuple[list[StoredMessage], Failed]:
        """Asyncio twin of :meth:`resolve` (blob reads run in a thread when there are any)."""
        if not any(record.headers and CLAIM_CHECK_HEADER in record.headers for record in records):
            return records, []
        return await asyncio.to_thread(self.resolve, records)

    def messages(self, records: list[StoredMessage]) -> tuple[list[Message], Failed]:
        """The queue's decoding step with references resolved first."""
        resolved, missing = self.resolve(records)
        messages, failed = self._queue._messages(resolved)
        failed.extend(missing)
        return messages, failed

    # -- settling --------------------------------------------------------------------------

    def _keys_of(self, receipts: Sequence[ReceiptLike]) -> list[str]:
        keys: list[str] = []
        remembered = self._keys
        for receipt in receipts:
            key = remembered.pop(receipt.id, None)
            headers: Mapping[str, str] | None = getattr(receipt, "headers", None)
            if headers:
                key = headers.get(CLAIM_CHECK_HEADER, key)
            if key is not None:
                keys.append(key)
        return keys

    def acked(self, receipts: Sequence[ReceiptLike], transaction: Transaction | None) -> None:
        """Delete the blobs of acknowledged messages (after the commit, in a transaction)."""
        keys = self._keys_of(receipts)
        if not keys:
            return
        if transaction is not None:
            release = self.claim_check.release
            transaction.on_commit(lambda: release(keys))
        else:
            self.claim_check.release(keys)

    async def aacked(
        self, receipts: Sequence[ReceiptLike], transaction: Transaction | None
    ) -> None:
        """Asyncio twin of :meth:`acked`."""
        keys = self._keys_of(receipts)
        if not keys:
            return
        if transaction is not None:
            release = self.claim_check.release
            transaction.on_commit(lambda: release(keys))
        else:
            await self.claim_check.arelease(keys)

    # -- dead letters ----------------------------------------------------------------------

    def shown(self, data: bytes, headers: Mapping[str, str]) -> bytes:
        """The payload behind a reference for inspection, or the reference when it is gone."""
        key = headers.get(CLAIM_CHECK_HEADER)
        if key is None:
            return data
        try:
            return self.claim_check.check_out(key)
        except Exception:  # inspecting must work on messages whose blob is gone
            return data

    def purge_dead_letters(self) -> int:
        """Purge the dead letters, then delete the blobs they referred to (up to 10,000)."""
        store = self._queue.store
        keys = _referenced(store.dead_letters(_MAX_BATCH))
        purged = store.purge_dead_letters()
        self.claim_check.release(keys)
        return purged

    async def apurge_dead_letters(self) -> int:
        """Asyncio twin of :meth:`purge_dead_letters`."""
        store = self._queue.async_store
        keys = _referenced(await store.dead_letters(_MAX_BATCH))
        purged = await store.purge_dead_letters()
        await self.claim_check.arelease(keys)
        return purged


def _referenced(records: Sequence[object]) -> list[str]:
    keys = []
    for record in records:
        headers: Mapping[str, str] | None = getattr(record, "headers", None)
        key = headers.get(CLAIM_CHECK_HEADER) if headers else None
        if key is not None:
            keys.append(key)
    return keys
