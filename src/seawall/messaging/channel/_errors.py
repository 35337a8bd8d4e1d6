"""The errors channels raise, each carrying the data a caller needs.

::

    SeawallError
    ├── ChannelClosedError                 send on a closed channel; receive after the end
    ├── ChannelFailedError                 the producer closed the channel with an error
    ├── SubscriberDisconnectedError        a broadcast cut off a slow subscriber
    ├── BlockingInEventLoopError           a blocking call would freeze the event loop
    │   (also RuntimeError)
    └── RejectedError
        └── ChannelFullError               no room, and the policy says do not wait (longer)
"""

from __future__ import annotations

from seawall.errors import RejectedError, SeawallError

__all__ = [
    "BlockingInEventLoopError",
    "ChannelClosedError",
    "ChannelFailedError",
    "ChannelFullError",
    "SubscriberDisconnectedError",
]


class ChannelClosedError(SeawallError):
    """The channel is closed: a send was refused, or a receiver reached the end of the stream.

    Iterating a channel ends quietly on this error; calling ``receive`` raises it.
    """

    def __init__(self, channel: str, *, sending: bool) -> None:
        if sending:
            message = (
                f"channel {channel!r} is closed and refused the item; "
                "stop producing, or send to an open channel"
            )
        else:
            message = f"channel {channel!r} is closed and drained: no item will ever arrive"
        super().__init__(message)
        self.channel = channel
        self.sending = sending


class ChannelFailedError(SeawallError):
    """The producer closed the channel with an error; receivers get it after the last item.

    ``error`` is the original exception (also ``__cause__``); ``channel`` names the
    channel it was first closed into, so in a chain of stages it names the stage
    that failed.
    """

    def __init__(self, channel: str, error: BaseException) -> None:
        super().__init__(
            f"channel {channel!r} was closed by its producer with an error: "
            f"{type(error).__name__}: {error}; see __cause__ for the traceback"
        )
        self.channel = channel
        self.error = error


class SubscriberDisconnectedError(SeawallError):
    """A broadcast cut this subscriber off because it fell ``capacity`` messages behind.

    The subscriber still received every message buffered before the cut; it missed
    every message published after it.
    """

    def __init__(self, broadcast: str, subscriber: str, capacity: int) -> None:
        super().__init__(
            f"subscriber {subscriber!r} of broadcast {broadcast!r} was disconnected: its "
            f"buffer of {capacity} messages was full and the slow_subscriber policy is "
            "'disconnect'; consume faster, raise capacity_per_subscriber, or choose "
            "slow_subscriber='block' or 'drop_oldest'"
        )
        self.broadcast = broadcast
        self.subscriber = subscriber
        self.capacity = capacity
        self.policy = "disconnect"


class BlockingInEventLoopError(SeawallError, RuntimeError):
    """A blocking channel call was made on a thread that runs an event loop.

    Waiting there would freeze the loop (and deadlock if the other side is a task on
    it), so the call refuses; use the ``a``-prefixed method with ``await``.
    """

    def __init__(self, channel: str, call: str, async_call: str) -> None:
        super().__init__(
            f"{call}() on {channel!r} would block the running event loop; "
            f"use 'await {async_call}()' in async code"
        )
        self.channel = channel
        self.call = call


class ChannelFullError(RejectedError):
    """The channel had no room and its overflow policy refused to wait (any longer).

    Raised at once under ``overflow="raise"``, and after ``max_wait`` seconds under
    ``overflow="block"``.
    """

    def __init__(
        self, channel: str, capacity: int, overflow: str, max_wait: float | None = None
    ) -> None:
        waited = f" after waiting {max_wait:.3f}s" if max_wait else ""
        super().__init__(
            f"channel {channel!r} is full ({capacity} items, overflow={overflow!r}) and "
            f"refused the item{waited}; consume faster, raise capacity or max_wait, "
            "or choose a dropping overflow policy"
        )
        self.channel = channel
        self.capacity = capacity
        self.overflow = overflow
        self.max_wait = max_wait
