"""The load driver: concurrent clients placing orders through the orders API, with retries."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from seawall.resilience import Retry, exponential
from seawall.shop import logic

__all__ = ["Load", "LoadStats", "ThrottledError", "UnavailableError"]


class UnavailableError(ConnectionError):
    """The orders API answered 5xx (an injected fault, or it is restarting): try again."""


class ThrottledError(ConnectionError):
    """The orders API answered 429; ``retry_after`` is how long to wait (honoured by Retry)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after:.3f} s")
        self.retry_after = retry_after


@dataclass
class LoadStats:
    """What the clients saw."""

    total: int
    started: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    abandoned: int = 0
    throttled: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def done(self) -> int:
        """Orders that reached an end, or were given up on."""
        return sum(self.finished.values()) + self.abandoned


class Load:
    """``clients`` tasks placing ``orders`` orders (ids ``<prefix>-000001``...) and awaiting each."""

    def __init__(
        self,
        orders_url: str,
        orders: int,
        clients: int,
        *,
        prefix: str,
        seed: int = 0,
        order_timeout: float = 90.0,
    ) -> None:
        self.url = orders_url
        self.stats = LoadStats(total=orders)
        self.clients = clients
        self.prefix = prefix
        self.seed = seed
        self.order_timeout = order_timeout
        self._next = itertools.count()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Place no new orders (orders in flight are abandoned)."""
        self._stop.set()

    async def run(self) -> None:
        """Run every client until all orders are placed and settled (or :meth:`stop`)."""
        limits = httpx.Limits(max_connections=self.clients * 2)
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0, limits=limits) as http:
            tasks = [
                asyncio.create_task(self._client(http, number)) for number in range(self.clients)
            ]
            stopper: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
            everyone: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*tasks))
            try:
                await asyncio.wait([stopper, everyone], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                everyone.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(stopper, everyone, *tasks, return_exceptions=True)

    async def _client(self, http: httpx.AsyncClient, number: int) -> None:
        client = f"client-{number}"
        while not self._stop.is_set():
            index = next(self._next)
            if index >= self.stats.total:
                return
            self.stats.started += 1
            order_id = f"{self.prefix}-{index + 1:06d}"
            items = logic.sample_items(index + self.seed * 100_003)
            started = time.monotonic()
            outcome = await self._place(http, order_id, client, items)
            if outcome is None:
                self.stats.abandoned += 1
            else:
                self.stats.finished[outcome] = self.stats.finished.get(outcome, 0) + 1
                self.stats.latencies.append(time.monotonic() - started)

    async def _place(
        self, http: httpx.AsyncClient, order_id: str, client: str, items: dict[str, int]
    ) -> str | None:
        retry = Retry(
            attempts=None,
            wait=exponential(0.02, cap=0.5, jitter="full"),
            on=(ConnectionError, httpx.TransportError),
            timeout=self.order_timeout,
            max_retry_after=2.0,
            name="client-retry",
        )

        async def post() -> Any:
            response = await http.post(
                "/orders", json={"order_id": order_id, "client": client, "items": items}
            )
            return self._answer(response)

        async def poll() -> Any:
            response = await http.get(f"/orders/{order_id}")
            if response.status_code == 404:
                return {"state": "pending"}
            return self._answer(response)

        deadline = time.monotonic() + self.order_timeout
        try:
            reply = await retry.acall(post)
            while reply.get("state") == "pending":
                if time.monotonic() > deadline:
                    return None
                await asyncio.sleep(0.05)
                reply = await retry.acall(poll)
        except Exception:  # gave up: the report counts it, the invariants judge the shop
            return None
        state = reply.get("state")
        return str(state) if state else "failed"

    def _answer(self, response: httpx.Response) -> Any:
        if response.status_code == 429:
            self.stats.throttled += 1
            raise ThrottledError(float(response.headers.get("Retry-After", "0.05")))
        if response.status_code >= 500:
            raise UnavailableError(f"orders answered {response.status_code}")
        return response.json()
