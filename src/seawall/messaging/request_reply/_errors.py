"""The errors request-reply raises.

::

    SeawallError
    ├── TimeoutExceededError (also TimeoutError)
    │   └── RequestTimeoutError          no reply within the request's timeout
    └── RequestReplyError
        ├── RemoteError                  the responder answered with an error reply
        ├── NoRespondersError            NATS: nobody subscribes to the subject
        └── NotARequestError (also ValueError)   reply() to a message without reply-to
"""

from __future__ import annotations

from seawall.errors import SeawallError, TimeoutExceededError

__all__ = [
    "NoRespondersError",
    "NotARequestError",
    "RemoteError",
    "RequestReplyError",
    "RequestTimeoutError",
]


class RequestReplyError(SeawallError):
    """A request or a reply could not be completed."""


class RequestTimeoutError(TimeoutExceededError):
    """No reply came within ``timeout`` seconds; a reply arriving later is dropped and counted.

    The request may still be handled (at-least-once): make responders idempotent,
    and retry with the same body only if handling it twice is harmless.
    """

    def __init__(self, destination: str, timeout: float, correlation_id: str) -> None:
        SeawallError.__init__(
            self,
            f"no reply from {destination!r} within {timeout:.3f}s (correlation id "
            f"{correlation_id}); check that a responder is running and keeping up, or raise "
            "the timeout",
        )
        self.timeout = timeout
        self.destination = destination
        self.correlation_id = correlation_id


class RemoteError(RequestReplyError):
    """The responder handled the request and answered with an error (``error`` is its text)."""

    def __init__(self, destination: str, error: str, correlation_id: str) -> None:
        super().__init__(f"the responder on {destination!r} answered with an error: {error}")
        self.destination = destination
        self.error = error
        self.correlation_id = correlation_id


class NoRespondersError(RequestReplyError):
    """NATS answered at once that no responder subscribes to the subject; nothing was handled."""

    def __init__(self, destination: str, correlation_id: str) -> None:
        super().__init__(
            f"no responder subscribes to {destination!r} (NATS answered 'no responders'); "
            "start a Responder for it, or check the subject"
        )
        self.destination = destination
        self.correlation_id = correlation_id


class NotARequestError(RequestReplyError, ValueError):
    """``reply`` was given a message that carries no ``reply-to`` header (not a request)."""

    def __init__(self, queue: str, message_id: str, missing: str) -> None:
        super().__init__(
            f"message {message_id!r} from queue {queue!r} has no {missing!r} header, so it is not "
            "a request and cannot be replied to; send requests with Requester.request"
        )
        self.queue = queue
        self.message_id = message_id
        self.missing = missing
