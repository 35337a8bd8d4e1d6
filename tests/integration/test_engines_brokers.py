"""The NATS and RabbitMQ engines: URL schemes, per-loop connections, the private loop, errors."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

import seawall
from _engines import require_engine
from seawall.engines.amqp import AmqpEngine
from seawall.engines.nats import NatsEngine
from seawall.errors import ConfigurationError, EngineUnavailableError


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_schemes_choose_the_engines() -> None:
    pytest.importorskip("nats")
    pytest.importorskip("aio_pika")
    for url, engine_class, kind in [
        ("nats://127.0.0.1:4222", NatsEngine, "nats"),
        ("tls://127.0.0.1:4222", NatsEngine, "nats"),
        ("amqp://guest:guest@127.0.0.1:5672/", AmqpEngine, "rabbitmq"),
        ("amqps://guest:guest@127.0.0.1:5671/", AmqpEngine, "rabbitmq"),
    ]:
        engine = seawall.connect(url)
        assert isinstance(engine, engine_class)
        assert engine.kind == kind
        engine.close()


def test_nats_servers_come_from_the_url() -> None:
    pytest.importorskip("nats")
    engine = NatsEngine("nats://user:pw@h1:4222,h2:4223?connect_timeout=2")
    assert engine.servers == ["nats://user:pw@h1:4222", "nats://user:pw@h2:4223"]
    assert engine.connect_timeout == 2
    assert "pw" not in repr(engine)
    with pytest.raises(ConfigurationError, match="connect_timeout"):
        NatsEngine("nats://h1:4222", connect_timeout=0)


@pytest.mark.engine("nats")
def test_nats_run_uses_the_private_loop_connection() -> None:
    engine = seawall.connect(require_engine("nats"))
    assert isinstance(engine, NatsEngine)

    async def same_connection() -> bool:
        return await engine.connection() is await engine.connection()

    async def account() -> int:
        info = await (await engine.jetstream()).account_info()
        return int(info.streams or 0)

    assert engine.run(same_connection())
    assert engine.run(account()) >= 0
    engine.close()
    engine.close()  # idempotent


@pytest.mark.engine("rabbitmq")
def test_amqp_channels_have_publisher_confirms() -> None:
    engine = seawall.connect(require_engine("rabbitmq"))
    assert isinstance(engine, AmqpEngine)

    async def confirms() -> bool:
        channel = await engine.channel()
        return channel is await engine.channel() and bool(channel.publisher_confirms)

    assert engine.run(confirms())
    engine.close()


@pytest.mark.engine("nats")
async def test_each_event_loop_gets_its_own_nats_connection() -> None:
    engine = seawall.connect(require_engine("nats"))
    assert isinstance(engine, NatsEngine)
    mine = await engine.connection()

    async def theirs() -> object:
        return await engine.connection()

    other = await asyncio.to_thread(engine.run, theirs())
    assert mine is not other
    assert mine.is_connected
    await engine.aclose()
    assert mine.is_closed


@pytest.mark.parametrize(
    ("template", "needs"),
    [
        ("nats://127.0.0.1:{port}?connect_timeout=1", "nats"),
        ("amqp://guest:secret@127.0.0.1:{port}/?connect_timeout=1", "aio_pika"),
    ],
)
def test_unreachable_servers_fail_fast_naming_the_redacted_url(template: str, needs: str) -> None:
    pytest.importorskip(needs)
    port = _free_port()
    engine = seawall.connect(template.format(port=port))
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError) as caught:
        engine.run(engine.connection())  # type: ignore[attr-defined]
    assert time.monotonic() - started < 3
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "secret" not in str(caught.value)
    engine.close()
