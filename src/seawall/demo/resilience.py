"""``seawall demo resilience``: a flaky downstream called bare, then through a pipeline.

Many concurrent clients call one downstream that is slow under load, fails some
calls, is sometimes very slow, and goes down for a stretch in the middle of the run
(calls hang, then fail, like a dead host). The same load runs twice: once calling
the downstream bare, once through a seawall pipeline (overall timeout, retry with
jittered backoff and a budget, circuit breaker, bulkhead, per-attempt timeout). A
table compares what the clients saw and what the downstream had to carry.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

from seawall.errors import RetryError, SeawallError
from seawall.events import Event
from seawall.resilience import (
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    CircuitStateChanged,
    CountWindow,
    Fallback,
    Pipeline,
    Retry,
    RetryBudget,
    RetryScheduled,
    Timeout,
    exponential,
)

__all__ = ["Downstream", "RunReport", "run_demo"]


class DownstreamError(ConnectionError):
    """The downstream failed the call."""


@dataclass
class Downstream:
    """A simulated remote service: load-dependent latency, random errors, an outage."""

    seed: int
    capacity: int = 16
    base_latency: float = 0.004
    error_rate: float = 0.08
    slow_rate: float = 0.03
    slow_latency: float = 0.4
    outage: tuple[float, float] = (0.35, 0.6)
    hang_when_down: float = 1.0
    calls: int = 0
    calls_while_down: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    started: float = field(default=0.0)
    duration: float = 1.0

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def is_down(self) -> bool:
        """True during the outage stretch of the run."""
        elapsed = (time.monotonic() - self.started) / self.duration
        return self.outage[0] <= elapsed < self.outage[1]

    async def handle(self) -> str:
        """Serve one call the way an overloaded, flaky service does."""
        self.calls += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.is_down():
                self.calls_while_down += 1
                await asyncio.sleep(self.hang_when_down)
                raise DownstreamError("connection reset by peer")
            overload = max(0, self.in_flight - self.capacity) / self.capacity
            latency = self.base_latency * (1 + 6 * overload)
            roll = self.random.random()
            if roll < self.slow_rate:
                latency += self.slow_latency
            await asyncio.sleep(latency)
            if self.random.random() < self.error_rate * (1 + overload):
                raise DownstreamError("503 service unavailable")
            return "ok"
        finally:
            self.in_flight -= 1


@dataclass
class RunReport:
    """What the clients saw in one run, and what the downstream carried."""

    label: str
    requests: int = 0
    successes: int = 0
    fallbacks: int = 0
    latencies: list[float] = field(default_factory=list)
    downstream_calls: int = 0
    downstream_calls_while_down: int = 0
    peak_in_flight: int = 0
    retries: int = 0
    breaker_trips: int = 0

    def share(self, count: int) -> str:
        """``count`` as a percentage of the requests."""
        return f"{count:,} ({count / self.requests:.1%})" if self.requests else "-"

    @property
    def failures(self) -> int:
        """Requests that got neither a fresh nor a fallback answer."""
        return self.requests - self.successes - self.fallbacks

    def percentile(self, fraction: float) -> float:
        """Latency seen by clients at ``fraction`` (0.5 = median), in seconds."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


CACHED = "cached answer"


def build_pipeline() -> tuple[Pipeline, CircuitBreaker]:
    """The policy stack the guarded run uses, outermost first."""
    breaker = CircuitBreaker(
        "downstream",
        window=CountWindow(40),
        failure_rate=0.5,
        minimum_calls=20,
        open_for=0.2,
        half_open_calls=4,
    )
    pipeline = Pipeline(
        Fallback(CACHED, on=(SeawallError, DownstreamError, TimeoutError), name="cache"),
        Timeout(0.6),
        Retry(
            attempts=3,
            wait=exponential(0.01, cap=0.1, jitter="full"),
            on=(DownstreamError, TimeoutError),
            budget=RetryBudget(ratio=0.2, min_per_second=5),
            name="downstream-retry",
        ),
        breaker,
        Bulkhead(max_concurrent=16, max_wait=0.05, name="downstream"),
        Timeout(0.1),
        name="downstream",
    )
    return pipeline, breaker


async def _drive(
    label: str,
    call: Callable[[], Awaitable[str]],
    downstream: Downstream,
    clients: int,
    seconds: float,
    report: RunReport,
) -> None:
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            report.requests += 1
            try:
                answer = await call()
                if answer == CACHED:
                    report.fallbacks += 1
                else:
                    report.successes += 1
            except (RetryError, SeawallError, DownstreamError, TimeoutError):
                pass
            report.latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.01)

    downstream.started = time.monotonic()
    downstream.duration = seconds
    await asyncio.gather(*(client() for _ in range(clients)))
    report.downstream_calls = downstream.calls
    report.downstream_calls_while_down = downstream.calls_while_down
    report.peak_in_flight = downstream.peak_in_flight


def _table(reports: list[RunReport]) -> Table:
    table = Table(title="the same flaky downstream, bare and guarded")
    table.add_column("")
    for report in reports:
        table.add_column(report.label, justify="right")
    rows: list[tuple[str, Callable[[RunReport], str]]] = [
        ("client requests", lambda r: f"{r.requests:,}"),
        ("fresh answers", lambda r: r.share(r.successes)),
        ("fallback answers", lambda r: r.share(r.fallbacks)),
        ("failed", lambda r: r.share(r.failures)),
        ("p50 latency", lambda r: f"{r.percentile(0.5) * 1000:,.0f} ms"),
        ("p99 latency", lambda r: f"{r.percentile(0.99) * 1000:,.0f} ms"),
        ("downstream calls", lambda r: f"{r.downstream_calls:,}"),
        ("calls while it was down", lambda r: f"{r.downstream_calls_while_down:,}"),
        ("peak downstream concurrency", lambda r: f"{r.peak_in_flight:,}"),
        ("retries", lambda r: f"{r.retries:,}"),
        ("breaker trips", lambda r: f"{r.breaker_trips:,}"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(report) for report in reports))
    return table


async def _run(clients: int, seconds: float, seed: int, console: Console) -> list[RunReport]:
    bare = RunReport("bare calls")
    guarded = RunReport("seawall pipeline")
    reports = [bare, guarded]
    with Live(_table(reports), console=console, refresh_per_second=8, transient=False) as live:
        refresher = asyncio.create_task(_refresh(live, reports))
        try:
            downstream = Downstream(seed)
            await _drive("bare", downstream.handle, downstream, clients, seconds, bare)

            downstream = Downstream(seed)
            pipeline, breaker = build_pipeline()

            def count(event: Event) -> None:
                if isinstance(event, RetryScheduled):
                    guarded.retries += 1
                elif isinstance(event, CircuitStateChanged) and event.current is CircuitState.OPEN:
                    guarded.breaker_trips += 1

            unsubscribe = pipeline.subscribe(count)

            async def guarded_call() -> str:
                return await pipeline.acall(downstream.handle)

            await _drive("guarded", guarded_call, downstream, clients, seconds, guarded)
            unsubscribe()
            breaker.close()
        finally:
            refresher.cancel()
            live.update(_table(reports))
    return reports


async def _refresh(live: Live, reports: list[RunReport]) -> None:
    while True:
        await asyncio.sleep(0.25)
        live.update(_table(reports))


def run_demo(*, clients: int = 40, seconds: float = 3.0, seed: int = 7) -> int:
    """Run both passes, print the comparison, and return the process exit code."""
    console = Console()
    console.print(
        f"[bold]{clients} clients[/] call a downstream that is slow under load, fails ~8% of calls, "
        f"is sometimes 400 ms slow, and is [red]down[/] from 35% to 60% of each {seconds:.1f}s run."
    )
    reports = asyncio.run(_run(clients, seconds, seed, console))
    bare, guarded = reports
    console.print()
    saved = 1 - guarded.downstream_calls_while_down / max(1, bare.downstream_calls_while_down)
    console.print(
        f"During the outage the pipeline sent {saved:.0%} fewer calls to the dead downstream; "
        f"p99 latency went from {bare.percentile(0.99) * 1000:,.0f} ms to "
        f"{guarded.percentile(0.99) * 1000:,.0f} ms, and clients got "
        f"{guarded.successes / max(1, bare.successes):.1f}x as many fresh answers."
    )
    return 0
