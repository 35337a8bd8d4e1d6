"""The engine matrix for tests: URLs from env vars, standard local ports by default.

An unreachable engine skips its tests with a reason, unless the engine is named in
``SEAWALL_TEST_REQUIRE`` (comma-separated; CI sets ``postgres,redis``): then the
test fails, so a missing engine can never pass CI silently.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit

import pytest

DEFAULT_URLS = {
    "redis": "redis://127.0.0.1:6379/0",
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "nats": "nats://127.0.0.1:4222",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
}

REQUIRED = {
    name.strip() for name in os.environ.get("SEAWALL_TEST_REQUIRE", "").split(",") if name.strip()
}


def engine_url(name: str) -> str:
    """The URL tests use for engine ``name`` (``SEAWALL_TEST_<NAME>_URL`` overrides)."""
    return os.environ.get(f"SEAWALL_TEST_{name.upper()}_URL", DEFAULT_URLS[name])


@functools.cache
def _reachable(url: str) -> str | None:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or {"redis": 6379, "postgresql": 5432, "nats": 4222, "amqp": 5672}.get(
        parts.scheme, 0
    )
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc})"


def require_engine(name: str) -> str:
    """Return the engine's URL, or skip (fail when required) if it does not answer."""
    url = engine_url(name)
    problem = _reachable(url)
    if problem is not None:
        message = f"{name} engine at {url}: {problem}"
        if name in REQUIRED:
            pytest.fail(f"{message}; SEAWALL_TEST_REQUIRE demands it", pytrace=False)
        pytest.skip(message)
    return url
