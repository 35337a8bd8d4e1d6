"""``seawall demo``: start the shop's four services, drive load, inject faults, check invariants."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seawall.events import Event, hub
from seawall.shop import logic
from seawall.shop._config import CHAOS_LEVELS, QUEUES, ChaosSettings, ShopConfig
from seawall.shop._launcher import Launcher, free_ports
from seawall.shop._load import Load
from seawall.shop._report import ShopReport, snapshot_from_services

__all__ = ["DemoOptions", "run_shop", "run_shop_async"]

COUNTERS = (
    "retries",
    "breaker_trips",
    "redelivered",
    "deduplicated",
    "replayed",
    "rate_limited",
    "injected_errors",
    "duplicated",
    "delayed",
)


@dataclass(frozen=True)
class DemoOptions:
    """What ``seawall demo`` was asked to do (checked by the CLI before it gets here)."""

    orders: int = 200
    clients: int = 8
    chaos: str = "mild"
    engine: str = "sqlite"
    data: str | None = None
    postgres_url: str | None = None
    redis_url: str | None = None
    seed: int = 7
    drain_timeout: float = 45.0
    client_rate: float = 50.0
    keep: bool = False
    """Keep the PostgreSQL schemas and Redis keys of the run (default: dropped at the end)."""
    report_json: str | None = None


class _Tally:
    """Counters per service process, summed over every process a service ever had."""

    def __init__(self) -> None:
        self.by_process: dict[tuple[str, int], dict[str, Any]] = {}

    def update(self, stats: dict[str, Any]) -> None:
        self.by_process[(stats["service"], stats["pid"])] = stats

    def total(self, name: str) -> int:
        return sum(int(s.get("counters", {}).get(name, 0)) for s in self.by_process.values())

    def latest(self, service: str) -> dict[str, Any]:
        found = [s for (name, _), s in self.by_process.items() if name == service]
        return found[-1] if found else {}


class _Run:
    """One run: its processes, load, chaos, live view and report."""

    def __init__(self, options: DemoOptions, folder: Path, console: Console) -> None:
        self.options = options
        self.folder = folder
        self.console = console
        run_id = uuid.uuid4().hex[:8]
        ports = free_ports(len(logic.SERVICES))
        self.config = ShopConfig(
            run_id=run_id,
            engine="postgres" if options.engine == "postgres" else "sqlite",
            data_dir=str(folder),
            ports=dict(zip(logic.SERVICES, ports, strict=True)),
            postgres_url=options.postgres_url,
            redis_url=options.redis_url,
            launcher_pid=os.getpid(),
            client_rate=options.client_rate,
            # a burst of at most a second's worth, so a low --client-rate bites at once
            client_burst=min(20, max(1, round(options.client_rate))),
        )
        self.launcher = Launcher(self.config, folder)
        self.report = ShopReport(
            engine=options.engine if options.engine == "sqlite" else "postgres + redis",
            chaos=options.chaos,
            orders_requested=options.orders,
            clients=options.clients,
            data=str(folder) if options.data else "",
        )
        self.tally = _Tally()
        self.queue_depths: dict[str, int] = {}
        self.client_retries = 0
        self.chaos, self.kill_every = CHAOS_LEVELS[options.chaos]
        self.random = random.Random(options.seed)
        self.load = Load(
            self.config.service_url("orders"),
            options.orders,
            options.clients,
            prefix=f"o{run_id}",
            seed=options.seed,
        )
        self.phase = "starting"
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("orders settled", total=options.orders)

    # -- queues (read directly: the launcher may look at the run's queues) -----------------

    def _read_queue_depths(self) -> dict[str, int]:
        from seawall.messaging.queue import open_queue

        depths = {}
        for name in QUEUES:
            try:
                with open_queue(self.config.queue_url, self.config.queue_name(name)) as queue:
                    stats = queue.stats()
                depths[name] = stats.ready + stats.in_flight + stats.delayed
            except Exception:
                depths[name] = -1
        return depths

    async def poll(self) -> None:
        """Refresh every service's counters and the queue depths."""
        answers = await asyncio.gather(
            *(self.launcher.get(service, "/stats") for service in logic.SERVICES)
        )
        for answer in answers:
            if answer:
                self.tally.update(answer)
        self.queue_depths = await asyncio.to_thread(self._read_queue_depths)

    def view(self) -> Group:
        """The live view: progress, services, breakers, queues, counters."""
        stats = self.load.stats
        self.progress.update(self.task, completed=stats.done)
        services = Table(title=f"{self.phase}", expand=False)
        services.add_column("service")
        services.add_column("state")
        services.add_column("details")
        orders = self.tally.latest("orders")
        for service in logic.SERVICES:
            state = "[red]down[/]" if service in self.launcher.down else "[green]up[/]"
            details = ""
            if service == "orders" and orders:
                breakers = ", ".join(
                    f"{name}: {value}" for name, value in orders.get("breaker_states", {}).items()
                )
                details = (
                    f"breakers {breakers}; outbox {orders.get('outbox_pending', 0)}, "
                    f"projection lag {orders.get('projection_lag', 0)}"
                )
            elif service == "shipping":
                shipping = self.tally.latest("shipping")
                details = f"outbox {shipping.get('outbox_pending', 0)}"
            services.add_row(service, state, details)
        queues = ", ".join(f"{name} {depth}" for name, depth in self.queue_depths.items())
        finished = ", ".join(f"{name} {count}" for name, count in sorted(stats.finished.items()))
        counters = ", ".join(f"{name} {self.tally.total(name)}" for name in COUNTERS[:6])
        lines = Table.grid()
        lines.add_row(f"queues: {queues or '-'}")
        lines.add_row(f"orders: {finished or '-'}; throttled {stats.throttled}")
        lines.add_row(f"{counters}; kills {self.launcher.kills}")
        return Group(self.progress, services, lines)

    # -- phases ----------------------------------------------------------------------------

    async def set_chaos(self, settings: ChaosSettings) -> None:
        """Send ``settings`` to every service."""
        await asyncio.gather(
            *(self.launcher.post(s, "/chaos", settings.to_json()) for s in logic.SERVICES)
        )

    async def chaos_loop(self) -> None:
        """Kill a random service every ``kill_every`` seconds, restart it, re-apply its faults.

        The first kill comes once a quarter of the orders has been started (or after
        ``kill_every`` seconds, if that is sooner), so even a short run sees one.
        """
        if not self.kill_every:
            return
        first = True
        while True:
            pause = self.kill_every * self.random.uniform(0.6, 1.2)
            if first:
                stats = self.load.stats
                for _ in range(max(1, int(pause / 0.05))):  # poll progress, up to ``pause``
                    if stats.started >= stats.total / 4:
                        break
                    await asyncio.sleep(0.05)
                first = False
            else:
                await asyncio.sleep(pause)
            service = self.random.choice(logic.SERVICES)
            await self.launcher.kill_and_restart(service)
            await self.launcher.post(service, "/chaos", self.chaos.to_json())

    async def refresh(self, live: Live | None) -> None:
        """Poll and redraw until cancelled."""
        while True:
            with contextlib.suppress(Exception):
                await self.poll()
            if live is not None:
                live.update(self.view())
            await asyncio.sleep(0.25)

    async def quiet(self) -> bool:
        """Whether the shop has settled: nothing pending in outboxes, queues, projection."""
        await self.poll()
        orders = self.tally.latest("orders")
        shipping = self.tally.latest("shipping")
        if not orders or not shipping:
            return False
        snapshot = await self.launcher.get("orders", "/snapshot")
        if snapshot is None:
            return False
        pending = sum(1 for row in snapshot["records"].values() if row.get("state") == "pending")
        return (
            pending == 0
            and orders.get("outbox_pending") == 0
            and orders.get("projection_lag") == 0
            and shipping.get("outbox_pending") == 0
            and all(depth == 0 for depth in self.queue_depths.values())
        )

    async def drain(self, limit: float) -> None:
        """Wait until the shop is quiet twice in a row, or ``limit`` seconds."""
        self.phase = "draining: outboxes, queues, projection, sagas"
        deadline = time.monotonic() + limit
        calm = 0
        while time.monotonic() < deadline:
            calm = calm + 1 if await self.quiet() else 0
            if calm >= 2:
                return
            await asyncio.sleep(0.25)

    async def finish(self) -> None:
        """Read every service's data and check the invariants."""
        parts = await asyncio.gather(
            *(self.launcher.get(service, "/snapshot") for service in logic.SERVICES)
        )
        if any(part is None for part in parts):
            return
        self.report.apply_snapshot(
            snapshot_from_services(dict(zip(logic.SERVICES, parts, strict=True)))
        )

    def collect(self) -> None:
        """Copy counters into the report."""
        self.report.counters = {name: self.tally.total(name) for name in COUNTERS}
        self.report.counters["client_retries"] = self.client_retries
        self.report.counters["rate_limited"] = max(
            self.report.counters["rate_limited"], self.load.stats.throttled
        )
        self.report.kills = self.launcher.kills
        self.report.restarts = self.launcher.restarts
        self.report.latencies = list(self.load.stats.latencies)
        self.report.abandoned = self.load.stats.abandoned


async def run_shop_async(
    options: DemoOptions, console: Console, *, interrupted: asyncio.Event | None = None
) -> ShopReport:
    """Run the shop once and return its report (services are always stopped)."""
    with _data_folder(options) as folder:
        run = _Run(options, folder, console)
        await asyncio.to_thread(_prepare_engines, run.config)

        def count_client_retries(event: Event) -> None:
            from seawall.resilience import RetryScheduled

            if isinstance(event, RetryScheduled) and event.source == "client-retry":
                run.client_retries += 1

        unsubscribe = hub.subscribe(count_client_retries)
        stop = interrupted or asyncio.Event()
        live = Live(run.view(), console=console, refresh_per_second=4, transient=True)
        refresher: asyncio.Task[None] | None = None
        chaos: asyncio.Task[None] | None = None
        try:
            await run.launcher.start_all()
            live.start()
            refresher = asyncio.create_task(run.refresh(live))
            await run.set_chaos(run.chaos)
            chaos = asyncio.create_task(run.chaos_loop())
            run.phase = f"placing {options.orders} orders, chaos {options.chaos}"
            started = time.monotonic()
            load = asyncio.create_task(run.load.run())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([load, stopper], return_when="FIRST_COMPLETED")
            run.report.seconds = time.monotonic() - started
            if stop.is_set():
                run.report.interrupted = True
                run.load.stop()
            stopper.cancel()
            await asyncio.gather(load, return_exceptions=True)
            chaos.cancel()
            await asyncio.gather(chaos, return_exceptions=True)
            for service in list(run.launcher.down):  # a kill interrupted mid-restart
                with contextlib.suppress(Exception):
                    if run.launcher.processes[service].poll() is not None:
                        run.launcher.spawn(service)
                    await run.launcher.wait_healthy(service)
            await run.set_chaos(ChaosSettings())
            await run.drain(5.0 if run.report.interrupted else options.drain_timeout)
            await run.finish()
            run.collect()
        finally:
            if chaos is not None:
                chaos.cancel()
            if refresher is not None:
                refresher.cancel()
            live.stop()
            unsubscribe()
            await asyncio.to_thread(run.launcher.stop_all)
            await run.launcher.aclose()
            if not options.keep:
                await asyncio.to_thread(_cleanup_engines, run.config)
        return run.report


def run_shop(options: DemoOptions, console: Console | None = None) -> ShopReport:
    """Run the shop (Ctrl-C stops it early and still reports), print the report, return it."""
    console = console or Console()
    console.print(
        f"[bold]seawall shop[/]: orders, payments, inventory and shipping as four processes on "
        f"{'SQLite' if options.engine == 'sqlite' else 'PostgreSQL + Redis'}; "
        f"{options.orders} orders from {options.clients} clients, chaos [bold]{options.chaos}[/]"
    )

    async def main() -> ShopReport:
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, interrupted.set)
            loop.add_signal_handler(signal.SIGTERM, interrupted.set)
        return await run_shop_async(options, console, interrupted=interrupted)

    report = asyncio.run(main())
    report.print(console)
    if options.report_json:
        report.dump(options.report_json)
    return report


@contextlib.contextmanager
def _data_folder(options: DemoOptions) -> Iterator[Path]:
    if options.data:
        folder = Path(options.data).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        for name in [*logic.SERVICES, "queues"]:  # a fresh shop in a reused folder
            for suffix in (".db", ".db-wal", ".db-shm"):
                with contextlib.suppress(FileNotFoundError):
                    (folder / f"{name}{suffix}").unlink()
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="seawall-shop-") as name:
        yield Path(name)


def _prepare_engines(config: ShopConfig) -> None:
    if config.engine != "postgres" or config.postgres_url is None:
        return
    import psycopg

    with psycopg.connect(config.postgres_url, autocommit=True, connect_timeout=5) as conn:
        for service in [*logic.SERVICES, "queues"]:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {config.schema(service)}")


def _cleanup_engines(config: ShopConfig) -> None:
    if config.engine != "postgres":
        return
    if config.postgres_url is not None:
        import psycopg

        with (
            contextlib.suppress(Exception),
            psycopg.connect(config.postgres_url, autocommit=True, connect_timeout=5) as conn,
        ):
            for service in [*logic.SERVICES, "queues"]:
                conn.execute(f"DROP SCHEMA IF EXISTS {config.schema(service)} CASCADE")
    if config.redis_url:
        with contextlib.suppress(Exception):
            _cleanup_redis(config)


def _cleanup_redis(config: ShopConfig) -> None:
    import redis

    from seawall.messaging.queue.redis import REGISTRY_KEY, queue_keys_pattern

    client = redis.Redis.from_url(config.redis_url or "")
    try:
        patterns = [queue_keys_pattern(config.queue_name(name)) for name in QUEUES]
        patterns.append(f"seawall:shop:{config.run_id}:*")
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=500))
            if keys:
                client.delete(*keys)
        client.srem(REGISTRY_KEY, *(config.queue_name(name) for name in QUEUES))
    finally:
        client.close()
