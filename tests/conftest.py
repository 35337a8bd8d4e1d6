"""Shared fixtures: manual clocks and engine URLs."""

from __future__ import annotations

import pytest

from _engines import require_engine
from _etcd import etcd_url  # noqa: F401
from seawall.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock starting at 1000.0 (so a bug that assumes 0 shows)."""
    return ManualClock(1000.0)


@pytest.fixture
def redis_url() -> str:
    """URL of the test Redis (skips, or fails under SEAWALL_TEST_REQUIRE, if down)."""
    return require_engine("redis")


@pytest.fixture
def postgres_url() -> str:
    """URL of the test PostgreSQL (skips, or fails under SEAWALL_TEST_REQUIRE, if down)."""
    return require_engine("postgres")
