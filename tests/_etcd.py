"""A throwaway etcd for tests (and benchmarks): free loopback ports, a temporary data dir.

The shared machine's default etcd ports are never used: :func:`start_etcd` picks two
free loopback ports, starts ``etcd`` with its own data directory, waits (bounded) until
``/health`` answers, and stops it (SIGTERM, then SIGKILL) when done. The
``etcd_url`` fixture does that once per test session and yields ``etcd://127.0.0.1:PORT``.
``SEAWALL_TEST_ETCD_URL`` points the tests at an etcd of your own instead.

A missing ``etcd`` binary skips the tests that need it, or fails them when ``etcd`` is
named in ``SEAWALL_TEST_REQUIRE``, as for the other engines (``_engines.py``).

The server runs with a 10 ms heartbeat and a 100 ms election timeout, so it elects
itself at once and its shortest lease is 1 second (the default timings make it 2).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from _engines import REQUIRED

START_TIMEOUT = 20.0
"""Seconds etcd has to answer ``/health`` before the fixture gives up."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as reply:
            return b'"true"' in reply.read()
    except OSError:
        return False


@contextlib.contextmanager
def start_etcd(binary: str | None = None) -> Iterator[str]:
    """Run a private single-member etcd on free loopback ports; yields its ``etcd://`` URL."""
    binary = binary or shutil.which("etcd") or "/usr/bin/etcd"
    workdir = tempfile.TemporaryDirectory(prefix="seawall-etcd-")
    client, peer = _free_port(), _free_port()
    log_path = Path(workdir.name) / "etcd.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            binary,
            "--name", "default",
            "--data-dir", str(Path(workdir.name) / "data"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            "--heartbeat-interval", "10",
            "--election-timeout", "100",
            "--logger", "zap",
            "--log-level", "error",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(client):
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = log_path.read_bytes()[-2000:].decode(errors="replace")
                raise RuntimeError(f"the throwaway etcd did not become healthy:\n{tail}")
            time.sleep(0.05)
        yield f"etcd://127.0.0.1:{client}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        workdir.cleanup()


def etcd_binary() -> str | None:
    """The etcd binary to run, or ``None`` when it is not installed."""
    return shutil.which("etcd") or (
        "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None
    )


@pytest.fixture(scope="session")
def etcd_url() -> Iterator[str]:
    """URL of a private etcd for this session (skips, or fails when required, without one)."""
    configured = os.environ.get("SEAWALL_TEST_ETCD_URL")
    if configured:
        yield configured
        return
    binary = etcd_binary()
    if binary is None:
        message = "etcd is not installed (no etcd binary on PATH or /usr/bin/etcd)"
        if "etcd" in REQUIRED:
            pytest.fail(f"{message}; SEAWALL_TEST_REQUIRE demands it", pytrace=False)
        pytest.skip(message)
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(start_etcd(binary))
        except RuntimeError as exc:
            if "etcd" in REQUIRED:
                pytest.fail(str(exc), pytrace=False)
            pytest.skip(str(exc))
        yield url
