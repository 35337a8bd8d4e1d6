"""The NATS engine: nats-py connections (with JetStream) built from the URL.

``nats://127.0.0.1:4222`` (several servers: ``nats://h1:4222,h2:4222``; ``tls://`` for
TLS; user and password in the URL as usual; ``?connect_timeout=2.5``). nats-py is
asyncio only, so the engine keeps one connection per running event loop and, for sync
stores, a private loop on a background thread that :meth:`NatsEngine.run` drives.
Connections reconnect by themselves after the server or the network drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import parse_qs, urlsplit

from seawall.engines._base import Engine, redact
from seawall.engines._loop import BackgroundLoop, PerLoop
from seawall.errors import ConfigurationError, EngineUnavailableError, MissingExtraError

if TYPE_CHECKING:
    import nats.aio.client
    import nats.js

__all__ = ["DEFAULT_TIMEOUT", "NatsEngine"]

DEFAULT_TIMEOUT = 5.0

T = TypeVar("T")


def _import_nats() -> Any:
    try:
        import nats
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError("nats", "nats-py") from exc
    return nats


class NatsEngine(Engine):
    """NATS (and JetStream) through nats-py: one connection per event loop, connected lazily.

    ``connect_timeout`` (default 5 s) bounds the first connection: an unreachable server
    raises :class:`~seawall.errors.EngineUnavailableError` instead of retrying forever.
    Other ``options`` go to ``nats.connect`` (``user_credentials``, ``tls``, ...).
    """

    kind: ClassVar[str] = "nats"

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        connect_timeout: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url)
        _import_nats()
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("nats", "tls"):
            raise ConfigurationError(
                f"NatsEngine needs a nats:// or tls:// URL, got {redact(url)!r}"
            )
        query = parse_qs(parts.query)
        if connect_timeout is None:
            connect_timeout = float(query.get("connect_timeout", [DEFAULT_TIMEOUT])[0])
        if connect_timeout <= 0:
            raise ConfigurationError(f"connect_timeout must be > 0, got {connect_timeout}")
        self.connect_timeout = connect_timeout
        credentials = ""
        if "@" in parts.netloc:
            credentials = parts.netloc.rsplit("@", 1)[0] + "@"
        hosts = parts.netloc.rsplit("@", 1)[-1]
        self.servers: list[str] = [
            f"{parts.scheme.lower()}://{credentials}{host.strip()}"
            for host in hosts.split(",")
            if host.strip()
        ] or [f"{parts.scheme.lower()}://127.0.0.1:4222"]
        self.options = options
        self._background = BackgroundLoop("seawall-nats")
        self._connections: PerLoop[nats.aio.client.Client] = PerLoop(
            self._connect, lambda client: not client.is_closed, lambda client: client.close()
        )

    async def _connect(self) -> nats.aio.client.Client:
        from nats.aio.client import Client

        async def on_error(error: Exception) -> None:
            """nats-py reports transport errors here; reconnection handles them."""

        client = Client()
        options: dict[str, Any] = {
            "connect_timeout": min(self.connect_timeout, 2.0),
            "reconnect_time_wait": 0.25,
            "max_reconnect_attempts": -1,
            "error_cb": on_error,
        }
        options.update(self.options)
        try:
            await asyncio.wait_for(
                client.connect(servers=self.servers, **options), self.connect_timeout
            )
        except Exception as exc:
            last_error = client.last_error
            with contextlib.suppress(Exception):  # the half-open client may be broken already
                await client.close()
            cause = last_error if isinstance(exc, TimeoutError) and last_error else exc
            reason = str(cause) or type(cause).__name__
            raise EngineUnavailableError(
                f"NATS at {redact(self.url)} is unreachable within {self.connect_timeout:g}s "
                f"({reason}); check that nats-server runs (with -js for JetStream) and the URL",
                url=self.url,
            ) from exc
        return client

    async def connection(self) -> nats.aio.client.Client:
        """The running loop's connection, connected on first use; it reconnects by itself."""
        return await self._connections.get()

    async def jetstream(self) -> nats.js.JetStreamContext:
        """A JetStream context on the running loop's connection."""
        connection = await self.connection()
        return connection.jetstream(timeout=self.connect_timeout)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the engine's private loop thread (how sync stores use NATS)."""
        return self._background.run(coroutine, timeout)

    def close(self) -> None:
        """Close the private loop's connection and loop; other loops' connections are closed there."""
        self._connections.close_others(keep=self._background_loop_or_none())
        self._background.stop(self._connections.close_current)

    async def aclose(self) -> None:
        """Close the running loop's connection, then everything :meth:`close` closes."""
        await self._connections.close_current()
        self.close()

    def _background_loop_or_none(self) -> asyncio.AbstractEventLoop | None:
        return self._background._loop
