"""``Broadcast``: every subscriber gets every message, each through its own bounded buffer.

A slow subscriber fills its buffer; ``slow_subscriber`` decides what happens then:
``"block"`` holds the publisher until every subscriber has room (the slowest one
sets the pace), ``"drop_oldest"`` / ``"drop_newest"`` make that subscriber lose a
message, ``"disconnect"`` cuts it off: it drains what it has, then gets
:class:`SubscriberDisconnectedError`. All subscriptions share the broadcast's lock,
so a publish reaches every subscriber or none (under ``"block"``).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar

from seawall.clock import SYSTEM_CLOCK, Clock
from seawall.errors import ConfigurationError
from seawall.events import Event, EventHub, hub
from seawall.messaging.channel._config import (
    check_capacity,
    check_choice,
    check_seconds,
    default_name,
)
from seawall.messaging.channel._core import BufferCore
from seawall.messaging.channel._errors import (
    BlockingInEventLoopError,
    ChannelClosedError,
    ChannelFullError,
    SubscriberDisconnectedError,
)
from seawall.messaging.channel._events import ItemDropped, SubscriberDisconnected
from seawall.messaging.channel._waiters import (
    NOT_YET,
    NotYet,
    Waiter,
    block_task,
    block_thread,
    wake_all,
    wake_one,
)

__all__ = [
    "SLOW_SUBSCRIBER_POLICIES",
    "Broadcast",
    "BroadcastStats",
    "SlowSubscriber",
    "Subscription",
]

T = TypeVar("T")

SlowSubscriber = Literal["block", "drop_oldest", "drop_newest", "disconnect"]
"""What a publish does to a subscriber whose buffer is full."""

SLOW_SUBSCRIBER_POLICIES: Final = ("block", "drop_oldest", "drop_newest", "disconnect")

_BLOCK, _DROP_OLDEST, _DROP_NEWEST, _DISCONNECT = range(4)


@dataclass(frozen=True, slots=True)
class BroadcastStats:
    """A snapshot of a broadcast's counters (per-subscriber ones: ``Subscription.stats()``)."""

    received: int
    """Messages published."""
    dropped: int
    """Copies lost by subscribers under ``drop_oldest`` / ``drop_newest``."""
    rejected: int
    """Publishes refused with ChannelFullError (``block`` past ``max_wait``)."""
    producer_blocked: int
    """Publishes that waited for a slow subscriber."""
    subscribers: int
    """Subscriptions attached now."""
    disconnected: int
    """Subscribers cut off under ``disconnect``."""
    capacity: int
    """The buffer size of each subscriber."""
    fill_ratio: float
    """The fullest subscriber's ``size / capacity``: the one that holds publishers back."""


class Subscription(BufferCore[T]):
    """One subscriber's view of a :class:`Broadcast`: receive, iterate, or close it.

    Receive with ``receive`` / ``areceive`` or ``for`` / ``async for``, exactly like a
    :class:`Channel`. :meth:`close` unsubscribes. Events about this subscriber go to
    its ``events`` hub, which forwards to the broadcast's.
    """

    __slots__ = ("_broadcast", "_disconnected")

    def __init__(self, broadcast: Broadcast[T], name: str) -> None:
        super().__init__(
            broadcast._capacity,
            name,
            broadcast._clock,
            broadcast._lock,
            broadcast._publishers,
            broadcast.events,
        )
        self._broadcast = broadcast
        self._disconnected = False

    def _end_error(self) -> Exception:
        if self._disconnected:
            return SubscriberDisconnectedError(self._broadcast.name, self.name, self._capacity)
        return super()._end_error()

    def close(self, error: BaseException | None = None) -> None:
        """Unsubscribe: no new messages arrive; those buffered can still be received."""
        with self._lock:
            self._broadcast._detach(self)
            self._close_locked(error)

    @property
    def disconnected(self) -> bool:
        """True when the broadcast cut this subscriber off for being slow."""
        return self._disconnected

    def __repr__(self) -> str:
        return (
            f"Subscription(name={self.name!r}, size={len(self._items)}, "
            f"closed={self._closed}, disconnected={self._disconnected})"
        )


class Broadcast(Generic[T]):
    """Publish each message to every current subscriber, from threads or tasks.

    ``publish`` blocks the calling thread, ``apublish`` suspends the calling task; both
    return how many subscribers buffered the message. Subscribers only see messages
    published after they subscribed. :meth:`close` ends every subscription once drained.
    """

    __slots__ = (
        "_capacity",
        "_clock",
        "_closed",
        "_count",
        "_disconnected",
        "_dropped",
        "_lock",
        "_mode",
        "_pending",
        "_producer_blocked",
        "_published",
        "_publishers",
        "_rejected",
        "_subscriptions",
        "events",
        "max_wait",
        "name",
        "slow_subscriber",
    )

    def __init__(
        self,
        capacity_per_subscriber: int,
        *,
        slow_subscriber: SlowSubscriber = "block",
        max_wait: float | None = None,
        name: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._capacity = check_capacity(
            "Broadcast", "capacity_per_subscriber", capacity_per_subscriber
        )
        check_choice("Broadcast", "slow_subscriber", slow_subscriber, SLOW_SUBSCRIBER_POLICIES)
        self.max_wait = check_seconds("Broadcast", "max_wait", max_wait)
        """Longest a publish waits for a slow subscriber under ``block`` (``None``: for ever)."""
        if max_wait is not None and slow_subscriber != "block":
            raise ConfigurationError(
                f"Broadcast(max_wait={max_wait!r}, slow_subscriber={slow_subscriber!r}) is "
                "invalid: max_wait only applies to slow_subscriber='block'"
            )
        self.slow_subscriber: SlowSubscriber = slow_subscriber
        """The policy applied to a subscriber whose buffer is full."""
        self.name = name or default_name("broadcast")
        """Names the broadcast in errors and events."""
        self.events = EventHub(parent=hub)
        """Listeners for every subscriber's events (ItemDropped, SubscriberDisconnected)."""
        self._mode = SLOW_SUBSCRIBER_POLICIES.index(slow_subscriber)
        self._clock = clock
        self._lock = threading.Lock()
        self._publishers: deque[Waiter] = deque()
        self._subscriptions: tuple[Subscription[T], ...] = ()
        self._pending: list[tuple[EventHub, Event]] = []
        self._closed = False
        self._count = 0
        self._published = 0
        self._dropped = 0
        self._rejected = 0
        self._producer_blocked = 0
        self._disconnected = 0

    def subscribe(self, name: str | None = None) -> Subscription[T]:
        """A new subscription that receives every message published from now on.

        On a closed broadcast the subscription is closed already (it ends at once).
        """
        with self._lock:
            self._count += 1
            subscription = Subscription(self, name or f"{self.name}/{self._count}")
            if self._closed:
                subscription._close_locked(None)
            else:
                self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    # -- the core: called with the lock held, never waits -------------------------------

    def _offer(self, item: T) -> int | NotYet:
        """Deliver ``item`` to every subscriber (how many buffered it), or NOT_YET to wait."""
        if self._closed:
            raise ChannelClosedError(self.name, sending=True)
        subscriptions = self._subscriptions
        capacity = self._capacity
        mode = self._mode
        if mode == _BLOCK:
            for subscription in subscriptions:
                if len(subscription._items) >= capacity:
                    return NOT_YET
            for subscription in subscriptions:
                subscription._items.append(item)
                subscription._received += 1
                if subscription._receivers:
                    wake_one(subscription._receivers)
            self._published += 1
            return len(subscriptions)
        reached = 0
        cut: list[Subscription[T]] | None = None
        for subscription in subscriptions:
            items = subscription._items
            if len(items) < capacity:
                items.append(item)
                subscription._received += 1
                reached += 1
                if subscription._receivers:
                    wake_one(subscription._receivers)
            elif mode == _DISCONNECT:
                cut = cut or []
                cut.append(subscription)
            else:
                subscription._received += 1
                subscription._dropped += 1
                self._dropped += 1
                if mode == _DROP_OLDEST:
                    lost = items.popleft()
                    items.append(item)
                    reached += 1
                else:
                    lost = item
                if subscription.events.active:
                    policy = "drop_oldest" if mode == _DROP_OLDEST else "drop_newest"
                    event = ItemDropped(self.name, lost, policy, subscription.name)
                    self._pending.append((subscription.events, event))
        if cut is not None:
            for subscription in cut:
                self._cut_off(subscription)
        self._published += 1
        return reached

    def _cut_off(self, subscription: Subscription[T]) -> None:
        """Disconnect a full subscriber: it drains, then gets SubscriberDisconnectedError."""
        subscription._disconnected = True
        self._disconnected += 1
        self._detach(subscription)
        subscription._close_locked(None)
        if subscription.events.active:
            event = SubscriberDisconnected(self.name, subscription.name, self._capacity)
            self._pending.append((subscription.events, event))

    def _detach(self, subscription: Subscription[T]) -> None:
        if subscription in self._subscriptions:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def _take_pending(self) -> list[tuple[EventHub, Event]]:
        pending = self._pending
        self._pending = []
        return pending

    @staticmethod
    def _emit(pending: list[tuple[EventHub, Event]]) -> None:
        for events, event in pending:  # outside the lock: a listener may use the broadcast
            events.emit(event)

    # -- publishing ---------------------------------------------------------------------

    def publish(self, item: T) -> int:
        """Deliver ``item`` to every subscriber; returns how many buffered it.

        Under ``block`` this waits for room in every subscriber (at most ``max_wait``,
        then :class:`ChannelFullError` and no subscriber gets it). Raises
        :class:`ChannelClosedError` once the broadcast is closed.
        """
        self._lock.acquire()
        try:
            reached = self._offer(item)
            pending = self._take_pending() if self._pending else None
        finally:
            self._lock.release()
        if pending:
            self._emit(pending)
        if reached is NOT_YET:
            return block_thread(
                self._lock,
                self._publishers,
                self._offer,
                item,
                max_wait=self.max_wait,
                clock=self._clock,
                expired=self._full_error,
                ready=self._has_room,
                refuse=self._refuse,
                blocked=self._blocked,
            )
        return reached

    async def apublish(self, item: T) -> int:
        """Await delivery of ``item`` to every subscriber; the async twin of :meth:`publish`."""
        self._lock.acquire()
        try:
            reached = self._offer(item)
            pending = self._take_pending() if self._pending else None
        finally:
            self._lock.release()
        if pending:
            self._emit(pending)
        if reached is NOT_YET:
            return await block_task(
                self._lock,
                self._publishers,
                self._offer,
                item,
                max_wait=self.max_wait,
                clock=self._clock,
                expired=self._full_error,
                ready=self._has_room,
                blocked=self._blocked,
            )
        return reached

    def _has_room(self) -> bool:
        capacity = self._capacity
        return all(len(s._items) < capacity for s in self._subscriptions)

    def _full_error(self, max_wait: float) -> BaseException:
        self._rejected += 1
        capacity = self._capacity
        slow = [s.name for s in self._subscriptions if len(s._items) >= capacity]
        return ChannelFullError(", ".join(slow) or self.name, capacity, "block", max_wait)

    def _refuse(self) -> BaseException:
        return BlockingInEventLoopError(self.name, "publish", "apublish")

    def _blocked(self) -> None:
        self._producer_blocked += 1

    # -- lifecycle and introspection ----------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """Close the broadcast and every subscription; each drains, then ends.

        With ``error``, subscribers get :class:`ChannelFailedError` once drained.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = self._subscriptions
            self._subscriptions = ()
            for subscription in subscriptions:
                subscription._close_locked(error)
            wake_all(self._publishers)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def subscribers(self) -> tuple[Subscription[T], ...]:
        """The subscriptions attached now."""
        return self._subscriptions

    def stats(self) -> BroadcastStats:
        """A consistent snapshot of the counters and the fullest subscriber's fill ratio."""
        with self._lock:
            subscriptions = self._subscriptions
            fullest = max((len(s._items) for s in subscriptions), default=0)
            return BroadcastStats(
                received=self._published,
                dropped=self._dropped,
                rejected=self._rejected,
                producer_blocked=self._producer_blocked,
                subscribers=len(subscriptions),
                disconnected=self._disconnected,
                capacity=self._capacity,
                fill_ratio=fullest / self._capacity,
            )

    def __enter__(self) -> Broadcast[T]:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        self.close(error)

    async def __aenter__(self) -> Broadcast[T]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        self.close(error)

    def __repr__(self) -> str:
        return (
            f"Broadcast(capacity_per_subscriber={self._capacity}, "
            f"slow_subscriber={self.slow_subscriber!r}, name={self.name!r}, "
            f"subscribers={len(self._subscriptions)}, closed={self._closed})"
        )
