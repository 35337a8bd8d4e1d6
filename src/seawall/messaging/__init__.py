"""Messaging: in-process channels now; queues, topics, request-reply and more to come."""

from __future__ import annotations

from seawall.messaging.channel import (
    BlockingInEventLoopError,
    Broadcast,
    BroadcastStats,
    Channel,
    ChannelClosedError,
    ChannelFailedError,
    ChannelFullError,
    ChannelStats,
    FanOutMode,
    ItemDropped,
    Overflow,
    Pumps,
    SlowSubscriber,
    Stages,
    SubscriberDisconnected,
    SubscriberDisconnectedError,
    Subscription,
    fan_in,
    fan_out,
)

__all__ = [
    "BlockingInEventLoopError",
    "Broadcast",
    "BroadcastStats",
    "Channel",
    "ChannelClosedError",
    "ChannelFailedError",
    "ChannelFullError",
    "ChannelStats",
    "FanOutMode",
    "ItemDropped",
    "Overflow",
    "Pumps",
    "SlowSubscriber",
    "Stages",
    "SubscriberDisconnected",
    "SubscriberDisconnectedError",
    "Subscription",
    "fan_in",
    "fan_out",
]
