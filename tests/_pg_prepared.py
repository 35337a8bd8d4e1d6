"""A throwaway PostgreSQL cluster with ``max_prepared_transactions=20``, for two-phase commit.

The shared test server runs with ``max_prepared_transactions=0`` and must not be
reconfigured, so the two-phase tests (and ``benchmarks/workflows_commit.py``) start a
private cluster: :func:`start_prepared_postgres` runs ``initdb`` into a temporary folder
(as the ``postgres`` OS user when running as root), starts it on a free loopback port,
yields its URL, and stops it (``pg_ctl stop -m fast``) and removes the folder afterwards.
Every wait is bounded. It also creates the databases ``twopc_a`` and ``twopc_b`` so a
test can run one transaction across two databases.

The ``pg_prepared_url`` fixture does that once per test session (the URL names the
``postgres`` database; swap the path for ``/twopc_a`` or ``/twopc_b``). Missing
PostgreSQL binaries skip the tests that need them, or fail them when ``postgres`` is
named in ``SEAWALL_TEST_REQUIRE``. ``SEAWALL_TEST_PG_PREPARED_URL`` points the tests at
a server of your own instead (``max_prepared_transactions`` > 0, both databases created).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from _engines import REQUIRED

COMMAND_TIMEOUT = 60.0
"""Seconds ``initdb``, ``pg_ctl start`` and ``pg_ctl stop`` each get."""
DATABASES = ("twopc_a", "twopc_b")
MAX_PREPARED = 20


def pg_bin_dir() -> str | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or ``None`` when they are not installed."""
    candidates = [os.environ["SEAWALL_PG_BIN"]] if os.environ.get("SEAWALL_PG_BIN") else []
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(str(Path(which).parent))
    installed = Path("/usr/lib/postgresql")
    if installed.is_dir():
        versions = [entry for entry in installed.iterdir() if entry.name.isdigit()]
        candidates.extend(
            str(version / "bin") for version in sorted(versions, key=lambda e: -int(e.name))
        )
    for folder in candidates:
        if all(
            os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")
        ):
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_owner(command: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str], what: str) -> None:
    completed = subprocess.run(
        _as_owner(command), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({completed.returncode}): "
            f"{completed.stderr[-2000:] or completed.stdout[-2000:]}"
        )


def database_url(url: str, database: str) -> str:
    """The cluster URL with another database name."""
    return url.rsplit("/", 1)[0] + "/" + database


@contextlib.contextmanager
def start_prepared_postgres(bin_dir: str) -> Iterator[str]:
    """Run a private PostgreSQL with prepared transactions on; yields its ``postgresql://`` URL."""
    workdir = Path(tempfile.mkdtemp(prefix="seawall-pg2pc-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    data = workdir / "data"
    log = workdir / "server.log"
    pg_ctl = str(Path(bin_dir) / "pg_ctl")
    started = False
    try:
        _run(
            [str(Path(bin_dir) / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-N", "-E", "UTF8", "--locale=C"],
            "initdb",
        )  # fmt: skip
        port = _free_port()
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={workdir} "
            f"-c max_prepared_transactions={MAX_PREPARED} -c max_connections=60 "
            "-c fsync=off -c full_page_writes=off -c shared_buffers=32MB"
        )
        _run(
            [pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "30", "start"],
            "pg_ctl start",
        )
        started = True
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            for database in DATABASES:
                conn.execute(f"CREATE DATABASE {database}")
        yield url
    except RuntimeError as exc:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"the throwaway PostgreSQL did not start: {exc}\n{tail}") from exc
    finally:
        if started:
            try:
                _run(
                    [pg_ctl, "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"], "pg_ctl stop"
                )
            except (RuntimeError, subprocess.TimeoutExpired):
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    _run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], "pg_ctl stop")
        shutil.rmtree(workdir, ignore_errors=True)


class _Shared:
    """One cluster per test process, shared by every module that imports the fixture.

    Each import defines its own session fixture; they all finish at the end of the
    session, and the last one to finish stops the cluster.
    """

    stack: contextlib.ExitStack | None = None
    url = ""
    users = 0


@pytest.fixture(scope="session")
def pg_prepared_url() -> Iterator[str]:
    """URL of a private PostgreSQL with max_prepared_transactions > 0 (skips, or fails if required)."""
    configured = os.environ.get("SEAWALL_TEST_PG_PREPARED_URL")
    if configured:
        yield configured
        return
    if _Shared.stack is None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            message = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
            if "postgres" in REQUIRED:
                pytest.fail(f"{message}; SEAWALL_TEST_REQUIRE demands postgres", pytrace=False)
            pytest.skip(message)
        stack = contextlib.ExitStack()
        try:
            _Shared.url = stack.enter_context(start_prepared_postgres(bin_dir))
        except (RuntimeError, subprocess.TimeoutExpired, KeyError, OSError) as exc:
            stack.close()
            if "postgres" in REQUIRED:
                pytest.fail(str(exc), pytrace=False)
            pytest.skip(str(exc))
        _Shared.stack = stack
    _Shared.users += 1
    try:
        yield _Shared.url
    finally:
        _Shared.users -= 1
        if _Shared.users == 0 and _Shared.stack is not None:
            stack, _Shared.stack = _Shared.stack, None
            stack.close()
