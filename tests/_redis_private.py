"""A private ``redis-server`` for tests that must restart Redis (the shared one never is).

:class:`PrivateRedis` starts ``redis-server`` on a free loopback port with
``--appendonly yes --appendfsync always`` in a temporary folder, so whatever Redis
acknowledged survives :meth:`PrivateRedis.restart` (the port stays the same, clients
reconnect to the same URL). :meth:`PrivateRedis.stop` stops it and removes the folder.
Every wait is bounded.

    with PrivateRedis() as server:
        url = server.url()
        server.restart()            # SIGTERM: clean shutdown; restart(kill=True): SIGKILL

:func:`redis_server_binary` is ``None`` when ``redis-server`` is not installed;
:class:`PrivateRedis` then raises :class:`RedisUnavailableError`.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from _pg_cluster import free_port

START_TIMEOUT = 20.0
"""Seconds the server has to answer ``PING`` after it is started."""
STOP_TIMEOUT = 20.0
"""Seconds the server has to exit after SIGTERM before it is killed."""


class RedisUnavailableError(RuntimeError):
    """The private Redis could not be started (binary missing, did not answer)."""


def redis_server_binary() -> str | None:
    """Path of ``redis-server``, or ``None`` when it is not installed."""
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A ``redis-server`` of our own with an fsync-always append-only file."""

    def __init__(self, *, binary: str | None = None, extra_arguments: list[str] | None = None):
        self.binary = binary or redis_server_binary()
        self.extra_arguments = list(extra_arguments or [])
        self.port = 0
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> PrivateRedis:
        """Start the server (same port and data folder on every start)."""
        if self.running:
            return self
        if self.binary is None:
            raise RedisUnavailableError("redis-server is not installed")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="seawall-redis-"))
            self.port = free_port()
        log = (self.workdir / "server.log").open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.workdir),
                    "--appendonly", "yes",
                    "--appendfsync", "always",
                    "--save", "",
                    "--protected-mode", "yes",
                    *self.extra_arguments,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RedisUnavailableError(f"the private redis-server did not start:\n{tail}")
            time.sleep(0.02)
        return self

    def halt(self, *, kill: bool = False) -> None:
        """Stop the server but keep its data (``kill``: SIGKILL instead of a clean SIGTERM)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def restart(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL when ``kill``) and start it again."""
        self.halt(kill=kill)
        self.start()

    def stop(self) -> None:
        """Stop the server and remove its folder (idempotent)."""
        self.halt()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def url(self, database: int = 0) -> str:
        """The ``redis://`` URL of the server."""
        if not self.port:
            raise RedisUnavailableError("the server was not started")
        return f"redis://127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self.stop()
