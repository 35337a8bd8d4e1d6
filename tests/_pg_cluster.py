"""A throwaway PostgreSQL cluster for tests and benchmarks that need their own server.

The shared test server must never be reconfigured or restarted, so a test that needs
other settings (``wal_level=logical``) or must restart the server (chaos tests) starts
a :class:`PrivateCluster`: ``initdb`` into a temporary folder (as the ``postgres`` OS
user when running as root, since PostgreSQL refuses root), ``pg_ctl start`` on a free
loopback port with the given settings, and at :meth:`PrivateCluster.stop` a fast stop
and removal of the folder. The port stays the same across :meth:`PrivateCluster.restart`,
so clients reconnect to the same URL. Every command is bounded by ``COMMAND_TIMEOUT``.

    with PrivateCluster({"wal_level": "logical"}) as cluster:
        url = cluster.url()
        cluster.restart()

Binaries come from ``SEAWALL_PG_BIN``, the folder of ``pg_ctl`` on ``PATH``, or
``/usr/lib/postgresql/*/bin`` (newest first); :func:`pg_bin_dir` is ``None`` when none
is installed, and :class:`PrivateCluster` then raises :class:`ClusterUnavailableError`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

COMMAND_TIMEOUT = 60.0
"""Seconds ``initdb``, ``pg_ctl start`` and ``pg_ctl stop`` each get."""

DEFAULT_SETTINGS = {"fsync": "off", "full_page_writes": "off"}
"""Settings every private cluster gets unless the caller overrides them (throwaway data)."""


class ClusterUnavailableError(RuntimeError):
    """The private cluster could not be created or started (binaries missing, command failed)."""


def _bin_dir_candidates() -> list[str]:
    candidates = [os.environ["SEAWALL_PG_BIN"]] if os.environ.get("SEAWALL_PG_BIN") else []
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(str(Path(which).parent))
    installed = Path("/usr/lib/postgresql")
    if installed.is_dir():
        versions = [entry for entry in installed.iterdir() if entry.name.isdigit()]
        for version in sorted(versions, key=lambda entry: int(entry.name), reverse=True):
            candidates.append(str(version / "bin"))
    return candidates


def pg_bin_dir() -> str | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or ``None`` when they are not installed."""
    for folder in _bin_dir_candidates():
        if all(
            os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")
        ):
            return folder
    return None


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_owner(command: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str], what: str, timeout: float = COMMAND_TIMEOUT) -> None:
    try:
        completed = subprocess.run(
            _as_owner(command), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterUnavailableError(f"{what} did not finish within {timeout:g} s") from exc
    if completed.returncode != 0:
        output = completed.stderr[-2000:] or completed.stdout[-2000:]
        raise ClusterUnavailableError(f"{what} failed ({completed.returncode}): {output}")


class PrivateCluster:
    """A PostgreSQL cluster of our own on a free loopback port, removed when stopped."""

    def __init__(
        self, settings: dict[str, str] | None = None, *, bin_dir: str | None = None
    ) -> None:
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.bin_dir = bin_dir or pg_bin_dir()
        self.port = 0
        self.workdir: Path | None = None
        self.running = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder (exists between :meth:`start` and :meth:`stop`)."""
        if self.workdir is None:
            raise ClusterUnavailableError("the cluster was not started")
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        """The server log (``pg_ctl -l``)."""
        if self.workdir is None:
            raise ClusterUnavailableError("the cluster was not started")
        return self.workdir / "server.log"

    def _tool(self, name: str) -> str:
        if self.bin_dir is None:
            raise ClusterUnavailableError(
                "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
            )
        return str(Path(self.bin_dir) / name)

    def _options(self) -> str:
        assert self.workdir is not None
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.workdir}",
        ]
        options.extend(f"-c {name}={value}" for name, value in self.settings.items())
        return " ".join(options)

    def _log_tail(self) -> str:
        if self.workdir is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-2000:]

    def start(self) -> PrivateCluster:
        """Create the cluster on first use, then start it (same port on every start)."""
        if self.running:
            return self
        if self.workdir is None:
            initdb = self._tool("initdb")
            self.workdir = Path(tempfile.mkdtemp(prefix="seawall-pg-"))
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
            try:
                _run(
                    [initdb, "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                     "-N", "-E", "UTF8", "--locale=C"],
                    "initdb",
                )  # fmt: skip
            except ClusterUnavailableError:
                self._remove()
                raise
            self.port = free_port()
        try:
            _run(
                [self._tool("pg_ctl"), "-D", str(self.data_dir), "-o", self._options(),
                 "-l", str(self.log_path), "-w", "-t", "30", "start"],
                "pg_ctl start",
            )  # fmt: skip
        except ClusterUnavailableError as exc:
            tail = self._log_tail()
            self._stop_server("immediate")
            self._remove()
            raise ClusterUnavailableError(
                f"the private PostgreSQL did not start: {exc}\n{tail}"
            ) from exc
        self.running = True
        return self

    def _stop_server(self, mode: str) -> None:
        if self.workdir is None:
            return
        pg_ctl = self._tool("pg_ctl")
        try:
            _run([pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"],
                 "pg_ctl stop")  # fmt: skip
        except ClusterUnavailableError:
            with contextlib.suppress(ClusterUnavailableError):
                _run([pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                     "pg_ctl stop")  # fmt: skip
        self.running = False

    def _remove(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def halt(self, mode: str = "fast") -> None:
        """Stop the server but keep its data, for a later :meth:`start` (``mode``: pg_ctl -m)."""
        if self.running:
            self._stop_server(mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` or ``immediate``, i.e. a crash) and start it again."""
        self.halt(mode)
        self.start()

    def stop(self) -> None:
        """Stop the server and remove its folder (idempotent)."""
        if self.running:
            self._stop_server("fast")
        self._remove()

    def __enter__(self) -> PrivateCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- use ---------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """The ``postgresql://`` URL of ``database`` on this cluster."""
        if not self.port:
            raise ClusterUnavailableError("the cluster was not started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (if missing) and return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def shared_cluster_fixture(
    name: str,
    start: Callable[[str], AbstractContextManager[str]],
    own_server_variable: str,
) -> Any:
    """A session fixture ``name`` yielding the URL of one private cluster per test process.

    ``start(bin_dir)`` runs the cluster and yields its URL. Every module that imports the
    fixture shares the cluster; the last to finish stops it. Missing binaries or a failed
    start skip the tests, or fail them when ``postgres`` is in ``SEAWALL_TEST_REQUIRE``.
    ``own_server_variable`` names the env var that points the tests at a server of your own.
    """
    import pytest

    from _engines import REQUIRED

    shared: dict[str, Any] = {"stack": None, "url": "", "users": 0}

    def unavailable(message: str) -> None:
        if "postgres" in REQUIRED:
            pytest.fail(f"{message}; SEAWALL_TEST_REQUIRE demands postgres", pytrace=False)
        pytest.skip(message)

    @pytest.fixture(scope="session", name=name)
    def fixture() -> Iterator[str]:
        configured = os.environ.get(own_server_variable)
        if configured:
            yield configured
            return
        if shared["stack"] is None:
            bin_dir = pg_bin_dir()
            if bin_dir is None:
                unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
                return
            stack = contextlib.ExitStack()
            try:
                shared["url"] = stack.enter_context(start(bin_dir))
            except (RuntimeError, subprocess.TimeoutExpired, KeyError, OSError) as exc:
                stack.close()
                unavailable(str(exc))
                return
            shared["stack"] = stack
        shared["users"] += 1
        try:
            yield shared["url"]
        finally:
            shared["users"] -= 1
            if shared["users"] == 0 and shared["stack"] is not None:
                stack, shared["stack"] = shared["stack"], None
                stack.close()

    return fixture
