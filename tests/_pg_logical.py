"""A throwaway PostgreSQL cluster with ``wal_level=logical``, for change data capture.

The shared test server runs with ``wal_level=replica`` and must not be reconfigured, so
change capture tests (and ``benchmarks/cdc.py``) start a private cluster instead
(:class:`_pg_cluster.PrivateCluster` with ``wal_level=logical``):
:func:`start_logical_postgres` yields its URL and stops and removes it afterwards.

The ``pg_logical_url`` fixture does that once per test session. Missing PostgreSQL
binaries skip the tests that need them, or fail them when ``postgres`` is named in
``SEAWALL_TEST_REQUIRE``. ``SEAWALL_TEST_PG_LOGICAL_URL`` points the tests at a server
of your own instead (it must run with ``wal_level=logical``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from _pg_cluster import COMMAND_TIMEOUT, PrivateCluster, pg_bin_dir, shared_cluster_fixture

__all__ = ["COMMAND_TIMEOUT", "LOGICAL_SETTINGS", "pg_bin_dir", "pg_logical_url",
           "start_logical_postgres"]  # fmt: skip

LOGICAL_SETTINGS = {"wal_level": "logical", "max_replication_slots": "8", "max_wal_senders": "8"}
"""Settings of the change capture cluster."""


@contextlib.contextmanager
def start_logical_postgres(bin_dir: str) -> Iterator[str]:
    """Run a private PostgreSQL with ``wal_level=logical``; yields its ``postgresql://`` URL."""
    with PrivateCluster(LOGICAL_SETTINGS, bin_dir=bin_dir) as cluster:
        yield cluster.url()


pg_logical_url = shared_cluster_fixture(
    "pg_logical_url", start_logical_postgres, "SEAWALL_TEST_PG_LOGICAL_URL"
)
"""URL of a private PostgreSQL with wal_level=logical (skips, or fails when required)."""
