"""What a requester needs from a transport: send a request, listen for replies, close."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["OnReply", "Transport"]

OnReply = Callable[[str | None, str, Any], None]
"""Called by a transport for every reply: ``(correlation_id, status, body)``."""


class Transport(Protocol):
    """Carries requests to ``destination`` and hands every reply to ``on_reply``."""

    destination: str
    """The request queue or subject, for errors and events."""

    @property
    def reply_to(self) -> str:
        """Where replies come back (reply queue name, or inbox prefix)."""
        ...

    def send(
        self, body: Any, correlation_id: str, headers: Mapping[str, str] | None, priority: int
    ) -> None:
        """Send one request; replies reach ``on_reply`` once :meth:`listen` ran."""
        ...

    async def asend(
        self, body: Any, correlation_id: str, headers: Mapping[str, str] | None, priority: int
    ) -> None:
        """Asyncio twin of :meth:`send`."""
        ...

    def listen(self) -> None:
        """Make sure replies are being received for blocking callers (idempotent)."""
        ...

    async def alisten(self) -> None:
        """Make sure replies are being received on the running event loop (idempotent)."""
        ...

    def close(self) -> None:
        """Stop listening and release what the transport opened."""
        ...

    async def aclose(self) -> None:
        """Asyncio twin of :meth:`close`."""
        ...
