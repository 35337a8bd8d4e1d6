"""The RabbitMQ engine: aio-pika robust connections built from an AMQP URL.

``amqp://guest:guest@127.0.0.1:5672/`` (``amqps://`` for TLS; the path is the vhost;
``?connect_timeout=2.5``). aio-pika is asyncio only, so the engine keeps one robust
connection per running event loop and, for sync stores, a private loop on a background
thread that :meth:`AmqpEngine.run` drives. Robust connections reconnect and restore
their channels after the server or the network drops them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import parse_qs, urlsplit

from seawall.engines._base import Engine, redact
from seawall.engines._loop import BackgroundLoop, PerLoop
from seawall.errors import ConfigurationError, EngineUnavailableError, MissingExtraError

if TYPE_CHECKING:
    import aio_pika.abc

__all__ = ["AmqpEngine", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 5.0

T = TypeVar("T")


def _import_aio_pika() -> Any:
    try:
        import aio_pika
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError("rabbitmq", "aio-pika") from exc
    return aio_pika


class AmqpEngine(Engine):
    """RabbitMQ through aio-pika: one robust connection per event loop, connected lazily.

    ``connect_timeout`` (default 5 s) bounds the first connection: an unreachable server
    raises :class:`~seawall.errors.EngineUnavailableError`. Other ``options`` go to
    ``aio_pika.connect_robust``.
    """

    kind: ClassVar[str] = "rabbitmq"

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        connect_timeout: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url)
        _import_aio_pika()
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("amqp", "amqps"):
            raise ConfigurationError(
                f"AmqpEngine needs an amqp:// or amqps:// URL, got {redact(url)!r}"
            )
        query = parse_qs(parts.query)
        if connect_timeout is None:
            connect_timeout = float(query.get("connect_timeout", [DEFAULT_TIMEOUT])[0])
        if connect_timeout <= 0:
            raise ConfigurationError(f"connect_timeout must be > 0, got {connect_timeout}")
        self.connect_timeout = connect_timeout
        options.setdefault("reconnect_interval", 1.0)
        self.options = options
        self._background = BackgroundLoop("seawall-amqp")
        self._connections: PerLoop[aio_pika.abc.AbstractRobustConnection] = PerLoop(
            self._connect, lambda connection: not connection.is_closed, lambda c: c.close()
        )
        self._channels: PerLoop[aio_pika.abc.AbstractChannel] = PerLoop(
            self._open_channel, lambda channel: not channel.is_closed, lambda c: c.close()
        )

    async def _connect(self) -> aio_pika.abc.AbstractRobustConnection:
        import aio_pika

        url = self.url.split("?", 1)[0] if "connect_timeout=" in self.url else self.url
        try:
            return await asyncio.wait_for(
                aio_pika.connect_robust(url, timeout=self.connect_timeout, **self.options),
                self.connect_timeout,
            )
        except Exception as exc:
            reason = (
                "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            )
            raise EngineUnavailableError(
                f"RabbitMQ at {redact(self.url)} is unreachable within "
                f"{self.connect_timeout:g}s ({reason}); check that it runs, the URL and "
                "the credentials",
                url=self.url,
            ) from exc

    async def _open_channel(self) -> aio_pika.abc.AbstractChannel:
        connection = await self.connection()
        return await connection.channel(publisher_confirms=True)

    async def connection(self) -> aio_pika.abc.AbstractRobustConnection:
        """The running loop's robust connection, connected on first use."""
        return await self._connections.get()

    async def channel(self) -> aio_pika.abc.AbstractChannel:
        """The running loop's shared channel, with publisher confirms on."""
        return await self._channels.get()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the engine's private loop thread (how sync stores use RabbitMQ)."""
        return self._background.run(coroutine, timeout)

    def close(self) -> None:
        """Close the private loop's connection and loop; other loops' connections are closed there."""
        keep = self._background._loop
        self._channels.close_others(keep=keep)
        self._connections.close_others(keep=keep)

        async def last() -> None:
            await self._channels.close_current()
            await self._connections.close_current()

        self._background.stop(last)

    async def aclose(self) -> None:
        """Close the running loop's connection, then everything :meth:`close` closes."""
        await self._channels.close_current()
        await self._connections.close_current()
        self.close()
