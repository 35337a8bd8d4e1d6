"""The buffer core against a reference model: a plain list with the same policy.

Hypothesis drives a channel (and a broadcast) through random sends, receives and
closes, sync and async, and checks every outcome and counter against what a list
with the same overflow policy would do. Nothing blocks: ``block`` runs with
``max_wait=0`` and receives use ``timeout=0``, so "would wait" shows as an error.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from seawall.errors import TimeoutExceededError
from seawall.messaging.channel import (
    Broadcast,
    Channel,
    ChannelClosedError,
    ChannelFailedError,
    ChannelFullError,
    SubscriberDisconnectedError,
)

POLICIES = ("block", "drop_oldest", "drop_newest", "raise")


class ChannelModel(RuleBasedStateMachine):
    """A Channel beside a list that applies the same overflow policy by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.items: list[int] = []
        self.closed = False
        self.failed = False
        self.received = self.delivered = self.dropped = self.rejected = 0
        self.next_item = 0

    @initialize(capacity=st.integers(1, 4), policy=st.sampled_from(POLICIES))
    def build(self, capacity: int, policy: str) -> None:
        self.capacity = capacity
        self.policy = policy
        max_wait = 0.0 if policy == "block" else None
        self.channel: Channel[int] = Channel(capacity, overflow=policy, max_wait=max_wait)  # type: ignore[arg-type]

    def teardown(self) -> None:
        self.loop.close()

    # -- the reference model ------------------------------------------------------------

    def model_send(self) -> tuple[int, type[Exception] | None]:
        item = self.next_item
        self.next_item += 1
        if self.closed:
            return item, ChannelClosedError
        if len(self.items) < self.capacity:
            self.items.append(item)
            self.received += 1
        elif self.policy == "drop_oldest":
            self.items.pop(0)
            self.items.append(item)
            self.received += 1
            self.dropped += 1
        elif self.policy == "drop_newest":
            self.received += 1
            self.dropped += 1
        else:
            self.rejected += 1
            return item, ChannelFullError
        return item, None

    def model_receive(self) -> tuple[int | None, type[Exception] | None]:
        if self.items:
            self.delivered += 1
            return self.items.pop(0), None
        if self.closed:
            return None, ChannelFailedError if self.failed else ChannelClosedError
        return None, TimeoutExceededError

    # -- rules --------------------------------------------------------------------------

    @rule()
    def send(self) -> None:
        item, expected = self.model_send()
        if expected is None:
            self.channel.send(item)
        else:
            with pytest.raises(expected):
                self.channel.send(item)

    @rule()
    def asend(self) -> None:
        item, expected = self.model_send()
        if expected is None:
            self.loop.run_until_complete(self.channel.asend(item))
        else:
            with pytest.raises(expected):
                self.loop.run_until_complete(self.channel.asend(item))

    @rule()
    def receive(self) -> None:
        item, expected = self.model_receive()
        if expected is None:
            assert self.channel.receive(timeout=0) == item
        else:
            with pytest.raises(expected):
                self.channel.receive(timeout=0)

    @rule()
    def areceive(self) -> None:
        item, expected = self.model_receive()
        if expected is None:
            assert self.loop.run_until_complete(self.channel.areceive(timeout=0)) == item
        else:
            with pytest.raises(expected):
                self.loop.run_until_complete(self.channel.areceive(timeout=0))

    @precondition(lambda self: self.closed or bool(self.items))
    @rule()
    def iterate(self) -> None:
        """Draining by iteration yields what is left; it ends only once closed."""
        expected = list(self.items)
        self.delivered += len(expected)
        self.items.clear()
        if self.closed:
            got: list[int] = []
            if self.failed:
                with pytest.raises(ChannelFailedError):
                    got.extend(self.channel)
            else:
                got = list(self.channel)
            assert got == expected
        else:
            assert [self.channel.receive(timeout=0) for _ in expected] == expected

    @rule(with_error=st.booleans())
    def close(self, with_error: bool) -> None:
        if not self.closed and with_error:
            self.failed = True
        self.closed = True
        self.channel.close(ValueError("producer failed") if with_error else None)

    @invariant()
    def counters_match_the_model(self) -> None:
        if not hasattr(self, "channel"):
            return
        stats = self.channel.stats()
        assert stats.received == self.received
        assert stats.delivered == self.delivered
        assert stats.dropped == self.dropped
        assert stats.rejected == self.rejected
        assert stats.size == len(self.items) == len(self.channel)
        assert stats.fill_ratio == len(self.items) / self.capacity
        assert stats.producer_blocked == 0
        assert stats.received == stats.delivered + stats.dropped + stats.size
        assert self.channel.closed == self.closed


ChannelModel.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_channel_matches_its_model = ChannelModel.TestCase


SLOW_POLICIES = ("block", "drop_oldest", "drop_newest", "disconnect")


class BroadcastModel(RuleBasedStateMachine):
    """A Broadcast beside one list per subscriber, with the same slow-subscriber policy."""

    subscribers = Bundle("subscribers")

    def __init__(self) -> None:
        super().__init__()
        self.buffers: dict[str, list[int]] = {}
        self.attached: list[str] = []
        self.cut: set[str] = set()
        self.closed = False
        self.published = 0
        self.next_item = 0
        self.handles: dict[str, Any] = {}

    @initialize(capacity=st.integers(1, 3), policy=st.sampled_from(SLOW_POLICIES))
    def build(self, capacity: int, policy: str) -> None:
        self.capacity = capacity
        self.policy = policy
        max_wait = 0.0 if policy == "block" else None
        self.broadcast: Broadcast[int] = Broadcast(
            capacity,
            slow_subscriber=policy,  # type: ignore[arg-type]
            max_wait=max_wait,
        )

    @rule(target=subscribers)
    def subscribe(self) -> str:
        name = f"s{len(self.handles)}"
        self.handles[name] = self.broadcast.subscribe(name)
        self.buffers[name] = []
        if not self.closed:
            self.attached.append(name)
        return name

    @rule()
    def publish(self) -> None:
        item = self.next_item
        self.next_item += 1
        if self.closed:
            with pytest.raises(ChannelClosedError):
                self.broadcast.publish(item)
            return
        full = [name for name in self.attached if len(self.buffers[name]) >= self.capacity]
        if self.policy == "block" and full:
            with pytest.raises(ChannelFullError):
                self.broadcast.publish(item)
            return
        reached = 0
        for name in list(self.attached):
            buffer = self.buffers[name]
            if len(buffer) < self.capacity:
                buffer.append(item)
                reached += 1
            elif self.policy == "drop_oldest":
                buffer.pop(0)
                buffer.append(item)
                reached += 1
            elif self.policy == "disconnect":
                self.attached.remove(name)
                self.cut.add(name)
        self.published += 1
        assert self.broadcast.publish(item) == reached

    @rule(name=subscribers)
    def receive(self, name: str) -> None:
        buffer = self.buffers[name]
        handle = self.handles[name]
        if buffer:
            assert handle.receive(timeout=0) == buffer.pop(0)
        elif name in self.cut:
            with pytest.raises(SubscriberDisconnectedError):
                handle.receive(timeout=0)
        elif self.closed or name not in self.attached:
            with pytest.raises(ChannelClosedError):
                handle.receive(timeout=0)
        else:
            with pytest.raises(TimeoutExceededError):
                handle.receive(timeout=0)

    @rule(name=subscribers)
    def unsubscribe(self, name: str) -> None:
        if name in self.attached:
            self.attached.remove(name)
        self.handles[name].close()

    @rule()
    def close(self) -> None:
        self.closed = True
        self.attached.clear()
        self.broadcast.close()

    @invariant()
    def state_matches_the_model(self) -> None:
        if not hasattr(self, "broadcast"):
            return
        assert [s.name for s in self.broadcast.subscribers] == self.attached
        for name, handle in self.handles.items():
            assert len(handle) == len(self.buffers[name])
            assert handle.disconnected == (name in self.cut)
        stats = self.broadcast.stats()
        assert stats.received == self.published
        assert stats.disconnected == len(self.cut)


BroadcastModel.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_broadcast_matches_its_model = BroadcastModel.TestCase
