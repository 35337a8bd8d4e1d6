"""A throwaway PostgreSQL cluster with ``max_prepared_transactions=20``, for two-phase commit.

The shared test server runs with ``max_prepared_transactions=0`` and must not be
reconfigured, so the two-phase tests (and ``benchmarks/workflows_commit.py``) start a
private cluster (:class:`_pg_cluster.PrivateCluster`): :func:`start_prepared_postgres`
yields its URL, with the databases ``twopc_a`` and ``twopc_b`` created so a test can run
one transaction across two databases, and stops and removes it afterwards.

The ``pg_prepared_url`` fixture does that once per test session (the URL names the
``postgres`` database; :func:`database_url` swaps it for ``twopc_a`` or ``twopc_b``).
Missing PostgreSQL binaries skip the tests that need them, or fail them when
``postgres`` is named in ``SEAWALL_TEST_REQUIRE``. ``SEAWALL_TEST_PG_PREPARED_URL``
points the tests at a server of your own instead (``max_prepared_transactions`` > 0,
both databases created).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from _pg_cluster import COMMAND_TIMEOUT, PrivateCluster, pg_bin_dir, shared_cluster_fixture

__all__ = ["COMMAND_TIMEOUT", "DATABASES", "database_url", "pg_bin_dir", "pg_prepared_url",
           "start_prepared_postgres"]  # fmt: skip

DATABASES = ("twopc_a", "twopc_b")
MAX_PREPARED = 20
PREPARED_SETTINGS = {"max_prepared_transactions": str(MAX_PREPARED), "max_connections": "60",
                     "shared_buffers": "32MB"}  # fmt: skip
"""Settings of the two-phase commit cluster."""


def database_url(url: str, database: str) -> str:
    """The cluster URL with another database name."""
    return url.rsplit("/", 1)[0] + "/" + database


@contextlib.contextmanager
def start_prepared_postgres(bin_dir: str) -> Iterator[str]:
    """Run a private PostgreSQL with prepared transactions on; yields its ``postgresql://`` URL."""
    with PrivateCluster(PREPARED_SETTINGS, bin_dir=bin_dir) as cluster:
        for database in DATABASES:
            cluster.create_database(database)
        yield cluster.url()


pg_prepared_url = shared_cluster_fixture(
    "pg_prepared_url", start_prepared_postgres, "SEAWALL_TEST_PG_PREPARED_URL"
)
"""URL of a private PostgreSQL with max_prepared_transactions > 0 (skips, or fails if required)."""
