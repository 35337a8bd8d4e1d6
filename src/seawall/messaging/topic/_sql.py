"""The topic logic both SQL engines share, written once as generators of statements.

An operation (``publish``, ``receive``, ``ack``...) yields :class:`Query` objects
and receives their results; the SQLite and PostgreSQL drivers run them on their
connection, synchronously or with asyncio, inside one transaction when the
operation must be atomic. The statements come from the engine's :class:`Dialect`;
this module holds the decisions (what to claim, what to block, what to bury) and no
I/O. Statement parameters are named; every statement reads the time from ``now``
(None: the engine's own clock).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

from seawall.events import EventHub
from seawall.messaging.topic._errors import UnknownGroupError
from seawall.messaging.topic._events import TopicMessageDeadLettered
from seawall.messaging.topic._model import (
    NackOutcome,
    OutgoingRecord,
    Start,
    StoredTopicMessage,
    TopicDeadLetter,
)
from seawall.messaging.topic._store import MAX_PENDING

__all__ = ["Dialect", "Operation", "Query", "SqlCore"]

T = TypeVar("T")


class Query(NamedTuple):
    """One statement: ``rows`` returns the rows, ``count`` the row count, ``many`` runs a batch."""

    sql: str
    params: Any
    mode: Literal["rows", "count", "many"]


Operation = Generator[Query, Any, T]
"""An operation written once: yields statements, receives their results, returns a value."""


@dataclass(frozen=True)
class Dialect:
    """One engine's statements and value conversions (see the drivers for the SQL)."""

    statements: Mapping[str, str]
    array: Callable[[list[Any]], Any]
    """How a list is passed to ``IN``/``ANY`` (JSON text for SQLite, a list for psycopg)."""
    headers_out: Callable[[Mapping[str, str] | None], Any]
    headers_in: Callable[[Any], Mapping[str, str] | None]
    publish: Callable[[SqlCore, Sequence[OutgoingRecord], float | None], Operation[list[int]]]
    """The engine's publish: reserve offsets and insert, in one transaction."""


def _reason_expired(deliveries: int, max_deliveries: int) -> str:
    return (
        "visibility timeout expired on its last allowed delivery "
        f"({deliveries} of max_deliveries={max_deliveries})"
    )


def _reason_nacked(deliveries: int, max_deliveries: int) -> str:
    return (
        "negatively acknowledged on its last allowed delivery "
        f"({deliveries} of max_deliveries={max_deliveries})"
    )


class SqlCore:
    """What the SQL drivers share for one topic: parameters, decisions, events."""

    def __init__(
        self,
        name: str,
        dialect: Dialect,
        events: EventHub,
        retention_age: float | None,
        retention_count: int | None,
    ) -> None:
        self.name = name
        self.dialect = dialect
        self.sql = dialect.statements
        self.events = events
        self.retention_age = retention_age
        self.retention_count = retention_count

    def params(self, now: float | None, **values: Any) -> dict[str, Any]:
        """Statement parameters with the topic name and the time."""
        values["topic"] = self.name
        values["now"] = now
        return values

    # -- publishing and retention ------------------------------------------------------------

    def publish(self, records: Sequence[OutgoingRecord], now: float | None) -> Operation[list[int]]:
        """Store every record and apply retention (the driver runs it in one transaction)."""
        offsets = yield from self.dialect.publish(self, records, now)
        yield from self.trim(now)
        return offsets

    def trim(self, now: float | None) -> Operation[None]:
        """Delete what retention no longer keeps."""
        if self.retention_count is not None:
            yield Query(
                self.sql["trim_count"], self.params(now, keep=self.retention_count), "count"
            )
        if self.retention_age is not None:
            yield Query(self.sql["trim_age"], self.params(now, age=self.retention_age), "count")

    @property
    def retains(self) -> bool:
        """Whether the topic has a retention limit."""
        return self.retention_age is not None or self.retention_count is not None

    # -- groups ------------------------------------------------------------------------------

    def group_names(self) -> Operation[list[str]]:
        """The topic's groups, sorted."""
        rows = yield Query(self.sql["group_names"], self.params(None), "rows")
        return [row[0] for row in rows]

    def declare_group(
        self, group: str, start: Start, create: bool, now: float | None
    ) -> Operation[None]:
        """Create the group at ``start`` unless it exists."""
        if not create:
            rows = yield Query(self.sql["group_exists"], self.params(now, group=group), "rows")
            if not rows:
                names = yield from self.group_names()
                raise UnknownGroupError(self.name, group, names)
            return
        cursor = 0 if start == "earliest" else None if start == "latest" else max(start - 1, 0)
        yield Query(self.sql["group_create"], self.params(now, group=group, cursor=cursor), "count")

    def _unknown(self, group: str) -> Operation[UnknownGroupError]:
        names = yield from self.group_names()
        return UnknownGroupError(self.name, group, names)

    # -- receiving ---------------------------------------------------------------------------

    def receive(
        self,
        group: str,
        max_messages: int,
        visibility_timeout: float,
        max_deliveries: int,
        token: int,
        now: float | None,
        trim: bool,
    ) -> Operation[list[StoredTopicMessage]]:
        """Claim up to ``max_messages`` (the driver runs it in one transaction)."""
        if trim:
            yield from self.trim(now)
        sql = self.sql
        rows = yield Query(sql["lock_group"], self.params(now, group=group), "rows")
        if not rows:
            raise (yield from self._unknown(group))
        cursor, pending_count = int(rows[0][0]), int(rows[0][1])
        headers_in = self.dialect.headers_in
        text = str(token)
        claimed: list[StoredTopicMessage] = []
        dead: list[tuple[int, str, int]] = []
        # Ready pending messages first; burying or dropping one may unblock the next of its key.
        while len(claimed) < max_messages:
            limit = max_messages - len(claimed)
            rows = yield Query(
                sql["candidates"], self.params(now, group=group, limit=limit), "rows"
            )
            if not rows:
                break
            batch: list[StoredTopicMessage] = []
            changed = False
            for position, key, deliveries, gone, body, headers, published_at in rows:
                if gone:
                    yield from self._remove(group, position, key, now)
                    changed = True
                elif deliveries >= max_deliveries:
                    reason = _reason_expired(deliveries, max_deliveries)
                    yield from self._bury(group, position, key, reason, None, now)
                    dead.append((position, reason, deliveries))
                    changed = True
                else:
                    batch.append(
                        StoredTopicMessage(
                            position,
                            key,
                            bytes(body),
                            headers_in(headers),
                            published_at,
                            deliveries + 1,
                            text,
                        )
                    )
            if batch:
                params = self.params(
                    now,
                    group=group,
                    token=token,
                    visibility=visibility_timeout,
                    positions=self.dialect.array([message.offset for message in batch]),
                )
                taken = yield Query(sql["claim_pending"], params, "rows")
                if len(taken) != len(batch):  # settled by a late ack meanwhile
                    kept = {row[0] for row in taken}
                    batch = [message for message in batch if message.offset in kept]
                claimed.extend(batch)
            if not changed and len(rows) < limit:
                break
        # Then fresh messages after the cursor.
        moved = False
        while len(claimed) < max_messages and pending_count < MAX_PENDING:
            limit = min(max_messages - len(claimed), MAX_PENDING - pending_count)
            rows = yield Query(sql["fresh"], self.params(now, cursor=cursor, limit=limit), "rows")
            if not rows:
                break
            keys = sorted({row[1] for row in rows if row[1] is not None})
            busy: set[str] = set()
            if keys:
                found = yield Query(
                    sql["busy_keys"],
                    self.params(now, group=group, keys=self.dialect.array(keys)),
                    "rows",
                )
                busy = {row[0] for row in found}
            admitted: list[dict[str, Any]] = []
            for position, key, body, headers, published_at in rows:
                blocked = key is not None and key in busy
                if key is not None:
                    busy.add(key)
                admitted.append(
                    self.params(
                        now,
                        group=group,
                        position=position,
                        key=key,
                        blocked=int(blocked),
                        token=None if blocked else token,
                        deliveries=0 if blocked else 1,
                        visibility=visibility_timeout,
                    )
                )
                if not blocked:
                    claimed.append(
                        StoredTopicMessage(
                            position, key, bytes(body), headers_in(headers), published_at, 1, text
                        )
                    )
            yield Query(sql["admit"], admitted, "many")
            cursor = int(rows[-1][0])
            pending_count += len(rows)
            moved = True
            if len(rows) < limit:
                break
        if moved:
            yield Query(sql["set_cursor"], self.params(now, group=group, cursor=cursor), "count")
        self._emit_dead(group, dead)
        claimed.sort()
        return claimed

    def _remove(
        self, group: str, position: int, key: str | None, now: float | None
    ) -> Operation[None]:
        """Forget a pending message and unblock the next one of its key."""
        yield Query(self.sql["remove"], self.params(now, group=group, position=position), "count")
        if key is not None:
            yield Query(self.sql["unblock"], self.params(now, group=group, key=key), "count")

    def _bury(
        self,
        group: str,
        position: int,
        key: str | None,
        reason: str,
        error: str | None,
        now: float | None,
    ) -> Operation[None]:
        params = self.params(now, group=group, position=position, reason=reason, error=error)
        yield Query(self.sql["bury"], params, "count")
        yield from self._remove(group, position, key, now)

    def _emit_dead(self, group: str, dead: list[tuple[int, str, int]]) -> None:
        if dead and self.events.active:
            for position, reason, deliveries in dead:
                self.events.emit(
                    TopicMessageDeadLettered(self.name, group, position, reason, deliveries)
                )

    # -- settling ----------------------------------------------------------------------------

    def ack(self, group: str, offset: int, token: int | None) -> Operation[bool]:
        """Settle the delivery (the driver runs it in one transaction)."""
        if token is None:
            return False
        params = self.params(None, group=group, position=offset, token=token)
        if self.sql["share_group"]:  # waits for a receive of the group that sees this key
            yield Query(self.sql["share_group"], params, "rows")
        rows = yield Query(self.sql["ack"], params, "rows")
        if not rows:
            return False
        key = rows[0][0]
        if key is not None:
            yield Query(self.sql["unblock"], self.params(None, group=group, key=key), "count")
        return True

    def nack(
        self,
        group: str,
        offset: int,
        token: int | None,
        delay: float,
        error: str | None,
        max_deliveries: int,
        kill: str | None,
        now: float | None,
    ) -> Operation[NackOutcome]:
        """Release the delivery (the driver runs it in one transaction)."""
        if token is None:
            return "stale"
        params = self.params(now, group=group, position=offset, token=token)
        if self.sql["share_group"]:
            yield Query(self.sql["share_group"], params, "rows")
        rows = yield Query(self.sql["held"], params, "rows")
        if not rows:
            return "stale"
        deliveries, key, gone = rows[0]
        if gone:
            yield from self._remove(group, offset, key, now)
            return "requeued"
        if kill is not None or deliveries >= max_deliveries:
            reason = kill or _reason_nacked(deliveries, max_deliveries)
            yield from self._bury(group, offset, key, reason, error, now)
            self._emit_dead(group, [(offset, reason, deliveries)])
            return "dead_lettered"
        params.update(delay=delay, error=error)
        yield Query(self.sql["requeue"], params, "count")
        return "requeued"

    # -- replay and inspection -----------------------------------------------------------------

    def seek(self, group: str, offset: int) -> Operation[None]:
        """Drop the group's pending messages and move its cursor (one transaction)."""
        params = self.params(None, group=group, cursor=max(offset - 1, 0))
        count = yield Query(self.sql["set_cursor"], params, "count")
        if not count:
            raise (yield from self._unknown(group))
        yield Query(self.sql["forget_pending"], params, "count")

    def seek_time(self, group: str, timestamp: float) -> Operation[int]:
        """Seek to the first message published at or after ``timestamp``."""
        rows = yield Query(self.sql["offset_at"], self.params(None, at=timestamp), "rows")
        offset = int(rows[0][0])
        yield from self.seek(group, offset)
        return offset

    def lag(self, group: str) -> Operation[int]:
        """Retained messages the group has not acknowledged."""
        rows = yield Query(self.sql["lag"], self.params(None, group=group), "rows")
        if not rows:
            raise (yield from self._unknown(group))
        return int(rows[0][0])

    def dead_letters(self, group: str, limit: int) -> Operation[list[TopicDeadLetter]]:
        """The group's oldest dead letters."""
        params = self.params(None, group=group, limit=limit)
        rows = yield Query(self.sql["dead_letters"], params, "rows")
        headers_in = self.dialect.headers_in
        return [
            TopicDeadLetter(
                self.name,
                group,
                position,
                key,
                bytes(body),
                headers_in(headers) or {},
                published_at,
                deliveries,
                dead_at,
                reason,
                last_error,
            )
            for position, key, body, headers, published_at, deliveries, dead_at, reason, last_error in rows
        ]
