"""In-process channels: bounded buffers that threads and asyncio tasks share.

:class:`Channel` (mpsc / mpmc with a backpressure policy), :class:`Broadcast` (every
subscriber gets every message), :func:`fan_in` / :func:`fan_out`, and :class:`Stages`
(pipes and filters with bounded channels between the stages).
"""

from __future__ import annotations

from seawall.messaging.channel._broadcast import (
    Broadcast,
    BroadcastStats,
    SlowSubscriber,
    Subscription,
)
from seawall.messaging.channel._channel import Channel, Overflow
from seawall.messaging.channel._core import ChannelStats
from seawall.messaging.channel._errors import (
    BlockingInEventLoopError,
    ChannelClosedError,
    ChannelFailedError,
    ChannelFullError,
    SubscriberDisconnectedError,
)
from seawall.messaging.channel._events import ItemDropped, SubscriberDisconnected
from seawall.messaging.channel._flow import FanOutMode, Pumps, fan_in, fan_out
from seawall.messaging.channel._stages import Stages

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
