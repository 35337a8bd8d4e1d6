"""Spawning, health-checking, killing and restarting the shop's service processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

from seawall.shop import logic
from seawall.shop._config import ShopConfig

__all__ = ["Launcher", "ServiceDidNotStartError", "free_ports"]


class ServiceDidNotStartError(RuntimeError):
    """A service process exited or did not answer its health check in time."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1."""
    import socket

    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Launcher:
    """Runs one process per service; each in its own session, so the launcher alone stops them."""

    def __init__(self, config: ShopConfig, folder: Path, *, start_timeout: float = 30.0) -> None:
        self.config = config
        self.folder = folder
        self.config_path = folder / "shop-config.json"
        self.config_path.write_text(config.to_json())
        self.start_timeout = start_timeout
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, IO[bytes]] = {}
        self.kills = 0
        self.restarts = 0
        self.down: set[str] = set()
        self.http = httpx.AsyncClient(timeout=2.0)

    def spawn(self, service: str) -> None:
        """Start ``service``'s process (its output goes to ``<folder>/<service>.log``)."""
        log = self.logs.get(service)
        if log is None:
            log = self.logs[service] = (self.folder / f"{service}.log").open("ab")
        self.processes[service] = subprocess.Popen(
            [sys.executable, "-m", "seawall.shop._service", service, str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.down.add(service)

    async def wait_healthy(self, service: str) -> None:
        """Wait until ``service`` answers ``GET /health`` from its current process."""
        process = self.processes[service]
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.config.service_url(service)}/health"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServiceDidNotStartError(
                    f"the {service} service exited with code {process.returncode}; "
                    f"see {self.folder / (service + '.log')}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = await self.http.get(url)
                if response.status_code == 200 and response.json().get("pid") == process.pid:
                    self.down.discard(service)
                    return
            await asyncio.sleep(0.05)
        raise ServiceDidNotStartError(
            f"the {service} service did not answer within {self.start_timeout:.0f} s; "
            f"see {self.folder / (service + '.log')}"
        )

    async def start_all(self) -> None:
        """Start every service and wait until all are healthy."""
        for service in logic.SERVICES:
            self.spawn(service)
        await asyncio.gather(*(self.wait_healthy(service) for service in logic.SERVICES))

    async def kill_and_restart(self, service: str, pause: float = 0.3) -> None:
        """SIGKILL ``service`` (no goodbye), then start it again and wait until it is healthy."""
        process = self.processes[service]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        self.kills += 1
        self.down.add(service)
        await asyncio.sleep(pause)
        self.spawn(service)
        await self.wait_healthy(service)
        self.restarts += 1

    async def get(self, service: str, path: str) -> Any:
        """``GET`` a JSON document from ``service`` (``None`` when it does not answer)."""
        try:
            response = await self.http.get(f"{self.config.service_url(service)}{path}", timeout=10)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    async def post(self, service: str, path: str, body: Any) -> bool:
        """``POST`` JSON to ``service``; whether it answered 200."""
        try:
            response = await self.http.post(f"{self.config.service_url(service)}{path}", json=body)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def stop_all(self, grace: float = 3.0) -> None:
        """SIGTERM every service, SIGKILL what is left after ``grace`` s; never leaves a process."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            remaining = max(0.0, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for process in self.processes.values():  # anything the services started themselves
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for log in self.logs.values():
            log.close()
        self.logs.clear()

    async def aclose(self) -> None:
        """Close the launcher's HTTP client."""
        await self.http.aclose()
